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
from ._curricula import head_of
from ._integrals import i2_matrix

__all__ = ["OrderParams", "generalisation_error", "covariance"]


class OrderParams(eqx.Module):
    """The state of the teacher-student problem in the order-parameter description.

    Fields: ``Q`` (K, K), ``R`` (K, M), ``T`` (M, M), ``v`` (K,), ``v_star`` (M,).

    Several teachers (continual learning): their hidden units are stacked, so ``T`` (M, M)
    holds the overlaps within and across teachers (e.g. [[T1, V], [V^T, T2]]) and ``R``
    (K, M) the student's overlaps with all of them; ``v_star`` (P, M) has one row per
    teacher (its readout over the stacked units, zero outside its own). A student has one
    head, ``v`` (K,) or (1, K), shared by all tasks, or one head per teacher, ``v`` (P, K)
    (a task trains its own head only).
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
        """Number of teacher hidden units (all teachers' units, stacked)."""
        return self.T.shape[-1]

    @property
    def P(self) -> int:
        """Number of teachers (rows of a 2-D ``v_star``; 1 for a 1-D one)."""
        return self.v_star.shape[0] if self.v_star.ndim == 2 else 1

    @property
    def H(self) -> int:
        """Number of student heads (rows of a 2-D ``v``; 1 for a 1-D one)."""
        return self.v.shape[0] if self.v.ndim == 2 else 1

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
    if v_star.ndim not in (1, 2) or v_star.shape[-1] != M or v_star.shape[0] < 1:
        raise ValueError(
            f"v_star: expected shape (M,) = {(M,)} (one teacher) or (P, M) = (P, {M}) (P "
            f"teachers over the M stacked teacher units), got {v_star.shape}"
        )
    P = v_star.shape[0] if v_star.ndim == 2 else 1
    if v.ndim not in (1, 2) or v.shape[-1] != K:
        raise ValueError(
            f"v: expected shape (K,) = {(K,)} (one head) or (H, K) = (H, {K}) (H heads), "
            f"got {v.shape}"
        )
    if v.ndim == 2 and v.shape[0] not in (1, P):
        raise ValueError(
            f"v: a student has one head (shape (1, K)) or one head per teacher (shape (P, K) "
            f"= ({P}, {K})), got {v.shape[0]} heads for P = {P} teachers"
        )


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
    if np.any(np.diag(Q) < 0):  # Q_kk = 0: a zero-initialised student unit
        raise ValueError(f"Q: diagonal entries (squared norms / N) must be >= 0, got {np.diag(Q)}")
    if np.any(np.diag(T) <= 0):
        raise ValueError(f"T: diagonal entries (squared norms / N) must be > 0, got {np.diag(T)}")
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

    Noise-free (the output noise sigma is not included). Returns a scalar; with several
    teachers (2-D ``v_star``) the errors on each teacher, shape (P,) (head p on teacher p for
    a multi-head student, the one head on every teacher otherwise).

    Raises ``ValueError`` (concrete inputs) if ``op`` is not a valid state (C not positive
    semi-definite, non-finite values: see :meth:`OrderParams.validate`) or the activation
    returns non-finite values.
    """
    if not isinstance(op, OrderParams):
        raise ValueError(f"op: expected a tsjax.OrderParams, got {type(op).__name__}")
    act = get_activation(activation)
    check_activation(act)
    op.validate()
    if op.v_star.ndim == 1 and op.v.ndim == 1:
        return eg_from(act, covariance(op), op.v, op.v_star)
    eg = eg_tasks_from(act, covariance(op), jnp.atleast_2d(op.v), jnp.atleast_2d(op.v_star))
    return eg if op.v_star.ndim == 2 else eg[0]


def eg_on_task(act: Activation, C, v, v_star, task):
    """eps_g on teacher ``task`` (traced or static index) of the head that trains on it,
    from v (H, K) and v_star (P, M); the criterion of a threshold switch."""
    h = head_of(task, v.shape[0]) if v.shape[0] > 1 else 0
    return eg_tasks_from(act, C, v[h][None], v_star[task][None])[0]


def eg_tasks_from(act: Activation, C, v, v_star):
    """eps_g on each teacher, shape (P,), from v (H, K) and v_star (P, M), H in {1, P}:
    head p (or the single head) against teacher p. One I2 matrix for all of them."""
    I2 = i2_matrix(act, C)
    heads = (
        v
        if v.shape[0] == v_star.shape[0]
        else jnp.broadcast_to(v, (v_star.shape[0],) + v.shape[1:])
    )
    u = jnp.concatenate([heads, -v_star], axis=-1)  # (P, K + M)
    return 0.5 * jnp.einsum("pi,ij,pj->p", u, I2, u)


def eg_from(act: Activation, C, v, v_star):
    """eps_g from the covariance C and the second layers (see generalisation_error)."""
    u = jnp.concatenate([v, -v_star])
    return 0.5 * u @ i2_matrix(act, C) @ u
