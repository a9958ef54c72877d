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
from ._checks import check_hyperparameters
from ._ode import solve_ode
from ._order_params import OrderParams
from ._schedules import LogGridSchedule, Schedule, as_schedule, check_rate
from ._trajectory import Trajectory

__all__ = ["optimise_schedule"]


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
    steps: int = 200,
    n_eval: int = 201,
    rtol: float | None = None,
    atol: float | None = None,
    max_steps: int = 200_000,
    solver=None,
    max_halvings: int = 10,
    progress: bool = True,
) -> tuple[Schedule, dict[str, np.ndarray]]:
    r"""Optimise a learning-rate schedule eta(alpha) of the first layer by gradient descent
    on an objective of the ODE trajectory.

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
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"steps: expected an integer >= 0, got {steps!r}")
    check_rate("lr_v", lr_v)
    check_hyperparameters(noise=noise, weight_decay=weight_decay)
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
