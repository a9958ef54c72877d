r"""Learning rules: how the first layer turns the output error into a weight update.

Online SGD moves the student's first layer by (docs/conventions.md)

    w_k <- w_k - (eta / sqrt N) c_k x,   c_k = v_k g'(lambda_k) Delta,   Delta = yhat - y,

and the second layer by v_k <- v_k - (eta_v / N) g(lambda_k) Delta (its true gradient). A
learning rule changes the hidden units' error signal c_k, keeping the readout's update:

* :class:`SGD`: c_k = v_k g'(lambda_k) Delta (back-propagation; the default).
* :class:`AdaptiveBackprop` (West & Saad 1995): c_k = v_k g'(beta lambda_k) Delta, the
  derivative of the hidden units taken at a rescaled field; beta = 1 is SGD.
* :class:`FeedbackAlignment` (Lillicrap et al. 2016; Refinetti et al. 2021):
  c_k = b_k g'(lambda_k) Delta with a fixed feedback vector b (K,) in place of v.

Every rule is a (p, beta) pair: the vector p that multiplies the hidden error (v or b) and
the gain beta of the derivative. With u = (v, -v*) and C = [[Q, R], [R^T, T]], the ODE of
``tsjax._ode`` becomes

    dR_in/dalpha = -eta p_i A_in                                       - kappa R_in
    dQ_ik/dalpha = -eta (p_i A_ik + p_k A_ki) + eta^2 p_i p_k (B_ik + sigma^2 J_ik)
                                                                      - 2 kappa Q_ik
    dv_i/dalpha  = unchanged (the true gradient of the readout)

with A_ip = sum_j u_j E[g'(beta x_i) x_p g(x_j)], B_ik = sum_jl u_j u_l
E[g'(beta x_i) g'(beta x_k) g(x_j) g(x_l)], J_ik = E[g'(beta x_i) g'(beta x_k)]. Since
g'(beta x_i) is g' of the field beta x_i, whose covariance with the others is the block of C
scaled by beta in the row and column of x_i, these are the activation's own I3, I4, J2 at
the rescaled block covariances: closed forms stay closed forms (erf), quadrature stays
quadrature, for every activation. No new order parameters are needed for any of the three:
b and beta are constants in the K-dimensional space of hidden units, and the fields
(lambda, nu) are still Gaussian with covariance C. (For ReLU, g'(beta x) = Theta(x) for
beta > 0: adaptive back-propagation is SGD.)

The rule is part of the learning problem (:class:`~tsjax.Problem`): the ODE reads its
:meth:`AbstractRule.drift`; for the rules that back-propagate (``AbstractGradientRule``)
the network simulator and the order-parameter chain read (p, beta) through ``feedback`` and
``derivative``. The RL perceptron (:class:`RLPerceptron`) has its own drift.
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._activations import Activation, Sign
from ._checks import _is_concrete
from ._integrals import (
    i2_rows,
    i3_contracted,
    i3_contracted_blocks,
    i4_contracted,
    i4_contracted_blocks,
    j2_matrix,
)
from ._order_params import covariance_from

__all__ = [
    "AbstractRule",
    "AbstractGradientRule",
    "SGD",
    "AdaptiveBackprop",
    "FeedbackAlignment",
    "RLPerceptron",
    "as_rule",
]


def _no_unknown(rule: str, known: str, unknown: dict) -> None:
    if unknown:
        name = sorted(unknown)[0]
        raise ValueError(f"{name}: not a parameter of tsjax.{rule} (its parameters: {known})")


class AbstractRule(eqx.Module):
    """A learning rule of the first layer: its drift of the order parameters (the ODE), its
    validity checks."""

    @abc.abstractmethod
    def drift(self, act: Activation, Q, R, T, v, v_star, eta, eta_v, noise, kappa):
        """(dQ, dR, dv) per unit of alpha on one teacher (v (K,), v_star (M,))."""

    @abc.abstractmethod
    def bad(self) -> Array:
        """True where a (possibly traced) parameter is invalid (the run then stops with
        ``RESULTS.invalid_input``)."""

    @abc.abstractmethod
    def check(self, K: int) -> None:
        """Eager validation against the student's K (``ValueError`` naming the
        parameter)."""


class AbstractGradientRule(AbstractRule):
    """A rule that back-propagates the output error (module docstring): the vector p that
    multiplies the hidden units' error and the gain beta of their derivative. Its drift is
    the module docstring's ODE, written once for every such rule; the simulators use
    :meth:`feedback` and :meth:`derivative`."""

    @abc.abstractmethod
    def feedback(self, v: Float[Array, " K"]) -> Float[Array, " K"]:
        """p: the vector that multiplies g'(beta lambda_k) Delta in the update of w_k."""

    @abc.abstractmethod
    def derivative(self, act: Activation, x: Array) -> Array:
        """The hidden units' derivative factor g'(beta x), elementwise."""

    @abc.abstractmethod
    def integrals(self, act: Activation, C, u, K: int):
        """(A (K, L), B (K, K), J (K, K)) of the ODE (module docstring)."""

    def drift(self, act, Q, R, T, v, v_star, eta, eta_v, noise, kappa):
        K = Q.shape[-1]
        C = covariance_from(Q, R, T)
        u = jnp.concatenate([v, -v_star])
        A, B, J = self.integrals(act, C, u, K)  # (K, L), (K, K), (K, K)
        p = self.feedback(v)
        pA = p[:, None] * A[:, :K]
        dQ = -eta * (pA + pA.T) + eta**2 * jnp.outer(p, p) * (B + noise**2 * J) - 2 * kappa * Q
        dR = -eta * p[:, None] * A[:, K:] - kappa * R
        G = i2_rows(act, C, K) @ u
        dv = -eta_v * G - kappa * v * (eta_v != 0)
        return dQ, dR, dv


class SGD(AbstractGradientRule):
    """Plain online SGD (back-propagation): c_k = v_k g'(lambda_k) Delta."""

    def __init__(self, **unknown):
        _no_unknown("SGD", "none", unknown)

    def feedback(self, v):
        return v

    def derivative(self, act, x):
        return act.derivative(x)

    def integrals(self, act, C, u, K: int):
        return i3_contracted(act, C, u, K), i4_contracted(act, C, u, K), j2_matrix(act, C[:K, :K])

    def bad(self):
        return jnp.asarray(False)

    def check(self, K: int) -> None:
        return None

    def __repr__(self):
        return "SGD()"


class AdaptiveBackprop(AbstractGradientRule):
    r"""Adaptive back-propagation (West & Saad, NIPS 1995): the hidden units' derivative is
    taken at a rescaled field, c_k = v_k g'(beta lambda_k) Delta, with the gain beta > 0
    (beta = 1: SGD). beta > 1 narrows g' (for erf) and so weakens the update of units with
    large fields relative to the others, which breaks the symmetry of the plateau sooner.

    The ODE's integrals are the activation's I3, I4, J2 at covariance blocks scaled by
    beta in the rows of the differentiated fields (module docstring), evaluated block by
    block (closed forms for erf; quadrature activations pay the block-by-block cost of
    their I4, about 20x their joint rule)."""

    beta: Array

    def __init__(self, beta=1.0, **unknown):
        _no_unknown("AdaptiveBackprop", "beta", unknown)
        if _is_concrete(beta):
            b = np.asarray(beta)
            if b.ndim != 0 or not np.isfinite(b) or not b > 0:
                raise ValueError(f"beta: expected a finite number > 0 (the gain), got {beta!r}")
        self.beta = jnp.asarray(beta, dtype=float) if _is_concrete(beta) else beta

    def feedback(self, v):
        return v

    def derivative(self, act, x):
        return act.derivative(self.beta * x)

    def integrals(self, act, C, u, K: int):
        beta = jnp.asarray(self.beta, C.dtype)
        A = i3_contracted_blocks(act, C, u, K, gain=beta)
        B = i4_contracted_blocks(act, C, u, K, gain=beta)
        J = j2_matrix(act, beta * beta * C[:K, :K])
        return A, B, J

    def bad(self):
        b = jnp.asarray(self.beta)
        return ~(jnp.isfinite(b) & (b > 0))

    def check(self, K: int) -> None:
        return None

    def __repr__(self):
        try:
            return f"AdaptiveBackprop(beta={float(self.beta):g})"
        except Exception:
            return "AdaptiveBackprop(beta=<traced>)"


class FeedbackAlignment(AbstractGradientRule):
    """Feedback alignment (Lillicrap et al. 2016; Refinetti, d'Ascoli, Ohana & Goldt 2021):
    the first layer's update uses a fixed feedback vector b of shape (K,) instead of the
    readout, c_k = b_k g'(lambda_k) Delta, while v follows its true gradient. The readout
    first aligns with b (cosine v.b / |v||b| grows), then the network memorises."""

    feedback_vector: Array

    def __init__(self, feedback=None, **unknown):
        _no_unknown("FeedbackAlignment", "feedback", unknown)
        if feedback is None:
            raise ValueError("feedback: required, a fixed vector b of shape (K,)")
        if _is_concrete(feedback):
            b = np.asarray(feedback, dtype=float)
            if b.ndim != 1 or b.shape[0] < 1 or not np.all(np.isfinite(b)):
                raise ValueError(
                    f"feedback: expected a finite vector of shape (K,), got shape {b.shape}"
                )
            self.feedback_vector = jnp.asarray(b)
        else:
            self.feedback_vector = feedback

    def feedback(self, v):
        return jnp.broadcast_to(jnp.asarray(self.feedback_vector, v.dtype), v.shape)

    def derivative(self, act, x):
        return act.derivative(x)

    def integrals(self, act, C, u, K: int):
        return i3_contracted(act, C, u, K), i4_contracted(act, C, u, K), j2_matrix(act, C[:K, :K])

    def bad(self):
        return ~jnp.all(jnp.isfinite(jnp.asarray(self.feedback_vector)))

    def check(self, K: int) -> None:
        n = np.shape(self.feedback_vector)[-1]
        if n != K:
            raise ValueError(
                f"feedback: expected shape ({K},), one entry per student unit, got ({n},)"
            )

    def __repr__(self):
        try:
            b = np.asarray(self.feedback_vector)
            return f"FeedbackAlignment(feedback={np.array2string(b, precision=4)})"
        except Exception:
            return "FeedbackAlignment(feedback=<traced>)"


def _binomial_tail(m: int, k, p):
    """P(Binomial(m, p) >= k) for a static m and k (k <= 0: 1, k > m: 0)."""
    import math

    out = jnp.zeros_like(p)
    for j in range(max(int(k), 0), m + 1):
        out = out + math.comb(m, j) * p**j * (1.0 - p) ** (m - j)
    return out


class RLPerceptron(AbstractRule):
    r"""The RL perceptron (Patel, Lee, Sarao Mannelli, Goldt & Saxe, PRX 15, 021051, 2025):
    a perceptron policy takes ``episode_length`` = T sign decisions y_t = sign(lambda_t) on
    fresh inputs per episode; the episode is rewarded when at least ``min_correct`` = n of
    them agree with the teacher's sign(nu_t) (None: all T); then
    w <- w + (c / sqrt N) (1/T) sum_t y_t x_t with c = lr if rewarded, c = -penalty otherwise.
    One step of tsjax's clock is one episode (alpha = episodes / N). K = M = 1, activation
    ``"sign"``, v = v* = 1.

    ODE (derived in docs/rules.md): with rho = R / sqrt(Q T), P = 1 - arccos(rho) / pi (one
    decision correct), B1 = P(Bin(T-1, P) >= n-1), B0 = P(Bin(T-1, P) >= n) (the other
    decisions, given this one right / wrong), P_R = P(Bin(T, P) >= n),

        dR/dalpha = sqrt(T_) [-penalty sqrt(2/pi) rho
                               + (lr + penalty)(B1 (1 + rho) - B0 (1 - rho)) / sqrt(2 pi)],
        dQ/dalpha = 2 sqrt(Q) [-penalty sqrt(2/pi)
                               + (lr + penalty)(B1 (1 + rho) + B0 (1 - rho)) / sqrt(2 pi)]
                    + (lr^2 P_R + penalty^2 (1 - P_R)) / T

    (T_ = the teacher's norm T_11), minus the weight decay's 2 kappa Q, kappa R. The error of
    one decision is arccos(rho) / pi; tsjax's eps_g of the sign outputs is twice it."""

    episode_length: int = eqx.field(static=True)
    min_correct: int = eqx.field(static=True)
    penalty: Array

    def __init__(self, episode_length=1, min_correct=None, penalty=0.0, **unknown):
        _no_unknown("RLPerceptron", "episode_length, min_correct, penalty", unknown)
        T = episode_length
        if isinstance(T, bool) or not isinstance(T, (int, np.integer)) or T < 1:
            raise ValueError(f"episode_length: expected an integer >= 1, got {T!r}")
        n = T if min_correct is None else min_correct
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= T:
            raise ValueError(
                f"min_correct: expected None or an integer in [1, episode_length = {T}], "
                f"got {min_correct!r}"
            )
        if _is_concrete(penalty):
            x = np.asarray(penalty)
            if x.ndim != 0 or not np.isfinite(x) or x < 0:
                raise ValueError(f"penalty: expected a number >= 0, got {penalty!r}")
            penalty = jnp.asarray(penalty, dtype=float)
        self.episode_length = int(T)
        self.min_correct = int(n)
        self.penalty = penalty

    def drift(self, act, Q, R, T, v, v_star, eta, eta_v, noise, kappa):
        if not isinstance(act, Sign):
            raise ValueError(
                f"activation: the RL perceptron decides with signs; use activation='sign', "
                f"got {act!r}"
            )
        Te, n = self.episode_length, self.min_correct
        q, r, t = Q[0, 0], R[0, 0], T[0, 0]
        rho = jnp.clip(r / jnp.sqrt(q * t), -1.0, 1.0)
        P = 1.0 - jnp.arccos(rho) / jnp.pi
        B1 = _binomial_tail(Te - 1, n - 1, P)
        B0 = _binomial_tail(Te - 1, n, P)
        PR = _binomial_tail(Te, n, P)
        pen = jnp.asarray(self.penalty, Q.dtype)
        s2pi = jnp.sqrt(2.0 * jnp.pi)
        dR = jnp.sqrt(t) * (
            -pen * jnp.sqrt(2.0 / jnp.pi) * rho
            + (eta + pen) * (B1 * (1 + rho) - B0 * (1 - rho)) / s2pi
        )
        dQ = (
            2.0
            * jnp.sqrt(q)
            * (
                -pen * jnp.sqrt(2.0 / jnp.pi)
                + (eta + pen) * (B1 * (1 + rho) + B0 * (1 - rho)) / s2pi
            )
            + (eta**2 * PR + pen**2 * (1.0 - PR)) / Te
        )
        dQ = jnp.reshape(dQ, (1, 1)) - 2 * kappa * Q
        dR = jnp.reshape(dR, (1, 1)) - kappa * R
        return dQ, dR, jnp.zeros_like(v)

    def bad(self):
        p = jnp.asarray(self.penalty)
        return ~(jnp.isfinite(p) & (p >= 0))

    def check(self, K: int) -> None:
        if K != 1:
            raise ValueError(f"rule: the RL perceptron has one unit (K = 1), got K = {K}")

    def __repr__(self):
        try:
            pen = f"{float(self.penalty):g}"
        except Exception:
            pen = "<traced>"
        return (f"RLPerceptron(episode_length={self.episode_length}, "
                f"min_correct={self.min_correct}, penalty={pen})")  # fmt: skip


def decision_error(traj) -> Array:
    """The probability that one sign decision is wrong, arccos(R / sqrt(Q T)) / pi, of a
    one-unit Trajectory (shape (S,)): half of tsjax's eps_g for sign outputs."""
    rho = traj.R[:, 0, 0] / jnp.sqrt(traj.Q[:, 0, 0] * traj.T[0, 0])
    return jnp.arccos(jnp.clip(rho, -1.0, 1.0)) / jnp.pi


def as_rule(rule) -> AbstractRule:
    """``None`` -> :class:`SGD`; a rule -> itself; anything else: ``ValueError``."""
    if rule is None:
        return SGD()
    if not isinstance(rule, AbstractRule):
        raise ValueError(
            "rule: expected tsjax.SGD(), tsjax.AdaptiveBackprop(beta), "
            "tsjax.FeedbackAlignment(feedback=b) or tsjax.RLPerceptron(...), got "
            f"{type(rule).__name__}"
        )
    return rule
