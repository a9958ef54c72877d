r"""Curricula: which teacher labels the SGD sample at time alpha (continual learning).

With P teachers (``v_star`` of shape (P, M_tot), docs/conventions.md) every SGD step draws
its label from teacher p with probability pi_p(alpha). A curriculum is that function of
time. Engines read it through :meth:`AbstractCurriculum.weights` only:

* the ODE uses the probability-weighted sum of the per-task vector fields,
  sum_p pi_p(alpha) f_p(Q, R, v). This is exact: over the O(N) steps of one unit of alpha
  the order parameters move by O(1/N) per step, so their drift is the mean increment over
  the sample distribution, which is the mixture; the eta^2 (second-moment) term is also an
  expectation over the sample, hence also linear in pi. Fluctuations of the task sequence
  (which teacher is drawn when) average out like every other O(1/sqrt(N)) fluctuation.
* the simulators draw the task of step t (alpha = t / N) from pi(alpha): a uniform
  number per step for a mixture, no random number at all for a one-hot curriculum
  (``one_hot = True``: the task is the index of the largest weight).

Jumps of pi (task switches) are returned by :meth:`AbstractCurriculum.breakpoints`; the
ODE solver steps exactly onto them, with their derivative (d/d switch time is the
sensitivity of the solution to the jump time, as for ``PiecewiseConstant`` schedules).

Families:

==========================  ============================================================
:class:`SingleTask`         teacher ``task`` all the time (the default: teacher 0)
:class:`TaskSwitch`         teacher ``tasks[i]`` between ``switch_at[i-1]`` and
                            ``switch_at[i]``; optionally replaying earlier tasks with
                            probability ``replay`` after each switch
:class:`Mixture`            fixed probabilities (P,) or a function alpha -> (P,)
:class:`ThresholdSwitch`    the next task once the error on the active one falls below a
                            threshold (a Diffrax event in the ODE)
==========================  ============================================================

Heads (multi-head students, ``v`` of shape (P, K)): a sample of task p trains head p only;
a single-head student (``v`` of shape (K,) or (1, K)) trains its one head on every task.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._checks import _is_concrete
from ._schedules import Schedule

__all__ = [
    "AbstractCurriculum",
    "SingleTask",
    "TaskSwitch",
    "Mixture",
    "ThresholdSwitch",
    "as_curriculum",
]


class AbstractCurriculum(eqx.Module):
    """The probabilities pi_p(alpha) with which each of the P teachers labels a sample."""

    #: True when pi(alpha) is always one-hot (one teacher at a time): the engines then
    #: evaluate only that teacher's vector field and draw no task numbers.
    one_hot: eqx.AbstractClassVar[bool]

    @abc.abstractmethod
    def weights(self, alpha, n_tasks: int) -> Float[Array, " P"]:
        """pi(alpha), shape (n_tasks,), non-negative, summing to 1."""

    @abc.abstractmethod
    def breakpoints(self) -> Float[Array, " B"] | None:
        """Times at which pi jumps (handed to the ODE solver with their derivatives)."""

    @abc.abstractmethod
    def check(self, n_tasks: int, alphas) -> None:
        """Eager validation against the number of teachers and the save times
        (``ValueError`` naming the parameter)."""

    @abc.abstractmethod
    def error_thresholds(self) -> tuple[tuple, Float[Array, " S"]] | None:
        """None for a curriculum that is a function of time. For one that switches when
        the error on the active task falls below a threshold: (tasks, thresholds), the
        static task order and the thresholds (len(tasks) - 1,) that end each phase."""


def _task_index(name, t, n_tasks):
    if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or not 0 <= t < n_tasks:
        raise ValueError(
            f"{name}: task indices must be integers in [0, P - 1] = [0, {n_tasks - 1}] "
            f"(P = {n_tasks} teachers), got {t!r}"
        )


class SingleTask(AbstractCurriculum):
    """Teacher ``task`` labels every sample (default: teacher 0; with one teacher this is
    the plain teacher-student problem)."""

    task: int = eqx.field(static=True, default=0)
    one_hot: ClassVar[bool] = True

    def weights(self, alpha, n_tasks):
        dtype = jnp.result_type(alpha, float)
        return jnp.zeros((n_tasks,), dtype).at[self.task].set(1.0)

    def breakpoints(self):
        return None

    def check(self, n_tasks, alphas):
        _task_index("curriculum.task", self.task, n_tasks)

    def error_thresholds(self):
        return None


class TaskSwitch(AbstractCurriculum):
    """Train on ``tasks[0]`` until alpha = ``switch_at[0]``, then on ``tasks[1]`` until
    ``switch_at[1]``, ... (``tasks`` default: 0, 1, 2, ...; one more task than switch times).

    ``replay`` (default None: pure switches): after the i-th switch, a sample comes with
    probability ``replay`` from the earlier tasks (uniformly among them) and with
    probability 1 - replay from the current one (rehearsal with a mixing fraction).
    ``replay`` is a number in [0, 1] or a :class:`~tsjax.Schedule` r(alpha) in [0, 1] (a
    replay fraction that changes in time, e.g. optimised by :func:`tsjax.optimise_protocol`;
    it acts only after the first switch).

    ``switch_at`` and ``replay`` are differentiable (gradients with respect to switch
    times and mixing fractions); ``tasks`` is static. A switch at alpha = a acts from the
    sample at alpha = a on (in a simulation: steps t >= a N).
    """

    switch_at: Float[Array, " S"]
    tasks: tuple = eqx.field(static=True)
    replay: Array | Schedule | None

    def __init__(self, switch_at, tasks=None, replay=None):
        s = jnp.atleast_1d(jnp.asarray(switch_at))
        if not jnp.issubdtype(s.dtype, jnp.inexact):
            s = s.astype(jnp.result_type(float))
        if s.ndim != 1 or s.shape[0] < 1:
            raise ValueError(f"switch_at: expected a 1-D list of switch times, got {switch_at!r}")
        self.switch_at = s
        n = s.shape[0] + 1
        if tasks is None:
            tasks = tuple(range(n))
        tasks = tuple(int(t) if isinstance(t, (int, np.integer)) else t for t in tasks)
        if len(tasks) != n:
            raise ValueError(
                f"tasks: expected len(switch_at) + 1 = {n} task indices, got {len(tasks)}"
            )
        self.tasks = tasks
        if replay is None or isinstance(replay, Schedule):
            self.replay = replay
        else:
            self.replay = jnp.asarray(replay, s.dtype)

    @property
    def one_hot(self):  # type: ignore[override]
        return self.replay is None

    def _phase(self, alpha):
        return jnp.searchsorted(self.switch_at, alpha, side="right")

    def weights(self, alpha, n_tasks):
        dtype = jnp.result_type(alpha, self.switch_at.dtype)
        table = np.zeros((len(self.tasks), n_tasks))  # pure phases (static)
        for i, t in enumerate(self.tasks):
            table[i, t] = 1.0
        phase = self._phase(alpha)
        w = jnp.asarray(table, dtype)[phase]
        if self.replay is None:
            return w
        seen = np.zeros((len(self.tasks), n_tasks))  # earlier tasks of each phase, uniform
        for i in range(1, len(self.tasks)):
            prev = [t for t in self.tasks[:i] if t != self.tasks[i]]
            for t in prev:
                seen[i, t] += 1.0 / len(prev)
        old = jnp.asarray(seen, dtype)[phase]
        r = self.replay(alpha) if isinstance(self.replay, Schedule) else self.replay
        r = jnp.where(jnp.sum(old) > 0, jnp.asarray(r, dtype), 0.0)
        return (1.0 - r) * w + r * old

    def breakpoints(self):
        if isinstance(self.replay, Schedule) and self.replay.breakpoints() is not None:
            b = jnp.ravel(jnp.asarray(self.replay.breakpoints(), self.switch_at.dtype))
            return jnp.concatenate([self.switch_at, b])
        return self.switch_at

    def check(self, n_tasks, alphas):
        if _is_concrete(self.switch_at):
            s = np.asarray(self.switch_at, dtype=np.float64)
            a = np.asarray(alphas, dtype=np.float64)
            if not np.all(np.isfinite(s)) or np.any(np.diff(s) <= 0):
                raise ValueError(f"switch_at: switch times must be finite and increasing, got {s}")
            if s[0] <= a[0] or s[-1] >= a[-1]:
                raise ValueError(
                    f"switch_at: switch times must lie inside the save range "
                    f"({a[0]:g}, {a[-1]:g}), got {s}"
                )
        for t in self.tasks:
            _task_index("tasks", t, n_tasks)
        if isinstance(self.replay, Schedule):
            self.replay.check("replay")
            if _is_concrete(self.replay):
                a = np.asarray(alphas, dtype=np.float64)
                r = np.asarray(self.replay(jnp.linspace(a[0], a[-1], 257)))
                if np.any(r > 1.0):
                    raise ValueError(f"replay: a probability in [0, 1], got up to {r.max():g}")
        elif self.replay is not None and _is_concrete(self.replay):
            r = float(self.replay)
            if not 0.0 <= r <= 1.0:
                raise ValueError(f"replay: a probability in [0, 1], got {r}")

    def error_thresholds(self):
        return None


class Mixture(AbstractCurriculum):
    """Every sample comes from teacher p with probability ``probs[p]`` (interleaved tasks).

    ``probs``: an array (P,) of probabilities (non-negative, summing to 1; differentiable),
    or a callable alpha -> (P,) (for example an ``eqx.Module`` with array parameters, which
    can then be optimised; it must be smooth or report no jumps)."""

    probs: Array | Callable

    one_hot: ClassVar[bool] = False

    def __init__(self, probs):
        self.probs = probs if callable(probs) else jnp.asarray(probs)

    def weights(self, alpha, n_tasks):
        p = self.probs(alpha) if callable(self.probs) else self.probs
        dtype = jnp.result_type(alpha, float)
        return jnp.broadcast_to(jnp.asarray(p, dtype), (n_tasks,))

    def breakpoints(self):
        return None

    def check(self, n_tasks, alphas):
        if callable(self.probs):
            p = self.probs(jnp.asarray(alphas)[0])
        else:
            p = self.probs
        if not _is_concrete(p):
            return
        p = np.asarray(p, dtype=np.float64)
        if p.shape != (n_tasks,):
            raise ValueError(
                f"probs: expected one probability per teacher, shape ({n_tasks},), got {p.shape}"
            )
        if np.any(~np.isfinite(p)) or np.any(p < 0) or abs(p.sum() - 1.0) > 1e-9:
            raise ValueError(f"probs: probabilities must be >= 0 and sum to 1, got {p}")

    def error_thresholds(self):
        return None


class ThresholdSwitch(AbstractCurriculum):
    """Train on ``tasks[0]`` until the error on it falls below ``threshold``, then on
    ``tasks[1]`` until its error falls below the threshold, ... (default tasks (0, 1)).

    The ODE locates each switch exactly (a Diffrax event with root finding on eps_g of the
    active task); the simulators apply the same criterion to the exact eps_g of the current
    order parameters after every step (the switch acts from the next step on). The realised
    switch times are ``Trajectory.switched_at`` (inf where a switch never happened); the
    trajectory's ``eg`` then follows the task trained at each save time.
    ``threshold``: a number > 0, or one per switch (len(tasks) - 1,)."""

    threshold: Array
    tasks: tuple = eqx.field(static=True)

    one_hot: ClassVar[bool] = True

    def __init__(self, threshold, tasks=(0, 1)):
        tasks = tuple(int(t) if isinstance(t, (int, np.integer)) else t for t in tasks)
        if len(tasks) < 2:
            raise ValueError(f"tasks: a threshold switch needs at least two tasks, got {tasks}")
        self.tasks = tasks
        thr = jnp.asarray(threshold)
        if not jnp.issubdtype(thr.dtype, jnp.inexact):
            thr = thr.astype(jnp.result_type(float))
        self.threshold = jnp.broadcast_to(thr, (len(tasks) - 1,))

    def weights(self, alpha, n_tasks):
        """The first phase's weights (the engines follow the phases themselves)."""
        dtype = jnp.result_type(alpha, float)
        return jnp.zeros((n_tasks,), dtype).at[self.tasks[0]].set(1.0)

    def breakpoints(self):
        return None

    def check(self, n_tasks, alphas):
        for t in self.tasks:
            _task_index("tasks", t, n_tasks)
        if _is_concrete(self.threshold):
            thr = np.asarray(self.threshold, dtype=np.float64)
            if not np.all(np.isfinite(thr)) or np.any(thr <= 0):
                raise ValueError(f"threshold: error thresholds must be finite and > 0, got {thr}")

    def error_thresholds(self):
        return self.tasks, self.threshold


def realised(curriculum: ThresholdSwitch, switched_at) -> TaskSwitch:
    """The time-based curriculum a threshold switch realised (switch times ``switched_at``,
    inf for switches that never happened)."""
    return TaskSwitch(switched_at, tasks=curriculum.tasks)


def as_curriculum(curriculum) -> AbstractCurriculum:
    """``None`` -> :class:`SingleTask` (teacher 0); a curriculum is returned unchanged."""
    if curriculum is None:
        return SingleTask()
    if not isinstance(curriculum, AbstractCurriculum):
        raise ValueError(
            "curriculum: expected None, tsjax.TaskSwitch, tsjax.Mixture, tsjax.ThresholdSwitch "
            "or tsjax.SingleTask, "
            f"got {type(curriculum).__name__}"
        )
    return curriculum


def sample_task(curriculum: AbstractCurriculum, alpha, n_tasks: int, u) -> Array:
    """The task of one SGD sample at ``alpha``: the one-hot index, or the inverse CDF of
    pi(alpha) at the uniform number ``u`` (ignored when one-hot)."""
    w = curriculum.weights(alpha, n_tasks)
    if curriculum.one_hot:
        return jnp.argmax(w)
    cdf = jnp.cumsum(w)
    return jnp.minimum(jnp.sum(cdf <= u * cdf[-1]), n_tasks - 1)


def head_of(task, n_heads: int):
    """The head trained on ``task``: the task's own head (multi-head) or head 0."""
    return task if n_heads > 1 else jnp.zeros_like(task)


# --------------------------------------------------------------------------------------
# The phases of a threshold switch, as the simulators follow them step by step
# --------------------------------------------------------------------------------------


def phase_state(curriculum: AbstractCurriculum, dtype):
    """(phase, switched_at): the initial phase 0 and the switch times (inf until they
    happen); a placeholder of one entry for a time-based curriculum."""
    info = curriculum.error_thresholds()
    n = 2 if info is None else len(info[0])
    return jnp.int32(0), jnp.full((n - 1,), jnp.inf, dtype)


def task_of_step(curriculum: AbstractCurriculum, alpha, n_tasks: int, u, phase):
    """The task of the SGD sample at ``alpha`` (``u``: its uniform number, used by a
    mixture; ``phase``: the current phase of a threshold switch)."""
    info = curriculum.error_thresholds()
    if info is not None:
        return jnp.asarray(info[0], jnp.int32)[phase]
    return sample_task(curriculum, alpha, n_tasks, u) if n_tasks > 1 else 0


def next_phase(curriculum: AbstractCurriculum, state, error_fn, alpha_next):
    """The phase state after a step: a threshold switch moves to the next task once
    ``error_fn(task)`` (the exact eps_g of the state after the step on the active task)
    is below the phase's threshold, recording ``alpha_next`` as the switch time. A
    time-based curriculum leaves ``state`` unchanged (``error_fn`` is not called)."""
    info = curriculum.error_thresholds()
    if info is None:
        return state
    tasks, thr = info
    phase, switched = state
    n = len(tasks)
    idx = jnp.minimum(phase, n - 2)
    active = jnp.asarray(tasks, jnp.int32)[phase]
    hit = (phase < n - 1) & (error_fn(active) < thr[idx].astype(switched.dtype))
    switched = jnp.where(hit, switched.at[idx].set(alpha_next), switched)
    return phase + hit.astype(jnp.int32), switched
