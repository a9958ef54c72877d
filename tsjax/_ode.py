r"""The order-parameter ODEs (Saad & Solla 1995; Goldt et al. 2019, eqs. (8)-(10)) and their
integration with Diffrax.

With u = (v, -v*), C = [[Q, R], [R^T, T]] and the contractions of ``_integrals.py``
(A_ip = sum_j u_j I3(i,p,j), B_ik = sum_jl u_j u_l I4(i,k,j,l)), for students i, k and
teachers n:

    dR_in/dalpha = -eta v_i A_{i,n}                                   - kappa R_in
    dQ_ik/dalpha = -eta (v_i A_ik + v_k A_ki)
                   + eta^2 v_i v_k (B_ik + sigma^2 J2(i,k))            - 2 kappa Q_ik
    dv_i/dalpha  = -eta_v sum_j u_j I2(i,j)                          - kappa v_i [eta_v != 0]

eta = lr(alpha), eta_v = lr_v(alpha) (numbers or schedules), sigma the output-noise
standard deviation, kappa the weight decay (w <- w - (kappa/N) w at every SGD step; it acts
on v only when the second layer is trained). T and v* are constant.
"""

from __future__ import annotations

import warnings

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._activations import Activation, get_activation
from ._integrals import i2_matrix, i3_contracted, i4_contracted, j2_matrix
from ._order_params import OrderParams, _is_concrete, covariance_from, eg_from
from ._schedules import Schedule, as_schedule
from ._trajectory import DivergenceError, Trajectory

__all__ = ["vector_field", "solve_ode", "OdeState"]


class OdeState(eqx.Module):
    """The integrated variables (T and v* are constant and travel in the arguments)."""

    Q: jax.Array
    R: jax.Array
    v: jax.Array


class _Args(eqx.Module):
    activation: Activation
    lr: Schedule
    lr_v: Schedule
    noise: jax.Array
    weight_decay: jax.Array
    T: jax.Array
    v_star: jax.Array


def vector_field(
    op: OrderParams,
    *,
    activation: str | Activation = "erf",
    lr=0.5,
    lr_v=0.0,
    noise=0.0,
    weight_decay=0.0,
    alpha=0.0,
) -> OrderParams:
    """d(op)/dalpha at time ``alpha``: an :class:`OrderParams` holding dQ/dalpha,
    dR/dalpha, dT/dalpha = 0, dv/dalpha and dv*/dalpha = 0 (see the module docstring)."""
    args = _Args(
        get_activation(activation),
        as_schedule(lr),
        as_schedule(lr_v),
        jnp.asarray(noise),
        jnp.asarray(weight_decay),
        op.T,
        op.v_star,
    )
    d = _rhs(jnp.asarray(alpha), OdeState(op.Q, op.R, op.v), args)
    return OrderParams(d.Q, d.R, jnp.zeros_like(op.T), d.v, jnp.zeros_like(op.v_star))


def _rhs(alpha, y: OdeState, args: _Args) -> OdeState:
    act = args.activation
    Q, R, v = y.Q, y.R, y.v
    K = Q.shape[-1]
    eta = args.lr(alpha)
    eta_v = args.lr_v(alpha)
    kappa = args.weight_decay
    C = covariance_from(Q, R, args.T)
    u = jnp.concatenate([v, -args.v_star])
    A = i3_contracted(act, C, u, K)  # (K, L)
    B = i4_contracted(act, C, u, K)  # (K, K)
    J = j2_matrix(act, Q)
    vA = v[:, None] * A[:, :K]
    dQ = -eta * (vA + vA.T) + eta**2 * jnp.outer(v, v) * (B + args.noise**2 * J) - 2 * kappa * Q
    dR = -eta * v[:, None] * A[:, K:] - kappa * R
    G = i2_matrix(act, C)[:K] @ u
    dv = -eta_v * G - kappa * v * (eta_v != 0)
    return OdeState(dQ, dR, dv)
