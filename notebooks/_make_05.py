"""Writes notebooks/05_fixed_points_and_hessians.ipynb (run: python notebooks/_make_05.py
[--execute]; with --execute the notebook is executed in place with nbclient, in the fast
setting when TSJAX_FAST=1)."""

import sys

import nbformat as nbf

cells = []
md = lambda s: cells.append(nbf.v4.new_markdown_cell(s))  # noqa: E731
code = lambda s: cells.append(nbf.v4.new_code_cell(s))  # noqa: E731

md(r"""# Fixed points, plateaus, critical learning rates and Hessians

The geometry the dynamics moves through: the symmetric plateau of the soft committee
machine as a saddle of the order-parameter ODE (Saad & Solla 1995), its unstable direction
and the escape time it predicts; the critical learning rate above which perfect learning
becomes unstable; the Hessian of the population loss at the teacher-matching point
(Couto, Mourão, Figueiredo & Ribeiro); and the gradient flow of over-parameterised students
to their minima (Brea, Martinelli, Şimşek & Gerstner, MLPGradientFlow). Every quantity is
one tsjax call: `fixed_point`, `stability`, `critical_learning_rate`, `find_plateaus`,
`hessian`, `gradient_flow`, `find_minimum` (docs/analysis.md).

Conventions: Goldt et al. (2019), docs/conventions.md: g(x) = erf(x/√2), first-layer step
η/√N, second layer fixed (η_v = 0) unless said, α = steps/N. Soft committee machine: T = I,
v = v* = 1.""")

code("""%matplotlib inline
import os
os.environ.setdefault("EQX_ON_ERROR", "off")   # so that the ODE programs are cached too (README)
import time
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
import matplotlib.pyplot as plt
import tsjax
tsjax.enable_compilation_cache()

FAST = os.environ.get("TSJAX_FAST", "0") == "1"   # CI runs the notebook in a fast setting
print("fast setting" if FAST else "full setting", "|", jax.devices())""")

md(r"""## The symmetric plateau is a saddle

The symmetric fixed point (all Q_ii, all Q_ik, all R_in equal) found by Newton's method in
the symmetric subspace, for K = M = 2 at η = 0.5, and the eigenvalues of the full Jacobian
there: one is positive, the escape direction. In the limit η → 0 the fixed point is Saad &
Solla's Q = 1/(2K − 1), R = 1/√(K(2K − 1)).""")

code("""K, ETA = 2, 0.5
scm = dict(T=np.eye(K), v=np.ones(K), v_star=np.ones(K))
guess = tsjax.OrderParams(np.full((K, K), 0.2) + 0.1 * np.eye(K), np.full((K, K), 0.3), **scm)
fp = tsjax.fixed_point(guess, lr=ETA, subspace="symmetric")
st = tsjax.stability(fp, lr=ETA)
lam = st.max_real
print("plateau: Q =", np.round(np.asarray(fp.Q), 6).tolist(),
      " R =", np.round(np.asarray(fp.R), 6).tolist())
print(f"eps_g on the plateau {float(tsjax.generalisation_error(fp)):.6f}")
print("eigenvalues:", np.round(np.real(np.asarray(st.eigenvalues)), 5))
top = np.real(np.asarray(st.eigenvectors[:, 0]))
print("unstable direction:",
      {n: round(float(c), 3) for n, c in zip(st.variables, top / np.abs(top).max())})
small = tsjax.fixed_point(guess, lr=1e-8, subspace="symmetric")
print(f"eta -> 0: Q = {float(small.Q[0, 0]):.8f} (1/(2K-1) = {1 / (2 * K - 1):.8f}), "
      f"R = {float(small.R[0, 0]):.8f} (1/sqrt(K(2K-1)) = {1 / np.sqrt(K * (2 * K - 1)):.8f})")""")

md(r"""The unstable direction is antisymmetric in R: one student unit moves towards teacher
1, the other towards teacher 2 (specialisation).

## Escape time: log(1/δ)/λ

Start on the plateau, displaced by δ along the unstable direction (w₁,₂ = w ± δ(B₁ − B₂)).
The displacement grows like δ e^{λα}, so the plateau (`tsjax.find_plateaus`) ends at
log(1/δ)/λ + const.""")

code("""deltas = np.geomspace(1e-2, 1e-8, 4 if FAST else 13)
alphas = np.linspace(0, 600, 1201)
P = np.array([[1.0, -1.0], [-1.0, 1.0]])
ends = []
for d in deltas:
    op = tsjax.OrderParams(np.asarray(fp.Q) + 2 * d**2 * P, np.asarray(fp.R) + d * P, **scm)
    ends.append(tsjax.find_plateaus(tsjax.solve_ode(op, lr=ETA, alphas=alphas))[0].end)
ends = np.asarray(ends)
slope = np.polyfit(np.log(1 / deltas), ends, 1)[0]
print(f"fitted slope d(end)/d log(1/delta) = {slope:.3f}; 1/lambda = {1 / lam:.3f}")
fig, ax = plt.subplots(figsize=(5, 3.6))
ax.plot(np.log(1 / deltas), ends, "o", label="ODE: end of the plateau")
x = np.log(1 / deltas)
ax.plot(x, ends[0] + (x - x[0]) / lam, "k--", label=r"slope $1/\\lambda_{max}$")
ax.set(xlabel=r"$\\log(1/\\delta)$", ylabel=r"$\\alpha$ at the end of the plateau"); ax.legend()
plt.tight_layout()""")

md(r"""The same in the networks: online SGD started on the plateau, w₁ = w₂ = r(B₁ + B₂) + c z
(the fixed point's overlaps, z ⟂ teachers), displaced by ±δ(B₁ − B₂). The escape time is
the first α at which ε_g falls below half the plateau height, for the ODE and for the mean of
SGD runs at finite N.""")

code("""N_SIM = 500 if FAST else 2000
SEEDS = 2 if FAST else 4
deltas_sim = np.geomspace(1e-1, 1e-6, 3 if FAST else 6)
alphas_sim = np.linspace(0, 500, 1001)
q, r = float(fp.Q[0, 0]), float(fp.R[0, 0])
half = 0.5 * float(tsjax.generalisation_error(fp))

def escape(tr):
    e = np.asarray(tr.eg)
    i = np.argmax(e < half)
    return float(tr.alpha[i]) if e[i] < half else np.nan

t0 = time.perf_counter()
esc_ode, esc_sim = [], []
for d in deltas_sim:
    op = tsjax.OrderParams(np.full((K, K), q) + 2 * d**2 * P, np.full((K, K), r) + d * P, **scm)
    esc_ode.append(escape(tsjax.solve_ode(op, lr=ETA, alphas=alphas_sim)))
    runs = []
    for seed in range(SEEDS):
        k = jax.random.key(seed)
        B = np.sqrt(N_SIM) * np.linalg.qr(np.asarray(jax.random.normal(k, (N_SIM, K + 1))))[0].T
        w = r * (B[0] + B[1]) + np.sqrt(q - 2 * r**2) * B[2]
        W = np.stack([w + d * (B[0] - B[1]), w - d * (B[0] - B[1])])
        tr = tsjax.simulate(tsjax.TwoLayerNet(W, 1.0), tsjax.TwoLayerNet(B[:K], 1.0),
                            jax.random.fold_in(k, 1), lr=ETA, alphas=alphas_sim)
        runs.append(escape(tr))
    esc_sim.append((np.nanmean(runs), np.nanstd(runs) / np.sqrt(SEEDS)))
esc_sim = np.asarray(esc_sim)
print(f"{len(deltas_sim) * SEEDS} simulations at N = {N_SIM} in {time.perf_counter() - t0:.0f} s")
x = np.log(1 / deltas_sim)
fig, ax = plt.subplots(figsize=(5, 3.6))
ax.plot(x, esc_ode, "o-", label="ODE")
ax.errorbar(x, esc_sim[:, 0], esc_sim[:, 1], fmt="s", label=f"SGD, N = {N_SIM}")
ax.plot(x, esc_ode[0] + (x - x[0]) / lam, "k--", label=r"slope $1/\\lambda_{max}$")
ax.set(xlabel=r"$\\log(1/\\delta)$", ylabel=r"escape time ($\\epsilon_g$ < half the plateau)")
ax.legend(fontsize=8); plt.tight_layout()""")

md(r"""SGD at finite N follows the ODE's log(1/δ)/λ over the whole range of δ: the escape is
driven by the initial asymmetry, which the unstable eigenvalue amplifies, and the SGD noise
(whose own asymmetric kicks are what eventually ends the plateau of a perfectly symmetric
start) does not shorten it down to δ = 10⁻⁶ at N = 2000.

## The critical learning rate of perfect learning

Without noise, perfect learning (Q = R = T) is a fixed point at every η; it loses
stability at η_c (`tsjax.critical_learning_rate`: the first zero crossing of the largest
real part of the Jacobian's eigenvalues, refined by exact bisection). For the erf
perceptron η_c = π√15/3; for the ReLU perceptron η_c = 2 (derived in docs/analysis.md: on
the boundary of the PSD cone, ReLU's B is linearised with the orthant probabilities
E[Θ_i Θ_k Θ_j Θ_l]), and for K = M = 2 it is 3 − √3 to 14 digits.""")

code("""Ks = [1, 2] if FAST else [1, 2, 3, 4, 5, 6]
lrc = []
t0 = time.perf_counter()
for k_ in Ks:
    op = tsjax.OrderParams(np.eye(k_), np.eye(k_), np.eye(k_), np.ones(k_), np.ones(k_))
    lrc.append(float(tsjax.critical_learning_rate(op)))
print(f"{time.perf_counter() - t0:.0f} s;", {k_: round(x, 6) for k_, x in zip(Ks, lrc)},
      f"| pi sqrt(15)/3 = {np.pi * np.sqrt(15) / 3:.6f}")
Ks_relu = [1] if FAST else [1, 2, 3, 4]
lrc_relu = []
t0 = time.perf_counter()
for k_ in Ks_relu:
    op = tsjax.OrderParams(np.eye(k_), np.eye(k_), np.eye(k_), np.ones(k_), np.ones(k_))
    lrc_relu.append(float(tsjax.critical_learning_rate(op, activation="relu")))
print(f"ReLU {time.perf_counter() - t0:.0f} s;",
      {k_: round(x, 12) for k_, x in zip(Ks_relu, lrc_relu)},
      f"| 3 - sqrt 3 = {3 - np.sqrt(3):.12f}")
fig, ax = plt.subplots(figsize=(5, 3.6))
ax.plot(Ks, lrc, "o-", label="erf")
ax.plot(Ks_relu, lrc_relu, "s--", label="ReLU")
ax.set(xlabel="K = M", ylabel=r"critical learning rate $\\eta_c$", title="T = I, v = v* = 1")
ax.legend()
plt.tight_layout()""")

md(r"""## Hessians at the teacher-matching point

The Hessian of the population loss with respect to the weights (`tsjax.hessian`, exact) at
student = teacher. For a linear network with both layers (`wrt="Wv"`) its N nonzero
eigenvalues are those of (|v|² I + WᵀW)/N (docs/analysis.md): a Marchenko–Pastur spectrum
(aspect K/N) shifted by |v|²/N — over random teachers with Gaussian v, a χ²_K-distributed
shift, Couto et al.'s convolution. For quadratic activations the rank is
KN − K(K − 1)/2 (the tangent space of {Wᵀ diag(v) W}), for erf it is full.""")

code("""N_H = 100 if FAST else 200
K_H = 10
rng = np.random.default_rng(0)
eigs, pred = [], []
for rep in range(3 if FAST else 20):
    W = rng.standard_normal((K_H, N_H))
    v = rng.standard_normal(K_H)
    net = tsjax.TwoLayerNet(W, v, "linear")
    w, r = tsjax.hessian_spectrum(tsjax.hessian(net, net, activation="linear", wrt="Wv"))
    eigs.append(w[-N_H:] * N_H)   # in units of 1/N
    pred.append(np.linalg.eigvalsh(v @ v * np.eye(N_H) + W.T @ W))
eigs, pred = np.concatenate(eigs), np.concatenate(pred)
print(f"rank {r} = N = {N_H}; largest deviation from (|v|^2 I + W^T W)/N: "
      f"{np.max(np.abs(np.sort(eigs) - np.sort(pred))) / pred.max():.1e} relative")
fig, ax = plt.subplots(figsize=(5, 3.6))
ax.hist(eigs, bins=60, density=True, alpha=0.6, label="tsjax.hessian (linear, W and v)")
ax.hist(pred, bins=60, density=True, histtype="step", color="k",
        label=r"$|v|^2 + $ eig$(W^T W)$ (closed form)")
ax.set(xlabel=r"$N \\lambda$ (nonzero eigenvalues)", ylabel="density", yscale="log",
       title=f"K = {K_H}, N = {N_H}, Gaussian v: $\\chi^2_K$ shift, Wishart bulk")
ax.legend(fontsize=7); plt.tight_layout()""")

code("""K_R = 3
rows = []
for N in ([4, 8] if FAST else [4, 8, 16, 32, 64]):
    W = rng.standard_normal((K_R, N)); v = np.array([1.0, -0.7, 1.3])
    ranks = {}
    for act in ("linear", "quadratic", "erf"):
        net = tsjax.TwoLayerNet(W, v, act)
        ranks[act] = tsjax.hessian_spectrum(tsjax.hessian(net, net, activation=act))[1]
    rows.append((N, ranks))
    print(f"N = {N:3d}: rank linear {ranks['linear']} (N), quadratic {ranks['quadratic']} "
          f"(KN - K(K-1)/2 = {K_R * N - K_R * (K_R - 1) // 2}), erf {ranks['erf']} "
          f"(KN = {K_R * N})")""")

md(r"""## Gradient flow of over-parameterised students to their minima

K = 4 students learning an M = 2 teacher from random starts: the gradient flow of the
population loss in weight space (`tsjax.gradient_flow`, a stiff solver), then Newton's method
to the critical point (`tsjax.find_minimum`, |∇L| < 10⁻¹²), classified by the Hessian
spectrum. Flat directions: rotations of W orthogonal to the teachers, which leave Q and R
unchanged.""")

code("""K4, M2, N_F = 4, 2, 10 if FAST else 30
times = np.concatenate([[0.0], np.geomspace(0.1, 1e3, 60)])
fig, ax = plt.subplots(figsize=(5, 3.6))
t0 = time.perf_counter()
for seed in range(3 if FAST else 8):
    k = jax.random.key(100 + seed)
    teacher = tsjax.init_teacher(k, N_F, M2)
    student = tsjax.init_student(jax.random.fold_in(k, 1), N_F, K4)
    end, tr = tsjax.gradient_flow(student, teacher, times=times)
    at, cp = tsjax.find_minimum(end, teacher)
    ax.loglog(times[1:], tr.eg[1:], label=f"{cp.kind}, L = {cp.loss:.1e}")
    print(f"seed {seed}: {cp.kind} (index {cp.index}), loss {cp.loss:.3e}, "
          f"|grad| {cp.grad_norm:.1e}, {cp.n_flat} flat of {cp.eigenvalues.size}")
print(f"{time.perf_counter() - t0:.0f} s")
ax.set(xlabel="t (gradient-flow time)", ylabel="population loss"); ax.legend(fontsize=7)
plt.tight_layout()""")

nb = nbf.v4.new_notebook()
nb["cells"] = cells
nb["metadata"]["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
path = "notebooks/05_fixed_points_and_hessians.ipynb"
nbf.write(nb, path)

if "--execute" in sys.argv:
    import nbclient

    nb = nbf.read(path, as_version=4)
    nbclient.NotebookClient(nb, timeout=3600, kernel_name="python3",
                            resources={"metadata": {"path": "notebooks"}}).execute()  # fmt: skip
    nbf.write(nb, path)
