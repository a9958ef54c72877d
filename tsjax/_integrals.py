"""Assembling the Gaussian integrals that enter the order-parameter ODEs.

An :class:`~tsjax.Activation` evaluates I2, I3, I4, J2 on small covariance blocks; this
module gathers those blocks from the full covariance C (L = K + M, students first) and
contracts them with the second-layer weights. With u = (v, -v*) (so that the error of the
noiseless teacher is Delta = sum_j u_j g(x_j)) the ODEs need

    A_ip  = sum_j u_j I3(i, p, j)                 (K, L): i student, p any,
    B_ik  = sum_{j,l} u_j u_l I4(i, k, j, l)       (K, K),
    J_ik  = J2(i, k)                              (K, K),
    G_i   = sum_j u_j I2(i, j)                    (K,).

I4 is symmetric in (i, k) and in (j, l); B is evaluated on the K(K+1)/2 x L(L+1)/2 unique
index tuples only (a 4x saving for large K), with weight (2 - delta_jl) u_j u_l.

An activation may compute the contractions itself, faster than block by block: if it has
a method ``contract_i3(C, u, K) -> A (K, L)`` or ``contract_i4(C, u, K) -> B (K, K)``, that
method is used instead of the generic gathering below (erf does, sharing the factors of its
closed forms between index tuples).
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._activations import Activation, _student_pairs, _symmetric_from_pairs


@functools.lru_cache(maxsize=64)
def _i4_index_tables(K: int, L: int):
    """Static index tables for the unique (i <= k, j <= l) tuples of I4."""
    ik = _student_pairs(K)
    jl = np.array([(j, l) for j in range(L) for l in range(j, L)], dtype=np.int32)
    # (n_ik, n_jl, 4) tuples (i, k, j, l)
    tup = np.concatenate(
        [
            np.broadcast_to(ik[:, None, :], (len(ik), len(jl), 2)),
            np.broadcast_to(jl[None, :, :], (len(ik), len(jl), 2)),
        ],
        axis=-1,
    )
    mult = np.where(jl[:, 0] == jl[:, 1], 1.0, 2.0)
    return ik, jl, tup, mult


@functools.lru_cache(maxsize=64)
def _i3_index_table(K: int, L: int):
    i, p, j = np.meshgrid(np.arange(K), np.arange(L), np.arange(L), indexing="ij")
    return np.stack([i, p, j], axis=-1).astype(np.int32)  # (K, L, L, 3)


def _blocks(C, idx):
    """C[idx_a, idx_b] for every pair of positions in the last axis of idx."""
    return C[idx[..., :, None], idx[..., None, :]]


def i3_contracted(act: Activation, C: Float[Array, "L L"], u: Float[Array, " L"], K: int):
    """A_ip = sum_j u_j I3(i, p, j), shape (K, L)."""
    own = getattr(act, "contract_i3", None)
    if own is not None:
        return own(C, u, K)
    return i3_contracted_blocks(act, C, u, K)


def i3_contracted_blocks(act: Activation, C, u, K: int, gain=None):
    """The generic A_ip: I3 on every (i, p, j) block, then the sum over j. With ``gain``
    beta: E[g'(beta u_i) u_p g(u_j)], i.e. I3 of the block covariance of (beta u_i, u_p,
    u_j) (adaptive back-propagation, ``tsjax._rules``)."""
    L = C.shape[-1]
    blocks = _blocks(C, _i3_index_table(K, L))
    if gain is not None:
        s = jnp.stack([gain, jnp.ones_like(gain), jnp.ones_like(gain)])
        blocks = blocks * (s[:, None] * s[None, :])
    i3 = act.i3(blocks)  # (K, L, L)
    return i3 @ u


def i4_contracted(act: Activation, C: Float[Array, "L L"], u: Float[Array, " L"], K: int):
    """B_ik = sum_{jl} u_j u_l I4(i, k, j, l), shape (K, K), symmetric."""
    own = getattr(act, "contract_i4", None)
    if own is not None:
        return own(C, u, K)
    return i4_contracted_blocks(act, C, u, K)


def i4_contracted_blocks(act: Activation, C, u, K: int, gain=None):
    """The generic B_ik: I4 on the unique (i <= k, j <= l) blocks, then the sums. With
    ``gain`` beta: E[g'(beta u_i) g'(beta u_k) g(u_j) g(u_l)] (as in
    :func:`i3_contracted_blocks`)."""
    L = C.shape[-1]
    _, jl, tup, mult = _i4_index_tables(K, L)
    blocks = _blocks(C, tup)
    if gain is not None:
        one = jnp.ones_like(gain)
        s = jnp.stack([gain, gain, one, one])
        blocks = blocks * (s[:, None] * s[None, :])
    i4 = act.i4(blocks)  # (n_ik, n_jl)
    w = jnp.asarray(mult, C.dtype) * u[jl[:, 0]] * u[jl[:, 1]]
    return _symmetric_from_pairs(i4 @ w, K)


def i2_matrix(act: Activation, C: Float[Array, "L L"]) -> Float[Array, "L L"]:
    """I2(a, b) for all pairs, shape (L, L)."""
    d = jnp.diagonal(C)
    return act.i2(d[:, None], C, d[None, :])


def i2_rows(act: Activation, C: Float[Array, "L L"], K: int) -> Float[Array, "K L"]:
    """I2(i, b) for the K students i (the first K rows of ``i2_matrix``), shape (K, L)."""
    d = jnp.diagonal(C)
    return act.i2(d[:K, None], C[:K], d[None, :])


def j2_matrix(act: Activation, C: Float[Array, "K K"]) -> Float[Array, "K K"]:
    """J2(a, b) for all pairs of the (sub)covariance C."""
    d = jnp.diagonal(C)
    return act.j2(d[:, None], C, d[None, :])
