"""The abstraction every learning rule implements, shared by the ODE and both simulators."""

from __future__ import annotations

import abc

import equinox as eqx
from jaxtyping import Array, Float

from .._activations import Activation

__all__ = ["AbstractRule", "no_unknown"]


def no_unknown(rule: str, known: str, unknown: dict) -> None:
    """``ValueError`` naming the first keyword a rule does not have."""
    if unknown:
        name = sorted(unknown)[0]
        raise ValueError(f"{name}: not a parameter of tsjax.{rule} (its parameters: {known})")


class AbstractRule(eqx.Module):
    r"""A learning rule of the first layer. One step of every engine moves the student's
    first layer by

        w_k <- (1 - kappa / N) w_k - (1 / (B sqrt N)) sum_b s_kb x_b

    on the step's B inputs x_b, with the signal s (K, B) of :meth:`signal`; the ODE reads the
    rule's :meth:`drift` of the order parameters (its N -> infinity limit)."""

    @abc.abstractmethod
    def drift(self, act: Activation, Q, R, T, v, v_star, eta, eta_v, noise, kappa):
        """(dQ, dR, dv) per unit of alpha on one teacher (v (K,), v_star (M,))."""

    @abc.abstractmethod
    def signal(
        self,
        act: Activation,
        lam: Float[Array, "K B"],
        yhat: Float[Array, " B"],
        y: Float[Array, " B"],
        v: Float[Array, " K"],
        eta,
    ) -> Float[Array, "K B"]:
        """s (K, B): the update of the first layer at one step (class docstring), from the
        student's fields lambda, its outputs yhat = v . g(lambda), the labels y and the
        learning rate eta."""

    @abc.abstractmethod
    def samples_per_step(self, batch_size: int) -> int:
        """B, the number of inputs of one step, given the user's ``batch_size``
        (``ValueError`` if the rule fixes it otherwise)."""

    @abc.abstractmethod
    def scale_free(self) -> bool:
        """True if the dynamics has no natural scale of |w| (Q may grow without bound
        while the student learns): then only non-finite values count as divergence."""

    @abc.abstractmethod
    def at(self, alpha) -> AbstractRule:
        """The rule at time ``alpha``: its time-dependent parameters (schedules, e.g. the RL
        perceptron's penalty) evaluated there; every engine steps with ``rule.at(alpha)``."""

    @abc.abstractmethod
    def breakpoints(self):
        """Times where a time-dependent parameter jumps or kinks (1-D array), or None."""

    @abc.abstractmethod
    def bad(self) -> Array:
        """True where a (possibly traced) parameter is invalid (the run then stops with
        ``RESULTS.invalid_input``)."""

    @abc.abstractmethod
    def check(self, K: int, problem=None) -> None:
        """Eager validation against the student's K and, if given, the rest of the
        :class:`~tsjax.Problem` (``ValueError`` naming the parameter)."""
