r"""The RL perceptron (Patel, Lee, Sarao Mannelli, Goldt & Saxe, PRX 15, 021051, 2025).

A perceptron policy w in R^N takes T decisions y_t = sign(lambda_t), lambda_t = w . x_t /
sqrt N, on T fresh inputs x_t ~ N(0, I_N) (one episode = one step of tsjax's clock, so
alpha = episodes / N). Decision t is correct, c_t = 1, when it agrees with the teacher's
sign(nu_t), nu_t = w* . x_t / sqrt N. A reward rule (:class:`AbstractReward`) credits each
decision with two weights a_t, b_t >= 0 computed from the pattern (c_1 ... c_T), and

    w <- w + (1 / (T sqrt N)) sum_t G_t y_t x_t,     G_t = lr a_t - penalty b_t.

The threshold rule of the paper (:class:`ThresholdReward`): a_t = 1 if at least n decisions
are correct (the episode is rewarded), b_t = 1 otherwise.

ODE (N -> infinity; derivation in docs/rules.md). Given w, the T decisions are independent,
each correct with probability P = 1 - arccos(rho) / pi, rho = R / sqrt(Q T_) (T_ the
teacher's norm), and given c_t the fields (lambda_t, nu_t) are independent of the other
decisions. With the conditional moments

    E[y lambda 1{c = 1}] = sqrt(Q) (1 + rho) / sqrt(2 pi),
    E[y lambda 1{c = 0}] = sqrt(Q) (1 - rho) / sqrt(2 pi),
    E[y nu 1{c = 1}] = sqrt(T_) (1 + rho) / sqrt(2 pi),
    E[y nu 1{c = 0}] = -sqrt(T_) (1 - rho) / sqrt(2 pi),

and the reward's averages over t of m_t(c) = E[G_t | c_t = c] (m1, m0) and of E[G_t^2] (S):

    dR/dalpha = sqrt(T_) [m1 (1 + rho) - m0 (1 - rho)] / sqrt(2 pi)              - kappa R,
    dQ/dalpha = 2 sqrt(Q) [m1 (1 + rho) + m0 (1 - rho)] / sqrt(2 pi) + S / T     - 2 kappa Q

(the Hebbian term's square, (1/T^2) sum_t G_t^2 |x_t|^2 / N, is S / T; the cross terms
x_t . x_s / N vanish as N -> infinity). m1 = lr A1 - penalty B1, m0 = lr A0 - penalty B0,
S = lr^2 AA - 2 lr penalty AB + penalty^2 BB, with the reward's
:class:`RewardMoments`.
"""

from __future__ import annotations

import abc
import math
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

from .._activations import Sign
from .._checks import _is_concrete
from .._schedules import Schedule, check_rate
from ._abstract import AbstractRule, no_unknown

__all__ = [
    "AbstractReward",
    "ThresholdReward",
    "DecisionRewards",
    "RewardMoments",
    "RLPerceptron",
    "decision_error",
]


class RewardMoments(NamedTuple):
    """Averages over the T decisions of an episode of the reward weights (module
    docstring): A1 = E[a_t | c_t = 1], A0 = E[a_t | c_t = 0], B1, B0 likewise for b_t,
    and AA = E[a_t^2], AB = E[a_t b_t], BB = E[b_t^2]."""

    A1: Array
    A0: Array
    B1: Array
    B0: Array
    AA: Array
    AB: Array
    BB: Array


def binomial_tail(m: int, k, p):
    """P(Binomial(m, p) >= k) for a static m and a possibly traced k (k <= 0: 1, k > m:
    0)."""
    out = jnp.zeros_like(p)
    for j in range(m + 1):
        term = math.comb(m, j) * p**j * (1.0 - p) ** (m - j)
        out = out + jnp.where(j >= k, term, 0.0)
    return out


class AbstractReward(eqx.Module):
    """How an episode of T decisions is rewarded: the weights (a_t, b_t) >= 0 of each
    decision (G_t = lr a_t - penalty b_t, module docstring)."""

    @abc.abstractmethod
    def credits(self, correct: Bool[Array, " T"]) -> tuple[Float[Array, " T"], Float[Array, " T"]]:
        """(a, b), each (T,), of one episode from its decisions' correctness (in the
        order they were taken)."""

    @abc.abstractmethod
    def moments(self, T: int, P) -> RewardMoments:
        """The reward's :class:`RewardMoments` when each decision is correct with
        probability P, independently."""

    @abc.abstractmethod
    def check(self, T: int) -> None:
        """Eager validation against the episode length T (``ValueError``)."""

    @abc.abstractmethod
    def bad(self) -> Array:
        """True where a (possibly traced) parameter is invalid."""


class ThresholdReward(AbstractReward):
    """The episode is rewarded (a_t = 1 for every t) when at least ``min_correct`` = n of
    its T decisions are correct, penalised (b_t = 1) otherwise; n = T: all of them.

    Moments: A1 = P(Bin(T-1, P) >= n-1), A0 = P(Bin(T-1, P) >= n), B1 = 1 - A1,
    B0 = 1 - A0, AA = P(Bin(T, P) >= n) (the probability of a reward), AB = 0,
    BB = 1 - AA."""

    min_correct: Array

    def __init__(self, min_correct):
        n = min_correct
        if _is_concrete(n):
            if isinstance(n, bool) or not float(np.asarray(n)).is_integer() or n < 1:
                raise ValueError(f"min_correct: expected an integer >= 1, got {min_correct!r}")
            n = jnp.asarray(int(n), dtype=jnp.int32)
        self.min_correct = n  # an array, so that rules differing in n share a compilation

    def credits(self, correct):
        k = jnp.sum(correct.astype(jnp.int32))
        won = jnp.broadcast_to(k >= self.min_correct, correct.shape)
        return won.astype(float), (~won).astype(float)

    def moments(self, T, P):
        n = self.min_correct
        A1 = binomial_tail(T - 1, n - 1, P)
        A0 = binomial_tail(T - 1, n, P)
        PR = binomial_tail(T, n, P)
        return RewardMoments(A1, A0, 1.0 - A1, 1.0 - A0, PR, jnp.zeros_like(P), 1.0 - PR)

    def check(self, T):
        if _is_concrete(self.min_correct) and not 1 <= int(self.min_correct) <= T:
            raise ValueError(
                f"min_correct: expected None or an integer in [1, episode_length = {T}], "
                f"got {int(self.min_correct)}"
            )

    def bad(self):
        return jnp.asarray(self.min_correct) < 1

    def __repr__(self):
        try:
            return f"ThresholdReward(min_correct={int(self.min_correct)})"
        except Exception:
            return "ThresholdReward(min_correct=<traced>)"


class DecisionRewards(AbstractReward):
    r"""Every decision is rewarded on its own: r_s = +1 (weight of lr) if decision s is
    correct, -1 (weight of the penalty) if not, and decision t is credited with the
    discounted return of the rest of the episode, sum_{s >= t} gamma^(s-t) r_s:

        a_t = sum_{s >= t} gamma^(s-t) c_s,   b_t = sum_{s >= t} gamma^(s-t) (1 - c_s),

    ``discount`` = gamma in [0, 1] (0: immediate rewards; 1: the undiscounted
    reward-to-go, which grows with T). Moments, with d = T - t later decisions,
    G = sum_{j=0..d} gamma^j, g = sum_{j=0..d} gamma^(2j): E[a_t | c_t = 1] = 1 + P (G - 1),
    E[a_t | c_t = 0] = P (G - 1), E[b_t | c_t = 1] = (1 - P)(G - 1),
    E[b_t | c_t = 0] = 1 + (1 - P)(G - 1), E[a_t^2] = P (1 - P) g + P^2 G^2,
    E[b_t^2] = P (1 - P) g + (1 - P)^2 G^2, E[a_t b_t] = P (1 - P)(G^2 - g), averaged
    over t."""

    discount: Array

    def __init__(self, discount=0.0):
        if _is_concrete(discount):
            x = np.asarray(discount)
            if x.ndim != 0 or not np.isfinite(x) or not 0 <= x <= 1:
                raise ValueError(f"discount: expected a number in [0, 1], got {discount!r}")
            discount = jnp.asarray(discount, dtype=float)
        self.discount = discount

    def _powers(self, T: int, dtype):
        gamma = jnp.asarray(self.discount, dtype)
        return jnp.cumprod(jnp.concatenate([jnp.ones((1,), dtype), jnp.full((T - 1,), gamma)]))

    def credits(self, correct):
        T = correct.shape[-1]
        c = correct.astype(float)
        pw = self._powers(T, c.dtype)  # gamma^0 ... gamma^(T-1)
        t = jnp.arange(T)
        lag = t[None, :] - t[:, None]  # s - t
        U = jnp.where(lag >= 0, pw[jnp.clip(lag, 0, T - 1)], 0.0)
        return U @ c, U @ (1.0 - c)

    def moments(self, T, P):
        pw = self._powers(T, P.dtype)
        G = jnp.cumsum(pw)  # G[d] = sum_{j <= d} gamma^j
        g = jnp.cumsum(pw * pw)
        q = 1.0 - P
        m = lambda x: jnp.mean(x)  # noqa: E731 (over d = 0 .. T-1, i.e. over t)
        return RewardMoments(
            m(1.0 + P * (G - 1.0)),
            m(P * (G - 1.0)),
            m(q * (G - 1.0)),
            m(1.0 + q * (G - 1.0)),
            m(P * q * g + P * P * G * G),
            m(P * q * (G * G - g)),
            m(P * q * g + q * q * G * G),
        )

    def check(self, T):
        return None

    def bad(self):
        x = jnp.asarray(self.discount)
        return ~(jnp.isfinite(x) & (x >= 0) & (x <= 1))

    def __repr__(self):
        try:
            return f"DecisionRewards(discount={float(self.discount):g})"
        except Exception:
            return "DecisionRewards(discount=<traced>)"


class RLPerceptron(AbstractRule):
    r"""The RL perceptron (Patel, Lee, Sarao Mannelli, Goldt & Saxe, PRX 15, 021051, 2025)
    as a learning rule: episodes of ``episode_length`` = T sign decisions, rewarded when at
    least ``min_correct`` = n of them are correct (None: all T), or by another ``reward``
    rule (:class:`ThresholdReward`, :class:`DecisionRewards`; then ``min_correct`` must be
    None); after each episode w <- w + (1 / (T sqrt N)) sum_t G_t y_t x_t with G_t = lr
    when rewarded and -``penalty`` otherwise (module docstring for the general reward).
    K = M = 1, activation ``"sign"``, v = v* = 1, no output noise, a fixed readout
    (lr_v = 0). The learning rate is the problem's ``lr`` (a number or a schedule); the
    penalty is a number >= 0 or a :class:`~tsjax.Schedule` penalty(alpha) (either may be
    traced: ``jax.grad``, ``sweep``, ``optimise_protocol(controls={"penalty": ...})``).

    Its ODE is the module docstring's; the error of one decision is arccos(rho) / pi
    (:func:`decision_error`), the probability of a reward ``reward_probability``; tsjax's
    eps_g for sign outputs is twice the decision error (eps_g = E[(y - yhat)^2] / 2 and
    (y - yhat)^2 = 4 when the signs differ)."""

    episode_length: int = eqx.field(static=True)
    reward: AbstractReward
    penalty: Array

    def __init__(self, episode_length=1, min_correct=None, penalty=0.0, reward=None, **unknown):
        no_unknown("RLPerceptron", "episode_length, min_correct, penalty, reward", unknown)
        T = episode_length
        if isinstance(T, bool) or not isinstance(T, (int, np.integer)) or T < 1:
            raise ValueError(f"episode_length: expected an integer >= 1, got {T!r}")
        if reward is None:
            n = T if min_correct is None else min_correct
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= T:
                raise ValueError(
                    f"min_correct: expected None or an integer in [1, episode_length = {T}], "
                    f"got {min_correct!r}"
                )
            reward = ThresholdReward(int(n))
        elif not isinstance(reward, AbstractReward):
            raise ValueError(
                "reward: expected tsjax.ThresholdReward(n) or tsjax.DecisionRewards(discount), "
                f"got {type(reward).__name__}"
            )
        elif min_correct is not None:
            raise ValueError("min_correct: give either min_correct or reward, not both")
        reward.check(int(T))
        if isinstance(penalty, Schedule):
            check_rate("penalty", penalty)
        elif _is_concrete(penalty):
            x = np.asarray(penalty)
            if x.ndim != 0 or not np.isfinite(x) or x < 0:
                raise ValueError(f"penalty: expected a number >= 0, got {penalty!r}")
            penalty = jnp.asarray(penalty, dtype=float)
        self.episode_length = int(T)
        self.reward = reward
        self.penalty = penalty

    @property
    def min_correct(self):
        """n of the threshold reward (None for another reward rule)."""
        r = self.reward
        if not isinstance(r, ThresholdReward):
            return None
        return int(r.min_correct) if _is_concrete(r.min_correct) else r.min_correct

    def _rho(self, Q, R, T):
        return jnp.clip(R[..., 0, 0] / jnp.sqrt(Q[..., 0, 0] * T[..., 0, 0]), -1.0, 1.0)

    def reward_probability(self, Q, R, T):
        """P(an episode is rewarded) = E[a_t] of the threshold reward (the fraction of
        rewarded decisions for :class:`DecisionRewards`), at order parameters (..., 1, 1)."""
        P = 1.0 - jnp.arccos(self._rho(Q, R, T)) / jnp.pi
        m = self.reward.moments(self.episode_length, P)
        return P * m.A1 + (1.0 - P) * m.A0

    def _rates(self, act, Q, R, T, eta):
        if not isinstance(act, Sign):
            raise ValueError(
                f"activation: the RL perceptron decides with signs; use activation='sign', "
                f"got {act!r}"
            )
        q, t = Q[0, 0], T[0, 0]
        rho = self._rho(Q, R, T)
        P = 1.0 - jnp.arccos(rho) / jnp.pi
        m = self.reward.moments(self.episode_length, P)
        pen = jnp.asarray(self.penalty, Q.dtype)
        m1 = eta * m.A1 - pen * m.B1
        m0 = eta * m.A0 - pen * m.B0
        S = eta**2 * m.AA - 2.0 * eta * pen * m.AB + pen**2 * m.BB
        s2pi = jnp.sqrt(2.0 * jnp.pi)
        dR = jnp.sqrt(t) * (m1 * (1 + rho) - m0 * (1 - rho)) / s2pi
        dQ = 2.0 * jnp.sqrt(q) * (m1 * (1 + rho) + m0 * (1 - rho)) / s2pi
        return dQ + S / self.episode_length, dR

    def drift(self, act, Q, R, T, v, v_star, eta, eta_v, noise, kappa):
        dQ, dR = self._rates(act, Q, R, T, eta)
        dQ = jnp.reshape(dQ, (1, 1)) - 2 * kappa * Q
        dR = jnp.reshape(dR, (1, 1)) - kappa * R
        return dQ, dR, jnp.zeros_like(v)

    def greedy_lr(self, Q, R, T):
        r"""The learning rate that maximises d rho / d alpha at (Q, R, T) (each (1, 1)),
        the penalty fixed: d rho / d alpha is a concave quadratic in lr, so
        lr* = -f'(0) / f''(0) (clipped at 0). For all-correct rewards without penalty it is
        T sqrt(Q) (1 - rho^2) / (sqrt(2 pi) rho P) (T_ = 1)."""

        def drho(eta):
            dQ, dR = self._rates(Sign(), Q, R, T, eta)
            q, r, t = Q[0, 0], R[0, 0], T[0, 0]
            return dR / jnp.sqrt(q * t) - r * dQ / (2.0 * q * jnp.sqrt(q * t))

        zero = jnp.zeros((), Q.dtype)
        slope = jax.grad(drho)(zero)
        curv = jax.grad(jax.grad(drho))(zero)
        return jnp.maximum(-slope / curv, 0.0)

    def signal(self, act, lam, yhat, y, v, eta):
        decisions = jnp.sign(lam[0])  # (B,) = (T,)
        correct = decisions * jnp.sign(y) > 0
        a, b = self.reward.credits(correct)
        G = eta * a - jnp.asarray(self.penalty, lam.dtype) * b
        return jnp.broadcast_to(-(G * decisions)[None, :], lam.shape)

    def samples_per_step(self, batch_size: int) -> int:
        if batch_size not in (1, self.episode_length):
            raise ValueError(
                f"batch_size: the RL perceptron's step is one episode of episode_length = "
                f"{self.episode_length} inputs; leave batch_size at 1, got {batch_size}"
            )
        return self.episode_length

    def scale_free(self) -> bool:
        return True

    def at(self, alpha):
        if not isinstance(self.penalty, Schedule):
            return self
        return eqx.tree_at(lambda r: r.penalty, self, self.penalty(alpha))

    def breakpoints(self):
        return self.penalty.breakpoints() if isinstance(self.penalty, Schedule) else None

    def bad(self):
        if isinstance(self.penalty, Schedule):  # checked where it is evaluated (``at``)
            return self.reward.bad()
        p = jnp.asarray(self.penalty)
        return ~(jnp.isfinite(p) & (p >= 0)) | self.reward.bad()

    def check(self, K: int, problem=None) -> None:
        if K != 1:
            raise ValueError(f"rule: the RL perceptron has one unit (K = 1), got K = {K}")
        if problem is None:
            return
        if not isinstance(problem.activation, Sign):
            raise ValueError(
                "activation: the RL perceptron decides with signs; use activation='sign', "
                f"got {problem.activation!r}"
            )
        if _is_concrete(problem.noise) and np.any(np.asarray(problem.noise) != 0):
            raise ValueError(
                "noise: the RL perceptron's teacher is noiseless (its ODE assumes it); "
                f"expected 0, got {problem.noise!r}"
            )
        lr_v = problem.lr_v(jnp.zeros(()))
        if _is_concrete(lr_v) and np.any(np.asarray(lr_v) != 0):
            raise ValueError("lr_v: the RL perceptron's readout is fixed (v = 1); expected 0")

    def __repr__(self):
        try:
            pen = (
                repr(self.penalty)
                if isinstance(self.penalty, Schedule)
                else f"{float(self.penalty):g}"
            )
        except Exception:
            pen = "<traced>"
        T = self.episode_length
        if isinstance(self.reward, ThresholdReward):
            n = self.min_correct
            n = n if isinstance(n, int) else "<traced>"
            return f"RLPerceptron(episode_length={T}, min_correct={n}, penalty={pen})"
        return f"RLPerceptron(episode_length={T}, reward={self.reward!r}, penalty={pen})"


def decision_error(traj) -> Array:
    """The probability that one sign decision is wrong, arccos(R / sqrt(Q T)) / pi, of a
    one-unit Trajectory (shape (S,)): half of tsjax's eps_g for sign outputs."""
    rho = traj.R[:, 0, 0] / jnp.sqrt(traj.Q[:, 0, 0] * traj.T[0, 0])
    return jnp.arccos(jnp.clip(rho, -1.0, 1.0)) / jnp.pi
