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
:meth:`AbstractRule.drift`; both simulators read its :meth:`AbstractRule.signal`, here
s_kb = eta p_k g'(beta lambda_kb) Delta_b. The RL perceptron (``_rl_perceptron``) has its
own drift and signal.
"""

from __future__ import annotations

import abc

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._activations import Activation
from .._checks import _is_concrete
from .._integrals import (
    i2_rows,
    i3_contracted,
    i3_contracted_blocks,
    i4_contracted,
    i4_contracted_blocks,
    j2_matrix,
)
from .._order_params import covariance_from
from ._abstract import AbstractRule, no_unknown

__all__ = ["AbstractGradientRule", "SGD", "AdaptiveBackprop", "FeedbackAlignment"]


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

    def signal(self, act, lam, yhat, y, v, eta):
        return eta * self.derivative(act, lam) * self.feedback(v)[:, None] * (yhat - y)

    def samples_per_step(self, batch_size: int) -> int:
        return batch_size

    def scale_free(self) -> bool:
        return False

    def at(self, alpha):
        return self

    def breakpoints(self):
        return None

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
        no_unknown("SGD", "none", unknown)

    def feedback(self, v):
        return v

    def derivative(self, act, x):
        return act.derivative(x)

    def integrals(self, act, C, u, K: int):
        return i3_contracted(act, C, u, K), i4_contracted(act, C, u, K), j2_matrix(act, C[:K, :K])

    def bad(self):
        return jnp.asarray(False)

    def check(self, K: int, problem=None) -> None:
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
        no_unknown("AdaptiveBackprop", "beta", unknown)
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

    def check(self, K: int, problem=None) -> None:
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
        no_unknown("FeedbackAlignment", "feedback", unknown)
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

    def check(self, K: int, problem=None) -> None:
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
