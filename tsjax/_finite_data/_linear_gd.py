r"""Exact gradient-descent learning curves of a linear model on a finite training set, and
the linear teacher-student of epoch-wise double descent (Pezeshki, Mitra, Bengio & Lajoie,
"Multi-scale feature learning dynamics: insights for double descent", ICML 2022).

**Exact curves.** A linear student y_hat = x . w trained from w = 0 by gradient flow on

    L(w) = 1/2 |X w - y|^2 + l2/2 |w|^2,       X (n, d), y (n,),

follows, with the thin SVD X = U diag(s) V^T (r = min(n, d) columns) and c = s * U^T y,

    w(t) = V diag(phi(s^2 + l2, t)) c,   phi(lam, t) = (1 - exp(-lam t)) / lam  (t at lam = 0).

Discrete gradient descent with step ``lr`` (w_{k+1} = w_k - lr grad L) gives the same with
phi(lam, k) = (1 - (1 - lr lam)^k) / lam (k lr at lam = 0). Directions outside the row
space of X keep w = 0. The test error for a teacher w* and inputs of covariance S is

    E(t) = (w(t) - w*)^T S (w(t) - w*) = |H (V (phi * c - V^T w*) - w_perp)|^2,

S = H^T H, w_perp = w* - V V^T w* (the part of the teacher outside the row space of X):
after one SVD of X and one eigendecomposition of S, each time costs O(d r), with no time
stepping, and E is a sum of squares (never negative, accurate as it tends to 0; ``expm1``
and ``log1p`` keep phi accurate for lam t small).

**The paper's model.** Latent inputs z ~ N(0, I_d / d), a teacher y = z . w + sigma eps with
w ~ N(0, I_d); the student sees x = F^T z, with F's singular values 1 (p "fast" features)
and 1/kappa (d - p "slow" features), so kappa is F's condition number (the ratio of the two
kinds of features' standard deviations). In the student's coordinates the teacher is
w* = F^{-1} w and the input covariance S = F^T F / d, so E(t) = |F w(t) - w|^2 / d, the
noise-free population mean squared error. The paper's order parameters are the overlaps
R = w^T F w(t) / d and Q = w(t)^T F^T F w(t) / d (E = Q - 2 R + |w|^2 / d), each a sum
of a fast and a slow part (``linear_gd_order_params``).

**Large n and d (n / d fixed).** The paper's approximate closed forms rest on gradient flow
at time t behaving like ridge regression with coefficient 1/t (the filter 1 - exp(-s t)
replaced by s / (s + 1/t)). With that correspondence the proportional limit of ridge
regression (deterministic equivalent; e.g. Hastie, Montanari, Rosset & Tibshirani 2022)
gives, for population eigenvalues a_i of S with teacher energies e_i = a_i (w*_i)^2 along
them and ridge lam = 1 / t (sum loss as above),

    kappa_e solves  kappa_e = lam / n + (kappa_e / n) sum_i a_i / (a_i + kappa_e),
    E ~ [kappa_e^2 sum_i e_i / (a_i + kappa_e)^2 + sigma^2 df2 / n] / (1 - df2 / n),
    df2 = sum_i a_i^2 / (a_i + kappa_e)^2

(``linear_gd_error_limit``). It is exact for ridge regression as n, d -> infinity; the
approximation is the time-ridge correspondence, measured in docs/double_descent.md
against averages of the exact curves over sampled datasets.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._checks import _is_concrete

__all__ = [
    "linear_gd_error",
    "linear_gd_weights",
    "linear_gd_order_params",
    "LinearTask",
    "two_scale_modulation",
    "sample_linear_task",
    "linear_gd_average",
    "linear_gd_error_limit",
]


def _check_times(times, lr):
    t = jnp.asarray(times)
    if _is_concrete(t):
        tn = np.asarray(t, dtype=np.float64)
        if tn.ndim != 1 or tn.size < 1 or not np.all(np.isfinite(tn)) or np.any(tn < 0):
            raise ValueError(f"times: expected a 1-D array of finite times >= 0, got {times!r}")
        if lr is not None and not np.all(tn == np.round(tn)):
            raise ValueError("times: with lr given, times count gradient-descent steps (integers)")
    return t


def _check_scalars(l2, lr):
    if _is_concrete(l2):
        x = np.asarray(l2)
        if x.ndim != 0 or not np.isfinite(x) or x < 0:
            raise ValueError(f"l2: expected a number >= 0, got {l2!r}")
    if lr is not None and _is_concrete(lr):
        x = np.asarray(lr)
        if x.ndim != 0 or not np.isfinite(x) or x <= 0:
            raise ValueError(f"lr: expected None (gradient flow) or a step > 0, got {lr!r}")


def _check_data(X, y, teacher=None, input_cov=None):
    X = jnp.asarray(X)
    y = jnp.asarray(y)
    if X.ndim != 2 or X.shape[0] < 1 or X.shape[1] < 1:
        raise ValueError(f"X: expected shape (n, d) with n, d >= 1, got {X.shape}")
    n, d = X.shape
    if y.shape != (n,):
        raise ValueError(f"y: expected shape ({n},) (one label per row of X), got {y.shape}")
    if teacher is not None and jnp.shape(teacher) != (d,):
        raise ValueError(f"teacher: expected shape ({d},), got {jnp.shape(teacher)}")
    if input_cov is not None and jnp.shape(input_cov) != (d, d):
        raise ValueError(f"input_cov: expected shape ({d}, {d}), got {jnp.shape(input_cov)}")
    return X, y


def _phi(lam, t, lr):
    """(1 - exp(-lam t)) / lam (gradient flow) or (1 - (1 - lr lam)^t) / lam (t steps of
    size lr), continuous at lam = 0; lam (r,), t (T,) -> (T, r)."""
    lam = lam[None, :]
    t = t[:, None]
    small = lam == 0
    safe = jnp.where(small, 1.0, lam)
    if lr is None:
        val = -jnp.expm1(-safe * t) / safe
        return jnp.where(small, t, val)
    q = lr * safe
    # 0 < q < 1: 1 - (1 - q)^t = -expm1(t log1p(-q)), accurate for small q t
    inside = -jnp.expm1(t * jnp.log1p(-jnp.minimum(q, 0.5))) / safe
    outside = (1.0 - jnp.power(1.0 - q, t)) / safe  # q >= 1/2 (incl. oscillating q > 1)
    val = jnp.where(q < 0.5, inside, outside)
    return jnp.where(small, lr * t, val)


def _svd_parts(X, y, l2):
    U, s, Vt = jnp.linalg.svd(X, full_matrices=False)
    c = s * (U.T @ y)
    return Vt.T, s * s + l2, c


def _weights(X, y, times, l2, lr):
    V, lam, c = _svd_parts(X, y, l2)
    return (_phi(lam, times, lr) * c) @ V.T  # (T, d)


def _error(X, y, teacher, input_cov, times, l2, lr):
    V, lam, c = _svd_parts(X, y, l2)
    # S = H^T H (H = diag(sqrt mu) O^T from S's eigendecomposition), teacher = V beta + w_perp
    # (w_perp outside the row space of X, which w(t) never reaches): with g = phi c - beta,
    # E = |H (V g - w_perp)|^2, a sum of squares (>= 0, accurate down to E ~ eps |S| |w*|^2
    # instead of the eps-sized cancellations of the expanded quadratic form)
    mu, O = jnp.linalg.eigh(input_cov)
    H = jnp.sqrt(jnp.maximum(mu, 0.0))[:, None] * O.T
    beta = V.T @ teacher
    w_perp = teacher - V @ beta
    g = _phi(lam, times, lr) * c - beta  # (T, r)
    r = g @ (H @ V).T - H @ w_perp  # (T, d)
    return jnp.sum(r * r, axis=-1)


_error_jit = eqx.filter_jit(_error)
_weights_jit = eqx.filter_jit(_weights)


def linear_gd_error(
    X: Float[Array, "n d"],
    y: Float[Array, " n"],
    *,
    teacher: Float[Array, " d"],
    input_cov: Float[Array, "d d"],
    times,
    l2=0.0,
    lr=None,
) -> Float[Array, " T"]:
    r"""The exact test error of gradient descent on a finite training set (module
    docstring): E(t) = (w(t) - teacher)^T input_cov (w(t) - teacher) at each of ``times``,
    w(t) the gradient flow of 1/2 |X w - y|^2 + l2/2 |w|^2 from w = 0; with ``lr``, t
    counts discrete gradient-descent steps of that size.

    Args:
        X: inputs (n, d); y: labels (n,).
        teacher: the teacher's weights in the student's input coordinates (d,).
        input_cov: the population covariance of x (d, d).
        times: 1-D times >= 0 (integers when ``lr`` is given).
        l2: the L2 coefficient >= 0.
        lr: None (gradient flow) or the step size > 0 of gradient descent.

    Returns:
        E at ``times``, shape (T,). Exact from one SVD of X (no time stepping); jit-able,
        differentiable and vmappable (``jax.vmap`` over datasets: X (B, n, d), ...).
    """
    _check_data(X, y, teacher, input_cov) if _is_concrete(X) else None
    _check_scalars(l2, lr)
    t = _check_times(times, lr)
    X = jnp.asarray(X)
    dtype = jnp.result_type(X, float)
    args = (X.astype(dtype), jnp.asarray(y, dtype), jnp.asarray(teacher, dtype),
            jnp.asarray(input_cov, dtype), t.astype(dtype), jnp.asarray(l2, dtype))  # fmt: skip
    return _error_jit(*args, None if lr is None else jnp.asarray(lr, dtype))


def linear_gd_weights(X, y, *, times, l2=0.0, lr=None) -> Float[Array, "T d"]:
    """The student's weights w(t) at ``times``, shape (T, d) (as :func:`linear_gd_error`)."""
    _check_data(X, y) if _is_concrete(X) else None
    _check_scalars(l2, lr)
    t = _check_times(times, lr)
    X = jnp.asarray(X)
    dtype = jnp.result_type(X, float)
    lr_ = None if lr is None else jnp.asarray(lr, dtype)
    return _weights_jit(X.astype(dtype), jnp.asarray(y, dtype), t.astype(dtype),
                        jnp.asarray(l2, dtype), lr_)  # fmt: skip


class LinearTask(eqx.Module):
    """One sampled training set of the linear teacher-student (module docstring):
    ``X`` (n, d) = Z F, ``y`` (n,), ``teacher`` = F^{-1} w (d,) in the student's
    coordinates, ``input_cov`` = F^T F / d, ``w`` the latent teacher (d,), ``F`` (d, d)."""

    X: Array
    y: Array
    teacher: Array
    input_cov: Array
    w: Array
    F: Array


def two_scale_modulation(d: int, p: int, kappa: float) -> Float[Array, "d d"]:
    """The paper's modulation matrix F = diag(1 (p times), 1/kappa (d - p times)): condition
    number kappa, the ratio of the standard deviations of the fast and the slow features.
    (A rotation F -> U F V^T changes no averaged curve: z and w are isotropic.)"""
    for name, val, lo in (("d", d, 1), ("p", p, 0)):
        if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < lo:
            raise ValueError(f"{name}: expected an integer >= {lo}, got {val!r}")
    if p > d:
        raise ValueError(f"p: expected 0 <= p <= d = {d}, got {p}")
    if not (np.isscalar(kappa) and np.isfinite(kappa) and kappa > 0):
        raise ValueError(f"kappa: expected a number > 0 (the condition number), got {kappa!r}")
    return jnp.diag(jnp.concatenate([jnp.ones(p), jnp.full(d - p, 1.0 / kappa)]))


def sample_linear_task(key, n: int, F, *, sigma=0.0, w=None) -> LinearTask:
    """A training set of n samples: z ~ N(0, I_d / d), x = F^T z, y = z . w + sigma eps,
    w ~ N(0, I_d) (or the given latent teacher ``w``)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n: expected an integer >= 1, got {n!r}")
    F = jnp.asarray(F, dtype=float)
    if F.ndim != 2 or F.shape[0] != F.shape[1]:
        raise ValueError(f"F: expected a square matrix (d, d), got shape {F.shape}")
    if _is_concrete(sigma) and not (np.ndim(sigma) == 0 and np.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma: expected a number >= 0, got {sigma!r}")
    d = F.shape[0]
    kz, kw, ke = jax.random.split(key, 3)
    Z = jax.random.normal(kz, (n, d), F.dtype) / jnp.sqrt(d)
    w = jax.random.normal(kw, (d,), F.dtype) if w is None else jnp.asarray(w, F.dtype)
    y = Z @ w + sigma * jax.random.normal(ke, (n,), F.dtype)
    return LinearTask(Z @ F, y, jnp.linalg.solve(F, w), F.T @ F / d, w, F)


def linear_gd_order_params(task: LinearTask, *, times, l2=0.0, lr=None, fast: int | None = None):
    """The paper's overlaps R(t) = w^T F w(t) / d and Q(t) = |F w(t)|^2 / d (shape (T,)),
    and, with ``fast`` = p (F diagonal, fast features first), their fast and slow parts:
    a dict with ``R``, ``Q``, ``E`` = Q - 2 R + |w|^2 / d and ``R_fast``, ``R_slow``,
    ``Q_fast``, ``Q_slow``."""
    W = linear_gd_weights(task.X, task.y, times=times, l2=l2, lr=lr)  # (T, d)
    d = task.F.shape[0]
    Fw = W @ task.F.T  # (T, d): F w(t)
    out = dict(R=Fw @ task.w / d, Q=jnp.sum(Fw * Fw, -1) / d)
    out["E"] = out["Q"] - 2 * out["R"] + task.w @ task.w / d
    if fast is not None:
        for part, sl in (("fast", slice(0, fast)), ("slow", slice(fast, d))):
            out[f"R_{part}"] = Fw[:, sl] @ task.w[sl] / d
            out[f"Q_{part}"] = jnp.sum(Fw[:, sl] ** 2, -1) / d
    return out


def linear_gd_average(
    key, n: int, F, *, times, sigma=0.0, l2=0.0, lr=None, n_datasets: int = 100
) -> tuple[Array, Array]:
    """Mean and standard error over ``n_datasets`` sampled training sets
    (:func:`sample_linear_task`, independent teachers) of the exact curve E(t): two arrays
    of shape (T,). One compiled, vmapped program."""
    if isinstance(n_datasets, bool) or not isinstance(n_datasets, (int, np.integer)):
        raise ValueError(f"n_datasets: expected an integer >= 2, got {n_datasets!r}")
    if n_datasets < 2:
        raise ValueError(f"n_datasets: expected an integer >= 2, got {n_datasets}")
    F = jnp.asarray(F, dtype=float)
    sample_linear_task(key, n, F, sigma=sigma)  # checks the arguments
    _check_scalars(l2, lr)
    t = _check_times(times, lr).astype(F.dtype)
    lr_ = None if lr is None else jnp.asarray(lr, F.dtype)
    E = _average(jax.random.split(key, n_datasets), n, F, t, jnp.asarray(sigma, F.dtype),
                 jnp.asarray(l2, F.dtype), lr_)  # fmt: skip
    return E.mean(0), E.std(0, ddof=1) / np.sqrt(n_datasets)


@eqx.filter_jit
def _average(keys, n, F, t, sigma, l2, lr):
    def one(k):
        task = sample_linear_task(k, n, F, sigma=sigma)
        return _error(task.X, task.y, task.teacher, task.input_cov, t, l2, lr)

    return jax.vmap(one)(keys)


def linear_gd_error_limit(
    times, *, n: int, eigenvalues, teacher_energy, sigma=0.0, l2=0.0
) -> Float[Array, " T"]:
    r"""The large-n, large-d approximation of E(t) through the time-ridge correspondence
    (module docstring): ridge regression with coefficient l2 + 1/t in its proportional
    limit, for population eigenvalues ``eigenvalues`` (d,) of the input covariance and
    teacher energies ``teacher_energy`` (d,) = a_i (w*_i)^2 along them (for the paper's
    model, averaged over teachers: a_i = f_i^2 / d and e_i = 1 / d). Approximate: see
    docs/double_descent.md for its error against sampled datasets. t = 0 gives the
    teacher's energy sum_i e_i."""
    a = jnp.asarray(eigenvalues, dtype=float)
    e = jnp.asarray(teacher_energy, dtype=float)
    if a.ndim != 1 or e.shape != a.shape:
        raise ValueError(
            f"eigenvalues, teacher_energy: expected two 1-D arrays of one shape, got "
            f"{a.shape} and {e.shape}"
        )
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n: expected an integer >= 1, got {n!r}")
    if _is_concrete(a) and np.any(np.asarray(a) < 0):
        raise ValueError("eigenvalues: expected values >= 0 (a covariance's eigenvalues)")
    t = _check_times(times, None).astype(a.dtype)
    lam = l2 + 1.0 / jnp.where(t > 0, t, 1.0)

    def kappa_e(lam_):
        # kappa = lam/n + (kappa/n) sum a/(a + kappa): the fixed point is the root of the
        # increasing function f(k) = k - lam/n - (k/n) sum a/(a+k) on (lam/n, lam/n + max a]
        def f(k):
            return k - lam_ / n - (k / n) * jnp.sum(a / (a + k))

        lo = lam_ / n
        hi = 2.0 * (lam_ / n + jnp.max(a)) * (1.0 + a.shape[0] / n)

        def body(_, lh):
            lo_, hi_ = lh
            mid = 0.5 * (lo_ + hi_)
            pos = f(mid) > 0
            return jnp.where(pos, lo_, mid), jnp.where(pos, mid, hi_)

        lo, hi = jax.lax.fori_loop(0, 200, body, (lo, hi))
        return 0.5 * (lo + hi)

    k = jax.vmap(kappa_e)(lam)[:, None]
    df2 = jnp.sum(a**2 / (a + k) ** 2, -1)
    bias = k[:, 0] ** 2 * jnp.sum(e / (a + k) ** 2, -1)
    E = (bias + sigma**2 * df2 / n) / (1.0 - df2 / n)
    return jnp.where(t > 0, E, jnp.sum(e))
