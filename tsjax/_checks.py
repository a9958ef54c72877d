"""Input checks and the divergence criterion shared by the ODE and the simulators."""

from __future__ import annotations

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np


def _is_concrete(*xs) -> bool:
    """True when no leaf of ``xs`` is a tracer (the value is known outside jit/vmap)."""
    return not any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(xs))


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
    # numpy for concrete inputs (no eager JAX operations, hence no small compilations)
    xp = np if _is_concrete(Q0, T, v0, v_star, max_norm) else jnp
    Q0, T, v0, v_star = (xp.asarray(x) for x in (Q0, T, v0, v_star))
    q_scale = xp.maximum(xp.maximum(1.0, xp.max(xp.diagonal(Q0))), xp.sum(xp.abs(T)))
    # several teachers (v_star (P, M)): the largest readout norm of one teacher
    v_star_sq = xp.max(xp.sum(xp.reshape(v_star * v_star, (-1, v_star.shape[-1])), axis=-1))
    v_scale = xp.maximum(xp.maximum(1.0, xp.max(v0 * v0)), v_star_sq)
    if xp is np:  # numpy scalars: the compiled solve takes them as they are
        dtype = jnp.result_type(float)
        return np.asarray(max_norm * q_scale, dtype), np.asarray(max_norm * v_scale, dtype)
    return max_norm * q_scale, max_norm * v_scale


def is_diverged(Q, v, limits):
    """True where the state (Q (K,K), v (K,)) has left the bounds of ``divergence_limits``
    or holds a non-finite value."""
    q_lim, v_lim = limits
    return ~(jnp.max(jnp.diagonal(Q)) <= q_lim) | ~(jnp.max(v * v) <= v_lim)


_F32_WARNED = [False]


def warn_if_float32(x) -> None:
    """Warn once per process when tsjax works in float32 (docs/conventions.md, Precision)."""
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
    """ValueError if a concrete number (or a schedule's concrete parameters) is negative,
    or not finite (numbers are first checked to be numbers by :func:`check_scalar`)."""
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


def is_int_at_least(x, lo: int) -> bool:
    """True if ``x`` is an integer value >= ``lo`` (an int, or a float such as 2.0; not a
    bool, a string, NaN or inf)."""
    if isinstance(x, (bool, str, bytes)):
        return False
    try:
        f = float(x)
    except (TypeError, ValueError):
        return False
    return bool(np.isfinite(f) and f.is_integer() and int(f) >= lo)


def check_scalar(name: str, value) -> None:
    """ValueError unless ``value`` is a real scalar (a number or 0-d array, traced or not)."""
    if isinstance(value, (str, bytes)) or value is None:
        raise ValueError(f"{name}: expected a number, got {value!r}")
    try:
        shape = np.shape(value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}: expected a number, got {type(value).__name__}") from e
    if shape != ():
        raise ValueError(
            f"{name}: expected one number, got {type(value).__name__} of shape {shape} (sweep "
            "several values with tsjax.sweep or jax.vmap)"
        )
    try:
        dtype = jnp.result_type(value)
    except TypeError as e:
        raise ValueError(f"{name}: expected a number, got {type(value).__name__}") from e
    if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
        raise ValueError(f"{name}: expected a real number, got dtype {dtype}")


def _bad_value(x):
    """True where a (traced) rate, noise or decay is negative or not finite."""
    return ~(jnp.isfinite(x) & (x >= 0))


def _bad_alphas(alphas):
    """True unless the (traced) save times are finite, >= 0 and strictly increasing."""
    inc = jnp.all(jnp.diff(alphas) > 0) if alphas.shape[0] > 1 else True
    return ~(jnp.all(jnp.isfinite(alphas)) & (alphas[0] >= 0) & inc)


def bad_rates(eta, eta_v):
    """True where a learning rate value is negative or not finite (checked on the values a
    run uses, at every step: traced numbers and schedules alike)."""
    return _bad_value(eta) | _bad_value(eta_v)


def bad_constants(noise, weight_decay, alphas=None):
    """True where traced noise or weight decay is negative or not finite, or (if given) the
    save times are not finite, >= 0 and strictly increasing."""
    bad = _bad_value(noise) | _bad_value(weight_decay)
    return bad if alphas is None else bad | _bad_alphas(alphas)


def invalid_traced(alphas=None, at=None, **values) -> dict:
    """Which traced inputs are invalid, as booleans by name (for ``raise_if_failed``):
    rates (schedules evaluated at ``at``) and constants must be finite and >= 0, save times
    finite, >= 0 and strictly increasing."""
    out = {name: _bad_value(v(at) if callable(v) else jnp.asarray(v)) for name, v in values.items()}
    if alphas is not None:
        out["alphas"] = _bad_alphas(jnp.asarray(alphas))
    return out


def check_hyperparameters(**values) -> None:
    """check_scalar and check_nonneg for each keyword (noise=..., weight_decay=...)."""
    for name, value in values.items():
        check_scalar(name, value)
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


def check_flag(name: str, value) -> None:
    """ValueError unless ``value`` is a Python bool."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name}: expected True or False, got {value!r}")


def check_solver_options(*, rtol, atol, max_steps, max_norm) -> None:
    """The numeric options of the ODE solver: tolerances in (0, 1), a positive integer
    ``max_steps`` and a ``max_norm`` > 1."""
    for name, x in (("rtol", rtol), ("atol", atol)):
        if isinstance(x, bool) or not isinstance(x, (int, float, np.floating, np.integer)):
            raise ValueError(f"{name}: expected a number in (0, 1), got {x!r}")
        if not (0 < float(x) < 1):
            raise ValueError(f"{name}: expected a number in (0, 1), got {x!r}")
    if isinstance(max_steps, bool) or not isinstance(max_steps, (int, np.integer)):
        raise ValueError(f"max_steps: expected an integer >= 1, got {max_steps!r}")
    if max_steps < 1:
        raise ValueError(f"max_steps: expected an integer >= 1, got {max_steps}")
    if isinstance(max_norm, bool) or not isinstance(max_norm, (int, float, np.floating)):
        raise ValueError(f"max_norm: expected a number > 1, got {max_norm!r}")
    if not (1 < float(max_norm) < np.inf):
        raise ValueError(f"max_norm: expected a finite number > 1, got {max_norm!r}")


_ACTIVATIONS_CHECKED: dict = {}


def check_activation(act) -> None:
    """ValueError naming the activation if g or g' is not finite on a grid of points in
    [-8, 8] (a user's function that returns NaN would otherwise make the solver fail late).
    Each activation object is checked once per process."""
    from ._activations import ACTIVATIONS  # _activations does not import this module

    if type(act) in set(ACTIVATIONS.values()) and type(act).__module__ == "tsjax._activations":
        return  # the built-in activations are finite by construction
    key = id(act)
    if _ACTIVATIONS_CHECKED.get(key) is act:
        return
    leaves = [x for x in jax.tree_util.tree_leaves(act) if eqx.is_array(x)]
    if not _is_concrete(*leaves):
        return
    x = np.linspace(-8.0, 8.0, 33)
    with jax.ensure_compile_time_eval():
        g = np.asarray(act(jnp.asarray(x)))
        dg = np.asarray(act.derivative(jnp.asarray(x)))
    for what, y in (("g(x)", g), ("g'(x)", dg)):
        bad = ~np.isfinite(y)
        if y.shape != x.shape:
            raise ValueError(
                f"activation: {act.name!r} must be elementwise; {what} of shape {x.shape} "
                f"has shape {y.shape}"
            )
        if np.any(bad):
            raise ValueError(
                f"activation: {act.name!r} returns non-finite values: {what} = "
                f"{y[bad][0]} at x = {x[bad][0]:g} (checked on [-8, 8])"
            )
    if len(_ACTIVATIONS_CHECKED) > 256:
        _ACTIVATIONS_CHECKED.clear()
    _ACTIVATIONS_CHECKED[key] = act
