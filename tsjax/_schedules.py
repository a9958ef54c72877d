"""Learning-rate schedules eta(alpha).

Every place that takes a learning rate (``lr``, ``lr_v``) accepts a number or a
:class:`Schedule` (any ``eqx.Module``/callable mapping alpha to eta). Numbers become
:class:`Constant`. Time is alpha = steps / N (CONVENTIONS.md): the simulator evaluates the
schedule at alpha = t / N before step t.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike

__all__ = ["Schedule", "Constant", "as_schedule"]


class Schedule(eqx.Module):
    """Base class: a learning rate as a function of alpha."""

    def __call__(self, alpha: ArrayLike) -> Array:
        raise NotImplementedError

    def breakpoints(self) -> Array | None:
        """Alphas where the schedule is not smooth (the ODE solver steps onto them)."""
        return None


class Constant(Schedule):
    """eta(alpha) = value."""

    value: Array

    def __init__(self, value: ArrayLike):
        self.value = jnp.asarray(value)

    def __call__(self, alpha):
        return self.value * jnp.ones_like(jnp.asarray(alpha, dtype=jnp.result_type(float)))


def as_schedule(lr) -> Schedule:
    """A :class:`Schedule` from a number, an array scalar or a schedule/callable."""
    if isinstance(lr, Schedule):
        return lr
    if callable(lr):
        return _Callable(lr)
    return Constant(lr)


class _Callable(Schedule):
    fn: object = eqx.field(static=True)

    def __call__(self, alpha):
        return jnp.asarray(self.fn(alpha))
