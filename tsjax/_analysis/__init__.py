"""Analysis of the dynamics: fixed points and stability of the order-parameter ODE,
plateaus of learning curves, and the weight-space geometry of the population loss
(Hessians, gradient flow, critical points). Re-exported by ``tsjax``."""
