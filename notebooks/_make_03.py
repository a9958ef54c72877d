"""Writes notebooks/03_schedule_optimisation.ipynb (run: python notebooks/_make_03.py
[--execute]; with --execute the notebook is executed in place with nbclient, in the fast
setting when TSJAX_FAST=1)."""

import sys

import nbformat as nbf

cells = []
md = lambda s: cells.append(nbf.v4.new_markdown_cell(s))
code = lambda s: cells.append(nbf.v4.new_code_cell(s))

md(r"""# Optimising the learning-rate schedule by differentiating the dynamics

Everything in tsjax is written in JAX, so the learning curve ε_g(α) predicted by the
order-parameter ODE is a differentiable function of the learning-rate schedule η(α). Instead
of deriving optimal-control equations by hand, we can minimise the final generalisation
error over a flexible family of schedules by gradient descent (`tsjax.optimise_schedule`,
reverse mode through the Rosenbrock solver with a checkpointed adjoint).

**Setup** (issue #4): erf soft committee machine, K = M = 2, second layer fixed
(v = v* = 1, lr_v = 0), output noise σ = 0.1, training budget α_max = 500. The student
starts from random weights at N = 1000, so its overlaps with the teacher are
R = O(1/√N) and it has to cross the symmetric plateau before it can specialise.

With noise, a constant learning rate cannot reach ε_g → 0: the asymptotic error is
proportional to η σ². A large η escapes the plateau fast but leaves a large noise floor; a
small η has a low floor but a long plateau. A schedule can have both. We compare

1. the best **constant** learning rate (fine sweep),
2. the best **inverse-time** schedule η₀ / (1 + α/α₀) (sweep over η₀ and α₀),
3. an **optimised** `LogGridSchedule`: a positive, bounded piecewise power law on 32
   log-spaced knots (η = η_max sigmoid(θ) at the knots), trained with Adam,

first in the ODE (N → ∞), then in online SGD of the real networks at N = 1000.""")

code("""%matplotlib inline
import os
os.environ.setdefault("EQX_ON_ERROR", "off")   # so that the ODE programs are cached too (README)
import time
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import numpy as np
import matplotlib.pyplot as plt
import optax
import tsjax
tsjax.enable_compilation_cache()   # compiled programs are reused by later runs

FAST = os.environ.get("TSJAX_FAST", "0") == "1"   # CI runs the notebook in a fast setting
print("fast setting (CI)" if FAST else "full setting")
N = 1000
SIGMA = 0.1
ALPHA_MAX = 500.0
if FAST:  # a shorter budget and an explicit solver (its gradient compiles faster)
    import diffrax
    ALPHA_MAX = 200.0
    SOLVER = diffrax.Tsit5()
else:
    SOLVER = None                    # the default, Rodas5P
ETA_MAX = 4.0                        # bound of the learning rate for every schedule
N_SIM = 200 if FAST else 1000        # simulation: input dimension ...
SEEDS = 4 if FAST else 16            # ... and number of SGD seeds
OPT_STEPS = 5 if FAST else 200       # Adam steps of the schedule optimisation
RTOL, ATOL = (1e-6, 1e-9) if FAST else (1e-8, 1e-11)
ODE = dict(noise=SIGMA, rtol=RTOL, atol=ATOL, solver=SOLVER)

key_teacher, key_student, key_sgd = jax.random.split(jax.random.key(0), 3)
teacher = tsjax.init_teacher(key_teacher, N, 2)
student = tsjax.init_student(key_student, N, 2)
op0 = tsjax.order_params(student, teacher)
print("initial R =\\n", np.asarray(op0.R), "\\ninitial Q =\\n", np.asarray(op0.Q))""")

md(r"""## (a) The best constant learning rate

`solve_ode` is vmapped over the learning rate; with `throw=False` a rate for which the ODE
diverges is flagged (`result`, NaN values) instead of raising, and is excluded.""")

code("""alphas_end = np.array([0.0, ALPHA_MAX])

def final_eg(lr):
    return tsjax.solve_ode(op0, lr=lr, alphas=alphas_end, throw=False, **ODE).eg[-1]

t0 = time.perf_counter()
etas = np.linspace(0.05, ETA_MAX, 16 if FAST else 160)
eg_const = np.asarray(jax.jit(jax.vmap(final_eg))(etas))
i = np.nanargmin(eg_const)
eta_best = etas[i]
# refine around the best value
fine = np.linspace(etas[max(i - 1, 0)], etas[min(i + 1, len(etas) - 1)], 11 if FAST else 81)
eg_fine = np.asarray(jax.jit(jax.vmap(final_eg))(fine))
j = np.nanargmin(eg_fine)
eta_best, eg_best_const = fine[j], eg_fine[j]
print(f"best constant lr: eta = {eta_best:.4f}, final eps_g = {eg_best_const:.4e} "
      f"({time.perf_counter() - t0:.1f} s)")""")

md(r"""## (b) The best inverse-time schedule η₀ / (1 + α/α₀)""")

code("""t0 = time.perf_counter()
e0 = np.linspace(0.2, ETA_MAX, 6 if FAST else 40)
a0 = np.geomspace(1.0, 1000.0, 6 if FAST else 40)
E0, A0 = np.meshgrid(e0, a0, indexing="ij")
inv = jax.jit(jax.vmap(lambda e, a: final_eg(tsjax.InverseTime(e, a))))
eg_inv = np.asarray(inv(E0.ravel(), A0.ravel())).reshape(E0.shape)
k = np.unravel_index(np.nanargmin(eg_inv), eg_inv.shape)
best_inv = tsjax.InverseTime(E0[k], A0[k])
eg_best_inv = eg_inv[k]
print(f"best inverse-time: eta0 = {E0[k]:.3f}, alpha0 = {A0[k]:.2f}, final eps_g = "
      f"{eg_best_inv:.4e} ({time.perf_counter() - t0:.1f} s)")""")

md(r"""## (c) Optimised schedule

The flexible family `LogGridSchedule` starts from the best inverse-time schedule (fitted at
its 32 knots, α from 1 to 500) and is optimised with Adam on the objective
ε_g(α_max). Each step is one reverse-mode gradient through the ODE solve; steps that would
make the ODE diverge are rejected and retried with a halved update (none are needed here,
but the bound η ≤ η_max = 4 allows divergent schedules).""")

code("""t0 = time.perf_counter()
sched0 = tsjax.LogGridSchedule.fit(best_inv, alpha_max=ALPHA_MAX, eta_max=ETA_MAX, n_knots=32)
opt_sched, hist = tsjax.optimise_schedule(
    op0, sched0, alpha_max=ALPHA_MAX, eta_max=ETA_MAX, objective="final",
    optimizer=optax.adam(0.05), steps=OPT_STEPS, progress=False, **ODE)
eg_opt = hist["loss"][int(hist["best_step"])]
print(f"optimised: final eps_g = {eg_opt:.4e} after {len(hist['loss']) - 1} steps "
      f"({hist['rejected'].sum()} rejected) ({time.perf_counter() - t0:.1f} s)")

fig, ax = plt.subplots(figsize=(5.5, 3.5))
ax.semilogy(hist["loss"])
ax.axhline(eg_best_const, color="C1", ls="--", label="best constant")
ax.axhline(eg_best_inv, color="C2", ls="--", label="best inverse-time")
ax.set_xlabel("Adam step"); ax.set_ylabel(r"$\\epsilon_g(\\alpha_{max})$ (ODE)")
ax.legend(); plt.tight_layout(); plt.show()""")

code("""print(f"final eps_g at alpha = {ALPHA_MAX:g} (ODE, N -> infinity):")
print(f"  (a) best constant      eta = {eta_best:.4f}              : {eg_best_const:.4e}")
print(f"  (b) best inverse-time  eta0 = {E0[k]:.3f}, alpha0 = {A0[k]:7.2f}: {eg_best_inv:.4e}")
print(f"  (c) optimised LogGridSchedule                      : {eg_opt:.4e}")
print(f"  (c)/(a) = {eg_opt / eg_best_const:.3f},  (c)/(b) = {eg_opt / eg_best_inv:.3f}")""")

md(r"""## Learning curves and schedule shapes (ODE)""")

code("""alphas = np.concatenate([[0.0], np.geomspace(0.1, ALPHA_MAX, 300)])
schedules = {f"constant η = {eta_best:.3f}": eta_best,
             f"inverse-time η₀ = {E0[k]:.2f}, α₀ = {A0[k]:.1f}": best_inv,
             "optimised": opt_sched}
curves = {name: tsjax.solve_ode(op0, lr=s, alphas=alphas, **ODE) for name, s in schedules.items()}

# log-log slope of the optimised schedule over the last decade of alpha
late = np.geomspace(ALPHA_MAX / 10, ALPHA_MAX, 50)
slope = np.polyfit(np.log(late), np.log(np.asarray(opt_sched(late))), 1)[0]
print(f"log-log slope of the optimised schedule on [{ALPHA_MAX / 10:g}, {ALPHA_MAX:g}]: "
      f"{slope:.2f}")
# where the optimised student specialises (eps_g of the ODE below 1e-3), and the local slopes
eg_opt_curve = np.asarray(curves["optimised"].eg)
alpha_spec = alphas[np.argmax(eg_opt_curve < 1e-3)]
print(f"specialisation (eps_g < 1e-3) at alpha = {alpha_spec:.0f}")
kn, va = np.asarray(opt_sched.alpha_knots), np.asarray(opt_sched.values)
local = np.diff(np.log(va)) / np.diff(np.log(kn))
print("knot alpha, eta, local log-log slope to the next knot (last decade):")
for a_, e_, s_ in zip(kn[:-1], va[:-1], local):
    if a_ >= ALPHA_MAX / 10:
        print(f"  {a_:7.1f}  {e_:.4f}  {s_:6.2f}")

fig, axes = plt.subplots(1, 2, figsize=(12, 4))
for c, (name, tr) in enumerate(curves.items()):
    axes[0].loglog(alphas[1:], tr.eg[1:], color=f"C{c + 1}", label=name)
    s = schedules[name]
    eta = np.full_like(alphas, s) if np.isscalar(s) else np.asarray(s(alphas))
    axes[1].loglog(alphas[1:], eta[1:], color=f"C{c + 1}", label=name)
ref = np.geomspace(ALPHA_MAX / 10, ALPHA_MAX, 10)
axes[1].loglog(ref, 1.5 * float(opt_sched(ref[0])) * ref[0] / ref, "k:",
               label=r"$\\propto 1/\\alpha$")
axes[1].plot(opt_sched.alpha_knots, opt_sched.values, "C3o", ms=3)
axes[0].set_xlabel(r"$\\alpha$"); axes[0].set_ylabel(r"$\\epsilon_g$ (ODE)")
axes[0].set_title("learning curves, σ = 0.1"); axes[0].legend(fontsize=8)
axes[1].set_xlabel(r"$\\alpha$"); axes[1].set_ylabel(r"$\\eta(\\alpha)$")
axes[1].set_title(f"schedules (optimised: slope {slope:.2f} over the last decade)")
axes[1].legend(fontsize=8)
plt.tight_layout(); plt.show()""")

md(r"""## Does it help the real thing? Online SGD at finite N

The schedules were optimised for the N → ∞ ODE started from the order parameters of one
student. Now we run online SGD of the actual networks (N = 1000 in the full setting, the same
initial student and teacher, 16 independent SGD seeds) with the best constant rate and with
the optimised schedule, and compare the mean final ε_g with its standard error.""")

code("""t0 = time.perf_counter()
if N_SIM == N:
    t_sim, s_sim = teacher, student
else:  # fast setting: a smaller N
    t_sim = tsjax.init_teacher(key_teacher, N_SIM, 2)
    s_sim = tsjax.init_student(key_student, N_SIM, 2)
alphas_sim = np.linspace(0.0, ALPHA_MAX, 101)
keys = jax.random.split(key_sgd, SEEDS)

def run(lr):
    f = jax.jit(lambda k: tsjax.simulate(s_sim, t_sim, k, lr=lr, noise=SIGMA, alphas=alphas_sim).eg)
    return np.asarray(jax.lax.map(f, keys))

sim = {"constant": run(eta_best), "optimised": run(opt_sched)}
for name, eg in sim.items():
    fin = eg[:, -1]
    print(f"SGD N = {N_SIM}, {SEEDS} seeds, {name:9s}: final eps_g = {fin.mean():.4e} "
          f"± {fin.std(ddof=1) / np.sqrt(SEEDS):.1e} (mean ± s.e.)")
d = sim["constant"][:, -1] - sim["optimised"][:, -1]
print("per seed, optimised:", np.array2string(sim["optimised"][:, -1], precision=6))
print(f"difference constant - optimised: {d.mean():.3e} ± {d.std(ddof=1) / np.sqrt(SEEDS):.1e} "
      f"({d.mean() / (d.std(ddof=1) / np.sqrt(SEEDS)):.1f} standard errors; "
      f"{time.perf_counter() - t0:.1f} s)")""")

code("""op_sim = tsjax.order_params(s_sim, t_sim)
ode_sim = {"constant": tsjax.solve_ode(op_sim, lr=eta_best, alphas=alphas_sim, **ODE),
           "optimised": tsjax.solve_ode(op_sim, lr=opt_sched, alphas=alphas_sim, **ODE)}
fig, ax = plt.subplots(figsize=(6.5, 4))
for c, name in [(1, "constant"), (3, "optimised")]:
    eg = sim[name]
    m, se = eg.mean(0), eg.std(0, ddof=1) / np.sqrt(SEEDS)
    ax.plot(alphas_sim, m, color=f"C{c}", label=f"SGD, {name} (mean of {SEEDS})")
    ax.fill_between(alphas_sim, m - se, m + se, color=f"C{c}", alpha=0.3)
    ax.plot(alphas_sim, ode_sim[name].eg, color=f"C{c}", ls="--", label=f"ODE, {name}")
ax.set_yscale("log"); ax.set_xlabel(r"$\\alpha$"); ax.set_ylabel(r"$\\epsilon_g$")
ax.set_title(f"online SGD, N = {N_SIM}, σ = {SIGMA}")
ax.legend(fontsize=8); plt.tight_layout(); plt.show()""")

md(r"""## A longer budget: the 1/α phase of the optimal schedule

With α_max = 500 the student specialises at α ≈ 165, so the last decade of the budget mixes
the end of the plateau phase with the final annealing (discussion below). To see the
late-time law, the same optimisation is run with a ten times longer budget, α_max = 5000,
starting from a *constant* rate (η = 0.5 on 40 knots), so that no decay is put in by hand.
Between specialisation and the final annealing the optimised schedule should follow η ≈ c/α,
i.e. α η ≈ const and a log-log slope of −1.""")

code("""ALPHA_LONG = 1000.0 if FAST else 5000.0
t0 = time.perf_counter()
sched_long0 = tsjax.LogGridSchedule.fit(0.5, alpha_max=ALPHA_LONG, eta_max=ETA_MAX, n_knots=40)
sched_long, hist_long = tsjax.optimise_schedule(
    op0, sched_long0, alpha_max=ALPHA_LONG, eta_max=ETA_MAX, objective="final",
    optimizer=optax.adam(0.1), steps=OPT_STEPS, progress=False, **ODE)
tr_long = tsjax.solve_ode(op0, lr=sched_long, alphas=np.geomspace(1.0, ALPHA_LONG, 400), **ODE)
print(f"{OPT_STEPS} Adam steps in {time.perf_counter() - t0:.0f} s; final eps_g "
      f"{hist_long['loss'][0]:.3e} (constant 0.5) -> {float(tr_long.eg[-1]):.3e}")
eg_long = np.asarray(tr_long.eg)
alpha_spec = float(tr_long.alpha[np.argmax(eg_long < 1e-3)]) if np.any(eg_long < 1e-3) else 1.0
lo = 3 * alpha_spec if 3 * alpha_spec < ALPHA_LONG / 6 else ALPHA_LONG / 30  # (fast setting)
mid = np.geomspace(lo, ALPHA_LONG / 3, 50)                    # after specialisation, before the end
last = np.geomspace(ALPHA_LONG / 10, ALPHA_LONG, 50)          # the last decade
eta_mid = np.asarray(sched_long(mid))
slope_mid = np.polyfit(np.log(mid), np.log(eta_mid), 1)[0]
slope_last = np.polyfit(np.log(last), np.log(np.asarray(sched_long(last))), 1)[0]
c_fit = float(np.exp(np.mean(np.log(mid * eta_mid))))
print(f"specialised (eps_g < 1e-3) at alpha = {alpha_spec:.0f}")
print(f"log-log slope on [3 alpha_spec, alpha_max/3] = [{mid[0]:.0f}, {mid[-1]:.0f}]: "
      f"{slope_mid:.2f}  (alpha eta = {mid[0] * eta_mid[0]:.1f} .. "
      f"{mid[-1] * eta_mid[-1]:.1f}, geometric mean {c_fit:.1f})")
print(f"log-log slope over the last decade [{last[0]:.0f}, {last[-1]:.0f}]: {slope_last:.2f}")

fig, axes = plt.subplots(1, 2, figsize=(11, 4))
a_plot = np.geomspace(1.0, ALPHA_LONG, 400)
axes[0].loglog(a_plot, np.asarray(sched_long(a_plot)),
               label="optimised, alpha_max = %g" % ALPHA_LONG)
axes[0].loglog(mid, c_fit / mid, "k--", label=f"{c_fit:.0f} / alpha (fit on the middle window)")
axes[0].axvspan(mid[0], mid[-1], color="0.9")
axes[0].set_xlabel("alpha"); axes[0].set_ylabel("eta(alpha)")
axes[0].set_title(f"slope {slope_mid:.2f} on the shaded window, "
                  f"{slope_last:.2f} on the last decade")
axes[0].legend(fontsize=8)
axes[1].loglog(np.asarray(tr_long.alpha), eg_long, label="optimised schedule")
i_mid = min(np.searchsorted(np.asarray(tr_long.alpha), mid[0]), len(eg_long) - 1)
axes[1].loglog(mid, eg_long[i_mid] * mid[0] / mid, "k--",
               label="1 / alpha")
axes[1].set_xlabel("alpha"); axes[1].set_ylabel("eps_g (ODE)"); axes[1].legend(fontsize=8)
plt.tight_layout(); plt.show()""")

md(r"""## Discussion: the late-time decay of the optimal schedule

With output noise, the error at late times is a balance between the contraction towards the
teacher (∝ η) and the noise injected by each step (∝ η² σ²). Minimising the error at every
time gives η(α) ∝ 1/α asymptotically (Saad & Rattray 1997 for the soft committee machine;
d'Ascoli, Refinetti & Biroli 2022 for optimal protocols), with ε_g ∝ 1/α instead of the
noise floor ∝ η σ² of a constant rate.

The optimised schedule (full setting, numbers printed above) has two phases. It stays at a
large rate, η ≈ 1.5, more than four times the best constant rate, through the plateau, so
the student escapes and specialises much earlier; from α ≈ 100 on it decays. The log-log
slope over the last decade of the budget, [50, 500], is about −2.4, clearly steeper than the
asymptotic −1. This is not a contradiction:

* the decade [50, 500] is not asymptotic. The rate starts to decay at α ≈ 100 and the
  student reaches ε_g < 10⁻³ only at α ≈ 165, so less than half a decade of the budget lies
  in the late phase where the 1/α argument applies; the fitted decade mixes the end of the
  large-rate plateau phase with the decay;
* the objective is ε_g at the *horizon* α_max, not at all times. A schedule that knows the
  horizon anneals over the last part of the budget: the steepest drop (local slopes of −6
  to −7 between the knots at α ≈ 270 and 410) comes shortly before α_max, far below the
  1/α line; a late, small learning rate averages out the noise injected earlier.

With the ten times longer budget (previous section, full setting) the optimised schedule,
started from a constant rate, shows the 1/α law directly: after specialisation (α ≈ 200)
and up to α_max/3 the product α η stays between about 22 and 30 and the fitted log-log
slope is ≈ −1.2, close to the asymptotic −1 (the knots are still drifting slowly after 200
Adam steps, and the window starts only a factor three after specialisation). The final
annealing is again confined to the last factor of 2–3 before the horizon, so a fit over the
whole last decade ([500, 5000]) gives ≈ −2.6: the slope over the *last decade* is not the
right diagnostic of the 1/α law for a finite-horizon objective; the window between
specialisation and the annealing is. (The last knots are not converged after 200 Adam steps:
η dips to ~1e-5 and rises again over the final fifth of the budget, which lifts ε_g a little
at the very end; the loss was still decreasing slowly. This does not touch the 1/α window.)

In online SGD at N = 1000 the optimised schedule, tuned on the ODE of the same initial
condition, keeps its advantage: the mean final ε_g over 16 seeds is more than an order of
magnitude below that of the best constant rate, about 20 standard errors apart, and close to
the ODE prediction. The escape time from the plateau fluctuates at finite N (the ODE has no
such noise); a seed that escapes late would specialise after the rate has decayed, which is
the main risk of a schedule tuned to one deterministic trajectory.""")

md(r"""## The optimal protocol, with a certificate

With no schedule given, `tsjax.optimise_schedule` computes the optimal protocol as a direct
optimal-control method does (Mignacco & Mori 2025: CasADi, CVODES and ipopt), but with exact
adjoint gradients: a piecewise-constant control on 100 uniform intervals of [0, α_F], started
from the best constant rate and optimised by L-BFGS-B under 0 ≤ η ≤ η_max until the projected
gradient vanishes. The history carries a **certificate** from Pontryagin's principle: the
switching function S(α) = ∂ε_g(α_F)/∂η(α) must vanish where 0 < η < η_max and point
outwards on the bounds; its largest violation (relative to S of the best constant rate) is
`hist["certificate"]`.

The case below is the one whose optimum the optimal-control code computed (erf perceptron,
K = M = 1, σ = 0.3, Q₀ = 0.25, η ≤ 3, α_F = 50; `tests/data/optimal/`): 1.048151249·10⁻³,
against 2.61·10⁻³ for the best constant rate and 1.080·10⁻³ for the best η₀/(1 + α/α₀).""")

code("""op_p = tsjax.OrderParams([[0.25]], [[0.0]], [[1.0]], [1.0], [1.0])
t0 = time.perf_counter()
proto, hist_p = tsjax.optimise_schedule(op_p, alpha_max=50.0, eta_max=3.0, noise=0.3,
                                        progress=False, solver=SOLVER, rtol=RTOL, atol=ATOL)
t_opt = time.perf_counter() - t0
eps_opt = float(tsjax.solve_ode(op_p, lr=proto, noise=0.3, alphas=np.array([0.0, 50.0]),
                                rtol=1e-11, atol=1e-14).eg[-1])
oc = np.loadtxt("../tests/data/optimal/perceptron_optimal_lr.tsv", comments="#")
print(f"{t_opt:.0f} s; eps_g(50) = {eps_opt:.9e}, optimal control 1.048151249e-03 "
      f"({eps_opt / 1.048151249e-3 - 1:+.1e}); best constant {hist_p['best_constant'][1]:.3e}; "
      f"certificate {float(hist_p['certificate']):.1e}, converged {bool(hist_p['converged'])}")
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
axes[0].step(0.5 * (oc[:, 0] + oc[:, 1]), oc[:, 2], where="mid", lw=3, alpha=0.4,
             label="optimal control (CasADi/ipopt)")
a_mid, S = tsjax.switching_function(hist_p)
axes[0].step(a_mid, proto.values, where="mid", label="tsjax.optimise_schedule")
axes[0].plot(a_mid, 3.2 / a_mid, "k:", label=r"$3.2/\\alpha$")
axes[0].set(xlabel=r"$\\alpha$", ylabel=r"$\\eta(\\alpha)$", ylim=(0, 2), title="protocol")
axes[0].legend(fontsize=8)
tsjax.plot_certificate(hist_p, ax=axes[1])
plt.tight_layout()""")

md(r"""The two protocols coincide interval by interval, tsjax's final error matches the
optimal-control optimum to about 10⁻⁶ (slightly below it: its integration is exact), and the
switching function is zero to the solver's accuracy along the whole protocol, which is the
first-order optimality condition of the continuous-time problem restricted to this control
grid. At the best constant rate the same certificate is of order 1.""")

nb = nbf.v4.new_notebook()
nb["cells"] = cells
nb["metadata"]["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
path = "notebooks/03_schedule_optimisation.ipynb"
nbf.write(nb, path)

if "--execute" in sys.argv:
    import nbclient

    nb = nbf.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=3600, kernel_name="python3", resources={"metadata": {"path": "notebooks"}}
    )
    client.execute()
    nbf.write(nb, path)
