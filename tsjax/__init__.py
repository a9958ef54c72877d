from ._activations import Activation, Erf, Linear, ReLU, get_activation
from ._order_params import OrderParams, generalisation_error
from ._ode import vector_field, solve_ode
from ._trajectory import Trajectory, DivergenceError
