"""Writes notebooks/07_double_descent.ipynb (run: python notebooks/_make_07.py [--execute];
with --execute the notebook is executed in place with nbclient, in the fast setting when
TSJAX_FAST=1)."""

import sys

import nbformat as nbf

cells = []
md = lambda s: cells.append(nbf.v4.new_markdown_cell(s))  # noqa: E731
code = lambda s: cells.append(nbf.v4.new_code_cell(s))  # noqa: E731

md(r"""# Epoch-wise double descent in a linear teacher–student model

Pezeshki, Mitra, Bengio & Lajoie ("Multi-scale feature learning dynamics: insights for
double descent", ICML 2022) show that a *linear* student trained by gradient descent on a
finite training set can have a test error that descends, rises and descends again over
training time, when its input features are learned at two speeds.

**The model (the paper's conventions).** Latent inputs z ~ N(0, I_d/d), a linear teacher
y = z·w + σε with w ~ N(0, I_d); the student sees x = Fᵀz, F with singular values 1 (p fast
features) and 1/κ (d − p slow features), so κ is F's condition number — the ratio of the two
kinds of features' *standard deviations*. The student ŷ = x·ŵ is trained from ŵ = 0 by
gradient flow on ½‖Xŵ − y‖² over n samples; the test error is the noise-free population
error E(t) = E_z[(x·ŵ(t) − z·w)²].

**tsjax.** `tsjax.linear_gd_error(X, y, teacher=..., input_cov=..., times=...)` gives the
exact E(t) of one training set from one SVD of X, with no time stepping (gradient flow, or
discrete steps with `lr=`); `tsjax.linear_gd_average` averages it over sampled training sets
in one vmapped program; `tsjax.linear_gd_error_limit` is the paper-style large-n, large-d
approximation (the time–ridge correspondence λ ≈ 1/t with the proportional limit of ridge
regression). docs/double_descent.md has the formulas.""")

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
N_DATA = 16 if FAST else 500
t = np.geomspace(0.05, 1e7, 40 if FAST else 150)

def limit(n, d, p, kappa, sigma=0.0):
    f = np.r_[np.ones(p), np.full(d - p, 1.0 / kappa)]
    lim = tsjax.linear_gd_error_limit(t, n=n, eigenvalues=f**2 / d,
                                      teacher_energy=np.full(d, 1.0 / d), sigma=sigma)
    return np.asarray(lim)""")

md(r"""## The paper's Figure 1 setting, and the role of κ

n = 130, d = 100, p = 70, σ = 0. Lines: the large-n, d approximation; points: the exact
curves averaged over sampled training sets (error bars: standard error).""")

code("""n, d, p = 130, 100, 70
fig, ax = plt.subplots(figsize=(6.5, 4.2))
t0 = time.perf_counter()
avg = {}
for i, kappa in enumerate([1.0, 10.0, 100.0]):
    F = tsjax.two_scale_modulation(d, p, kappa)
    m, se = tsjax.linear_gd_average(jax.random.key(i), n, F, times=t, n_datasets=N_DATA)
    avg[kappa] = (np.asarray(m), np.asarray(se))
    ax.errorbar(t[::3], m[::3], se[::3], fmt="o", ms=3, color=f"C{i}", label=f"κ = {kappa:g}")
    ax.semilogx(t, limit(n, d, p, kappa), color=f"C{i}", lw=1)
print(f"{3 * N_DATA} exact curves: {time.perf_counter() - t0:.1f} s")
ax.set(xscale="log", xlabel="training time t", ylabel="test error E(t)",
       title="n = 130, d = 100, p = 70, σ = 0")
ax.legend()
plt.tight_layout()
m = avg[100.0][0]
i_min = next(k for k in range(1, len(m) - 1) if m[k] < m[k - 1] and m[k] <= m[k + 1])
i_max = i_min + int(np.argmax(m[i_min:]))
print(f"kappa = 100: first minimum {m[i_min]:.3f} at t = {t[i_min]:.3g}, maximum {m[i_max]:.3f} "
      f"at t = {t[i_max]:.3g}, final {m[-1]:.2e}")""")

md(r"""With κ = 1 (one feature scale) the error descends monotonically; with κ = 100 the fast
features are fitted first (first descent), the fit of the fast features then overfits the
part of the labels carried by the not-yet-learned slow features (the rise), and the slow
features are learned on a time scale κ² later (second descent).

## Fast and slow features

The paper's overlaps R = wᵀFŵ/d and Q = ‖Fŵ‖²/d (E = Q − 2R + ‖w‖²/d), split into the
fast and the slow features, for one training set at κ = 100
(`tsjax.linear_gd_order_params`).""")

code("""F = tsjax.two_scale_modulation(d, p, 100.0)
task = tsjax.sample_linear_task(jax.random.key(7), n, F)
op = {k: np.asarray(v) for k, v in tsjax.linear_gd_order_params(task, times=t, fast=p).items()}
fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
for k, ls in (("R_fast", "-"), ("R_slow", "--")):
    ax[0].semilogx(t, op[k], ls, label=k)
for k, ls in (("Q_fast", "-"), ("Q_slow", "--")):
    ax[0].semilogx(t, op[k], ls, label=k)
ax[0].set(xlabel="t", ylabel="overlap", title="one training set, κ = 100")
ax[0].legend(fontsize=8)
ax[1].semilogx(t, op["E"], "k")
ax[1].set(xlabel="t", ylabel="E(t)")
plt.tight_layout()""")

md(r"""## The ratio n/d, and label noise

Epoch-wise double descent against n/d (κ = 100, σ = 0), and the classical U shape of a
single feature scale with label noise (κ = 1, σ = 0.5): one minimum, then overfitting.""")

code("""fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
for i, ratio in enumerate([0.8, 1.3, 3.0]):
    n_ = int(ratio * d)
    F = tsjax.two_scale_modulation(d, p, 100.0)
    m, se = tsjax.linear_gd_average(jax.random.key(10 + i), n_, F, times=t, n_datasets=N_DATA)
    ax[0].semilogx(t, m, "o", ms=2, color=f"C{i}", label=f"n/d = {ratio:g}")
    ax[0].semilogx(t, limit(n_, d, p, 100.0), color=f"C{i}", lw=1)
ax[0].set(xlabel="t", ylabel="E(t)", title="κ = 100, σ = 0")
ax[0].legend(fontsize=8)
for i, sigma in enumerate([0.0, 0.5]):
    F = tsjax.two_scale_modulation(d, p, 1.0)
    m, se = tsjax.linear_gd_average(jax.random.key(20 + i), n, F, times=t, sigma=sigma,
                                    n_datasets=N_DATA)
    ax[1].semilogx(t, m, "o", ms=2, color=f"C{i}", label=f"σ = {sigma:g}")
    ax[1].semilogx(t, limit(n, d, p, 1.0, sigma), color=f"C{i}", lw=1)
ax[1].set(xlabel="t", ylabel="E(t)", title="κ = 1, n/d = 1.3")
ax[1].legend(fontsize=8)
plt.tight_layout()""")

md(r"""## How approximate is the large-n, d formula?

The approximation has one source that does not vanish with size: gradient flow's filter
1 − e^{−st} is replaced by ridge's s/(s + 1/t). Against averages of exact curves as n and d
grow with n/d = 1.3, p/d = 0.7, κ = 100, the largest deviation stays between 0.05 and 0.09
(around t ≈ 13, between the first minimum and the peak, or in the algebraic tail) and does
not shrink with d: the formula is a qualitative guide, the exact averaged curves are the
reference.""")

code("""sizes = [100] if FAST else [100, 200, 400, 800, 1600]
rows = []
for d_ in sizes:
    n_, p_ = int(1.3 * d_), int(0.7 * d_)
    F = tsjax.two_scale_modulation(d_, p_, 100.0)
    nd = max(8, (2000 if FAST else 20000) // d_)
    m, se = (np.asarray(x) for x in tsjax.linear_gd_average(jax.random.key(d_), n_, F, times=t,
                                                             n_datasets=nd))
    L = limit(n_, d_, p_, 100.0)
    i = int(np.argmax(np.abs(m - L)))
    rows.append((d_, nd, np.abs(m - L).max(), t[i], se.max()))
    print(f"d = {d_:5d} ({nd:4d} datasets): max |average - formula| = {rows[-1][2]:.3f} at "
          f"t = {t[i]:.3g}; largest standard error {se.max():.3f}")""")

md(r"""**Summary.** Epoch-wise double descent needs two feature scales: the exact curves of
`tsjax.linear_gd_error`, averaged over training sets, reproduce the paper's Figure 1 (first
minimum, peak, second descent) and its absence for κ = 1; the large-n, d formula captures
the shape, within 0.05–0.09.""")

nb = nbf.v4.new_notebook()
nb["cells"] = cells
nb["metadata"]["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
path = "notebooks/07_double_descent.ipynb"
nbf.write(nb, path)

if "--execute" in sys.argv:
    import nbclient

    nb = nbf.read(path, as_version=4)
    nbclient.NotebookClient(nb, timeout=3600, kernel_name="python3",
                            resources={"metadata": {"path": "notebooks"}}).execute()  # fmt: skip
    nbf.write(nb, path)
