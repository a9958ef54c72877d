"""Writes notebooks/06_learning_rules.ipynb (run: python notebooks/_make_06.py [--execute];
with --execute the notebook is executed in place with nbclient, in the fast setting when
TSJAX_FAST=1)."""

import sys

import nbformat as nbf

cells = []
md = lambda s: cells.append(nbf.v4.new_markdown_cell(s))  # noqa: E731
code = lambda s: cells.append(nbf.v4.new_code_cell(s))  # noqa: E731

md(r"""# Learning rules beyond SGD: adaptive back-propagation and feedback alignment

Two modifications of how the hidden units of a two-layer network learn, both exactly
solvable in the teacher–student setup:

* **Adaptive back-propagation** (West & Saad, NIPS 1995): the back-propagated error of
  hidden unit k uses g'(β λ_k) instead of g'(λ_k). For erf, β > 1 narrows the derivative,
  damping the units with large fields relative to the others, which breaks the symmetry of
  the plateau sooner.
* **Feedback alignment** (Lillicrap et al. 2016; Refinetti, d'Ascoli, Ohana & Goldt, ICML
  2021): the first layer's update uses a fixed random feedback vector b instead of the
  second-layer weights v, while v follows its true gradient. The readout first *aligns*
  with b, then the network *memorises* the teacher.

In tsjax a learning rule is part of the learning problem: `rule=tsjax.AdaptiveBackprop(β)`
or `rule=tsjax.FeedbackAlignment(feedback=b)` in `solve_ode`, `simulate`,
`simulate_order_params`, `sweep` and `optimise_schedule`. No new order parameters are
needed: b and β are constants in the K-dimensional space of hidden units, and the
Gaussian integrals of the ODE are the activation's own at rescaled covariances
(docs/rules.md).

Conventions (Goldt et al. 2019, docs/conventions.md): g(x) = erf(x/√2), first-layer step
η/√N, second layer η_v/N, α = steps/N, ε_g = ½E[(ŷ − y)²].""")

code("""%matplotlib inline
import os
os.environ.setdefault("EQX_ON_ERROR", "off")
import time
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
import matplotlib.pyplot as plt
import tsjax
tsjax.enable_compilation_cache()

FAST = os.environ.get("TSJAX_FAST", "0") == "1"   # CI runs the notebook in a fast setting
print("fast setting" if FAST else "full setting", "|", jax.devices())""")

md(r"""## Adaptive back-propagation shortens the plateau

A soft committee machine K = M = 2 (v = v* = 1 fixed, η = 0.5) from a student with weights
of standard deviation 10⁻³: the symmetric plateau. One `sweep` runs every gain β in one
compiled program (the rule's parameter is a traced dimension of the sweep).""")

code("""betas = [1.0, 1.5, 2.0] if FAST else [0.5, 0.7, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0]
alphas = np.linspace(0.0, 400.0 if FAST else 800.0, 401 if FAST else 1601)
t0 = time.perf_counter()
ds = tsjax.sweep(K=2, M=2, lr=0.5, alphas=alphas, N=1000, init_scale=1e-3, seed=0,
                 rule=[tsjax.AdaptiveBackprop(b) for b in betas])
print(f"sweep over {len(betas)} gains: {time.perf_counter() - t0:.1f} s")
ds = ds.swap_dims(rule="beta")
fig, ax = plt.subplots(figsize=(6, 4))
for b in betas:
    ax.semilogy(alphas, ds.eg.sel(beta=b), label=f"β = {b:g}" + (" (SGD)" if b == 1 else ""))
ax.set(xlabel="α", ylabel="ε_g", title="adaptive back-propagation, K = M = 2, η = 0.5")
ax.legend(fontsize=8)
plt.tight_layout()""")

md(r"""The plateau's end (`tsjax.find_plateaus`: the stretch where ε_g is flat, followed by a
drop) against β, with the ODE's escape eigenvalue at the plateau: the symmetric fixed point
found by `tsjax.fixed_point` in the symmetric subspace, and its unstable eigenvalue λ_max
from `tsjax.stability`. The escape time grows like log(1/δ)/λ_max, so 1/λ_max tracks the
plateau length.""")

code("""st, te, _ = tsjax.sweep_point(K=2, M=2, N=1000, init_scale=1e-3, seed=0)
op0 = tsjax.order_params(st, te)
ends, lams = [], []
for b in betas:
    ps = tsjax.find_plateaus(tsjax.solve_ode(op0, lr=0.5, alphas=alphas,
                                             rule=tsjax.AdaptiveBackprop(b)))
    ends.append(ps[0].end if ps else np.nan)
    pb = tsjax.Problem("erf", lr=0.5, rule=tsjax.AdaptiveBackprop(b))
    guess = tsjax.OrderParams(np.full((2, 2), 0.3), np.full((2, 2), 0.4), op0.T, op0.v, op0.v_star)
    fp = tsjax.fixed_point(guess, problem=pb, subspace="symmetric")
    lams.append(tsjax.stability(fp, problem=pb).max_real)
for b, e, l in zip(betas, ends, lams):
    print(f"beta = {b:4.2f}: plateau ends at alpha = {e:6.1f}, lambda_max = {l:.4f}, "
          f"1/lambda_max = {1 / l:6.1f}")
fig, ax = plt.subplots(1, 2, figsize=(9, 3.6))
ax[0].plot(betas, ends, "o-")
ax[0].set(xlabel="β", ylabel="end of the plateau (α)")
ax[1].plot(betas, 1 / np.asarray(lams), "s-", color="C1")
ax[1].set(xlabel="β", ylabel="1 / λ_max at the symmetric fixed point")
plt.tight_layout()""")

md(r"""**Simulations.** The exact finite-N order-parameter chain (`simulate_order_params`,
cost independent of N) at N = 10⁴ for SGD and for β = 2, several seeds, from the same
initial networks (N = 10³ in the fast setting): the plateau shortening is there at finite
N.""")

code("""N_SIM = 1000 if FAST else 10_000
seeds = range(1 if FAST else 6)
al_sim = alphas[:: 20]
fig, ax = plt.subplots(figsize=(6, 4))
for b, c in ((1.0, "C0"), (2.0, "C3")):
    rule = tsjax.AdaptiveBackprop(b)
    ax.semilogy(alphas, ds.eg.sel(beta=b), c, label=f"ODE β = {b:g}")
    for s in seeds:
        k = jax.random.fold_in(jax.random.key(1), s)
        tr = tsjax.simulate_order_params(op0, k, N=N_SIM, lr=0.5, alphas=al_sim, rule=rule)
        ax.semilogy(al_sim, tr.eg, ".", color=c, ms=3, alpha=0.6,
                    label=f"chain N = {N_SIM}" if s == 0 else None)
ax.set(xlabel="α", ylabel="ε_g")
ax.legend(fontsize=8)
plt.tight_layout()""")

md(r"""## Feedback alignment: align, then memorise

A student with K = 2 units learns a teacher with M = 1 unit (η = η_v = 0.5). Both layers are
trained; the first layer's updates use the fixed feedback vector b = (1, 0.6) instead of v.
The readout starts small and orthogonal to b. The cosine between v and b rises to ≈ 1
first (alignment), and only then does the error fall (memorisation).""")

code("""st, te, key = tsjax.sweep_point(K=2, M=1, N=1000, init_scale=1e-2, seed=3)
b = np.array([1.0, 0.6])
st = tsjax.TwoLayerNet(st.W, 0.01 * np.array([0.6, -1.0]))   # v orthogonal to b
op0 = tsjax.order_params(st, te)
al = np.linspace(0.0, 60.0 if FAST else 100.0, 301)
fa = tsjax.FeedbackAlignment(feedback=b)
tr_fa = tsjax.solve_ode(op0, lr=0.5, lr_v=0.5, alphas=al, rule=fa)
tr_sgd = tsjax.solve_ode(op0, lr=0.5, lr_v=0.5, alphas=al)
v = np.asarray(tr_fa.v)
cos = v @ b / (np.linalg.norm(v, axis=1) * np.linalg.norm(b))
i_align = int(np.argmax(cos > 0.9))
print(f"cos(v, b) > 0.9 from alpha = {al[i_align]:.1f}; "
      f"eps_g there {float(tr_fa.eg[i_align]):.3g}, "
      f"at the end {float(tr_fa.eg[-1]):.3g} (SGD {float(tr_sgd.eg[-1]):.3g})")
fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
ax[0].semilogy(al, tr_sgd.eg, label="SGD")
ax[0].semilogy(al, tr_fa.eg, label="feedback alignment")
ax[0].axvline(al[i_align], color="gray", ls=":", lw=1)
ax[0].set(xlabel="α", ylabel="ε_g")
ax[0].legend()
ax[1].plot(al, cos, color="C1")
ax[1].axvline(al[i_align], color="gray", ls=":", lw=1)
ax[1].set(xlabel="α", ylabel="cos(v, b)", title="alignment of the readout with the feedback")
plt.tight_layout()""")

md(r"""**Network simulations.** Online learning of the real networks (`tsjax.simulate`,
N = 1000) with the same rule: their cosine and error follow the ODE within finite-size
fluctuations.""")

code("""seeds = range(1 if FAST else 4)
al_s = al[::10]
fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
ax[0].semilogy(al, tr_fa.eg, "C1", label="ODE")
ax[1].plot(al, cos, "C1", label="ODE")
for s in seeds:
    k = jax.random.fold_in(key, s)
    sim = tsjax.simulate(st, te, k, lr=0.5, lr_v=0.5, alphas=al_s, rule=fa)
    vs = np.asarray(sim.v)
    cs = vs @ b / (np.linalg.norm(vs, axis=1) * np.linalg.norm(b))
    ax[0].semilogy(al_s, sim.eg, "k.", ms=4, label="simulation N = 1000" if s == 0 else None)
    ax[1].plot(al_s, cs, "k.", ms=4, label="simulation N = 1000" if s == 0 else None)
ax[0].set(xlabel="α", ylabel="ε_g")
ax[1].set(xlabel="α", ylabel="cos(v, b)")
ax[0].legend(); ax[1].legend()
plt.tight_layout()""")

md(r"""**Summary.** Adaptive back-propagation with β > 1 shortens the plateau of the soft
committee machine, and the unstable eigenvalue of the symmetric fixed point explains by how
much; feedback alignment first aligns the readout with the feedback vector and then
learns. Both are one keyword, `rule=`, of the same learning problem that the ODE, the two
simulators, sweeps and gradients take.""")

nb = nbf.v4.new_notebook()
nb["cells"] = cells
nb["metadata"]["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
path = "notebooks/06_learning_rules.ipynb"
nbf.write(nb, path)

if "--execute" in sys.argv:
    import nbclient

    nb = nbf.read(path, as_version=4)
    nbclient.NotebookClient(nb, timeout=3600, kernel_name="python3",
                            resources={"metadata": {"path": "notebooks"}}).execute()  # fmt: skip
    nbf.write(nb, path)
