r"""Learning-rate schedule optimisation by gradient descent through the ODE.

:func:`optimise_schedule` minimises a scalar objective of the ODE trajectory (by default
eps_g at the end of the training budget) over the trainable parameters of a schedule
(:meth:`Schedule.trainable`), with an optax optimiser and reverse-mode gradients through
``solve_ode`` (checkpointed adjoint, see its docstring).

Robustness: after each optimiser step the schedule is projected onto 0 <= eta <= eta_max
(:meth:`Schedule.constrain`); the step is then evaluated and *rejected* if the ODE diverges,
the loss or its gradient is not finite, or the schedule leaves the bounds (for families
without a projection). A rejected step is retried with the update halved (up to
``max_halvings`` times); the optimiser state only advances on accepted steps, so a NaN never
enters the parameters or the optimiser's moments. The step scale grows back by 2x after
each accepted step (up to 1).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._activations import Activation, get_activation
from ._checks import check_hyperparameters, is_int_at_least
from ._curricula import TaskSwitch
from ._ode import solve_ode
from ._order_params import OrderParams
from ._problem import Problem
from ._rules import AbstractRule, RLPerceptron, as_rule
from ._schedules import LogGridSchedule, PiecewiseConstant, Schedule, as_schedule, check_rate
from ._trajectory import Trajectory

__all__ = [
    "optimise_schedule",
    "optimise_protocol",
    "Control",
    "switching_function",
    "plot_certificate",
]


def _final(tr):
    return tr.eg[-1]


def _mean(tr):
    # trapezoidal time average of eps_g over [alphas[0] = 0, alphas[-1]]
    return jnp.trapezoid(tr.eg, tr.alpha) / (tr.alpha[-1] - tr.alpha[0])


def _mean_after_start(tr):
    return jnp.mean(tr.eg[1:])


def _final_tasks(tr):
    # mean over the teachers of eps_g at the end (continual learning)
    return jnp.mean(tr.eg_tasks[-1])


def _objective_fn(objective, alpha_max: float, n_eval: int):
    """(alphas, f): the save times and the scalar function of the Trajectory to minimise
    (module-level functions for the named objectives, so that the compiled gradient is
    reused across calls)."""
    if isinstance(objective, str):
        if objective == "final":
            return np.array([0.0, alpha_max]), _final
        if objective == "mean":
            return np.linspace(0.0, alpha_max, n_eval), _mean
        if objective == "tasks":
            return np.array([0.0, alpha_max]), _final_tasks
        raise ValueError(
            f"objective: expected 'final', 'mean', 'tasks', an array of alphas or a callable, got "
            f"{objective!r}"
        )
    if callable(objective):
        return np.linspace(0.0, alpha_max, n_eval), objective
    a = np.asarray(objective, dtype=np.float64)
    if a.ndim != 1 or a.size < 1 or not np.all(np.isfinite(a)):
        raise ValueError(f"objective: an array of alphas must be 1-D and finite, got {a}")
    if np.any(a <= 0) or np.any(a > alpha_max * (1 + 1e-12)) or np.any(np.diff(a) <= 0):
        raise ValueError(
            f"objective: alphas must be strictly increasing in (0, alpha_max = {alpha_max:g}], "
            f"got {a}"
        )
    return np.concatenate([[0.0], a]), _mean_after_start


def _loss(p, static, problem, op0, alphas, f, rtol, atol, max_steps, solver):
    """The objective of the first-order path: the rate eta(alpha) = combine(p, static) in
    the learning ``problem`` (whose own lr is a placeholder)."""
    traj = solve_ode(
        op0,
        problem=eqx.tree_at(lambda q: q.lr, problem, eqx.combine(p, static)),
        alphas=alphas,
        rtol=rtol,
        atol=atol,
        max_steps=max_steps,
        solver=solver,
        throw=False,  # a diverging step is rejected by the caller, not raised
    )
    return jnp.where(traj.diverged, jnp.nan, f(traj))


# compiled once per setup (activation, objective, tolerances, shapes), reused across calls
_value_and_grad = eqx.filter_jit(eqx.filter_value_and_grad(_loss))


class _scalar_objective:
    """Turns JAX's error for a non-scalar objective into a ValueError naming it."""

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if exc is not None and isinstance(exc, TypeError) and "scalar" in str(exc):
            raise ValueError(
                f"objective: must return a scalar (one number) of the trajectory ({exc})"
            ) from exc
        return False


def _in_bounds(schedule: Schedule, eta_max: float, alpha_max: float) -> bool:
    a = np.concatenate([[0.0], np.geomspace(1e-3, alpha_max, 400), np.linspace(0, alpha_max, 400)])
    eta = np.asarray(schedule(jnp.asarray(a)))
    return bool(np.all(np.isfinite(eta)) and np.all(eta >= 0) and np.all(eta <= eta_max))


def optimise_schedule(
    op0: OrderParams,
    schedule=None,
    *,
    alpha_max: float,
    eta_max: float,
    activation: str | Activation = "erf",
    lr_v=0.0,
    noise=0.0,
    weight_decay=0.0,
    objective: str | Callable[[Trajectory], jax.Array] | np.ndarray = "final",
    optimizer: optax.GradientTransformation | None = None,
    steps: int | None = None,
    n_eval: int = 201,
    rtol: float | None = None,
    atol: float | None = None,
    max_steps: int = 200_000,
    solver=None,
    max_halvings: int = 10,
    progress: bool = True,
    n_controls: int = 100,
    tol: float = 1e-3,
    rule: AbstractRule | None = None,
) -> tuple[Schedule, dict[str, np.ndarray]]:
    r"""Optimise a learning-rate schedule eta(alpha) of the first layer on an objective of
    the ODE trajectory.

    Default (``schedule=None``, ``optimizer=None``): the optimal protocol, as a direct
    optimal-control method would compute it, with a certificate. The control is piecewise
    constant on ``n_controls`` uniform intervals covering [0, alpha_max] (boundaries
    frozen); it starts from the best constant rate (64 rates in (0, eta_max], evaluated
    with the compiled objective) and is optimised by L-BFGS-B (scipy) under
    0 <= eta <= eta_max with exact gradients through the ODE, until the projected gradient
    vanishes. The history then
    reports ``certificate``: the largest violation of Pontryagin's first-order conditions
    (the switching function S(alpha) = d objective / d eta(alpha) is 0 where 0 < eta <
    eta_max, >= 0 where eta = 0, <= 0 where eta = eta_max), relative to the largest |S| of
    the best constant rate; ``converged`` is ``certificate <= tol``. See
    :func:`switching_function` (and ``plot_certificate``) for S itself.

    With a ``schedule`` (a number, callable or :class:`Schedule`) or an ``optimizer``, the
    schedule's own parameters are optimised by first-order steps as described below.

    Args:
        op0: initial :class:`OrderParams` (the ODE starts at alpha = 0).
        schedule: the initial schedule. A :class:`Schedule` is optimised over its trainable
            parameters (:meth:`Schedule.trainable`; e.g. ``theta`` of a
            :class:`LogGridSchedule`, all parameters of :class:`InverseTime`). A number or
            callable of alpha (or ``None``: eta_max / 2) is first turned into the flexible
            family, ``LogGridSchedule.fit(schedule, alpha_max=alpha_max, eta_max=eta_max)``
            (32 log-spaced knots from alpha = 1).
        alpha_max: training budget; the ODE runs on [0, alpha_max].
        eta_max: upper bound of the learning rate; every accepted schedule satisfies
            0 <= eta(alpha) <= eta_max.
        activation, lr_v, noise, weight_decay: the setup, as in :func:`tsjax.solve_ode`
            (``lr_v`` may be a fixed schedule; it is not optimised).
        objective: ``"final"`` (default): eps_g(alpha_max); ``"mean"``: the time average
            (1/alpha_max) int_0^alpha_max eps_g d alpha (trapezoid on ``n_eval`` points);
            an array of alphas in (0, alpha_max]: the mean of eps_g at those times; or a
            callable ``f(traj) -> scalar`` of the :class:`Trajectory` saved at
            ``linspace(0, alpha_max, n_eval)``.
        optimizer: an optax ``GradientTransformation`` (default ``optax.adam(0.05)``, a
            step of ~5% in the log of the learning rate of a ``LogGridSchedule``).
        steps: number of accepted optimiser steps.
        n_eval: number of save times for ``"mean"`` and callable objectives.
        rtol, atol, max_steps, solver: passed to :func:`tsjax.solve_ode` (default solver
            :class:`~tsjax.Rodas5P`).
        max_halvings: a rejected step (see below) is retried with the update halved, at most
            this many times; then the optimisation stops early with a warning.
        progress: show a tqdm progress bar.
        n_controls: number of control intervals of the default method.
        tol: the certificate below which the default method reports ``converged``.
        rule: the learning rule of the first layer (default ``tsjax.SGD()``; e.g.
            ``tsjax.AdaptiveBackprop(beta)``, ``tsjax.FeedbackAlignment(feedback=b)``).

    Returns:
        ``(best, history)``: the schedule with the lowest objective seen (the initial one
        included), and a dict of numpy arrays: ``loss`` (objective after 0, 1, ...
        accepted steps), ``scale`` (the update scale of each accepted step, 1 unless
        halved), ``rejected`` (rejected attempts before each accepted step), and
        ``best_step`` (the index into ``loss`` of ``best``).

    Robustness: after every optimiser step the schedule is projected onto the bounds
    (:meth:`Schedule.constrain`), then the step is rejected if the ODE diverges or the loss
    or its gradient is non-finite, or if the schedule is out of bounds; the update is then
    halved and retried, and the optimiser state is only advanced by accepted steps, so NaNs
    never propagate.

    Example::

        op0 = tsjax.order_params(student, teacher)
        sched0 = tsjax.LogGridSchedule.fit(0.5, alpha_max=500, eta_max=2.0)
        best, hist = tsjax.optimise_schedule(op0, sched0, alpha_max=500, eta_max=2.0,
                                             noise=0.1, steps=300)
    """
    if not isinstance(op0, OrderParams):
        raise ValueError(f"op0: expected a tsjax.OrderParams, got {type(op0).__name__}")
    op0.validate()
    act = get_activation(activation)
    rule = as_rule(rule)
    rule.check(op0.K)
    if not (np.isscalar(alpha_max) and np.isfinite(alpha_max) and alpha_max > 0):
        raise ValueError(f"alpha_max: expected a positive number, got {alpha_max!r}")
    if not (np.isscalar(eta_max) and np.isfinite(eta_max) and eta_max > 0):
        raise ValueError(f"eta_max: expected a positive number, got {eta_max!r}")
    alpha_max, eta_max = float(alpha_max), float(eta_max)
    if steps is not None and (
        isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0
    ):
        raise ValueError(f"steps: expected an integer >= 0, got {steps!r}")
    check_rate("lr_v", lr_v)
    check_hyperparameters(noise=noise, weight_decay=weight_decay)
    if schedule is None and optimizer is None:
        if not is_int_at_least(n_controls, 1):
            raise ValueError(f"n_controls: expected an integer >= 1, got {n_controls!r}")
        if not (np.isscalar(tol) and np.isfinite(tol) and tol > 0):
            raise ValueError(f"tol: expected a number > 0, got {tol!r}")
        alphas, f = _objective_fn(objective, alpha_max, n_eval)
        return _optimal_protocol(
            op0, alpha_max, eta_max, act, as_schedule(lr_v), noise, weight_decay, alphas, f,
            rtol, atol, max_steps, solver, int(n_controls), 1000 if steps is None else steps,
            float(tol), progress, rule,
        )  # fmt: skip
    steps = 200 if steps is None else steps
    if schedule is None:
        schedule = 0.5 * eta_max
    if not isinstance(schedule, Schedule):
        schedule = LogGridSchedule.fit(schedule, alpha_max=alpha_max, eta_max=eta_max)
    check_rate("schedule", schedule)
    schedule = schedule.constrain(eta_max)
    if not _in_bounds(schedule, eta_max, alpha_max):
        raise ValueError(f"schedule: the initial schedule leaves 0 <= eta <= eta_max = {eta_max:g}")
    if optimizer is None:
        optimizer = optax.adam(0.05)
    alphas, f = _objective_fn(objective, alpha_max, n_eval)
    lr_v = as_schedule(lr_v)

    params, static = eqx.partition(schedule, schedule.trainable())
    if not jax.tree_util.tree_leaves(params):
        raise ValueError("schedule: has no trainable parameters (Schedule.trainable())")

    problem = Problem(act, 0.0, lr_v, jnp.asarray(noise), jnp.asarray(weight_decay), rule=rule)
    hyper = (static, problem, op0, jnp.asarray(alphas))
    consts = (f, rtol, atol, max_steps, solver)

    def evaluate(p):
        val, grad = _value_and_grad(p, *hyper, *consts)
        ok = np.isfinite(float(val)) and all(
            bool(jnp.all(jnp.isfinite(g))) for g in jax.tree_util.tree_leaves(grad)
        )
        return float(val), grad, ok

    @eqx.filter_jit
    def propose(p, grad, opt_state, scale):
        updates, new_state = optimizer.update(grad, opt_state, p)
        updates = jax.tree_util.tree_map(lambda u: scale * u, updates)
        new_p = optax.apply_updates(p, updates)
        new_sched = eqx.combine(new_p, static).constrain(eta_max)
        new_p, _ = eqx.partition(new_sched, schedule.trainable())
        return new_p, new_state

    with _scalar_objective():
        val, grad, ok = evaluate(params)
    if not ok:
        raise ValueError(
            "schedule: the objective or its gradient is not finite for the initial schedule "
            "(the ODE may diverge: start from a smaller learning rate)"
        )
    opt_state = optimizer.init(params)
    losses, scales, rejected = [val], [], []
    best, best_val, best_step = params, val, 0
    scale = 1.0

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc="optimise_schedule")
    try:
        for _ in range(steps):
            n_rej = 0
            while True:
                new_p, new_state = propose(params, grad, opt_state, jnp.asarray(scale))
                new_sched = eqx.combine(new_p, static)
                new_val, new_grad, ok = (np.nan, None, False)
                if _in_bounds(new_sched, eta_max, alpha_max):
                    new_val, new_grad, ok = evaluate(new_p)
                if ok:
                    break
                n_rej += 1
                scale *= 0.5
                if n_rej > max_halvings:
                    break
            if not ok:
                warnings.warn(
                    f"optimise_schedule: stopped after {len(losses) - 1} steps: {n_rej} "
                    "successive steps were rejected (divergence, non-finite loss or gradient)",
                    RuntimeWarning,
                    stacklevel=2,
                )
                break
            params, grad, opt_state, val = new_p, new_grad, new_state, new_val
            losses.append(val)
            scales.append(scale)
            rejected.append(n_rej)
            if val < best_val:
                best, best_val, best_step = params, val, len(losses) - 1
            scale = min(1.0, 2.0 * scale)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{val:.4g}", best=f"{best_val:.4g}")
    finally:
        if bar is not None:
            bar.close()
    history = dict(
        loss=np.asarray(losses),
        scale=np.asarray(scales),
        rejected=np.asarray(rejected, dtype=int),
        best_step=np.asarray(best_step),
    )
    return eqx.combine(best, static), history


# --------------------------------------------------------------------------------------
# Direct optimal control: piecewise-constant controls on grids covering [0, alpha_max]
# (and constant parameters such as switch times), optimised jointly by a bounded
# quasi-Newton method (L-BFGS-B) with exact gradients through the ODE, with Pontryagin's
# first-order conditions as a certificate. The default of optimise_schedule is the case
# of one control, the first-layer rate, warm-started from the best constant rate.
# --------------------------------------------------------------------------------------


class Control(eqx.Module):
    r"""A control of :func:`optimise_protocol`: a part of the learning problem optimised
    within ``lower <= u <= upper``.

    A time-dependent control (``"lr"``, ``"lr_v"``, ``"weight_decay"``, ``"replay"``) is
    piecewise constant on ``n`` uniform intervals covering [0, alpha_max], or on the
    intervals between the given ``boundaries`` (increasing, inside (0, alpha_max)); a
    parameter control (``"switch_at"``) is the parameter itself (one value per switch).

    Args:
        lower, upper: the bounds (``lower < upper``; the initial value must lie inside):
            numbers, or 1-D sequences with one bound per control value (per interval of a
            time-dependent control, per switch time of ``"switch_at"``; for example to
            keep several switch times ordered, or a control fixed in some intervals by
            narrow bounds).
        n: number of control intervals (time-dependent controls; default 100).
        boundaries: the interval boundaries instead of ``n`` uniform intervals.
    """

    lower: float | tuple = eqx.field(static=True)
    upper: float | tuple = eqx.field(static=True)
    n: int = eqx.field(static=True, default=100)
    boundaries: tuple | None = eqx.field(static=True, default=None)

    def __init__(self, lower, upper, *, n: int = 100, boundaries=None):
        lo, hi = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)
        for name, x in (("lower", lo), ("upper", hi)):
            if x.ndim > 1 or x.size == 0 or not np.all(np.isfinite(x)):
                raise ValueError(
                    f"Control.{name}: expected a finite number or 1-D sequence, got {x!r}"
                )
        if lo.ndim and hi.ndim and lo.shape != hi.shape:
            raise ValueError(
                f"Control: lower and upper have different lengths ({lo.size}, {hi.size})"
            )
        if not np.all(lo < hi):
            raise ValueError(f"Control: expected lower < upper, got [{lower!r}, {upper!r}]")
        if not is_int_at_least(n, 1):
            raise ValueError(f"Control.n: expected an integer >= 1, got {n!r}")
        self.lower = float(lo) if lo.ndim == 0 else tuple(float(x) for x in lo)
        self.upper = float(hi) if hi.ndim == 0 else tuple(float(x) for x in hi)
        self.n = int(n)
        if boundaries is not None:
            b = np.asarray(boundaries, dtype=np.float64)
            if b.ndim != 1 or not np.all(np.isfinite(b)) or np.any(np.diff(b) <= 0):
                raise ValueError(
                    f"Control.boundaries: expected a 1-D increasing array, got {boundaries!r}"
                )
            boundaries = tuple(float(x) for x in b)
        self.boundaries = boundaries

    def bounds(self, size: int, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) as arrays of ``size`` (one per control value)."""
        out = []
        for which, x in (("lower", self.lower), ("upper", self.upper)):
            x = np.asarray(x, dtype=np.float64)
            if x.ndim and x.size != size:
                raise ValueError(
                    f"controls[{name!r}].{which}: expected one bound per control value "
                    f"({size}), got {x.size}"
                )
            out.append(np.broadcast_to(x, (size,)).copy())
        return out[0], out[1]

    def grid(self, alpha_max: float, name: str) -> np.ndarray:
        """The interval boundaries (n - 1,) inside (0, alpha_max)."""
        if self.boundaries is None:
            return _control_grid(alpha_max, self.n)
        b = np.asarray(self.boundaries)
        if b.size and (b[0] <= 0 or b[-1] >= alpha_max):
            raise ValueError(
                f"controls[{name!r}].boundaries: must lie inside (0, alpha_max = "
                f"{alpha_max:g}), got {b}"
            )
        return b


def _set_rate(field):
    def set_(problem, sched):
        return eqx.tree_at(lambda p: getattr(p, field), problem, sched)

    return set_


def _get_rate(field):
    def get(problem, mid):
        value = getattr(problem, field)
        return value(jnp.asarray(mid)) if callable(value) else jnp.full(mid.shape, value)

    return get


def _task_switch(problem, name) -> TaskSwitch:
    cur = problem.curriculum
    if not isinstance(cur, TaskSwitch):
        raise ValueError(
            f"controls: {name!r} needs a problem with curriculum=tsjax.TaskSwitch(...), got "
            f"{type(cur).__name__}"
        )
    return cur


def _get_replay(problem, mid):
    r = _task_switch(problem, "replay").replay
    if r is None:
        return jnp.zeros(mid.shape)
    return r(jnp.asarray(mid)) if isinstance(r, Schedule) else jnp.full(mid.shape, r)


def _set_replay(problem, sched):
    cur = _task_switch(problem, "replay")
    return eqx.tree_at(
        lambda p: p.curriculum, problem, TaskSwitch(cur.switch_at, cur.tasks, replay=sched)
    )


def _get_switch(problem, mid):
    return _task_switch(problem, "switch_at").switch_at


def _set_switch(problem, x):
    cur = _task_switch(problem, "switch_at")
    return eqx.tree_at(lambda p: p.curriculum, problem, TaskSwitch(x, cur.tasks, replay=cur.replay))


def _rl_rule(problem) -> RLPerceptron:
    if not isinstance(problem.rule, RLPerceptron):
        raise ValueError(
            f"controls: 'penalty' needs a problem with rule=tsjax.RLPerceptron(...), got "
            f"{problem.rule!r}"
        )
    return problem.rule


def _get_penalty(problem, mid):
    pen = _rl_rule(problem).penalty
    return pen(jnp.asarray(mid)) if isinstance(pen, Schedule) else jnp.full(mid.shape, pen)


def _set_penalty(problem, sched):
    _rl_rule(problem)
    return eqx.tree_at(lambda p: p.rule.penalty, problem, sched)


# name -> (time-dependent, initial value at the interval midpoints, set into the Problem)
_KNOBS = {
    "lr": (True, _get_rate("lr"), _set_rate("lr")),
    "lr_v": (True, _get_rate("lr_v"), _set_rate("lr_v")),
    "weight_decay": (True, _get_rate("weight_decay"), _set_rate("weight_decay")),
    "replay": (True, _get_replay, _set_replay),
    "switch_at": (False, _get_switch, _set_switch),
    "penalty": (True, _get_penalty, _set_penalty),
}
CONTROLS = tuple(_KNOBS)


def _apply(problem: Problem, names: tuple, grids: dict, x: dict) -> Problem:
    """The Problem with the controls ``x`` (name -> values) put in."""
    for name in names:
        value = x[name]
        if _KNOBS[name][0]:
            value = PiecewiseConstant(grids[name], value, train_boundaries=False)
        problem = _KNOBS[name][2](problem, value)
    return problem


def _protocol_loss(x, names, grids, problem, op0, alphas, f, rtol, atol, max_steps, solver):
    traj = solve_ode(
        op0,
        problem=_apply(problem, names, grids, x),
        alphas=alphas,
        rtol=rtol,
        atol=atol,
        max_steps=max_steps,
        solver=solver,
        throw=False,  # a diverging control is rejected by the search, not raised
    )
    return jnp.where(traj.diverged, jnp.nan, f(traj))


# compiled once per setup (the controls' names and grid sizes, activation, objective,
# tolerances, shapes), reused across calls and across the warm start and the search
_protocol_value_and_grad = eqx.filter_jit(eqx.filter_value_and_grad(_protocol_loss))


def _control_grid(alpha_max: float, n: int) -> np.ndarray:
    """Interval boundaries (n - 1,) of the control: uniform on [0, alpha_max] (the grid of
    the direct optimal-control methods it is compared with), so every interval has the
    same weight in the objective's resolution."""
    return np.linspace(0.0, alpha_max, n + 1)[1:-1]


def switching_function(history: dict, name: str = "lr") -> tuple[np.ndarray, np.ndarray]:
    """(alpha, S): the switching function S(alpha) = d objective / d u(alpha) of the final
    control ``name`` (default the first-layer rate), as its mean over each control
    interval (the gradient with respect to the interval's value divided by its length),
    at the interval midpoints."""
    h = history["controls"][name] if "controls" in history else history
    b = np.asarray(h["boundaries"])
    edges = np.concatenate([[0.0], b, [float(history["alpha_max"])]])
    return 0.5 * (edges[1:] + edges[:-1]), np.asarray(h["switching"])


def certificate(values, grad, widths, lower, upper, *, bound_tol: float = 1e-8):
    """Pontryagin's first-order conditions for min over lower <= u <= upper of a
    piecewise-constant control: with S_i = grad_i / width_i (the switching function on
    interval i), S_i = 0 where lower < u_i < upper, S_i >= 0 where u_i = lower and
    S_i <= 0 where u_i = upper (for a parameter control, width 1: the KKT conditions).
    Returns (S, violation): violation_i is |S_i| inside the bounds and the wrong-signed
    part of S_i on them (absolute; the callers divide it by the largest |S| of the start)."""
    S = np.asarray(grad) / np.asarray(widths)
    v = np.asarray(values)
    span = upper - lower
    lo = v <= lower + bound_tol * span
    hi = v >= upper - bound_tol * span
    viol = np.where(lo, np.maximum(-S, 0.0), np.where(hi, np.maximum(S, 0.0), np.abs(S)))
    return S, viol


def _direct_method(
    op0, problem, controls, x0, alpha_max, alphas, f, rtol, atol, max_steps, solver,
    max_iter, tol, progress, desc,
):  # fmt: skip
    """L-BFGS-B over the controls (each scaled to [0, 1] by its bounds) from ``x0`` (name ->
    values). Returns (x, history) with the certificate of the result."""

    names = tuple(controls)
    grids = {n: jnp.asarray(controls[n].grid(alpha_max, n)) for n in names if _KNOBS[n][0]}
    widths = {
        n: np.diff(np.concatenate([[0.0], np.asarray(grids[n]), [alpha_max]]))
        if _KNOBS[n][0]
        else np.ones(np.size(x0[n]))
        for n in names
    }
    sizes = [int(np.size(x0[n])) for n in names]
    bnd = {n: controls[n].bounds(size, n) for n, size in zip(names, sizes)}
    lo = {n: bnd[n][0] for n in names}
    span = {n: bnd[n][1] - bnd[n][0] for n in names}
    cuts = np.cumsum(sizes)[:-1]
    args = (names, grids, problem, op0, jnp.asarray(alphas), f, rtol, atol, max_steps, solver)

    def unpack(z):  # scaled vector -> controls
        parts = np.split(np.asarray(z, dtype=np.float64), cuts)
        return {n: jnp.asarray(lo[n] + span[n] * p) for n, p in zip(names, parts)}

    def pack(x):
        return np.concatenate([(np.ravel(np.asarray(x[n])) - lo[n]) / span[n] for n in names])

    def value_and_grad(x):
        with _scalar_objective():
            val, grad = _protocol_value_and_grad(x, *args)
        return float(val), {n: np.asarray(grad[n], dtype=np.float64) for n in names}

    val0, g0 = value_and_grad(x0)
    if not np.isfinite(val0) or not all(np.all(np.isfinite(g)) for g in g0.values()):
        raise ValueError(
            "controls: the objective or its gradient is not finite at the initial controls "
            "(the ODE may diverge: start from smaller learning rates)"
        )
    scale = abs(val0) if val0 != 0 else 1.0
    calls = []

    def fun(z):
        val, g = value_and_grad(unpack(z))
        gz = np.concatenate([g[n].ravel() * span[n] for n in names])
        if not (np.isfinite(val) and np.all(np.isfinite(gz))):
            return np.inf, np.zeros_like(gz)  # a diverging control: rejected by the search
        calls.append(val)
        return val / scale, gz / scale

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=max_iter, desc=desc)

    def callback(zk):
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{calls[-1]:.6g}" if calls else "")

    if max_iter == 0:  # the start itself, with its certificate
        if bar is not None:
            bar.close()
        x, nit, message = x0, 0, "no iterations (max_iter = 0)"
        val, g = value_and_grad(x)
    else:
        z, nit, message = _lbfgsb(fun, pack(x0), sum(sizes), max_iter, tol, callback, bar)
        # L-BFGS-B may stop on a stalled relative decrease (its curvature pairs spoilt by
        # badly scaled controls) far from the first-order conditions: restart it from there
        # with a fresh memory while that helps and iterations remain
        x = unpack(z)
        val, g = value_and_grad(x)
        for _ in range(_RESTARTS):
            if nit >= max_iter or _certify(x, g, val, names, widths, bnd, g0, grids)[1] <= tol:
                break
            z, more, message = _lbfgsb(fun, z, sum(sizes), max_iter - nit, tol, callback, None)
            nit += more
            x = unpack(z)
            val, g = value_and_grad(x)
            if more == 0:
                break
    per, worst = _certify(x, g, val, names, widths, bnd, g0, grids)
    history = dict(
        loss=np.asarray(calls if calls else [val]),
        initial=np.asarray(val0),
        final=np.asarray(val),
        alpha_max=np.asarray(alpha_max),
        controls=per,
        certificate=np.asarray(worst),
        converged=np.asarray(bool(worst <= tol)),
        iterations=np.asarray(nit),
        message=np.asarray(message),
    )
    return x, history


#: restarts of L-BFGS-B when it stops short of the certificate (``_direct_method``)
_RESTARTS = 5


def _certify(x, g, val, names, widths, bnd, g0, grids):
    """Per control its values, switching function, violations and certificate, and the
    worst certificate, relative to the switching function at the start (the scale of a
    non-optimal control), so that the certificate measures how far the first-order
    conditions are from holding, independently of the problem's units."""
    per, worst = {}, 0.0
    for n in names:
        u = np.asarray(x[n])
        S, viol = certificate(u, g[n], widths[n], *bnd[n])
        S0 = g0[n] / widths[n]
        ref = max(float(np.max(np.abs(S0))), float(np.max(np.abs(S))), 1e-300)
        per[n] = dict(
            values=u,
            switching=S,
            violation=viol / ref,
            certificate=np.asarray(float(np.max(viol)) / ref),
        )
        if _KNOBS[n][0]:
            per[n]["boundaries"] = np.asarray(grids[n])
        worst = max(worst, float(per[n]["certificate"]))
    return per, worst


def _lbfgsb(fun, z0, size, max_iter, tol, callback, bar):
    """scipy's L-BFGS-B on [0, 1]^size from z0: (z, iterations, message)."""
    import scipy.optimize

    try:
        res = scipy.optimize.minimize(
            fun, z0, jac=True, method="L-BFGS-B", bounds=[(0.0, 1.0)] * size,
            callback=callback,
            options=dict(maxiter=max_iter, maxfun=4 * max_iter, ftol=1e-15, gtol=tol * 1e-3,
                         maxcor=30),
        )  # fmt: skip
    finally:
        if bar is not None:
            bar.close()
    return np.clip(res.x, 0.0, 1.0), int(res.nit), str(res.message)


def _optimal_protocol(
    op0, alpha_max, eta_max, act, lr_v, noise, weight_decay, alphas, f, rtol, atol, max_steps,
    solver, n_controls, max_iter, tol, progress, rule=None,
):  # fmt: skip
    """The default of optimise_schedule: the first-layer rate as the one control, from the
    best constant rate (64 rates in (0, eta_max], with the same compiled program)."""
    controls = {"lr": Control(0.0, eta_max, n=n_controls)}
    problem = Problem(act, 0.0, lr_v, noise, weight_decay, rule=rule)
    bnds = _control_grid(alpha_max, n_controls)
    args = (("lr",), {"lr": jnp.asarray(bnds)}, problem, op0, jnp.asarray(alphas), f, rtol,
            atol, max_steps, solver)  # fmt: skip
    etas = eta_max * np.linspace(1.0, 64.0, 64) / 64.0
    with _scalar_objective():
        vals = np.asarray(
            [float(_protocol_value_and_grad({"lr": jnp.full(n_controls, e)}, *args)[0])
             for e in etas]
        )  # fmt: skip
    vals = np.where(np.isfinite(vals), vals, np.inf)
    if not np.any(np.isfinite(vals)):
        raise ValueError(
            "eta_max: every constant rate in (0, eta_max] diverges or gives a non-finite "
            "objective; choose a smaller eta_max"
        )
    i_best = int(np.argmin(vals))
    x0 = {"lr": jnp.full(n_controls, etas[i_best])}
    x, history = _direct_method(
        op0, problem, controls, x0, alpha_max, alphas, f, rtol, atol, max_steps, solver,
        max_iter, tol, progress, "optimise_schedule (L-BFGS-B)",
    )  # fmt: skip
    lr = history.pop("controls")["lr"]
    history.update(
        best_constant=np.asarray((float(etas[i_best]), float(vals[i_best]))),
        boundaries=lr["boundaries"],
        values=lr["values"],
        switching=lr["switching"],
        violation=lr["violation"],
    )
    return PiecewiseConstant(bnds, np.asarray(x["lr"]), train_boundaries=False), history


def optimise_protocol(
    op0: OrderParams,
    problem: Problem,
    controls: dict,
    *,
    alpha_max: float,
    objective: str | Callable[[Trajectory], jax.Array] | np.ndarray = "final",
    n_eval: int = 201,
    rtol: float | None = None,
    atol: float | None = None,
    max_steps: int = 200_000,
    solver=None,
    max_iter: int = 1000,
    tol: float = 1e-3,
    progress: bool = True,
) -> tuple[Problem, dict]:
    r"""Optimal control of the learning problem: several controls optimised jointly,
    within bounds, on any differentiable objective of the ODE trajectory.

    ``controls`` maps names to :class:`Control` bounds:

    ================  ==========================================================
    ``"lr"``          first-layer rate eta(alpha), piecewise constant
    ``"lr_v"``        second-layer rate eta_v(alpha), piecewise constant
    ``"weight_decay"``  kappa(alpha), piecewise constant
    ``"replay"``      replay fraction r(alpha) of a ``TaskSwitch`` curriculum (the
                      probability that a sample after the switch comes from the
                      earlier task), piecewise constant; acts after the switch
    ``"switch_at"``   the switch times of a ``TaskSwitch`` curriculum (parameters)
    ``"penalty"``     the penalty(alpha) of a ``tsjax.RLPerceptron`` rule,
                      piecewise constant
    ================  ==========================================================

    Everything else (activation, noise, fixed rates, teachers, heads) is taken from
    ``problem``, which also gives the initial controls (a time-dependent one is evaluated
    at its interval midpoints; it must lie within the bounds). The method is a direct
    method: L-BFGS-B (scipy) over all control values, each scaled to [0, 1] by its bounds,
    with exact gradients through the ODE (one compiled program for the whole search),
    until the projected gradient vanishes. The certificate is Pontryagin's first-order
    conditions per control (:func:`certificate`), relative to the largest |S| at the
    start; ``converged`` is ``certificate <= tol``.

    Args:
        op0: initial :class:`OrderParams`.
        problem: the :class:`~tsjax.Problem` (with ``curriculum=TaskSwitch(...)`` for the
            curriculum controls).
        controls: ``{name: Control(lower, upper, n=... | boundaries=...)}``.
        alpha_max: training budget.
        objective: as in :func:`optimise_schedule`, plus ``"tasks"``: the mean over the
            teachers of their eps_g at alpha_max (continual learning); a callable gets the
            :class:`Trajectory` at ``linspace(0, alpha_max, n_eval)``.
        n_eval, rtol, atol, max_steps, solver: as in :func:`optimise_schedule`.
        max_iter: L-BFGS-B iterations at most.
        tol: the certificate below which ``converged`` is reported.
        progress: tqdm progress bar.

    Returns:
        ``(problem, history)``: the optimised :class:`~tsjax.Problem` (piecewise-constant
        schedules in place; pass it to ``solve_ode``/``simulate`` as ``problem=``), and a
        dict with ``loss`` (objective per evaluation), ``initial``, ``final``,
        ``certificate``, ``converged``, ``iterations``, ``message``, ``alpha_max`` and
        ``controls``: per name, ``values``, ``switching`` (S), ``violation``,
        ``certificate`` and, for time-dependent controls, ``boundaries``.

    Example (the optimal replay fraction after a task switch)::

        problem = tsjax.Problem("erf", lr=1.0, curriculum=tsjax.TaskSwitch([20.0], replay=0.2))
        best, hist = tsjax.optimise_protocol(
            op0, problem, {"replay": tsjax.Control(0.0, 1.0, n=40)}, alpha_max=40.0,
            objective="tasks")
    """
    if not isinstance(op0, OrderParams):
        raise ValueError(f"op0: expected a tsjax.OrderParams, got {type(op0).__name__}")
    op0.validate()
    if not isinstance(problem, Problem):
        raise ValueError(f"problem: expected a tsjax.Problem, got {type(problem).__name__}")
    if not (np.isscalar(alpha_max) and np.isfinite(alpha_max) and alpha_max > 0):
        raise ValueError(f"alpha_max: expected a positive number, got {alpha_max!r}")
    alpha_max = float(alpha_max)
    if not isinstance(controls, dict) or not controls:
        raise ValueError(
            f"controls: expected a non-empty dict name -> tsjax.Control, got {controls!r}"
        )
    for name, c in controls.items():
        if name not in _KNOBS:
            raise ValueError(f"controls: unknown control {name!r}; expected one of {CONTROLS}")
        if not isinstance(c, Control):
            raise ValueError(f"controls[{name!r}]: expected a tsjax.Control, got {c!r}")
    if not is_int_at_least(max_iter, 0):
        raise ValueError(f"max_iter: expected an integer >= 0, got {max_iter!r}")
    if not (np.isscalar(tol) and np.isfinite(tol) and tol > 0):
        raise ValueError(f"tol: expected a number > 0, got {tol!r}")
    alphas, f = _objective_fn(objective, alpha_max, n_eval)
    problem.check(op0.P, alphas)
    x0 = {}
    for name, c in controls.items():
        if _KNOBS[name][0]:
            edges = np.concatenate([[0.0], c.grid(alpha_max, name), [alpha_max]])
            mid = 0.5 * (edges[1:] + edges[:-1])
        else:
            mid = np.zeros(0)
        u = np.asarray(_KNOBS[name][1](problem, mid), dtype=np.float64)
        lo, hi = c.bounds(u.size, name)
        if not np.all(np.isfinite(u)) or np.any(u < lo) or np.any(u > hi):
            raise ValueError(
                f"controls[{name!r}]: the initial value from the problem (range "
                f"[{u.min():g}, {u.max():g}]) leaves the bounds [{lo.min():g}, {hi.max():g}]"
                f" (per value: lower {lo}, upper {hi})"
            )
        x0[name] = jnp.asarray(u)
    x, history = _direct_method(
        op0, problem, controls, x0, alpha_max, alphas, f, rtol, atol, max_steps, solver,
        int(max_iter), float(tol), progress, "optimise_protocol (L-BFGS-B)",
    )  # fmt: skip
    names = tuple(controls)
    grids = {n: jnp.asarray(history["controls"][n]["boundaries"]) for n in names if _KNOBS[n][0]}
    return _apply(problem, names, grids, x), history


def plot_certificate(history: dict, ax=None, name: str = "lr"):
    """Plot the optimality certificate of a default :func:`optimise_schedule` run (or of
    the control ``name`` of an :func:`optimise_protocol` run): the control u(alpha) and the
    switching function S(alpha) = d objective / d u(alpha) (zero where the control is
    inside its bounds at an optimum). Returns the two axes."""
    import matplotlib.pyplot as plt

    if "switching" not in history and "controls" not in history:
        raise ValueError(
            "history: expected the history of the default optimise_schedule or of optimise_protocol"
        )
    h = history["controls"][name] if "controls" in history else history
    if "boundaries" not in h:
        raise ValueError(f"name: {name!r} is not a time-dependent control of this run")
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.6))
    a, S = switching_function(history, name)
    label = {"lr": r"$\eta$", "lr_v": r"$\eta_v$", "weight_decay": r"$\kappa$"}.get(name, name)
    ax.step(a, h["values"], where="mid", color="C0", label=label + r"$(\alpha)$")
    ax.set_xlabel(r"$\alpha$")
    ax.set_ylabel(label, color="C0")
    ax2 = ax.twinx()
    ax2.plot(a, S, ".", color="C3", ms=3, label="switching function")
    ax2.axhline(0.0, color="C3", lw=0.5)
    ax2.set_ylabel(r"$\partial \epsilon / \partial u(\alpha)$", color="C3")
    ax.set_title(f"certificate {float(h['certificate']):.1e}")
    return ax, ax2
