"""Writes notebooks/10_rl_perceptron.ipynb (run: python notebooks/_make_10.py [--execute];
with --execute the notebook is executed in place with nbclient, in the fast setting when
TSJAX_FAST=1)."""

import sys

import nbformat as nbf

cells = []
md = lambda s: cells.append(nbf.v4.new_markdown_cell(s))  # noqa: E731
code = lambda s: cells.append(nbf.v4.new_code_cell(s))  # noqa: E731

md(r"""# The RL perceptron: exact learning curves, penalties and optimal schedules

Patel, Lee, Sarao Mannelli, Goldt & Saxe ("The RL Perceptron: Generalisation Dynamics of
Policy Learning in High Dimensions", Phys. Rev. X 15, 021051, 2025) give the simplest model
of reinforcement learning with sparse, delayed rewards whose learning curves are exact: a
perceptron policy w takes T binary decisions y_t = sign(w·x_t/√N) per episode on fresh
Gaussian inputs, and the episode is rewarded only if at least n of them agree with a
teacher w*. Learning is reward-modulated Hebbian:

w ← w + (c/√N) (1/T) Σ_t y_t x_t,  c = η if rewarded, c = −penalty otherwise.

In tsjax this is a learning rule of the learning problem, `tsjax.RLPerceptron(episode_length=T,
min_correct=n, penalty=…)`, with activation `"sign"`; `solve_ode` integrates its exact
N → ∞ ODE for R = w·w*/N and Q = w·w/N (docs/rules.md), `simulate` runs the episodes of the
real networks and `simulate_order_params` the exact finite-N chain. Conventions: one step of
tsjax's clock is one episode, α = episodes/N, T_teacher = 1. The error of one decision is
arccos(R/√Q)/π (`tsjax.decision_error`); tsjax's ε_g of sign outputs is twice it.""")

code("""%matplotlib inline
import os
os.environ.setdefault("EQX_ON_ERROR", "off")   # so that the ODE programs are cached too (README)
import time
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import numpy as np
import matplotlib.pyplot as plt
import diffrax
import tsjax
tsjax.enable_compilation_cache()

FAST = os.environ.get("TSJAX_FAST", "0") == "1"   # CI runs the notebook in a fast setting
print("fast setting" if FAST else "full setting", "|", jax.devices())
OP0 = tsjax.OrderParams(Q=[[1.0]], R=[[0.0]], T=[[1.0]], v=[1.0], v_star=[1.0])
# fast setting: an explicit solver for the optimisations (its gradient compiles faster)
OPT = dict(solver=diffrax.Tsit5(), rtol=1e-7, atol=1e-10) if FAST else {}

def err(rule, lr=1.0, alphas=np.linspace(0, 10, 101), op=OP0, **kw):
    tr = tsjax.solve_ode(op, activation="sign", rule=rule, lr=lr, alphas=alphas, **kw)
    return np.asarray(tsjax.decision_error(tr))""")

md(r"""## Learning curves: the ODE against simulations of the episodes

Several episode lengths T and reward rules, from R = 0, Q = 1 with η = 1 and no penalty.
Lines: the ODE; points: means over seeds of the network simulator at N = 1000 (every
episode drawn: T inputs of dimension N), with their standard errors. The last rule is
`tsjax.DecisionRewards(discount=0.5)`: every decision is rewarded on its own and credited
with the discounted return of the rest of the episode.""")

code("""N = 200 if FAST else 1000
SEEDS = 2 if FAST else 8
AL = np.linspace(0, 8, 5 if FAST else 9)
AL_ODE = np.linspace(0, 8, 161)
RULES = {
    "T = 1": tsjax.RLPerceptron(episode_length=1),
    "T = 3, all correct": tsjax.RLPerceptron(episode_length=3),
    "T = 3, at least 2": tsjax.RLPerceptron(episode_length=3, min_correct=2),
    "T = 6, at least 4": tsjax.RLPerceptron(episode_length=6, min_correct=4),
    "T = 3, per-decision, discount 0.5": tsjax.RLPerceptron(
        episode_length=3, reward=tsjax.DecisionRewards(0.5)),
}

def nets(key, N):
    k1, k2 = jax.random.split(key)
    ws = jax.random.normal(k1, (N,)); ws = ws / jnp.linalg.norm(ws) * np.sqrt(N)
    u = jax.random.normal(k2, (N,)); u = u - (u @ ws) / N * ws
    u = u / jnp.linalg.norm(u) * np.sqrt(N)          # R = 0, Q = 1 exactly
    return (tsjax.TwoLayerNet(W=u[None], v=jnp.ones(1), activation="sign"),
            tsjax.TwoLayerNet(W=ws[None], v=jnp.ones(1), activation="sign"))

SIMULATED = list(RULES)[1::3] if FAST else list(RULES)   # fast setting: two of them
fig, ax = plt.subplots(figsize=(6.5, 4))
t0 = time.perf_counter()
for (label, rule), c in zip(RULES.items(), plt.cm.viridis(np.linspace(0, 0.9, len(RULES)))):
    ax.plot(AL_ODE, err(rule, alphas=AL_ODE), color=c, label=label)
    if label not in SIMULATED:
        continue
    sims = []
    for s in range(SEEDS):
        st, te = nets(jax.random.key(s), N)
        tr = tsjax.simulate(st, te, jax.random.key(100 + s), rule=rule, lr=1.0, alphas=AL)
        sims.append(np.asarray(tsjax.decision_error(tr)))
    sims = np.asarray(sims)
    ax.errorbar(AL, sims.mean(0), sims.std(0, ddof=1) / np.sqrt(SEEDS), fmt="o", ms=3,
                color=c, capsize=2)
print(f"ODE + {SEEDS} simulations per rule: {time.perf_counter() - t0:.1f} s")
ax.set(xlabel=r"$\\alpha$ (episodes / N)", ylabel="error of one decision",
       title=f"RL perceptron: ODE (lines) and simulations (N = {N}, points)")
ax.legend(fontsize=8)
plt.tight_layout()""")

md(r"""Longer episodes with an all-correct rule learn slowly at first: a reward needs T correct
decisions, which at chance happens with probability 2^−T. Relaxing the threshold (n < T)
speeds the start up; the per-decision rule, which rewards every correct decision, learns
fastest. The probability that an episode is rewarded is `rule.reward_probability(Q, R, T)`.

## The penalty: a speed-up, then a trap

T = 4, all decisions correct, η = 1. A penalty on failed episodes pushes the student away
from wrong decisions and speeds learning up, up to a point: beyond a critical penalty p_c
the student is trapped at a fixed point with a high error. dR/dα depends on ρ = R/√Q
only, so the trap is a fixed point (R*, Q*) of the ODE; `tsjax.fixed_point` finds it and
`tsjax.stability` shows it attracts. Continuing it from penalty 1 downwards locates p_c, the
saddle-node where it disappears.""")

code("""AL_P = np.linspace(0, 60, 241)
PENS = [0.0, 0.25, 0.5, 0.7, 0.8, 1.0]
fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
for p, c in zip(PENS, plt.cm.plasma(np.linspace(0, 0.85, len(PENS)))):
    a1.plot(AL_P, err(tsjax.RLPerceptron(4, penalty=p), alphas=AL_P), color=c,
            label=f"penalty {p:g}")
a1.set(xlabel=r"$\\alpha$", ylabel="error of one decision", title="T = 4, all correct, η = 1")
a1.legend(fontsize=8)

def trap(p, guess):
    prob = tsjax.Problem("sign", lr=1.0, rule=tsjax.RLPerceptron(4, penalty=p))
    return tsjax.fixed_point(guess, problem=prob)

guess = trap(1.0, tsjax.OrderParams(Q=[[0.04]], R=[[0.05]], T=[[1.0]], v=[1.0], v_star=[1.0]))
prob1 = tsjax.Problem("sign", lr=1.0, rule=tsjax.RLPerceptron(4, penalty=1.0))
print("trap at penalty 1: error", float(np.arccos(guess.R[0, 0] / np.sqrt(guess.Q[0, 0])) / np.pi),
      "| eigenvalues", np.asarray(tsjax.stability(guess, problem=prob1).eigenvalues))
fp1 = guess
lo, hi, branch = 0.75, 1.0, []
while hi - lo > (1e-2 if FAST else 1e-6):
    mid = 0.5 * (lo + hi)
    try:
        guess = trap(mid, guess)
        hi = mid
        branch.append((mid, float(np.arccos(guess.R[0, 0] / np.sqrt(guess.Q[0, 0])) / np.pi)))
    except Exception:
        lo = mid
p_c = hi
print(f"critical penalty p_c = {p_c:.6f} (T = 4, η = 1)")
# the trapping branch, continued from penalty 1 down towards the saddle-node
g = fp1
ps, errs_fp = [], []
for p in np.linspace(1.0, p_c, 6 if FAST else 40):
    try:
        g = trap(p, g)
    except tsjax.ConvergenceError:   # at the fold itself Newton's method slows down
        continue
    ps.append(p)
    errs_fp.append(float(np.arccos(g.R[0, 0] / np.sqrt(g.Q[0, 0])) / np.pi))
final = [err(tsjax.RLPerceptron(4, penalty=p), alphas=np.array([0.0, 400.0]))[-1]
         for p in np.linspace(0.5, 1.0, 6 if FAST else 26)]
a2.plot(ps, errs_fp, "k-", label="trap (tsjax.fixed_point)")
a2.plot(np.linspace(0.5, 1.0, len(final)), final, "o", color="C3", ms=4,
        label=r"ODE at $\\alpha$ = 400 from R = 0, Q = 1")
a2.axvline(p_c, color="gray", ls=":")
a2.set(xlabel="penalty", ylabel="error of one decision", title=f"trapping above p_c = {p_c:.4f}")
a2.legend(fontsize=8)
plt.tight_layout()""")

md(r"""## Optimal schedules of the learning rate and of the penalty

Over a finite horizon α_F = 10 (T = 4, from R = 0.3, Q = 1), which η(α) minimises the final
error? Three answers:

* the **greedy** rate that maximises the instantaneous increase of ρ,
  η = T√Q(1 − ρ²)/(√(2π) ρ P) (`RLPerceptron.greedy_lr`; a feedback law, integrated here
  with Diffrax on the rule's own drift);
* the **optimal** schedule of `tsjax.optimise_schedule` (a direct optimal-control method
  with exact gradients through the ODE and Pontryagin's certificate);
* the learning rate **and** the penalty optimised jointly by `tsjax.optimise_protocol` with
  the controls `"lr"` and `"penalty"`.""")

code("""T_, R0, AF = 4, 0.3, 10.0
op_s = tsjax.OrderParams(Q=[[1.0]], R=[[R0]], T=[[1.0]], v=[1.0], v_star=[1.0])
rule = tsjax.RLPerceptron(episode_length=T_)
sign, one = tsjax.get_activation("sign"), jnp.ones((1, 1))

def greedy(T, R0, alphas, Q0=1.0):
    r = tsjax.RLPerceptron(episode_length=T)
    def field(s, y, args):            # in log time s = log(1 + alpha)
        Q, R = y
        eta = r.greedy_lr(Q, R, one)
        dQ, dR, _ = r.drift(sign, Q, R, one, jnp.ones(1), jnp.ones(1), eta, 0.0, 0.0, 0.0)
        return dQ * jnp.exp(s), dR * jnp.exp(s)
    ts = np.log1p(np.asarray(alphas, float))
    sol = diffrax.diffeqsolve(diffrax.ODETerm(field), diffrax.Tsit5(), 0.0, ts[-1], None,
                              (Q0 * one, R0 * one), saveat=diffrax.SaveAt(ts=ts),
                              stepsize_controller=diffrax.PIDController(rtol=1e-10, atol=1e-12),
                              max_steps=10**6)
    Q, R = sol.ys
    rho = np.asarray(R[:, 0, 0] / jnp.sqrt(Q[:, 0, 0]))
    return np.arccos(rho) / np.pi, np.asarray(jax.vmap(r.greedy_lr, (0, 0, None))(Q, R, one))

AL_S = np.linspace(0, AF, 41 if FAST else 101)
e_greedy, lr_greedy = greedy(T_, R0, AL_S)
eta_max = 1.5 * float(lr_greedy.max())
t0 = time.perf_counter()
sched, hist = tsjax.optimise_schedule(op_s, activation="sign", rule=rule, alpha_max=AF,
                                      eta_max=eta_max, n_controls=4 if FAST else 50,
                                      progress=False, steps=3 if FAST else None, **OPT)
print(f"optimise_schedule: {time.perf_counter() - t0:.1f} s, certificate "
      f"{float(hist['certificate']):.1e}, best constant rate {hist['best_constant'][0]:.3g}")
pen0 = tsjax.Problem("sign", lr=5.0, rule=tsjax.RLPerceptron(episode_length=T_, penalty=0.1))
t0 = time.perf_counter()
best, h2 = tsjax.optimise_protocol(
    op_s, pen0, {"lr": tsjax.Control(0.0, eta_max, n=4 if FAST else 50),
                 "penalty": tsjax.Control(0.0, 2.0, n=4 if FAST else 50)},
    alpha_max=AF, progress=False, max_iter=3 if FAST else 1000, **OPT)
print(f"optimise_protocol (lr and penalty): {time.perf_counter() - t0:.1f} s, certificate "
      f"{float(h2['certificate']):.1e}, converged {bool(h2['converged'])}")

e_const = err(rule, lr=float(hist["best_constant"][0]), alphas=AL_S, op=op_s)
e_opt = err(rule, lr=sched, alphas=AL_S, op=op_s)
tr_pen = tsjax.solve_ode(op_s, problem=best, alphas=AL_S)
e_pen = np.asarray(tsjax.decision_error(tr_pen))
for name, e in [("best constant lr", e_const), ("greedy lr", e_greedy),
                ("optimal lr", e_opt), ("optimal lr and penalty", e_pen)]:
    print(f"{name:>24}: final error {e[-1]:.5f}")

fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
a1.plot(AL_S, e_const, label="best constant η")
a1.plot(AL_S, e_greedy, label="greedy η")
a1.plot(AL_S, e_opt, label="optimal η(α)")
a1.plot(AL_S, e_pen, "--", label="optimal η(α) and penalty(α)")
a1.set(xlabel=r"$\\alpha$", ylabel="error of one decision", yscale="log",
       title=f"T = {T_}, horizon {AF:g}")
a1.legend(fontsize=8)
mid = np.asarray(sched.boundaries)
edges = np.concatenate([[0.0], mid, [AF]])
a2.stairs(np.asarray(sched.values), edges, baseline=None, label="optimal η(α)")
a2.plot(AL_S, lr_greedy, label="greedy η")
c = h2["controls"]
e2 = np.concatenate([[0.0], c["lr"]["boundaries"], [AF]])
a2.stairs(c["lr"]["values"], e2, baseline=None, ls="--", label="η(α) with penalty")
a2.stairs(c["penalty"]["values"], e2, baseline=None, ls=":", color="k", label="penalty(α)")
a2.set(xlabel=r"$\\alpha$", ylabel="control", title="schedules")
a2.legend(fontsize=8)
plt.tight_layout()""")

md(r"""The optimal rate coincides with the greedy one up to its piecewise-constant grid: ρ obeys a
one-dimensional ODE controlled by u = η/√Q (docs/rules.md), so maximising dρ/dα at every
instant is the exact optimum when η is unbounded. A penalty is a second control, and the
joint optimum is far better: the penalty stays near its upper bound while the learning rate
falls, so the ratio penalty/η grows as the student improves (early on, a large ratio would
trap the student: see the previous section).

## The asymptotic decay

With all-correct rewards and no penalty, a constant rate gives, to leading order,
ε ≈ √(ln α / (2πTα)), approached only logarithmically; the greedy rate removes the
logarithm, ε ≈ √(2/(πTα)). Long ODE runs (to α = 10⁷; the solver takes adaptive steps in
α, so this costs about a second):""")

code("""AL_L = np.logspace(0, 4 if FAST else 7, 9 if FAST else 21)
fig, ax = plt.subplots(figsize=(6.5, 4))
for T, c in ((1, "C0"),) if FAST else ((1, "C0"), (12, "C3")):
    e = err(tsjax.RLPerceptron(episode_length=T), alphas=np.concatenate([[0.0], AL_L]))[1:]
    eg, _ = greedy(T, 0.1, AL_L)
    ax.loglog(AL_L, e, color=c, label=f"T = {T}, η = 1")
    ax.loglog(AL_L, np.sqrt(np.log(AL_L) / (2 * np.pi * T * AL_L)), ":", color=c)
    ax.loglog(AL_L, eg, "--", color=c, label=f"T = {T}, greedy η")
    ax.loglog(AL_L, np.sqrt(2 / (np.pi * T * AL_L)), "-.", color=c, lw=0.8)
    print(f"T = {T}: constant-rate error / sqrt(ln a/(2 pi T a)) at a = {AL_L[-1]:.0e}: "
          f"{e[-1] / np.sqrt(np.log(AL_L[-1]) / (2 * np.pi * T * AL_L[-1])):.4f}; greedy / "
          f"sqrt(2/(pi T a)): {eg[-1] / np.sqrt(2 / (np.pi * T * AL_L[-1])):.4f}")
ax.set(xlabel=r"$\\alpha$", ylabel="error of one decision",
       title="large-α decay (dotted, dash-dotted: asymptotes)")
ax.legend(fontsize=8)
plt.tight_layout()""")

md(r"""## Sweeps

`tsjax.sweep` takes a list of rules; rules that differ only in numbers (the penalty, the
threshold n, the discount) share one compiled program, and each episode length is one
group. The Dataset indexes the rules by their parameters.""")

code("""rules = [tsjax.RLPerceptron(episode_length=T, min_correct=n, penalty=p)
         for T in ((2,) if FAST else (2, 4)) for n in range(1, T + 1) for p in (0.0, 0.5)]
t0 = time.perf_counter()
ds = tsjax.sweep(K=1, M=1, activation="sign", lr=[0.5, 1.0, 2.0], rule=rules,
                 alphas=np.linspace(0, 20, 41), N=1000)
print(f"{ds.sizes['rule'] * ds.sizes['lr']} points in {time.perf_counter() - t0:.1f} s,"
      f" {ds.attrs['n_groups']} compiled groups")
final = (ds.eg.isel(alpha=-1) / 2).to_series().unstack("lr")
final.index = [f"T={int(T)} n={int(n)} pen={p:g}" for T, n, p in
               zip(ds.episode_length.values, ds.min_correct.values, ds.penalty.values)]
final.round(4)""")

md(r"""**Summary.** The RL perceptron is a learning rule of tsjax's learning problem: its exact
ODE, both simulators, sweeps, gradients and optimal control use the same
`tsjax.RLPerceptron`. Longer episodes with strict rewards learn slowly at the start; a
penalty speeds learning up until a saddle-node at p_c creates a trap; the greedy and the
optimised schedules remove the logarithmic slowdown of a constant rate.""")

nb = nbf.v4.new_notebook()
nb["cells"] = cells
nb["metadata"]["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
path = "notebooks/10_rl_perceptron.ipynb"
nbf.write(nb, path)

if "--execute" in sys.argv:
    import nbclient

    nb = nbf.read(path, as_version=4)
    nbclient.NotebookClient(nb, timeout=3600, kernel_name="python3",
                            resources={"metadata": {"path": "notebooks"}}).execute()  # fmt: skip
    nbf.write(nb, path)
