"""Input checks and the divergence criterion shared by the ODE and the simulators."""

from __future__ import annotations

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._order_params import _is_concrete

#: Default factor for the divergence criterion (see :func:`divergence_limits`).
DEFAULT_MAX_NORM = 10.0


def divergence_limits(Q0, T, v0, v_star, max_norm: float = DEFAULT_MAX_NORM):
    """(q_lim, v_lim): a run counts as diverged once a value is non-finite or

        max_k Q_kk > q_lim = max_norm * max(1, max_k Q_kk(0), sum_nm |T_nm|)   or
        max_k v_k^2 > v_lim = max_norm * max(1, max_k v_k(0)^2, sum_n v*_n^2).

    When the learning rate is too large the student norms Q_kk grow without bound (for erf
    only like a power of alpha, the units saturate and eps_g stalls; for ReLU and linear
    exponentially). A student that learns the teacher needs norms of the order of the
    teacher's (at most sum_nm |T_nm| when one unit combines all teachers), so growth past
    ``max_norm`` (default 10) times that scale is flagged as divergence; likewise for the
    second layer. (Comparisons are written so that NaN counts as diverged.)
    """
    q_scale = jnp.maximum(jnp.maximum(1.0, jnp.max(jnp.diagonal(Q0))), jnp.sum(jnp.abs(T)))
    v_scale = jnp.maximum(jnp.maximum(1.0, jnp.max(v0 * v0)), jnp.sum(v_star * v_star))
    return max_norm * q_scale, max_norm * v_scale


def is_diverged(Q, v, limits):
    """True where the state (Q (K,K), v (K,)) has left the bounds of ``divergence_limits``
    or holds a non-finite value."""
    q_lim, v_lim = limits
    return ~(jnp.max(jnp.diagonal(Q)) <= q_lim) | ~(jnp.max(v * v) <= v_lim)


_F32_WARNED = [False]


def warn_if_float32(x) -> None:
    """Warn once per process when tsjax works in float32 (CONVENTIONS.md, Precision)."""
    if not _F32_WARNED[0] and jnp.asarray(x).dtype == jnp.float32:
        _F32_WARNED[0] = True
        warnings.warn(
            "tsjax is running in float32: order parameters cannot change by less than ~1e-7 "
            "of their size per step, so learning curves freeze near eps_g ~ 1e-5..1e-4. "
            'Enable float64 with jax.config.update("jax_enable_x64", True) before creating '
            "arrays.",
            stacklevel=3,
        )


def check_nonneg(name: str, value) -> None:
    """ValueError if a concrete number (or a schedule's concrete parameters) is negative."""
    leaves = [x for x in jax.tree_util.tree_leaves(value) if eqx.is_array_like(x)]
    for x in leaves:
        if not _is_concrete(x):
            continue
        arr = np.asarray(x)
        if not np.issubdtype(arr.dtype, np.number):
            continue
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name}: must be finite, got {arr}")
        if np.any(arr < 0):
            raise ValueError(f"{name}: must be >= 0, got {arr}")


def check_hyperparameters(**values) -> None:
    """check_nonneg for each keyword (lr=..., lr_v=..., noise=..., weight_decay=...)."""
    for name, value in values.items():
        check_nonneg(name, value)


def check_alphas(alphas) -> jax.Array:
    """alphas: a 1-D, strictly increasing array of save times >= 0 (at least one)."""
    if _is_concrete(alphas):
        a = np.asarray(alphas, dtype=np.float64)
        if a.ndim != 1 or a.size < 1:
            raise ValueError(f"alphas: expected a 1-D array of save times, got shape {a.shape}")
        if not np.all(np.isfinite(a)) or a[0] < 0:
            raise ValueError("alphas: save times must be finite and >= 0")
        if a.size > 1 and np.any(np.diff(a) <= 0):
            raise ValueError("alphas: save times must be strictly increasing")
    return jnp.asarray(alphas, dtype=jnp.result_type(float))
