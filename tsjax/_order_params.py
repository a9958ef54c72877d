"""Order parameters (Q, R, T, v, v*) and the generalisation error.

Conventions (docs/conventions.md): Q_kl = w_k.w_l / N (K, K), R_kn = w_k.w*_n / N (K, M),
T_nm = w*_n.w*_m / N (M, M), v (K,) student and v* (M,) teacher second layer. The local
fields (lambda, nu) of a fresh Gaussian input are jointly Gaussian with covariance

    C = [[Q, R], [R^T, T]]      (K+M, K+M), students first.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._activations import Activation, get_activation
from ._checks import _is_concrete, check_activation
from ._integrals import i2_matrix

__all__ = ["OrderParams", "generalisation_error", "covariance"]


class OrderParams(eqx.Module):
    """The state of the teacher-student problem in the order-parameter description.

    Fields: ``Q`` (K, K), ``R`` (K, M), ``T`` (M, M), ``v`` (K,), ``v_star`` (M,).
    Construction checks shapes (when they are concrete); use :meth:`validate` to also check
    that the covariance [[Q, R], [R^T, T]] is positive semi-definite.
    """

    Q: Float[Array, "K K"]
    R: Float[Array, "K M"]
    T: Float[Array, "M M"]
    v: Float[Array, " K"]
    v_star: Float[Array, " M"]

    def __init__(self, Q, R, T, v, v_star):
        self.Q = jnp.asarray(Q)
        self.R = jnp.asarray(R)
        self.T = jnp.asarray(T)
        self.v = jnp.asarray(v)
        self.v_star = jnp.asarray(v_star)
        _check_shapes(self.Q, self.R, self.T, self.v, self.v_star)

    @property
    def K(self) -> int:
        """Number of student hidden units."""
        return self.Q.shape[-1]

    @property
    def M(self) -> int:
        """Number of teacher hidden units."""
        return self.T.shape[-1]

    def covariance(self) -> Float[Array, "K+M K+M"]:
        """C = [[Q, R], [R^T, T]], the covariance of the local fields (lambda, nu)."""
        return covariance(self)

    def validate(self, *, tol: float = 1e-10) -> OrderParams:
        """Check (outside jit) that Q, T are symmetric and C is positive semi-definite with a
        positive diagonal; raise ``ValueError`` naming the offending parameter otherwise.
        Returns ``self`` so that it can be chained."""
        _validate_values(self, tol)
        return self


def _check_shapes(Q, R, T, v, v_star):
    if Q.ndim != 2 or Q.shape[0] != Q.shape[1]:
        raise ValueError(f"Q: expected a square (K, K) matrix, got shape {Q.shape}")
    if T.ndim != 2 or T.shape[0] != T.shape[1]:
        raise ValueError(f"T: expected a square (M, M) matrix, got shape {T.shape}")
    K, M = Q.shape[0], T.shape[0]
    if K < 1:
        raise ValueError(f"K: the student needs K >= 1 hidden units, got K={K}")
    if M < 1:
        raise ValueError(f"M: the teacher needs M >= 1 hidden units, got M={M}")
    if R.shape != (K, M):
        raise ValueError(f"R: expected shape (K, M) = {(K, M)}, got {R.shape}")
    if v.shape != (K,):
        raise ValueError(f"v: expected shape (K,) = {(K,)}, got {v.shape}")
    if v_star.shape != (M,):
        raise ValueError(f"v_star: expected shape (M,) = {(M,)}, got {v_star.shape}")


def _validate_values(op: OrderParams, tol: float) -> None:
    if not _is_concrete(op):
        return
    Q, R, T = (np.asarray(x, dtype=np.float64) for x in (op.Q, op.R, op.T))
    for name, x in (("Q", Q), ("R", R), ("T", T), ("v", op.v), ("v_star", op.v_star)):
        if not np.all(np.isfinite(np.asarray(x))):
            raise ValueError(f"{name}: contains NaN or inf")
    for name, x in (("Q", Q), ("T", T)):
        scale = max(1.0, float(np.max(np.abs(x))))
        if np.max(np.abs(x - x.T)) > 1e-8 * scale:
            raise ValueError(
                f"{name}: must be symmetric (max |{name} - {name}^T| = "
                f"{np.max(np.abs(x - x.T)):.3g})"
            )
    for name, x in (("Q", Q), ("T", T)):
        if np.any(np.diag(x) <= 0):
            raise ValueError(
                f"{name}: diagonal entries (squared norms / N) must be > 0, got {np.diag(x)}"
            )
    C = np.block([[Q, R], [R.T, T]])
    C = 0.5 * (C + C.T)
    eig = np.linalg.eigvalsh(C)
    if eig[0] < -tol * max(1.0, eig[-1]):
        raise ValueError(
            "Q, R, T: the overlap matrix C = [[Q, R], [R^T, T]] must be positive "
            f"semi-definite (it is a Gram matrix), but its smallest eigenvalue is {eig[0]:.3g}"
        )


def covariance(op: OrderParams) -> Float[Array, "K+M K+M"]:
    """C = [[Q, R], [R^T, T]] (students first, then teachers)."""
    return covariance_from(op.Q, op.R, op.T)


def covariance_from(Q, R, T) -> Float[Array, "K+M K+M"]:
    """C = [[Q, R], [R^T, T]] from the blocks."""
    top = jnp.concatenate([Q, R], axis=-1)
    bottom = jnp.concatenate([jnp.swapaxes(R, -1, -2), T], axis=-1)
    return jnp.concatenate([top, bottom], axis=-2)


def generalisation_error(op: OrderParams, activation: str | Activation = "erf") -> Array:
    r"""eps_g = E[(yhat - y_noiseless)^2] / 2 over a fresh Gaussian input:

        eps_g = 1/2 [ sum_kl v_k v_l I2(k,l) + sum_nm v*_n v*_m I2(n,m)
                      - 2 sum_kn v_k v*_n I2(k,n) ].

    Noise-free (the output noise sigma is not included). Returns a scalar.

    Raises ``ValueError`` (concrete inputs) if ``op`` is not a valid state (C not positive
    semi-definite, non-finite values: see :meth:`OrderParams.validate`) or the activation
    returns non-finite values.
    """
    if not isinstance(op, OrderParams):
        raise ValueError(f"op: expected a tsjax.OrderParams, got {type(op).__name__}")
    act = get_activation(activation)
    check_activation(act)
    op.validate()
    return eg_from(act, covariance(op), op.v, op.v_star)


def eg_from(act: Activation, C, v, v_star):
    """eps_g from the covariance C and the second layers (see generalisation_error)."""
    u = jnp.concatenate([v, -v_star])
    return 0.5 * u @ i2_matrix(act, C) @ u
