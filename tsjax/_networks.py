"""Two-layer networks (students and teachers) and their order parameters.

Conventions (docs/conventions.md): a network with K hidden units on N-dimensional inputs computes

    f(x) = sum_{k=1..K} v_k g(w_k . x / sqrt(N))

with first-layer weights W (K, N) (rows w_k), second layer v (K,) and activation g. There is
no 1/K or 1/sqrt(K) output scaling. The teacher is the same object with M units, W* and v*.

Initial conditions (documented defaults):

* :func:`init_teacher`: rows w*_n i.i.d. N(0, I_N), each rescaled to norm sqrt(N) exactly,
  so T_nn = 1 (T_nm = O(1/sqrt(N)) off the diagonal); v* = 1 (a soft committee machine).
* :func:`init_student`: rows w_k i.i.d. N(0, I_N) (``scale=1``), so Q_kk ~ 1 and
  Q_kl, R_kn = O(1/sqrt(N)); v = 1. This is the initialisation of nn2pp (Goldt et al.),
  whose simulations draw teacher and student weights with standard deviation 1. Pass a
  small ``scale`` (e.g. 1e-3) to start near the origin, where the symmetric plateau is long.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ._activations import Activation, get_activation
from ._checks import is_int_at_least
from ._order_params import OrderParams

__all__ = [
    "TwoLayerNet",
    "init_teacher",
    "init_teachers",
    "init_student",
    "order_params",
    "teacher_overlaps",
]


def _float_array(x, name: str) -> Array:
    try:
        arr = jnp.asarray(x)
    except TypeError as e:
        raise ValueError(f"{name}: expected an array, got {type(x).__name__}") from e
    if not jnp.issubdtype(arr.dtype, jnp.floating):
        arr = arr.astype(jnp.result_type(float))
    return arr


class TwoLayerNet(eqx.Module):
    """A two-layer network f(x) = sum_k v_k g(w_k . x / sqrt(N)) (docs/conventions.md).

    Fields:
        W: (K, N) first-layer weights, rows w_k.
        v: (K,) second-layer weights.
        activation: the :class:`~tsjax.Activation` g.

    ``TwoLayerNet(W=..., v=..., activation="erf")``: ``v`` may also be a number (all K
    entries equal to it); ``activation`` is a name (``"erf"``, ``"relu"``, ``"linear"``) or
    an :class:`~tsjax.Activation`. Shapes are checked (``ValueError`` naming the parameter).
    The network is a pytree: it can be passed through ``jax.jit``/``jax.vmap``/``jax.grad``.
    """

    W: Float[Array, "K N"]
    v: Float[Array, " K"]
    activation: Activation

    def __init__(self, W: ArrayLike, v: ArrayLike = 1.0, activation: str | Activation = "erf"):
        W = _float_array(W, "W")
        if W.ndim != 2 or W.shape[0] < 1 or W.shape[1] < 1:
            raise ValueError(f"W: expected a (K, N) matrix with K, N >= 1, got shape {W.shape}")
        v = _float_array(v, "v")
        if v.ndim == 0:
            v = jnp.full((W.shape[0],), v, dtype=jnp.result_type(v, W))
        if v.ndim not in (1, 2) or v.shape[-1] != W.shape[0] or v.shape[0] < 1:
            raise ValueError(
                f"v: expected shape (K,) = ({W.shape[0]},) to match W, or (H, K) for H heads "
                f"(several teachers: one readout row per teacher), got {v.shape}"
            )
        self.W = W
        self.v = v
        self.activation = get_activation(activation)

    @property
    def K(self) -> int:
        """Number of hidden units (rows of W)."""
        return self.W.shape[-2]

    @property
    def P(self) -> int:
        """Number of readout rows (heads of a student, teachers of a stacked teacher): the
        rows of a 2-D ``v``, 1 for a 1-D one."""
        return self.v.shape[0] if self.v.ndim == 2 else 1

    @property
    def N(self) -> int:
        """Input dimension (columns of W)."""
        return self.W.shape[-1]

    def __call__(self, x: ArrayLike) -> Array:
        """f(x) = sum_k v_k g(w_k . x / sqrt(N)) for one input ``x`` of shape (N,) (a scalar),
        or for a batch of inputs (..., N) (shape (...)); with a 2-D ``v`` (H, K), one output
        per head or teacher, shape (..., H)."""
        x = jnp.asarray(x)
        if x.shape[-1:] != (self.N,):
            raise ValueError(f"x: expected last dimension N = {self.N}, got shape {x.shape}")
        lam = x @ self.W.T / jnp.sqrt(jnp.asarray(self.N, dtype=self.W.dtype))
        return self.activation(lam) @ self.v.T

    @classmethod
    def gaussian(
        cls,
        key,
        N: int,
        K: int,
        *,
        activation: str | Activation = "erf",
        scale: float = 1.0,
        v: float | ArrayLike | str = 1.0,
        normalise: bool = False,
        dtype=None,
    ) -> TwoLayerNet:
        """A network with Gaussian first-layer weights.

        Args:
            key: a ``jax.random`` key.
            N: input dimension; K: number of hidden units.
            activation: name or :class:`~tsjax.Activation`.
            scale: the entries of W are i.i.d. N(0, scale^2), so Q_kk ~ scale^2.
            v: second layer: a number (all K entries), an array (K,), or ``"gaussian"``
                (i.i.d. N(0, 1) entries, drawn from a key split off ``key``).
            normalise: if True, rescale each row of W to norm sqrt(N) * scale exactly
                (Q_kk = scale^2 exactly; for a teacher with scale 1, T_nn = 1).
            dtype: float dtype of W (default: JAX's default float, float64 with x64).
        """
        N, K = _positive_int(N, "N"), _positive_int(K, "K")
        if isinstance(scale, (str, bytes, bool)) or not (np.isfinite(scale) and scale > 0):
            raise ValueError(f"scale: must be a finite number > 0, got {scale!r}")
        dtype = jnp.result_type(float) if dtype is None else dtype
        kW, kv = jax.random.split(key)
        W = scale * jax.random.normal(kW, (K, N), dtype)
        if normalise:
            W = W * (scale * jnp.sqrt(N) / jnp.linalg.norm(W, axis=1, keepdims=True))
        if isinstance(v, str):
            if v.lower() != "gaussian":
                raise ValueError(f"v: expected a number, an array or 'gaussian', got {v!r}")
            v = jax.random.normal(kv, (K,), dtype)
        else:
            v = jnp.asarray(v, dtype=dtype)
        return cls(W=W, v=v, activation=activation)


def _positive_int(n, name: str) -> int:
    if not is_int_at_least(n, 1):
        raise ValueError(f"{name}: expected an integer >= 1, got {n!r}")
    return int(n)


def init_teacher(
    key,
    N: int,
    M: int,
    *,
    activation: str | Activation = "erf",
    v_star: float | ArrayLike | str = 1.0,
    normalise: bool = True,
) -> TwoLayerNet:
    """A teacher with M hidden units: rows of W* i.i.d. N(0, I_N), by default (``normalise``)
    rescaled to norm sqrt(N) so that T_nn = 1 exactly; v* = ``v_star`` (a number, an (M,)
    array or ``"gaussian"``). See :meth:`TwoLayerNet.gaussian`."""
    M = _positive_int(M, "M")  # named as the teacher's
    if isinstance(v_star, str) and v_star.lower() != "gaussian":
        raise ValueError(f"v_star: expected a number, an array or 'gaussian', got {v_star!r}")
    return TwoLayerNet.gaussian(
        key, N, M, activation=activation, scale=1.0, v=v_star, normalise=normalise
    )


def init_student(
    key,
    N: int,
    K: int,
    *,
    activation: str | Activation = "erf",
    scale: float = 1.0,
    v: float | ArrayLike | str = 1.0,
    heads: int | None = None,
) -> TwoLayerNet:
    """A student with K hidden units: W i.i.d. N(0, scale^2) entries (not normalised) and
    second layer ``v`` (a number, a (K,) array or ``"gaussian"``).

    Default ``scale=1`` (Q_kk ~ 1, R = O(1/sqrt(N))) as in nn2pp. A small scale (e.g. 1e-3)
    starts near the origin and gives the long symmetric plateau.

    ``heads``: None (default) for one head, ``v`` of shape (K,); an integer H >= 1 for H
    heads, ``v`` of shape (H, K), every head starting from ``v`` (independent draws for
    ``"gaussian"``). With P teachers, H = P is a multi-head student (task p trains head p),
    H = 1 a single head shared by all tasks."""
    net = TwoLayerNet.gaussian(key, N, K, activation=activation, scale=scale, v=v)
    if heads is None:
        return net
    H = _positive_int(heads, "heads")
    if isinstance(v, str):  # "gaussian": one draw per head
        kv = jax.random.fold_in(key, 1)
        vh = jax.random.normal(kv, (H, net.K), net.W.dtype)
    else:
        vh = jnp.broadcast_to(net.v, (H, net.K))
    return TwoLayerNet(W=net.W, v=vh, activation=net.activation)


def init_teachers(
    key,
    *,
    N: int,
    M: int,
    P: int,
    feature_similarity,
    readout_similarity=1.0,
    activation: str | Activation = "erf",
    v_star: float | ArrayLike = 1.0,
) -> TwoLayerNet:
    r"""P teachers of M hidden units each, stacked into one network with exact overlaps.

    The first-layer weights of all P M units are ``W`` (P M, N), teacher p's units being
    rows p M ... p M + M - 1, built as W = sqrt(N) G^(1/2) U from P M exactly orthonormal
    random directions U (QR of a Gaussian matrix; needs N >= P M), so that at any finite N

        T = W W^T / N:  T_(p,n),(p,n) = 1,  T_(p,n),(q,n) = V (p != q),  0 otherwise,

    with V = ``feature_similarity`` (the overlap of unit n of teacher p with unit n of
    teacher q; V in [-1/(P-1), 1] so that T is a Gram matrix; [-1, 1] for P = 2).

    Readouts ``v`` (P, P M): row p is teacher p's readout over the stacked units, zero
    outside its own units. Teacher 0 has ``v_star`` (a number or an (M,) array); teacher
    p >= 1 has rho v_star + sqrt(1 - rho^2) |v_star| e_p with rho = ``readout_similarity``
    and e_p a random unit vector orthogonal to v_star (so the cosine between the readouts of
    teachers 0 and p is rho and their norms are equal). For M = 1 there is no orthogonal
    direction: teacher p's readout is rho v_star (rho in [-1, 1]).

    The realised overlaps are reported by :func:`teacher_overlaps`. Use with
    ``tsjax.init_student(..., heads=P)`` for a multi-head student; ``order_params(student,
    teachers)`` gives the ODE's state with ``v_star`` of shape (P, P M)."""
    N, M, P = _positive_int(N, "N"), _positive_int(M, "M"), _positive_int(P, "P")
    V = _similarity("feature_similarity", feature_similarity, lo=-1.0 / (P - 1) if P > 1 else -1.0)
    rho = _similarity("readout_similarity", readout_similarity, lo=-1.0)
    if N < P * M:
        raise ValueError(f"N: exact overlaps need N >= P * M = {P * M}, got N = {N}")
    dtype = jnp.result_type(float)
    kW, kv = jax.random.split(key)
    # target Gram matrix G = I_M (x) [(1 - V) I_P + V 1 1^T], ordered teacher-major
    Gp = (1.0 - V) * np.eye(P) + V * np.ones((P, P))
    G = np.kron(Gp, np.eye(M))
    lam, E = np.linalg.eigh(G)
    root = (E * np.sqrt(np.clip(lam, 0.0, None))) @ E.T
    Z = np.asarray(jax.random.normal(kW, (N, P * M), dtype), dtype=np.float64)
    U = np.linalg.qr(Z)[0].T  # (P M, N) orthonormal rows
    W = np.sqrt(N) * root @ U
    vs = np.broadcast_to(np.asarray(v_star, dtype=np.float64), (M,)).copy()
    if not np.all(np.isfinite(vs)):
        raise ValueError(f"v_star: must be finite, got {v_star!r}")
    readouts = [vs]
    rng_dirs = np.asarray(jax.random.normal(kv, (max(P - 1, 1), M), dtype), dtype=np.float64)
    for p in range(1, P):
        if M == 1:
            readouts.append(rho * vs)
            continue
        e = rng_dirs[p - 1] - (rng_dirs[p - 1] @ vs) / max(vs @ vs, 1e-300) * vs
        e = e / np.linalg.norm(e)
        readouts.append(rho * vs + np.sqrt(max(1.0 - rho * rho, 0.0)) * np.linalg.norm(vs) * e)
    v = np.zeros((P, P * M))
    for p in range(P):
        v[p, p * M : (p + 1) * M] = readouts[p]
    return TwoLayerNet(W=jnp.asarray(W, dtype), v=jnp.asarray(v, dtype), activation=activation)


def _similarity(name, x, lo):
    try:
        f = float(x)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a number in [{lo:g}, 1], got {x!r}") from None
    if not (lo - 1e-12 <= f <= 1.0 + 1e-12):
        raise ValueError(f"{name}: expected a number in [{lo:g}, 1], got {f}")
    return min(max(f, lo), 1.0)


def teacher_overlaps(teachers: TwoLayerNet) -> dict:
    """The realised similarities of stacked teachers (``v`` of shape (P, P M)):
    ``feature`` (P, P), the mean overlap T_(p,n),(q,n) of unit n of teacher p with unit n
    of teacher q; ``readout`` (P, P), the cosines between their readouts; ``T`` the full
    (P M, P M) overlap matrix."""
    P = teachers.P
    if teachers.v.ndim != 2 or teachers.K % P:
        raise ValueError("teachers: expected stacked teachers with v of shape (P, P * M)")
    M = teachers.K // P
    W = np.asarray(teachers.W, dtype=np.float64)
    T = W @ W.T / W.shape[1]
    feat = np.zeros((P, P))
    read = np.zeros((P, P))
    v = np.asarray(teachers.v, dtype=np.float64)
    blocks = [v[p, p * M : (p + 1) * M] for p in range(P)]
    for p in range(P):
        for q in range(P):
            feat[p, q] = np.mean(np.diag(T[p * M : (p + 1) * M, q * M : (q + 1) * M]))
            den = np.linalg.norm(blocks[p]) * np.linalg.norm(blocks[q])
            read[p, q] = blocks[p] @ blocks[q] / den if den > 0 else np.nan
    return dict(feature=feat, readout=read, T=T)


def order_params(student: TwoLayerNet, teacher: TwoLayerNet, *, inputs=None) -> OrderParams:
    """The order parameters of a student/teacher pair (docs/conventions.md):
    Q = W W^T / N (K, K), R = W W*^T / N (K, M), T = W* W*^T / N (M, M), v (K,), v* (M,).
    Raises ``ValueError`` if the input dimensions N differ.

    ``inputs``: an input model (``tsjax.HiddenManifold(F)`` or its ``limit``): the teacher
    acts on the latent (W* (M, D)), and the result is the initial state of that model's ODE
    (a ``ManifoldOrderParams``, with ``Q``, ``R``, ``T``, ``v``, ``v_star`` like
    ``OrderParams``)."""
    if inputs is not None:
        from ._inputs._hidden_manifold import manifold_order_params

        for name, net in (("student", student), ("teacher", teacher)):
            if not isinstance(net, TwoLayerNet):
                raise ValueError(f"{name}: expected a tsjax.TwoLayerNet, got {type(net).__name__}")
        return manifold_order_params(student, teacher, inputs)
    check_pair(student, teacher)
    return _order_params(student.W, teacher.W, student.v, teacher.v)


def check_heads(student, teacher) -> None:
    """ValueError unless the student has one head or one head per teacher."""
    if student.v.ndim == 2 and student.v.shape[0] not in (1, teacher.P):
        raise ValueError(
            f"student: v has {student.v.shape[0]} heads; expected 1 (single-head) or one per "
            f"teacher, P = {teacher.P} (multi-head)"
        )


def check_pair(student, teacher) -> None:
    """ValueError unless both are TwoLayerNets with the same input dimension N."""
    for name, net in (("student", student), ("teacher", teacher)):
        if not isinstance(net, TwoLayerNet):
            raise ValueError(f"{name}: expected a tsjax.TwoLayerNet, got {type(net).__name__}")
    if student.N != teacher.N:
        raise ValueError(
            f"teacher: input dimension N = {teacher.N} differs from the student's N = {student.N}"
        )


def _order_params(W, Wt, v, vt) -> OrderParams:
    N = W.shape[-1]
    Q = W @ W.T / N
    R = W @ Wt.T / N
    T = Wt @ Wt.T / N
    return OrderParams(Q, R, T, v, vt)
