"""Writes notebooks/08_hidden_manifold.ipynb (run: python notebooks/_make_08.py [--execute];
with --execute the notebook is executed in place with nbclient, in the fast setting when
TSJAX_FAST=1)."""

import sys

import nbformat as nbf

cells = []
md = lambda s: cells.append(nbf.v4.new_markdown_cell(s))  # noqa: E731
code = lambda s: cells.append(nbf.v4.new_code_cell(s))  # noqa: E731

md(r"""# Learning on the hidden manifold

Goldt, Mézard, Krzakala & Zdeborová (PRX 2020): inputs lie on a D-dimensional manifold of
the N-dimensional input space, x = f(Fc/√D) with a latent c ~ N(0, I_D), a feature matrix
F (N × D) and an elementwise feature map f; the teacher acts on the latent. Online SGD on
such data is exactly described (through a Gaussian equivalence) by ODEs whose variables are
densities over the spectrum of Ω = FᵀF/N. tsjax integrates them for a given F (the finite-N
spectrum) or in the large-dimension limit (the Marchenko–Pastur law of ratio δ = D/N), and
simulates the real networks on such inputs (`tsjax.simulate(..., inputs=hmm)`).

Conventions (the authors', docs/hidden_manifold.md): g = erf(x/√2), first-layer step η/√N,
α = steps/N (time in units of N, not D), ε_g = ½E[(ŷ − y)²].""")

code("""%matplotlib inline
import os
import time
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
import matplotlib.pyplot as plt
import tsjax

FAST = os.environ.get("TSJAX_FAST", "0") == "1"   # CI runs the notebook in a fast setting
print("fast setting" if FAST else "full setting", "|", jax.devices())
N = 200 if FAST else 1000
K, M, LR = 2, 1, 0.5
alphas = np.linspace(0.0, 10.0 if FAST else 60.0, 41)""")

md(r"""## Hidden manifold against Gaussian inputs

One F with i.i.d. N(0, 1) entries, δ = 0.5, sign features; ODE lines and simulation points
(the real networks, several seeds). Gaussian inputs with the same student and a teacher of the
same shape for comparison.""")

code("""key = jax.random.key(0)
D = N // 2
F = jax.random.normal(jax.random.fold_in(key, 0), (N, D))
hmm = tsjax.HiddenManifold(F, feature_map="sign")
st = tsjax.init_student(jax.random.fold_in(key, 1), N, K, scale=0.1)
te = tsjax.init_teacher(jax.random.fold_in(key, 2), D, M)
op = tsjax.order_params(st, te, inputs=hmm)
t0 = time.perf_counter()
ode = tsjax.solve_ode(op, inputs=hmm, lr=LR, alphas=alphas)
print(f"hidden-manifold ODE over {D} eigenvalues: {time.perf_counter() - t0:.1f} s")
seeds = range(2 if FAST else 8)
al_s = alphas[::4]
sims = np.stack([np.asarray(tsjax.simulate(st, te, jax.random.key(10 + s), inputs=hmm, lr=LR,
                                           alphas=al_s).eg) for s in seeds])
te_g = tsjax.init_teacher(jax.random.fold_in(key, 3), N, M)
gauss = tsjax.solve_ode(tsjax.order_params(st, te_g), lr=LR, alphas=alphas)
fig, ax = plt.subplots(figsize=(6.5, 4))
ax.semilogy(alphas, ode.eg, "C0", label="hidden manifold, ODE")
err = sims.std(0, ddof=1) / np.sqrt(len(seeds))
ax.errorbar(al_s, sims.mean(0), err, fmt="o", color="C0", ms=4, label=f"simulation, N = {N}")
ax.semilogy(alphas, gauss.eg, "C1--", label="Gaussian inputs, ODE")
ax.set(xlabel="α", ylabel="ε_g", title=f"K = {K}, M = {M}, δ = {D / N:g}, sign features")
ax.legend()
plt.tight_layout()""")

md(r"""## δ and the feature map in the large-dimension limit

`tsjax.HiddenManifold.limit(delta, feature_map)` needs no matrix. The asymptotic error of a
K = 2 student against an M = 1 teacher on the latent depends on δ and on the feature map
through μ₁ = E[u f(u)] and μ*² = E f² − μ₁² (the 'noise' the nonlinear features add).""")

code("""deltas = np.geomspace(0.2, 5.0, 3 if FAST else 16)
fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
fmaps = (("sign", "C0"), ("erf", "C2")) + ((("tanh", "C3"),) if not FAST else ())
for fm, c in fmaps:
    finals = []
    for d in deltas:
        lim = tsjax.HiddenManifold.limit(float(d), fm, nodes=32)
        o = tsjax.order_params(st, te, inputs=lim)
        tr = tsjax.solve_ode(o, inputs=lim, lr=LR, alphas=alphas)
        finals.append(float(tr.eg[-1]))
        if fm == "sign" and d in (deltas[0], deltas[-1]):
            ax[0].semilogy(alphas, tr.eg, color=c, ls="-" if d == deltas[0] else ":",
                           label=f"sign, δ = {d:.2g}")
    ax[1].loglog(deltas, finals, "o-", color=c, label=fm)
ax[0].set(xlabel="α", ylabel="ε_g (limit)")
ax[0].legend(fontsize=8)
ax[1].set(xlabel="δ = D/N", ylabel=f"ε_g(α = {alphas[-1]:g})")
ax[1].legend(fontsize=8)
plt.tight_layout()""")

md(r"""## The finite spectrum against the Marchenko–Pastur limit

The eigenvalues of Ω = FᵀF/N for one F against the Marchenko–Pastur density of ratio δ, and the
ODE's ε_g from the same macroscopic start on the finite spectrum as N grows. The difference to
the limit is a random number for each F (a linear statistic of its spectrum, of order 1/N);
its root mean square over several matrices shows the rate.""")

code("""fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
ax[0].hist(np.asarray(hmm.rho), bins=40, density=True, alpha=0.5, label=f"Ω, N = {N}, D = {D}")
d_ = D / N
rr = np.linspace((1 - np.sqrt(d_)) ** 2, (1 + np.sqrt(d_)) ** 2, 400)
ax[0].plot(rr, np.sqrt(np.maximum((rr[-1] - rr) * (rr - rr[0]), 0)) / (2 * np.pi * d_ * rr), "k",
           label="Marchenko–Pastur")
ax[0].set(xlabel="ρ", ylabel="density")
ax[0].legend(fontsize=8)
lim = tsjax.HiddenManifold.limit(0.5, "sign", nodes=32)
op_l = tsjax.order_params(st, te, inputs=lim)
al = np.array([0.0, 2.0, 8.0])
e_lim = np.asarray(tsjax.solve_ode(op_l, inputs=lim, lr=LR, alphas=al).eg)
Ns = [100, 200] if FAST else [100, 200, 400, 800, 1600]
n_F = 2 if FAST else 6   # matrices per N: the difference is a random O(1/N) number per F
errs = []
for n_ in Ns:
    e_n = []
    for j in range(n_F):
        Fj = jax.random.normal(jax.random.fold_in(jax.random.key(n_), j), (n_, n_ // 2))
        h = tsjax.HiddenManifold(Fj, "sign")
        nn = h.rho.shape[0]
        o = tsjax.ManifoldOrderParams(op_l.W, h.rho[:, None, None] * op_l.W[None],
                                      np.zeros((nn, K, M)), np.broadcast_to(op_l.T, (nn, M, M)),
                                      op_l.T, op_l.v, op_l.v_star, h)
        e = np.asarray(tsjax.solve_ode(o, inputs=h, lr=LR, alphas=al).eg)
        e_n.append(np.max(np.abs(e - e_lim)))
    errs.append(np.sqrt(np.mean(np.square(e_n))))
ax[1].loglog(Ns, errs, "o-", label=f"rms over {n_F} F of max |ε_g(N) − ε_g(limit)|")
ax[1].loglog(Ns, errs[0] * Ns[0] / np.asarray(Ns), "k:", label="∝ 1/N")
ax[1].set(xlabel="N (δ = 0.5)")
ax[1].legend(fontsize=8)
plt.tight_layout()
print({n_: f"{e:.2e}" for n_, e in zip(Ns, errs)})""")

md(r"""**Summary.** The hidden-manifold ODE follows the simulations of the real networks on
non-Gaussian inputs; δ and the feature map set the plateau and the asymptotic error; the
finite-N spectrum converges to the Marchenko–Pastur limit (printed above: the rms difference
against N).""")

nb = nbf.v4.new_notebook()
nb["cells"] = cells
nb["metadata"]["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
path = "notebooks/08_hidden_manifold.ipynb"
nbf.write(nb, path)

if "--execute" in sys.argv:
    import nbclient

    nb = nbf.read(path, as_version=4)
    nbclient.NotebookClient(nb, timeout=3600, kernel_name="python3",
                            resources={"metadata": {"path": "notebooks"}}).execute()  # fmt: skip
    nbf.write(nb, path)
