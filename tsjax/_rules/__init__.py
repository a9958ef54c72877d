"""Learning rules of the first layer (one family of objects; every engine takes them
through :class:`~tsjax.Problem`): the abstraction (``_abstract``), the rules that
back-propagate the output error (``_gradient``) and the RL perceptron with its reward
rules (``_rl_perceptron``)."""

from ._abstract import AbstractRule
from ._gradient import SGD, AbstractGradientRule, AdaptiveBackprop, FeedbackAlignment
from ._rl_perceptron import (
    AbstractReward,
    DecisionRewards,
    RewardMoments,
    RLPerceptron,
    ThresholdReward,
    binomial_tail,
    decision_error,
)

__all__ = [
    "AbstractRule",
    "AbstractGradientRule",
    "SGD",
    "AdaptiveBackprop",
    "FeedbackAlignment",
    "AbstractReward",
    "ThresholdReward",
    "DecisionRewards",
    "RewardMoments",
    "RLPerceptron",
    "binomial_tail",
    "decision_error",
    "as_rule",
]


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
