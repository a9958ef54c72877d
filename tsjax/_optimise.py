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
from ._ode import solve_ode
from ._order_params import OrderParams
from ._schedules import LogGridSchedule, PiecewiseConstant, Schedule, as_schedule, check_rate
from ._trajectory import Trajectory

__all__ = ["optimise_schedule", "switching_function", "plot_certificate"]


def _final(tr):
    return tr.eg[-1]


def _mean(tr):
    # trapezoidal time average of eps_g over [alphas[0] = 0, alphas[-1]]
    return jnp.trapezoid(tr.eg, tr.alpha) / (tr.alpha[-1] - tr.alpha[0])


def _mean_after_start(tr):
    return jnp.mean(tr.eg[1:])


def _objective_fn(objective, alpha_max: float, n_eval: int):
    """(alphas, f): the save times and the scalar function of the Trajectory to minimise
    (module-level functions for the named objectives, so that the compiled gradient is
    reused across calls)."""
    if isinstance(objective, str):
        if objective == "final":
            return np.array([0.0, alpha_max]), _final
        if objective == "mean":
            return np.linspace(0.0, alpha_max, n_eval), _mean
        raise ValueError(
            f"objective: expected 'final', 'mean', an array of alphas or a callable, got "
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


def _loss(p, static, op0, lr_v, noise, weight_decay, alphas, act, f, rtol, atol, max_steps,
          solver):  # fmt: skip
    traj = solve_ode(
        op0,
        activation=act,
        lr=eqx.combine(p, static),
        lr_v=lr_v,
        noise=noise,
        weight_decay=weight_decay,
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
            float(tol), progress,
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

    hyper = (static, op0, lr_v, jnp.asarray(noise), jnp.asarray(weight_decay), jnp.asarray(alphas))
    consts = (act, f, rtol, atol, max_steps, solver)

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
# The default: a piecewise-constant control on a grid covering [0, alpha_max], warm-started
# from the best constant rate, optimised by a bounded quasi-Newton method (L-BFGS-B), with
# Pontryagin's first-order conditions as a certificate.
# --------------------------------------------------------------------------------------


def _control_grid(alpha_max: float, n: int) -> np.ndarray:
    """Interval boundaries (n - 1,) of the control: uniform on [0, alpha_max] (the grid of
    the direct optimal-control methods it is compared with), so every interval has the
    same weight in the objective's resolution."""
    return np.linspace(0.0, alpha_max, n + 1)[1:-1]


def switching_function(history: dict) -> tuple[np.ndarray, np.ndarray]:
    """(alpha, S): the switching function S(alpha) = d objective / d eta(alpha) of the final
    control, as its mean over each control interval (the gradient with respect to the
    interval's value divided by its length), at the interval midpoints."""
    b = np.asarray(history["boundaries"])
    edges = np.concatenate([[0.0], b, [float(history["alpha_max"])]])
    return 0.5 * (edges[1:] + edges[:-1]), np.asarray(history["switching"])


def certificate(values, grad, widths, eta_max: float, *, bound_tol: float = 1e-8):
    """Pontryagin's first-order conditions for min over 0 <= eta <= eta_max of a
    piecewise-constant control: with S_i = grad_i / width_i (the switching function on
    interval i), S_i = 0 where 0 < eta_i < eta_max, S_i >= 0 where eta_i = 0 and S_i <= 0
    where eta_i = eta_max. Returns (S, violation): violation_i is |S_i| inside the bounds
    and the wrong-signed part of S_i on them (absolute; optimise_schedule divides it by the
    largest |S| of the warm start)."""
    S = np.asarray(grad) / np.asarray(widths)
    v = np.asarray(values)
    lo = v <= bound_tol * eta_max
    hi = v >= eta_max * (1 - bound_tol)
    viol = np.where(lo, np.maximum(-S, 0.0), np.where(hi, np.maximum(S, 0.0), np.abs(S)))
    return S, viol


def _optimal_protocol(
    op0, alpha_max, eta_max, act, lr_v, noise, weight_decay, alphas, f, rtol, atol, max_steps,
    solver, n_controls, max_iter, tol, progress,
):  # fmt: skip
    import scipy.optimize

    bnds = _control_grid(alpha_max, n_controls)
    widths = np.diff(np.concatenate([[0.0], bnds, [alpha_max]]))
    static_sched = PiecewiseConstant(bnds, np.zeros(n_controls), train_boundaries=False)
    params0, static = eqx.partition(static_sched, static_sched.trainable())
    hyper = (static, op0, lr_v, jnp.asarray(noise), jnp.asarray(weight_decay), jnp.asarray(alphas))
    consts = (act, f, rtol, atol, max_steps, solver)

    def with_values(x):
        return eqx.tree_at(lambda p: p.values, params0, jnp.asarray(x))

    # 1. warm start: the best constant rate
    etas = eta_max * np.linspace(1.0, 64.0, 64) / 64.0
    # (with the same compiled value-and-gradient program as the optimisation: one
    # compilation per call instead of two; a few ms per constant rate)
    with _scalar_objective():
        vals = np.asarray(
            [float(_value_and_grad(with_values(np.full(n_controls, e)), *hyper, *consts)[0])
             for e in etas]
        )  # fmt: skip
    vals = np.where(np.isfinite(vals), vals, np.inf)
    if not np.any(np.isfinite(vals)):
        raise ValueError(
            "eta_max: every constant rate in (0, eta_max] diverges or gives a non-finite "
            "objective; choose a smaller eta_max"
        )
    i_best = int(np.argmin(vals))
    best_constant = (float(etas[i_best]), float(vals[i_best]))
    x0 = np.full(n_controls, etas[i_best])
    scale = abs(vals[i_best]) if vals[i_best] != 0 else 1.0

    # 2. L-BFGS-B on the values, the objective scaled to O(1)
    calls = []

    def fun(x):
        val, grad = _value_and_grad(with_values(x), *hyper, *consts)
        g = np.asarray(grad.values, dtype=np.float64)
        val = float(val)
        if not (np.isfinite(val) and np.all(np.isfinite(g))):
            return np.inf, np.zeros_like(g)  # a diverging control: rejected by the search
        calls.append(val)
        return val / scale, g / scale

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=max_iter, desc="optimise_schedule (L-BFGS-B)")

    def callback(xk):
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{calls[-1]:.6g}" if calls else "")

    try:
        res = scipy.optimize.minimize(
            fun, x0, jac=True, method="L-BFGS-B", bounds=[(0.0, eta_max)] * n_controls,
            callback=callback,
            options=dict(maxiter=max_iter, maxfun=4 * max_iter, ftol=1e-15, gtol=tol * 1e-3,
                         maxcor=30),
        )  # fmt: skip
    finally:
        if bar is not None:
            bar.close()
    x = np.clip(res.x, 0.0, eta_max)
    val, grad = _value_and_grad(with_values(x), *hyper, *consts)
    g = np.asarray(grad.values, dtype=np.float64)
    S, viol = certificate(x, g, widths, eta_max)
    s_scale = max(float(np.max(np.abs(S))), 1e-300)
    # relative to the switching function of the warm start (the scale of a non-optimal
    # control), so that the certificate measures how far the first-order conditions are
    # from holding, independently of the problem's units
    _, g0 = _value_and_grad(with_values(x0), *hyper, *consts)
    S0 = np.asarray(g0.values) / widths
    ref = max(float(np.max(np.abs(S0))), s_scale)
    violation = float(np.max(viol)) / ref
    best = PiecewiseConstant(bnds, x, train_boundaries=False)
    history = dict(
        loss=np.asarray(calls if calls else [float(val)]),
        best_constant=np.asarray(best_constant),
        final=np.asarray(float(val)),
        boundaries=bnds,
        alpha_max=np.asarray(alpha_max),
        values=x,
        switching=S,
        violation=viol / ref,
        certificate=np.asarray(violation),
        converged=np.asarray(bool(violation <= tol)),
        iterations=np.asarray(int(res.nit)),
        message=np.asarray(str(res.message)),
    )
    return best, history


def plot_certificate(history: dict, ax=None):
    """Plot the optimality certificate of a default :func:`optimise_schedule` run: the
    control eta(alpha) and the switching function S(alpha) = d objective / d eta(alpha)
    (zero where the control is inside its bounds at an optimum). Returns the two axes."""
    import matplotlib.pyplot as plt

    if "switching" not in history:
        raise ValueError("history: expected the history of the default optimise_schedule")
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.6))
    a, S = switching_function(history)
    ax.step(a, history["values"], where="mid", color="C0", label=r"$\eta(\alpha)$")
    ax.set_xlabel(r"$\alpha$")
    ax.set_ylabel(r"$\eta$", color="C0")
    ax2 = ax.twinx()
    ax2.plot(a, S, ".", color="C3", ms=3, label="switching function")
    ax2.axhline(0.0, color="C3", lw=0.5)
    ax2.set_ylabel(r"$\partial \epsilon / \partial \eta(\alpha)$", color="C3")
    ax.set_title(f"certificate {float(history['certificate']):.1e}")
    return ax, ax2
