"""tsjax: learning dynamics of two-layer networks in the teacher-student setup, in JAX.

Conventions: Goldt et al. (2019), docs/conventions.md.

Where things live: the activation abstraction and its Gaussian integrals in
``_activations.py`` (closed forms; ``_relu.py``; quadrature in ``_quadrature.py``), the
order parameters and eps_g in ``_order_params.py``, the ODE vector field and ``solve_ode`` in
``_ode.py``, the online-SGD simulator in ``_simulate.py`` and the exact finite-N
order-parameter chain in ``_simulate_op.py``, learning-rate schedules in ``_schedules.py``,
sweeps in ``_sweep.py``; the ``RESULTS`` enumeration and ``throw=`` errors in ``_results.py``,
input checks in ``_checks.py``, atomic files in ``_io.py``, the opt-in compilation cache in
``_cache.py``.
"""

from ._activations import (
    ACTIVATIONS,
    GELU,
    Activation,
    Erf,
    Linear,
    Quadratic,
    ReLU,
    Sigmoid,
    Sign,
    SiLU,
    Sin,
    Softplus,
    Tanh,
    get_activation,
)
from ._analysis._fixed_points import (
    ConvergenceError,
    Stability,
    critical_learning_rate,
    fixed_point,
    free_variables,
    jacobian,
    stability,
)
from ._analysis._plateaus import Plateau, find_plateaus
from ._analysis._weight_space import (
    CriticalPoint,
    find_minimum,
    gradient_flow,
    hessian,
    hessian_spectrum,
    population_loss,
)
from ._cache import enable_compilation_cache
from ._continual import forgetting_transfer
from ._curricula import AbstractCurriculum, Mixture, SingleTask, TaskSwitch, ThresholdSwitch
from ._finite_data._linear_gd import (
    LinearTask,
    linear_gd_average,
    linear_gd_error,
    linear_gd_error_limit,
    linear_gd_order_params,
    linear_gd_weights,
    sample_linear_task,
    two_scale_modulation,
)
from ._inputs._hidden_manifold import (
    AbstractInputs,
    HiddenManifold,
    HiddenManifoldLimit,
    ManifoldOrderParams,
)
from ._networks import (
    TwoLayerNet,
    init_student,
    init_teacher,
    init_teachers,
    order_params,
    teacher_overlaps,
)
from ._ode import solve_ode, vector_field
from ._optimise import (
    Control,
    optimise_protocol,
    optimise_schedule,
    plot_certificate,
    switching_function,
)
from ._order_params import OrderParams, generalisation_error
from ._problem import Problem
from ._results import RESULTS
from ._rosenbrock import Rodas4, Rodas5P
from ._rules import (
    SGD,
    AbstractGradientRule,
    AbstractReward,
    AbstractRule,
    AdaptiveBackprop,
    DecisionRewards,
    FeedbackAlignment,
    RewardMoments,
    RLPerceptron,
    ThresholdReward,
    decision_error,
)
from ._schedules import (
    Constant,
    ExponentialDecay,
    InverseTime,
    LogGridSchedule,
    OptaxSchedule,
    PiecewiseConstant,
    PiecewiseLinear,
    Schedule,
    from_optax,
)
from ._simulate import simulate
from ._simulate_op import simulate_order_params
from ._sweep import load_sweep, save_sweep, sweep, sweep_point
from ._trajectory import DivergenceError, Trajectory

__version__ = "0.1.0"

__all__ = [
    "ConvergenceError",
    "Stability",
    "critical_learning_rate",
    "fixed_point",
    "free_variables",
    "jacobian",
    "stability",
    "Plateau",
    "find_plateaus",
    "CriticalPoint",
    "find_minimum",
    "gradient_flow",
    "hessian",
    "hessian_spectrum",
    "population_loss",
    "ACTIVATIONS",
    "AbstractInputs",
    "HiddenManifold",
    "HiddenManifoldLimit",
    "ManifoldOrderParams",
    "LinearTask",
    "linear_gd_average",
    "linear_gd_error",
    "linear_gd_error_limit",
    "linear_gd_order_params",
    "linear_gd_weights",
    "sample_linear_task",
    "two_scale_modulation",
    "AbstractRule",
    "AbstractGradientRule",
    "RLPerceptron",
    "AbstractReward",
    "ThresholdReward",
    "DecisionRewards",
    "RewardMoments",
    "decision_error",
    "Sign",
    "AdaptiveBackprop",
    "FeedbackAlignment",
    "SGD",
    "AbstractCurriculum",
    "Activation",
    "Constant",
    "DivergenceError",
    "Erf",
    "ExponentialDecay",
    "GELU",
    "InverseTime",
    "Linear",
    "Mixture",
    "Problem",
    "LogGridSchedule",
    "OptaxSchedule",
    "OrderParams",
    "PiecewiseConstant",
    "PiecewiseLinear",
    "Quadratic",
    "RESULTS",
    "ReLU",
    "Rodas4",
    "Rodas5P",
    "Schedule",
    "SiLU",
    "SingleTask",
    "Sigmoid",
    "Sin",
    "Softplus",
    "Tanh",
    "TaskSwitch",
    "ThresholdSwitch",
    "Trajectory",
    "TwoLayerNet",
    "enable_compilation_cache",
    "forgetting_transfer",
    "from_optax",
    "generalisation_error",
    "get_activation",
    "init_student",
    "init_teacher",
    "init_teachers",
    "load_sweep",
    "optimise_schedule",
    "optimise_protocol",
    "Control",
    "plot_certificate",
    "order_params",
    "save_sweep",
    "simulate",
    "simulate_order_params",
    "solve_ode",
    "sweep",
    "sweep_point",
    "switching_function",
    "teacher_overlaps",
    "vector_field",
]
