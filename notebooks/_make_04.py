"""Writes notebooks/04_continual_learning.ipynb (run: python notebooks/_make_04.py)."""

import nbformat as nbf

cells = []
md = lambda s: cells.append(nbf.v4.new_markdown_cell(s))  # noqa: E731
code = lambda s: cells.append(nbf.v4.new_code_cell(s))  # noqa: E731

md(r"""# Continual learning: forgetting, transfer and task similarity

Lee, Goldt & Saxe (ICML 2021, "Continual learning in the teacher-student setup: impact of
task similarity") and Lee, Sarao Mannelli, Clopath, Goldt & Saxe (ICML 2022, "Maslow's
hammer for catastrophic forgetting"): a student learns teacher 1, then the task switches to
teacher 2. How much of task 1 is forgotten, and how much does task 1 help with task 2, as a
function of the teachers' **feature similarity** V (the overlap of their first-layer
weights)?

tsjax describes the two teachers by stacking their hidden units: the overlap matrix
T = [[1, V], [V, 1]] (M = 1 unit each), readouts v* = [[1, 0], [0, 1]] (row p: teacher p).
The student has one head shared by both tasks (**single-head**) or one head per task
(**multi-head**: a sample of task p trains head p only). The order-parameter ODE is exact
for N → ∞; the network simulations at finite N scatter around it by O(1/√N).

Conventions: Goldt et al. (2019), docs/conventions.md: g(x) = erf(x/√2), first-layer step
η/√N, second layer η_v/N, α = steps/N. Here η = η_v = 1, K = 2, students start from weights
and heads of standard deviation 10⁻³ (the setting of the authors' code), and the switch is at
α = 50.""")

code("""%matplotlib inline
import os
os.environ.setdefault("EQX_ON_ERROR", "off")   # so that the ODE programs are cached too (README)
import time
import jax
jax.config.update("jax_enable_x64", True)
import diffrax
import numpy as np
import matplotlib.pyplot as plt
import tsjax
tsjax.enable_compilation_cache()

FAST = os.environ.get("TSJAX_FAST", "0") == "1"   # CI runs the notebook in a fast setting
print("fast setting" if FAST else "full setting", "|", jax.devices())""")

md(r"""## One task switch: ODE and simulations

`tsjax.init_teachers` draws the two teachers with overlap exactly V at finite N;
`init_student(..., heads=H)` gives one head (H = 1) or one per teacher (H = 2). The same
curriculum, `tsjax.TaskSwitch([50.0])`, drives the ODE and the network simulator;
`Trajectory.eg_tasks[:, p]` is the error on teacher p at every save time.""")

code("""N = 500 if FAST else 2000
SEEDS = 3 if FAST else 8
SWITCH, ALPHA_MAX, V = 50.0, 100.0, 0.5
alphas = np.linspace(0, ALPHA_MAX, 51)
alphas_sim = np.linspace(0, ALPHA_MAX, 21)
curriculum = tsjax.TaskSwitch([SWITCH])

def setup(seed, heads):
    k = jax.random.key(seed)
    teachers = tsjax.init_teachers(jax.random.fold_in(k, 0), N=N, M=1, P=2, feature_similarity=V)
    student = tsjax.init_student(jax.random.fold_in(k, 1), N, 2, scale=1e-3, v=1e-3, heads=heads)
    return student, teachers

t0 = time.perf_counter()
runs = {}
for heads in (1, 2):
    student, teachers = setup(0, heads)
    ode = tsjax.solve_ode(tsjax.order_params(student, teachers), lr=1.0, lr_v=1.0,
                          alphas=alphas, curriculum=curriculum)
    sims = [tsjax.simulate(*setup(s, heads), jax.random.key(100 + s), lr=1.0, lr_v=1.0,
                           alphas=alphas_sim, curriculum=curriculum).eg_tasks
            for s in range(SEEDS)]
    runs[heads] = ode, np.stack(sims)
print(f"{time.perf_counter() - t0:.0f} s")
print("realised overlaps:", tsjax.teacher_overlaps(teachers)["feature"][0, 1])""")

code("""fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
for ax, heads in zip(axes, (1, 2)):
    ode, sims = runs[heads]
    for p, c in ((0, "C0"), (1, "C3")):
        ax.semilogy(ode.alpha, ode.eg_tasks[:, p], c, label=f"teacher {p + 1} (ODE)")
        m, s = sims[:, :, p].mean(0), sims[:, :, p].std(0) / np.sqrt(SEEDS)
        ax.errorbar(alphas_sim, m, s, fmt="o", ms=3, color=c, label=f"teacher {p + 1} (N = {N})")
    ax.axvline(SWITCH, color="gray", ls=":")
    ax.set(title=("single" if heads == 1 else "multi") + f"-head student, V = {V}",
           xlabel=r"$\\alpha$")
axes[0].set_ylabel(r"$\\epsilon_g$ on each teacher")
axes[0].legend(fontsize=8)
plt.tight_layout()""")

md(r"""Before the switch the student learns teacher 1 and, because the teachers overlap
(V = 0.5), also improves on teacher 2 (forward transfer). After the switch the error on
teacher 1 rises (forgetting) while teacher 2 is learnt.

## Forgetting and transfer against feature similarity: one sweep

`tsjax.sweep(teachers=2, feature_similarity=[...], heads=[1, 2], switch_at=50)` runs every
(V, heads, seed) point as one compiled program and returns a labelled `xarray.Dataset` with
`eg_tasks` (…, alpha, task). `tsjax.forgetting_transfer` computes the summaries from a
trajectory; here from the dataset directly.""")

code("""Vs = list(np.round(np.linspace(0, 1, 11 if FAST else 41), 4))
seeds = [0] if FAST else [0, 1, 2, 3]
alphas_sw = np.linspace(0, ALPHA_MAX, 41)
t0 = time.perf_counter()
ds = tsjax.sweep(K=2, M=1, lr=1.0, lr_v=1.0, teachers=2, feature_similarity=Vs, heads=[1, 2],
                 switch_at=SWITCH, init_scale=1e-3, v0=1e-3, seed=seeds, alphas=alphas_sw,
                 N=10_000)
print(f"{ds.status.size} points in {time.perf_counter() - t0:.1f} s; status:",
      np.bincount(ds.status.values.ravel()))
i_s = int(np.searchsorted(alphas_sw, SWITCH))
e1, e2 = ds.eg_tasks.sel(task=0), ds.eg_tasks.sel(task=1)
forgetting = (e1.isel(alpha=-1) - e1.isel(alpha=i_s)).mean("seed")
transfer = (e2.isel(alpha=0) - e2.isel(alpha=i_s)).mean("seed")
ds""")

code("""fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
for heads, c in ((1, "C0"), (2, "C1")):
    label = "single-head" if heads == 1 else "multi-head"
    axes[0].plot(Vs, forgetting.sel(heads=heads), "o-", ms=3, color=c, label=label)
    axes[1].plot(Vs, transfer.sel(heads=heads), "o-", ms=3, color=c, label=label)
axes[0].set(xlabel="feature similarity V",
            ylabel=r"forgetting $\\epsilon_1(\\alpha_F) - \\epsilon_1(\\alpha_s)$")
axes[1].set(xlabel="feature similarity V",
            ylabel=r"transfer $\\epsilon_2(0) - \\epsilon_2(\\alpha_s)$")
axes[0].legend()
plt.tight_layout()
f_multi = forgetting.sel(heads=2).values
f_single = forgetting.sel(heads=1).values
print("multi-head: forgetting is largest at V =", Vs[int(np.argmax(f_multi))],
      "| single-head: monotone decreasing:", bool(np.all(np.diff(f_single) < 0)))""")

md(r"""The single-head student forgets the more the less similar the tasks are (monotone in V).
The multi-head student forgets little when the tasks are orthogonal (V = 0), most at an
intermediate, small similarity, and little again when they are nearly the same: the finding
of Lee et al. (2021).

## Maslow's hammer: node re-use against node activation

Why is intermediate similarity the worst for the multi-head student? After task 1 one
hidden unit carries it (the *specialised* unit) and the other is nearly unused. For
dissimilar tasks, task 2 is learnt by **activating** the unused unit (its weight in head 2
grows) and task 1's unit is left alone; for similar tasks the specialised unit is
**re-used** (its head-2 weight grows and its first-layer weights move), which damages task 1
when the tasks differ. Below: the final head-2 weights of the two units against V.""")

code("""v = ds.v.sel(heads=2)                      # (V, seed, head, k): final heads
spec = np.abs(v.sel(head=0)).argmax("k")   # the unit that carries task 1 (head 1 is frozen
h2 = np.abs(v.sel(head=1))                 # after the switch, so its final value is that at it)
reuse = h2.isel(k=spec).mean("seed")
activate = h2.isel(k=1 - spec).mean("seed")
plt.figure(figsize=(5, 3.6))
plt.plot(Vs, reuse, "o-", ms=3, label="specialised unit (re-use)")
plt.plot(Vs, activate, "s-", ms=3, label="unused unit (activation)")
plt.xlabel("feature similarity V"); plt.ylabel("|head-2 weight| at the end")
plt.legend(); plt.tight_layout()""")

md(r"""## ReLU students

Every activation works the same way; for ReLU tsjax integrates the exact ODE with its
quadrature I4 (the first ReLU continual-learning ODE). The full setting also compares with
simulations.""")

code("""alphas_r = np.linspace(0, 40 if FAST else 100, 21)
cur_r = tsjax.TaskSwitch([alphas_r[-1] / 2])
fig, ax = plt.subplots(figsize=(5, 3.6))
for heads, ls in ((1, "-"),) if FAST else ((1, "-"), (2, "--")):  # fast: one compilation
    k = jax.random.key(0)
    teachers = tsjax.init_teachers(jax.random.fold_in(k, 0), N=N, M=1, P=2, feature_similarity=V,
                                   activation="relu")
    student = tsjax.init_student(jax.random.fold_in(k, 1), N, 2, activation="relu", scale=0.1,
                                 heads=heads)
    tr = tsjax.solve_ode(tsjax.order_params(student, teachers), activation="relu", lr=0.3,
                         lr_v=0.3, alphas=alphas_r, curriculum=cur_r,
                         solver=diffrax.Tsit5() if FAST else None)  # fast: no Jacobian
    for p, c in ((0, "C0"), (1, "C3")):
        ax.semilogy(tr.alpha, tr.eg_tasks[:, p], ls, color=c,
                    label=f"teacher {p + 1}, {'single' if heads == 1 else 'multi'}-head")
ax.axvline(cur_r.switch_at[0], color="gray", ls=":")
ax.set(xlabel=r"$\\alpha$", ylabel=r"$\\epsilon_g$", title=f"ReLU, V = {V}")
ax.legend(fontsize=7); plt.tight_layout()""")

nb = nbf.v4.new_notebook()
nb["cells"] = cells
nb["metadata"]["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nbf.write(nb, "notebooks/04_continual_learning.ipynb")
