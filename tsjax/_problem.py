r"""The learning problem: one description that every engine takes.

A :class:`Problem` holds what defines the online-SGD dynamics apart from the state (the
networks or their order parameters): the activation g, the learning rates (numbers or
schedules eta(alpha)), the output-noise standard deviation, the weight decay and the
curriculum over teachers. ``solve_ode``, ``simulate``, ``simulate_order_params`` and
``sweep`` build one from their keyword arguments (or take ``problem=``) and hand it to their
compiled engines, which read every piece of physics from it:

* ``problem.rates(alpha)`` -> (eta, eta_v); ``problem.decay(alpha)`` -> kappa;
* ``problem.curriculum.weights(alpha, P)`` -> the task probabilities (``tsjax._curricula``);
* ``problem.rule``: the learning rule of the first layer (``tsjax._rules``: SGD, adaptive
  back-propagation, feedback alignment);
* the per-task SGD drift of the ODE (``tsjax._ode.sgd_drift``), the network step
  (``tsjax._simulate._sgd_step``) and the exact order-parameter step
  (``tsjax._simulate_op._op_step``) take the activation, rates, noise and decay from it.

It is a pytree: numeric fields may be traced (``jax.vmap`` over a batch of problems,
``jax.grad`` with respect to rates, noise, decay, switch times, mixing fractions).
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array

from ._activations import Activation, get_activation
from ._checks import DEFAULT_MAX_NORM, check_activation, check_hyperparameters, divergence_limits
from ._curricula import AbstractCurriculum, as_curriculum
from ._rules import AbstractRule, as_rule
from ._schedules import Schedule, as_schedule, check_rate

__all__ = ["Problem"]


class Problem(eqx.Module):
    """The learning problem (docs/conventions.md).

    Fields:
        activation: the :class:`~tsjax.Activation` g of student and teachers.
        lr: first-layer learning rate eta(alpha) >= 0 (a :class:`~tsjax.Schedule`).
        lr_v: second-layer learning rate eta_v(alpha) >= 0 (0: second layer fixed).
        noise: output-noise standard deviation sigma >= 0 (scalar array).
        weight_decay: kappa >= 0 (w <- w - (kappa/N) w per step; on v only when trained):
            a scalar array, or a :class:`~tsjax.Schedule` kappa(alpha) (a time-dependent
            decay, for example a control of :func:`tsjax.optimise_protocol`).
        curriculum: which teacher labels the sample at alpha (``tsjax.TaskSwitch``,
            ``tsjax.Mixture``; default: teacher 0).
        rule: the learning rule of the first layer (``tsjax.SGD()``, the default;
            ``tsjax.AdaptiveBackprop(beta)``, ``tsjax.FeedbackAlignment(feedback=b)``,
            ``tsjax.RLPerceptron(...)``).

    ``Problem(activation="erf", lr=0.5, lr_v=0.0, noise=0.0, weight_decay=0.0,
    curriculum=None, rule=None)`` converts numbers to schedules and arrays.
    """

    activation: Activation
    lr: Schedule
    lr_v: Schedule
    noise: Array
    weight_decay: Array | Schedule
    curriculum: AbstractCurriculum
    rule: AbstractRule

    def __init__(
        self,
        activation: str | Activation = "erf",
        lr=0.5,
        lr_v=0.0,
        noise=0.0,
        weight_decay=0.0,
        curriculum: AbstractCurriculum | None = None,
        rule: AbstractRule | None = None,
    ):
        self.activation = get_activation(activation)
        self.lr = as_schedule(lr)
        self.lr_v = as_schedule(lr_v)
        self.noise = jnp.asarray(noise)
        self.weight_decay = (
            weight_decay if isinstance(weight_decay, Schedule) else jnp.asarray(weight_decay)
        )
        self.curriculum = as_curriculum(curriculum)
        self.rule = as_rule(rule)

    def rates(self, alpha):
        """(eta, eta_v) at time ``alpha``."""
        return self.lr(alpha), self.lr_v(alpha)

    def decay(self, alpha):
        """The weight decay kappa at time ``alpha``."""
        kappa = self.weight_decay
        return kappa(alpha) if isinstance(kappa, Schedule) else kappa

    def breakpoints(self):
        """Times where the rates, the decay or the curriculum jump or kink (the ODE solver
        steps onto them), as one 1-D array, or None."""
        # the curriculum's first: where a switch time coincides with a breakpoint of a rate
        # (a grid of round numbers), the derivative of the solution with respect to the
        # jump time then goes to the switch time (Diffrax steps onto the first of equal
        # jump times)
        pts = [self.curriculum.breakpoints(), self.lr.breakpoints(), self.lr_v.breakpoints()]
        if isinstance(self.weight_decay, Schedule):
            pts.append(self.weight_decay.breakpoints())
        pts.append(self.rule.breakpoints())
        pts = [jnp.ravel(jnp.asarray(p)) for p in pts if p is not None]
        return jnp.concatenate(pts) if pts else None

    def divergence_limits(self, Q0, T, v0, v_star, max_norm=DEFAULT_MAX_NORM):
        """(q_lim, v_lim) of ``tsjax._checks.divergence_limits`` for a run from (Q0, v0);
        a scale-free rule (``AbstractRule.scale_free``: the RL perceptron, whose sign
        decisions do not fix |w|) diverges only through non-finite values (q_lim = inf)."""
        q_lim, v_lim = divergence_limits(Q0, T, v0, v_star, max_norm)
        if self.rule.scale_free():
            q_lim = q_lim * float("inf")
        return q_lim, v_lim

    def check(self, n_tasks: int | None = None, alphas=None, K: int | None = None) -> Problem:
        """Eager validation of every concrete part (``ValueError`` naming the parameter);
        traced values are checked during the run. ``K``: the student's hidden units (the
        rule's shapes are checked against it). Returns ``self``."""
        check_activation(self.activation)
        check_rate("lr", self.lr)
        check_rate("lr_v", self.lr_v)
        _check_decay(self.noise, self.weight_decay)
        if n_tasks is not None:
            self.curriculum.check(n_tasks, alphas)
        if K is not None:
            self.rule.check(K, self)
        return self


def make_problem(
    problem, *, activation, lr, lr_v, noise, weight_decay, curriculum, rule=None
) -> Problem:
    """The Problem of an engine call: ``problem`` if given (the keywords are then ignored),
    else one built from the keywords (checked eagerly, with the messages that name the
    keyword)."""
    if problem is not None:
        if not isinstance(problem, Problem):
            raise ValueError(f"problem: expected a tsjax.Problem, got {type(problem).__name__}")
        return problem
    if lr is None:
        raise ValueError("lr: the learning rate is required (a number >= 0 or a schedule)")
    # check the raw values first, so that messages name the user's keyword
    check_rate("lr", lr)
    check_rate("lr_v", lr_v)
    _check_decay(noise, weight_decay)
    return Problem(activation, lr, lr_v, noise, weight_decay, curriculum, rule)


def _check_decay(noise, weight_decay) -> None:
    check_hyperparameters(noise=noise)
    if isinstance(weight_decay, Schedule):
        check_rate("weight_decay", weight_decay)
    else:
        check_hyperparameters(weight_decay=weight_decay)
