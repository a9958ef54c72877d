r"""Learning-rate schedules eta(alpha).

Every place that takes a learning rate (``lr``, ``lr_v``) accepts a number or a
:class:`Schedule`. Numbers become :class:`Constant`; plain Python callables of alpha are
wrapped as they are. Time is alpha = steps / N (docs/conventions.md): the ODE evaluates the
schedule at continuous alpha, the simulator at alpha = t / N before step t.

Schedules are ``eqx.Module``\ s whose numeric parameters are (differentiable) array fields,
so they can be

* differentiated: ``eqx.filter_grad(lambda s: solve_ode(op0, lr=s, ...).eg[-1])(schedule)``
  returns a schedule-shaped PyTree of gradients (non-array fields are ``None``);
* vmapped: build the schedule from batched arrays inside the function you vmap
  (``jax.vmap(lambda e: solve_ode(op0, lr=InverseTime(e, 10.0), ...))(etas)``);
* optimised: :func:`tsjax.optimise_schedule`.

Families (eta >= 0 everywhere):

==========================  =================================================================
:class:`Constant`           eta0
:class:`InverseTime`        eta0 / (1 + alpha / alpha0)^power
:class:`ExponentialDecay`   eta0 exp(-rate alpha)
:class:`PiecewiseConstant`  steps at ``boundaries`` (jumps)
:class:`PiecewiseLinear`    linear between free ``knots`` (kinks), constant outside
:class:`LogGridSchedule`    the flexible, learnable family: a piecewise power law on a
                            log-alpha grid, eta_max sigmoid(theta_i) at the knots
:class:`OptaxSchedule`      an optax schedule (a function of the step count), step = alpha N
==========================  =================================================================

Non-smooth schedules report their kinks and jumps through :meth:`Schedule.breakpoints`;
``solve_ode`` passes them to the step-size controller (``jump_ts``), so the solver steps
exactly onto each breakpoint and restarts after it, and the error stays at the solver
tolerance (tests/test_schedules.py checks this against an integration split by hand at the
breakpoints).

Gradients: the derivative with respect to a schedule parameter is that of the ODE solution.
A jump of :class:`PiecewiseConstant` is handed to the solver with its derivative (moving the
jump moves the step grid rigidly with it, see ``tsjax._ode._PIDController``), so the
gradient with respect to a boundary is the sensitivity to the jump time. The knots of
:class:`PiecewiseLinear` and :class:`LogGridSchedule` are kinks only (the schedule is
continuous there): they are handed to the solver under ``stop_gradient``, and the
derivative with respect to a knot comes from the schedule's values alone, which is exact
for a continuous schedule (tests/test_gradients.py).
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike

from ._checks import _is_concrete, check_nonneg, check_scalar

__all__ = [
    "Schedule",
    "Constant",
    "InverseTime",
    "ExponentialDecay",
    "PiecewiseConstant",
    "PiecewiseLinear",
    "LogGridSchedule",
    "OptaxSchedule",
    "from_optax",
    "as_schedule",
    "check_rate",
]


def _float(x) -> Array:
    """x as a floating array (integers are promoted to the default float dtype)."""
    a = jnp.asarray(x)
    if not jnp.issubdtype(a.dtype, jnp.inexact):
        a = a.astype(jnp.result_type(float))
    return a


def _alpha(alpha) -> Array:
    return _float(alpha)


class Schedule(eqx.Module):
    """Base class: a learning rate eta(alpha) >= 0 as a function of alpha = steps / N.

    Subclasses implement ``__call__`` (vectorised over an array of alphas) and, where the
    schedule is not smooth, :meth:`breakpoints`. The optional hooks :meth:`constrain`,
    :meth:`trainable` and :meth:`check` are used by :func:`tsjax.optimise_schedule` and by the
    input checks of ``solve_ode``/``simulate``.
    """

    def __call__(self, alpha: ArrayLike) -> Array:
        raise NotImplementedError

    def breakpoints(self) -> Array | None:
        """Alphas where the schedule is not smooth (the ODE solver steps onto them)."""
        return None

    def constrain(self, eta_max) -> Schedule:
        """The schedule projected onto 0 <= eta(alpha) <= eta_max (used after each optimiser
        step). The base class returns ``self``; :func:`tsjax.optimise_schedule` then rejects
        steps that leave the bounds."""
        return self

    def trainable(self):
        """A PyTree of bools with the structure of ``self``: which leaves an optimiser may
        change (default: every floating-point array)."""
        return jax.tree_util.tree_map(eqx.is_inexact_array, self)

    def check(self, name: str) -> None:
        """Raise ``ValueError`` (naming ``name``) if concrete parameters are invalid. The
        default requires every numeric parameter to be finite and >= 0."""
        check_nonneg(name, self)


class Constant(Schedule):
    """eta(alpha) = value."""

    value: Array

    def __init__(self, value: ArrayLike):
        self.value = _float(value)

    def __call__(self, alpha):
        return self.value * jnp.ones_like(_alpha(alpha))

    def constrain(self, eta_max):
        return Constant(jnp.clip(self.value, 0.0, eta_max))


class InverseTime(Schedule):
    """eta(alpha) = eta0 / (1 + alpha / alpha0)^power  (eta0 >= 0, alpha0 > 0, power >= 0).

    ``power = 1`` is the 1/alpha decay that is optimal at late times with output noise
    (Saad & Rattray 1997)."""

    eta0: Array
    alpha0: Array
    power: Array

    def __init__(self, eta0: ArrayLike, alpha0: ArrayLike, power: ArrayLike = 1.0):
        self.eta0 = _float(eta0)
        self.alpha0 = _float(alpha0)
        self.power = _float(power)

    def __call__(self, alpha):
        return self.eta0 / (1.0 + _alpha(alpha) / self.alpha0) ** self.power

    def check(self, name):
        super().check(name)
        if _is_concrete(self.alpha0) and np.any(np.asarray(self.alpha0) <= 0):
            raise ValueError(f"{name}: InverseTime needs alpha0 > 0, got {self.alpha0}")

    def constrain(self, eta_max):
        return InverseTime(
            jnp.clip(self.eta0, 0.0, eta_max),
            jnp.maximum(self.alpha0, 1e-6),
            jnp.maximum(self.power, 0.0),
        )


class ExponentialDecay(Schedule):
    """eta(alpha) = eta0 exp(-rate alpha)  (eta0 >= 0, rate >= 0)."""

    eta0: Array
    rate: Array

    def __init__(self, eta0: ArrayLike, rate: ArrayLike):
        self.eta0 = _float(eta0)
        self.rate = _float(rate)

    def __call__(self, alpha):
        return self.eta0 * jnp.exp(-self.rate * _alpha(alpha))

    def constrain(self, eta_max):
        return ExponentialDecay(jnp.clip(self.eta0, 0.0, eta_max), jnp.maximum(self.rate, 0.0))


def _check_sorted(name: str, what: str, x) -> None:
    if _is_concrete(x):
        a = np.asarray(x)
        if a.ndim != 1:
            raise ValueError(f"{name}: {what} must be a 1-D array, got shape {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name}: {what} must be finite, got {a}")
        if np.any(np.diff(a) < 0):
            raise ValueError(f"{name}: {what} must be non-decreasing, got {a}")


def _monotone(x):
    """The smallest non-decreasing sequence >= x with x[0] >= 0 (projection of free knots)."""
    return jax.lax.cummax(jnp.maximum(x, 0.0), axis=0)


class PiecewiseConstant(Schedule):
    """A step schedule: eta = values[i] for boundaries[i-1] < alpha <= boundaries[i]
    (``values`` has one more entry than ``boundaries``). In the simulator the step at
    alpha = t / N = boundaries[i] exactly still uses values[i]; the new value starts with
    the next step.

    Left-continuity is deliberate: the ODE solver ends the step before a jump at
    prevbefore(boundary), and its last stage, at t0 + (t1 - t0), can round up onto the
    boundary itself; it must still see the old value (and, for kinks, the formula of the
    interval on the left, or the derivative with respect to the knot picks up a one-sided
    term).

    The boundaries are the breakpoints. Both arrays are differentiable: the gradient with
    respect to a boundary is the sensitivity to moving the jump. ``train_boundaries=False``
    freezes them for :func:`tsjax.optimise_schedule` (only the values are optimised)."""

    boundaries: Array
    values: Array
    train_boundaries: bool = eqx.field(static=True)

    def __init__(self, boundaries: ArrayLike, values: ArrayLike, train_boundaries: bool = True):
        self.boundaries = jnp.atleast_1d(_float(boundaries))
        self.values = jnp.atleast_1d(_float(values))
        self.train_boundaries = bool(train_boundaries)
        if self.values.shape[-1] != self.boundaries.shape[-1] + 1:
            raise ValueError(
                f"PiecewiseConstant: needs len(values) = len(boundaries) + 1, got "
                f"{self.values.shape[-1]} values and {self.boundaries.shape[-1]} boundaries"
            )

    def __call__(self, alpha):
        i = jnp.searchsorted(self.boundaries, _alpha(alpha), side="left")
        return self.values[i]

    def breakpoints(self):
        return self.boundaries

    def check(self, name):
        super().check(name)
        _check_sorted(name, "boundaries", self.boundaries)

    def constrain(self, eta_max):
        return PiecewiseConstant(
            _monotone(self.boundaries), jnp.clip(self.values, 0.0, eta_max), self.train_boundaries
        )

    def trainable(self):
        t = jax.tree_util.tree_map(eqx.is_inexact_array, self)
        return eqx.tree_at(lambda s: s.boundaries, t, self.train_boundaries)


def _interp(x, xp, fp, locate=None):
    """Linear interpolation of (xp, fp) at x, constant outside [xp[0], xp[-1]].

    Unlike ``jnp.interp`` the gradient with respect to the knots ``xp`` is defined
    everywhere (coincident knots give a jump). ``locate = (a, ap)``: find the interval by
    comparing ``a`` with ``ap`` instead of x with xp (the same floats as the breakpoints
    handed to the solver, so that a stage evaluated just before a breakpoint uses the
    formula of the interval on its left)."""
    n = xp.shape[0]
    if n == 1:
        return fp[0] * jnp.ones_like(x)
    a, ap = (x, xp) if locate is None else locate
    # side="left": a point exactly on a knot belongs to the interval on its left (see
    # PiecewiseConstant for why)
    i = jnp.clip(jnp.searchsorted(ap, a, side="left"), 1, n - 1)
    x0, x1, f0, f1 = xp[i - 1], xp[i], fp[i - 1], fp[i]
    dx = x1 - x0
    pos = dx > 0
    w = jnp.where(pos, (x - x0) / jnp.where(pos, dx, 1.0), (x >= x1).astype(x.dtype))
    # clip with where, not jnp.clip: at a tie (w == 0 exactly, e.g. log(nextafter(knot))
    # == log(knot)) jnp.clip passes half of the derivative
    w = jnp.where(w < 0, 0.0, jnp.where(w > 1, 1.0, w))
    return f0 + w * (f1 - f0)


class PiecewiseLinear(Schedule):
    """Linear interpolation between (knots[i], values[i]); constant before the first and
    after the last knot. The knots are free parameters (differentiable, and trained by
    :func:`tsjax.optimise_schedule` together with the values unless
    ``train_knots=False``); they are the breakpoints."""

    knots: Array
    values: Array
    train_knots: bool = eqx.field(static=True)

    def __init__(self, knots: ArrayLike, values: ArrayLike, train_knots: bool = True):
        self.knots = jnp.atleast_1d(_float(knots))
        self.values = jnp.atleast_1d(_float(values))
        self.train_knots = bool(train_knots)
        if self.knots.shape[-1] != self.values.shape[-1]:
            raise ValueError(
                f"PiecewiseLinear: knots and values must have the same length, got "
                f"{self.knots.shape[-1]} and {self.values.shape[-1]}"
            )

    def __call__(self, alpha):
        return _interp(_alpha(alpha), self.knots, self.values)

    def breakpoints(self):
        # A kink: the solver steps onto it, but the step grid does not follow the knot in
        # the derivative (see the module docstring, "Gradients").
        return jax.lax.stop_gradient(self.knots)

    def check(self, name):
        super().check(name)
        _check_sorted(name, "knots", self.knots)

    def constrain(self, eta_max):
        return PiecewiseLinear(
            _monotone(self.knots), jnp.clip(self.values, 0.0, eta_max), self.train_knots
        )

    def trainable(self):
        t = jax.tree_util.tree_map(eqx.is_inexact_array, self)
        return eqx.tree_at(lambda s: s.knots, t, self.train_knots)


class LogGridSchedule(Schedule):
    r"""The flexible, learnable family: a positive, bounded piecewise power law on a
    log-alpha grid.

    With knots a_1 < ... < a_n (``alpha_knots``, usually geometric) and unconstrained
    parameters theta_i, the value at knot i is eta_i = eta_max sigmoid(theta_i) in
    (0, eta_max), and log eta is linear in log alpha between knots:

        eta(alpha) = eta_i^(1 - s) eta_{i+1}^s,   s = log(alpha / a_i) / log(a_{i+1} / a_i),

    constant (eta_1, eta_n) before the first and after the last knot. A straight segment in
    log-log is a power law, so a late-time decay eta ~ alpha^(-p) is represented exactly,
    and the bound 0 < eta <= eta_max holds by construction for any theta (no projection
    needed). Only ``theta`` is trainable; the knots are breakpoints (kinks) of the schedule.

    Build one from any schedule or number with :meth:`fit`.
    """

    theta: Array
    alpha_knots: Array
    eta_max: Array

    def __init__(self, alpha_knots: ArrayLike, theta: ArrayLike, eta_max: ArrayLike):
        self.alpha_knots = jnp.atleast_1d(_float(alpha_knots))
        self.theta = jnp.atleast_1d(_float(theta))
        self.eta_max = _float(eta_max)
        if self.theta.shape[-1] != self.alpha_knots.shape[-1]:
            raise ValueError(
                f"LogGridSchedule: alpha_knots and theta must have the same length, got "
                f"{self.alpha_knots.shape[-1]} and {self.theta.shape[-1]}"
            )

    @classmethod
    def fit(
        cls,
        schedule,
        *,
        alpha_max: float,
        eta_max: float,
        alpha_min: float = 1.0,
        n_knots: int = 32,
    ) -> LogGridSchedule:
        """The schedule on ``n_knots`` geometric knots from ``alpha_min`` to ``alpha_max``
        that interpolates ``schedule`` (a number, :class:`Schedule` or callable of alpha) at
        the knots; values are clipped into [1e-6, 1 - 1e-6] x eta_max."""
        if not (0 < alpha_min < alpha_max):
            raise ValueError(
                f"alpha_min, alpha_max: need 0 < alpha_min < alpha_max, got {alpha_min}, "
                f"{alpha_max}"
            )
        if not eta_max > 0:
            raise ValueError(f"eta_max: must be > 0, got {eta_max}")
        if n_knots < 2:
            raise ValueError(f"n_knots: need at least 2 knots, got {n_knots}")
        knots = jnp.geomspace(alpha_min, alpha_max, n_knots)
        knots = knots.at[0].set(alpha_min).at[-1].set(alpha_max)  # exact end points
        eta = as_schedule(schedule)(knots)
        p = jnp.clip(eta / eta_max, 1e-6, 1.0 - 1e-6)
        return cls(knots, jnp.log(p) - jnp.log1p(-p), eta_max)

    @property
    def values(self) -> Array:
        """eta at the knots, eta_max sigmoid(theta)."""
        return self.eta_max * jax.nn.sigmoid(self.theta)

    def __call__(self, alpha):
        a = _alpha(alpha)
        k = self.alpha_knots
        # clamp before the log: alpha = 0 is valid (constant before the first knot)
        la = jnp.log(jnp.where(a > k[0], a, k[0]))
        log_eta = _interp(la, jnp.log(k), jax.nn.log_sigmoid(self.theta), locate=(a, k))
        return self.eta_max * jnp.exp(log_eta)

    def breakpoints(self):
        return jax.lax.stop_gradient(self.alpha_knots)

    def trainable(self):
        mask = jax.tree_util.tree_map(lambda _: False, self)
        return eqx.tree_at(lambda s: s.theta, mask, True)

    def check(self, name):
        for what, x in (("theta", self.theta), ("alpha_knots", self.alpha_knots)):
            if _is_concrete(x) and not np.all(np.isfinite(np.asarray(x))):
                raise ValueError(f"{name}: LogGridSchedule {what} must be finite")
        if _is_concrete(self.alpha_knots) and np.any(np.asarray(self.alpha_knots) <= 0):
            raise ValueError(f"{name}: LogGridSchedule alpha_knots must be > 0")
        _check_sorted(name, "alpha_knots", self.alpha_knots)
        if _is_concrete(self.eta_max) and not np.all(np.asarray(self.eta_max) > 0):
            raise ValueError(f"{name}: LogGridSchedule eta_max must be > 0, got {self.eta_max}")

    def constrain(self, eta_max):
        if _is_concrete(self.eta_max) and np.any(np.asarray(self.eta_max) > eta_max * (1 + 1e-12)):
            raise ValueError(
                f"eta_max: the LogGridSchedule is bounded by its own eta_max = "
                f"{float(np.max(np.asarray(self.eta_max))):g} > {eta_max:g}; build it with "
                f"LogGridSchedule.fit(..., eta_max={eta_max:g})"
            )
        return self


class OptaxSchedule(Schedule):
    """An optax schedule (a function of the SGD step count) as a function of alpha.

    Conversion: step = alpha * N, so eta(alpha) = fn(alpha * N). ``N`` is the input
    dimension the step count refers to (a schedule written for N = 1000 and 10^5 steps
    covers alpha in [0, 100]). The ODE evaluates ``fn`` at non-integer step counts (the
    continuous-time limit); the simulator, which evaluates at alpha = t / N, gets the exact
    step t (alpha * N within a few ulps of an integer is rounded to it). ``breakpoint_steps``:
    step counts where ``fn`` jumps or has a kink (e.g. the ``boundaries_and_scales`` keys
    of ``optax.piecewise_constant_schedule`` or the end of a warm-up), passed to the ODE
    solver as alphas = steps / N.

    Optax schedules change value *at* a boundary step (``count >= boundary``), the tsjax
    classes just after it (left-continuous); for the simulator both agree with their own
    convention. For the ODE the only difference would be at the breakpoint itself, where
    the solver ends a step just below it: every alpha below a breakpoint (as the same float)
    evaluates ``fn`` at a step count below the breakpoint's, so the solver sees the old
    value up to the breakpoint (tests/test_schedules.py).
    """

    fn: Callable = eqx.field(static=True)
    N: float = eqx.field(static=True)
    breakpoint_alphas: Array | None
    breakpoint_steps: Array | None

    def __init__(self, fn: Callable, N: float, breakpoint_steps: ArrayLike | None = None):
        if not callable(fn):
            raise ValueError(f"fn: expected a callable of the step count, got {fn!r}")
        if isinstance(N, bool) or not (
            isinstance(N, (int, float, np.integer, np.floating)) and N > 0
        ):
            raise ValueError(f"N: expected a positive number, got {N!r}")
        self.fn = fn
        self.N = float(N)
        if breakpoint_steps is None:
            self.breakpoint_steps = self.breakpoint_alphas = None
        else:
            self.breakpoint_steps = jnp.atleast_1d(_float(breakpoint_steps))
            self.breakpoint_alphas = self.breakpoint_steps / self.N

    def _steps(self, alpha):
        a = _alpha(alpha)
        step = a * self.N
        # exact integer step counts for the simulator's alpha = t / N
        # (the value moves, the derivative d step / d alpha = N stays: the Rosenbrock solver
        # differentiates the vector field in time)
        sg = jax.lax.stop_gradient
        r = jnp.round(step)
        near = jnp.abs(step - r) <= 8 * jnp.finfo(step.dtype).eps * r
        step = step + sg(jnp.where(near, r - step, 0.0))
        if self.breakpoint_steps is not None:
            # left of a breakpoint (compared as the alphas handed to the solver), stay below
            # its step count
            below = jnp.nextafter(self.breakpoint_steps, -jnp.inf)
            cap = jnp.min(jnp.where(a[..., None] < self.breakpoint_alphas, below, jnp.inf), -1)
            step = step + sg(jnp.where(step > cap, cap - step, 0.0))
        return step

    def __call__(self, alpha):
        return _float(self.fn(self._steps(alpha)))

    def breakpoints(self):
        return self.breakpoint_alphas

    def trainable(self):
        return jax.tree_util.tree_map(lambda _: False, self)

    def check(self, name):
        if self.breakpoint_steps is not None:
            check_nonneg(name, self.breakpoint_steps)


def from_optax(fn: Callable, N: float, breakpoint_steps: ArrayLike | None = None) -> Schedule:
    """``OptaxSchedule(fn, N, breakpoint_steps)``: an optax schedule of the step count as a
    schedule of alpha, step = alpha * N (see :class:`OptaxSchedule`)."""
    return OptaxSchedule(fn, N, breakpoint_steps)


def as_schedule(lr) -> Schedule:
    """A :class:`Schedule` from a number, an array scalar, a schedule or a callable of alpha.

    A plain callable is taken as a function of alpha (use :class:`OptaxSchedule` for optax
    schedules, which are functions of the step count). It is a static part of the compiled
    computation: every new Python function (e.g. a new ``lambda`` per call) compiles anew,
    so define it once, or use a :class:`Schedule` class, whose parameters are traced
    arrays (changing them does not recompile)."""
    if isinstance(lr, Schedule):
        return lr
    if callable(lr):
        return _Callable(lr)
    return Constant(lr)


def check_rate(name: str, value) -> None:
    """Input check of a learning rate (a number or a schedule): ``ValueError`` naming
    ``name`` if it is invalid (negative, non-finite, or bad schedule parameters)."""
    if isinstance(value, Schedule):
        value.check(name)
    elif not callable(value):
        check_scalar(name, value)
        check_nonneg(name, value)


class _Callable(Schedule):
    fn: object = eqx.field(static=True)

    def __call__(self, alpha):
        return _float(self.fn(_alpha(alpha)))

    def trainable(self):
        return jax.tree_util.tree_map(lambda _: False, self)

    def check(self, name):
        pass
