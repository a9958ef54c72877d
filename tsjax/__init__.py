"""tsjax: learning dynamics of two-layer networks in the teacher-student setup, in JAX.

Conventions: Goldt et al. (2019), see CONVENTIONS in the documentation of each function.
"""

from ._activations import ACTIVATIONS, Activation, Erf, Linear, ReLU, get_activation
from ._networks import TwoLayerNet, init_student, init_teacher, order_params
from ._ode import solve_ode, vector_field
from ._order_params import OrderParams, generalisation_error
from ._rosenbrock import Rodas4, Rodas5P
from ._schedules import Constant, Schedule
from ._simulate import simulate
from ._trajectory import DivergenceError, Trajectory

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "Constant",
    "DivergenceError",
    "Erf",
    "Linear",
    "OrderParams",
    "ReLU",
    "Rodas4",
    "Rodas5P",
    "Schedule",
    "Trajectory",
    "TwoLayerNet",
    "generalisation_error",
    "get_activation",
    "init_student",
    "init_teacher",
    "order_params",
    "simulate",
    "solve_ode",
    "vector_field",
]
