r"""Gaussian expectations of products of one-dimensional functions, by quadrature.

For a zero-mean Gaussian vector u with covariance C (a 2x2 or 4x4 block) this module
computes

    E2(f_a, f_b; C) = E[f_a(u_a) f_b(u_b)],     E4(f_1..f_4; C) = E[prod_i f_i(u_i)],

the building blocks of the quadrature path of :class:`tsjax.Activation` (I2, J2 and, after
an exact reduction, I3 are E2's; I4 is an E4).

Method
------
*Whitening.* u = L z with z standard normal and L the lower-triangular Cholesky factor of C,
written out entry by entry (no LAPACK call: it fuses, batches and is cheap to
differentiate). Blocks are often singular (coinciding indices: I4(a, a, c, d), ...) or
nearly so (a student that has learned its teacher). A pivot (conditional variance)
d_k <= 64 eps C_kk counts as 0 and its column is dropped: exact for coinciding indices
(where d_k is 0 up to round-off), and it keeps round-off in a vanishing pivot from being
amplified through 1/sqrt(d_k) into the rest of the factor.

*Nested tensor-product rule.* With the triangular factor u_1 depends on z_1, u_2 on
(z_1, z_2), and so on, so the sums nest: E4 = sum_i w_i f_1(u_1) sum_j w_j f_2(u_2)
sum_k w_k f_3(u_3) sum_l w_l f_4(u_4). A 4-d rule with n_1..n_4 nodes per direction costs
n_1 n_2 n_3 n_4 evaluations of f_4 only (n_1 n_2 n_3 of f_3, ...); a 2-d rule n_1 n_2.
Direction z_1 enters all four arguments, z_4 only u_4, so the node counts may decrease
along the directions (``nodes_i4=(n1, n2, n3, n4)``).

*1-d rule.* Default: the truncated trapezoidal ("sinc") rule on [-R, R], n nodes,
weights phi(z) normalised to sum 1, R = (pi^2 (n - 1))^(1/3). For an integrand
analytic in the strip |Im z| < tau the error is ~exp(-2 pi tau / h) (aliasing, h the step)
+ exp(-R^2 / 2) (truncation), exponential in n^(2/3) (Trefethen & Weideman, SIAM Rev. 56,
2014); this R balances the two for tau = pi/2, the strip of tanh at unit variance
(``"trapezoid-narrow"``: R one smaller, a finer step for bounded, saturating functions;
it is the better choice for tanh at few nodes, the worse one for I4 of erf-like functions
at many nodes, where the truncation of the coarse directions dominates). Gauss-
Hermite (``rule="gauss-hermite"``) is exact for polynomials of degree 2n - 1 but converges
only like exp(-c sqrt(n)) when the activation has poles near the real axis: for
E[tanh(z)^2] the trapezoidal rule reaches 1e-10 at n = 40, Gauss-Hermite 3e-8 at n = 64.
The rule does not depend on C, so the computed value is a smooth function of C.

*Parity.* When every factor has a definite parity and the integrand is even in z, only the
nodes z_1 >= 0 are used (weights doubled): half the cost. When it is odd, the expectation is
exactly 0 and nothing is computed.

*Joint rule* (``contract_b_joint``): the contracted I4 sums of the ODEs, B_ik =
E[g'(x_i) g'(x_k) Delta(x)^2] with Delta = sum_j u_j g(x_j), by one rule over the whole
L-dimensional Gaussian (L = K + M) instead of one 4-d rule per index tuple.

*Derivatives* with respect to C are those of the computed quadrature sum itself (a
``jax.custom_jvp``): with G_ik = sum_p w_p d_i[prod f](u_p) z_pk (the same nested rule, the
factor f_i replaced by f_i' and the weights of direction k multiplied by z_k) and dL the
derivative of the unrolled Cholesky factor, dE = sum_{i >= k} G_ik dL_ik. The G's depend on
C only, so under ``jax.linearize`` they are computed once and every tangent costs a few
operations per block: the Jacobian of an ODE right-hand side (one tangent per state
variable, as in the Rosenbrock solver) costs ~3-4 evaluations, not one per tangent. The
derivative is consistent with the value to round-off, which implicit and Rosenbrock solvers
need (a Jacobian that is only accurate to the quadrature error, e.g. from Price's theorem,
made Rodas5P take 10-25x more steps). It equals the derivative of the exact expectation up to
the quadrature error; at exactly singular blocks it is the derivative along the directions
that keep the indices coinciding (the dropped pivots are held at 0), which is what the ODEs
need. Higher derivatives recurse (more z factors, higher derivatives of the f's, from
``jax.jvp``). Factors with kinks (ReLU, hard tanh): values converge only algebraically and
``jax.jvp`` drops the delta functions of g'', so derivatives in C are those of a
piecewise-smooth approximation; use the closed forms (``tsjax.ReLU``) there.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Factor", "rule", "expect2", "expect4", "derivative_factor", "RULES"]

RULES = ("trapezoid", "trapezoid-narrow", "gauss-hermite")


class Factor(NamedTuple):
    """An elementwise function f with its parity: +1 even, -1 odd, 0 unknown/none."""

    fn: Callable
    parity: int = 0


@functools.lru_cache(maxsize=4096)
def _derivative_fn(fn: Callable) -> Callable:
    # One object per fn, so that repeated derivatives compare equal (caches, CSE).
    def d(x):
        x = jnp.asarray(x)
        return jax.jvp(fn, (x,), (jnp.ones_like(x),))[1]

    d.__name__ = f"d_{getattr(fn, '__name__', 'f')}"
    return d


@functools.lru_cache(maxsize=4096)
def derivative_factor(f: Factor) -> Factor:
    """The factor f' (parity flips)."""
    return Factor(_derivative_fn(f.fn), -f.parity)


# R = (pi^2 (n - 1))^(1/3) + offset; the narrow variant (finer step, shorter range) suits
# bounded, saturating functions (tanh, sigmoid, erf), whose tails are flat.
_R_OFFSET = {"trapezoid": 0.0, "trapezoid-narrow": -1.0}


@functools.lru_cache(maxsize=64)
def rule(n: int, kind: str = "trapezoid") -> tuple[np.ndarray, np.ndarray]:
    """Nodes z and weights w (float64, w sums to 1) of the 1-d rule for E[f(z)], z ~ N(0,1)."""
    n = int(n)
    if n < 1:
        raise ValueError(f"nodes: need at least 1 node per dimension, got {n}")
    if kind in _R_OFFSET:
        if n == 1:
            return np.zeros(1), np.ones(1)
        R = (np.pi**2 * (n - 1)) ** (1.0 / 3.0) + _R_OFFSET[kind]
        z = np.linspace(-R, R, n)
        w = np.exp(-0.5 * z * z)
    elif kind == "gauss-hermite":
        z, w = np.polynomial.hermite_e.hermegauss(n)
    else:
        raise ValueError(f"rule: expected one of {RULES}, got {kind!r}")
    z = 0.5 * (z - z[::-1])  # exactly symmetric
    w = 0.5 * (w + w[::-1])
    return z, w / w.sum()


def _level_rule(n, kind, power: int, half: bool, dtype):
    """(z, w * z^power) of one direction, halved (z >= 0, doubled weights) if ``half``."""
    z, w = rule(n, kind)
    if half:
        keep = z >= 0
        z, w = z[keep], np.where(z[keep] > 0, 2.0 * w[keep], w[keep])
    return jnp.asarray(z, dtype), jnp.asarray(w * z**power, dtype)


def _float(x):
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(float)


def _cholesky(c):
    """Entries l[(i, j)] (i >= j) of the lower Cholesky factor of the (..., d, d) blocks
    (read symmetrised); pivots <= 64 eps C_ii are singular: 0, with their column.

    Blocks slightly outside the positive semi-definite cone (an ODE state pushed there by
    integration errors next to a singular fixed point: a student that has learned its
    teacher) would give unbounded entries (conditional correlations > 1); each entry
    l_ij (i > j) is clipped to the remaining standard deviation of u_i, sqrt(C_ii -
    sum_{k<j} l_ik^2), which bounds the factor and makes it a continuous function of the
    block; inside the cone the clip is inactive."""
    d = c.shape[-1]
    tol = 64.0 * float(jnp.finfo(c.dtype).eps)
    l, ok = {}, {}
    for j in range(d):  # column by column
        s = c[..., j, j] - sum((l[(j, k)] ** 2 for k in range(j)), start=0.0)
        ok[j] = s > tol * c[..., j, j]
        l[(j, j)] = jnp.where(ok[j], jnp.sqrt(jnp.where(ok[j], s, 1.0)), 0.0)
        for i in range(j + 1, d):
            s = 0.5 * (c[..., i, j] + c[..., j, i])
            s = s - sum((l[(i, k)] * l[(j, k)] for k in range(j)), start=0.0)
            r = c[..., i, i] - sum((l[(i, k)] ** 2 for k in range(j)), start=0.0)
            pos = r > 0
            r = jnp.where(pos, jnp.sqrt(jnp.where(pos, r, 1.0)), 0.0)
            x = jnp.where(ok[j], s / jnp.where(ok[j], l[(j, j)], 1.0), 0.0)
            l[(i, j)] = jnp.clip(x, -r, r)
    return l


_KAPPA = 1.0 / 16.0


def _pivoted_factor(c):
    """Pivoted, clipped Cholesky factor of the (..., d, d) blocks (read symmetrised; d = 4
    for I4, d = L for the joint rule).

    Returns (A, perm): u = A z with A[..., i, k] the coefficient of z_k in u_i, and
    perm[..., m] the variable placed on level m, so that A[perm[m], k] = 0 for k > m.

    Order: the fixed order (0, 1, 2, 3), except that a variable whose conditional variance
    (given the variables already placed) has fallen below 1/16 of its variance is deferred
    (the largest remaining fraction is taken when all are below). Nearly determined
    variables (a student that has learned its teacher) thus come last, where their tiny
    conditional standard deviation multiplies only their own direction: with them in the
    middle, the factor entries below their pivot are ratios of two vanishing numbers, the
    tensor grid rotates quickly as the block changes and the quadrature error turns into
    large, rapidly varying derivatives (an ODE solver then stalls). The order changes only
    when a fraction crosses 1/16, a rare event along a trajectory.
    """
    c = 0.5 * (c + jnp.swapaxes(c, -1, -2))
    d = c.shape[-1]
    dtype = c.dtype
    tol = 64.0 * float(jnp.finfo(dtype).eps)
    diag0 = jnp.diagonal(c, axis1=-2, axis2=-1)
    scale = jnp.where(diag0 > 0, diag0, 1.0)
    idx = jnp.arange(d)
    S = c
    used = jnp.zeros(diag0.shape, bool)
    cols, perm = [], []
    for _ in range(d):
        ds = jnp.diagonal(S, axis1=-2, axis2=-1)
        r = jnp.where(used, -jnp.inf, ds / scale)
        good = r >= _KAPPA
        first_good = jnp.argmax(good, axis=-1)
        p = jnp.where(jnp.any(good, axis=-1), first_good, jnp.argmax(r, axis=-1))
        e = (idx == p[..., None]).astype(dtype)
        dpp = jnp.sum(e * ds, -1)
        ok = dpp > tol * jnp.sum(e * diag0, -1)
        root = jnp.where(ok, jnp.sqrt(jnp.where(ok, dpp, 1.0)), 0.0)
        col = jnp.einsum("...ij,...j->...i", S, e)
        col = jnp.where(ok[..., None], col / jnp.where(ok, root, 1.0)[..., None], 0.0)
        pos = ds > 0
        bound = jnp.where(pos, jnp.sqrt(jnp.where(pos, ds, 1.0)), 0.0)
        col = jnp.clip(col, -bound, bound)
        col = jnp.where(e > 0, root[..., None], jnp.where(used, 0.0, col))
        S = S - col[..., :, None] * col[..., None, :]
        used = used | (e > 0)
        cols.append(col)
        perm.append(p)
    return jnp.stack(cols, -1), jnp.stack(perm, -1)


def _parity(fs, deriv, powers) -> int:
    """Parity under z -> -z of prod_i f_i^(deriv)(u_i) prod_k z_k^p_k: +1, -1 or 0 (none)."""
    p = (-1) ** ((sum(powers) + sum(deriv)) % 2)
    for f in fs:
        p *= f.parity
    return p


def _nth(f: Factor, n: int) -> Factor:
    for _ in range(n):
        f = derivative_factor(f)
    return f


def _qsum_primal(fs: tuple, deriv: tuple, powers: tuple, ns: tuple, kind: str, c):
    """sum_p w_p prod_m F_m(u_pm) prod_k z_pk^powers_k, u_p = A(c) z_p, nested over levels:
    level m holds variable perm[m] and F_m is the deriv[m]-th derivative of its factor."""
    dtype = c.dtype
    batch = c.shape[:-2]
    d = len(fs)
    par = _parity(fs, deriv, powers)
    if par == -1:
        return jnp.zeros(batch, dtype)
    if d == 4:
        A, perm = _pivoted_factor(c)
        Ap = jnp.take_along_axis(A, perm[..., :, None], axis=-2)  # rows in level order
    else:
        l = _cholesky(c)
        Ap = jnp.stack(
            [jnp.stack([l[(i, k)] if k <= i else 0.0 * l[(0, 0)] for k in range(d)], -1)
             for i in range(d)],
            -2,
        )  # fmt: skip
        perm = None
    zw = [_level_rule(ns[k], kind, powers[k], k == 0 and par == 1, dtype) for k in range(d)]

    def coef(m, k):  # level-m coefficient of z_k, with d trailing unit axes
        return Ap[..., m, k].reshape(batch + (1,) * d)

    def ax(a, k):  # 1-d array on node axis k of d
        return a.reshape((1,) * k + a.shape + (1,) * (d - k - 1))

    def level_fn(m, u):
        if perm is None:
            return _nth(fs[m], deriv[m]).fn(u)
        out, seen = 0.0, {}
        for i, f in enumerate(fs):
            g = _nth(f, deriv[m])
            if g.fn not in seen:
                seen[g.fn] = g.fn(u)
            sel = (perm[..., m] == i).reshape(batch + (1,) * d)
            out = out + jnp.where(sel, seen[g.fn], 0.0)
        return out

    # node axes (n_1, ..., n_d); level m: u = sum_{k <= m} A_mk z_k, then its sum
    s = None
    for m in reversed(range(d)):
        u = sum(coef(m, k) * ax(zw[k][0], k) for k in range(m + 1))
        v = ax(zw[m][1], m) * level_fn(m, u)  # (..., n_1, ..., n_m, 1, ...)
        v = v if s is None else v * s
        s = jnp.sum(v, axis=-(d - m))
        s = s.reshape(s.shape[: len(batch) + m] + (1,) * (d - m))
    return s.reshape(batch)


def _level_factor(c):
    """Level-ordered coefficients Ap[..., m, k] (the tangent map of the factorisation; the
    order is piecewise constant, so it carries no derivative)."""
    if c.shape[-1] == 4:
        A, perm = _pivoted_factor(c)
        return jnp.take_along_axis(A, jax.lax.stop_gradient(perm)[..., :, None], axis=-2)
    l = _cholesky(c)
    d = c.shape[-1]
    return jnp.stack(
        [jnp.stack([l[(i, k)] if k <= i else 0.0 * l[(0, 0)] for k in range(d)], -1)
         for i in range(d)],
        -2,
    )  # fmt: skip


#: Grid points per chunk of blocks: the nested sums of a 4-d rule over many blocks at once
#: materialise (blocks x grid) arrays that leave the CPU caches; mapping over chunks of
#: about this many points keeps them in cache (3-8x faster for ~1e5 points per block,
#: e.g. nodes_i4=(32, 20, 16, 12); neutral for the default grid).
_CHUNK_POINTS = 1 << 16


def _qsum_chunked(fs, deriv, powers, ns, kind, c):
    batch = c.shape[:-2]
    nb = math.prod(batch)
    per_block = math.prod(ns)
    if len(ns) < 4 or nb <= 1 or per_block * nb <= _CHUNK_POINTS:
        return _qsum_primal(fs, deriv, powers, ns, kind, c)
    bs = max(1, _CHUNK_POINTS // per_block)
    flat = c.reshape((nb,) + c.shape[-2:])
    out = jax.lax.map(lambda x: _qsum_primal(fs, deriv, powers, ns, kind, x), flat, batch_size=bs)
    return out.reshape(batch)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1, 2, 3, 4))
def _qsum(fs, deriv, powers, ns, kind, c):
    return _qsum_chunked(fs, deriv, powers, ns, kind, c)


@_qsum.defjvp
def _qsum_jvp(fs, deriv, powers, ns, kind, primals, tangents):
    (c,) = primals
    (dc,) = tangents
    y = _qsum(fs, deriv, powers, ns, kind, c)
    _, dA = jax.jvp(_level_factor, (c,), (dc,))
    d = len(fs)
    dy = jnp.zeros_like(y)
    for m in range(d):
        dm = tuple(e + 1 if j == m else e for j, e in enumerate(deriv))
        for k in range(m + 1):
            pk = tuple(p + 1 if j == k else p for j, p in enumerate(powers))
            dy = dy + _qsum(fs, dm, pk, ns, kind, c) * dA[..., m, k]
    return y, dy


def expect2(fa: Factor, fb: Factor, caa, cab, cbb, *, nodes: int = 40, rule: str = "trapezoid"):
    """E[f_a(u_a) f_b(u_b)] for (u_a, u_b) ~ N(0, [[caa, cab], [cab, cbb]]) (broadcasting),
    with ``nodes`` per dimension of the ``rule``; differentiable (module docstring)."""
    caa, cab, cbb = jnp.broadcast_arrays(*(_float(x) for x in (caa, cab, cbb)))
    dtype = jnp.result_type(caa, cab, cbb)
    c = jnp.stack([jnp.stack([caa, cab], -1), jnp.stack([cab, cbb], -1)], -2).astype(dtype)
    return _qsum((fa, fb), (0, 0), (0, 0), (int(nodes),) * 2, rule, c)


def expect2_weighted(fa: Factor, fb: Factor, c, powers, *, nodes: int = 40, rule="trapezoid"):
    """sum_p w_p f_a(u_a) f_b(u_b) z_1^p_1 z_2^p_2 for the (..., 2, 2) blocks ``c`` (the
    rule's approximation of E[f_a f_b z_1^p_1 z_2^p_2], z the whitened variables)."""
    return _qsum((fa, fb), (0, 0), tuple(powers), (int(nodes),) * 2, rule, _float(c))


def expect4(fs, c, *, nodes: int | tuple[int, int, int, int] = 16, rule: str = "trapezoid"):
    """E[f_1(u_1) f_2(u_2) f_3(u_3) f_4(u_4)] for u ~ N(0, c), c of shape (..., 4, 4) (read
    symmetrised), by the nested 4-d rule with ``nodes`` per direction (an int, or one per
    direction z_1..z_4 of the Cholesky factor; cost prod(nodes), halved for even
    integrands); differentiable in c (module docstring)."""
    fs = tuple(fs)
    if len(fs) != 4:
        raise ValueError(f"expect4: expected 4 factors, got {len(fs)}")
    ns = (int(nodes),) * 4 if isinstance(nodes, int) else tuple(int(m) for m in nodes)
    if len(ns) != 4 or min(ns) < 1:
        raise ValueError(f"nodes: expected a positive int or 4 of them, got {nodes!r}")
    return _qsum(fs, (0, 0, 0, 0), (0, 0, 0, 0), ns, rule, _float(c))


# --------------------------------------------------------------------------------------
# The joint rule: B_ik = E[g'(x_i) g'(x_k) Delta(x)^2] over one L-dimensional Gaussian
# --------------------------------------------------------------------------------------

#: Points per chunk of the joint rule: larger grids are summed chunk by chunk (lax.map), so
#: that the (points x last-direction) arrays stay in cache (default grid: ~25% faster than
#: one chunk, measured on 2 CPU cores).
_JOINT_CHUNK_POINTS = 1 << 13


@functools.lru_cache(maxsize=64)
def _joint_grid(ns: tuple, kind: str, half: bool):
    """Outer tensor grid of directions z_1..z_{L-1} (points (P, L-1), weights (P,)) and the
    rule of the last direction (z, w); z_1 halved (z >= 0, doubled weights) if ``half``."""
    zs, ws = [], []
    for k, n in enumerate(ns):
        z, w = rule(n, kind)
        if k == 0 and half:
            keep = z >= 0
            z, w = z[keep], np.where(z[keep] > 0, 2.0 * w[keep], w[keep])
        zs.append(z)
        ws.append(w)
    outer_z, outer_w = zs[:-1], ws[:-1]
    if outer_z:
        Z = np.stack(np.meshgrid(*outer_z, indexing="ij"), -1).reshape(-1, len(outer_z))
        W = functools.reduce(np.multiply.outer, outer_w).reshape(-1)
    else:
        Z, W = np.zeros((1, 0)), np.ones(1)
    return Z, W, zs[-1], ws[-1]


def joint_points(nodes, L: int, half: bool) -> int:
    """Number of evaluation points of the joint rule with ``nodes`` (int or per direction)
    in L dimensions."""
    ns = _joint_nodes(nodes, L)
    n1 = (ns[0] + 1) // 2 if half else ns[0]
    return n1 * math.prod(ns[1:])


def _joint_nodes(nodes, L: int) -> tuple:
    if isinstance(nodes, int):
        return (int(nodes),) * L
    ns = tuple(int(n) for n in nodes)
    return (ns + ns[-1:] * L)[:L]  # the last entry repeats for further directions


def _moment_terms(t, s):
    """The nine products t^a s^b (a, b <= 2) but 1, in the order of ``_last_moments``."""
    ss = s * s
    return (t, t * t, s, s * t, s * t * t, ss, ss * t, ss * t * t)


def _moment_slopes(t, s, r):
    """d/dy of ``_moment_terms`` with t = g(y), s = g'(y), r = g''(y)."""
    ss = s * s
    sr2 = 2.0 * s * r
    return (s, 2.0 * t * s, r, r * t + ss, (r * t + 2.0 * ss) * t, sr2, sr2 * t + ss * s,
            (sr2 * t + 2.0 * ss * s) * t)  # fmt: skip


def _last_moment_sums(g, dg, n, kind, yc, a, slopes: bool):
    z, w = rule(n, kind)
    dtype = yc.dtype
    z, w = jnp.asarray(z, dtype), jnp.asarray(w, dtype)
    y = yc[..., None] + a * z  # (P, n)
    t, s = g.fn(y), dg.fn(y)
    m = jnp.stack([jnp.sum(w * f, -1) for f in _moment_terms(t, s)], -1)
    if not slopes:
        return m
    fs = _moment_slopes(t, s, derivative_factor(dg).fn(y))
    mc = jnp.stack([jnp.sum(w * f, -1) for f in fs], -1)
    ma = jnp.stack([jnp.sum((w * z) * f, -1) for f in fs], -1)
    return m, mc, ma


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1, 2, 3))
def _last_moments(g, dg, n, kind, yc, a):
    """sum_q w_q t^a s^b (the eight of ``_moment_terms``), t = g(y_q), s = g'(y_q),
    y_q = yc + a z_q over the 1-d rule (n, kind); shape (P, 8).

    The last direction of the joint rule. Its JVP, dm = mc dyc + ma da, takes the slopes
    mc = sum_q w_q dm/dy, ma = sum_q w_q z_q dm/dy from the same pass over the nodes, so
    under ``jax.linearize`` a tangent costs O(P) operations instead of O(P n) (a plain JVP
    through the nodes made a Rosenbrock Jacobian cost ~40 evaluations of B)."""
    return _last_moment_sums(g, dg, n, kind, yc, a, False)


@_last_moments.defjvp
def _last_moments_jvp(g, dg, n, kind, primals, tangents):
    yc, a = primals
    dyc, da = tangents
    m, mc, ma = _last_moment_sums(g, dg, n, kind, yc, a, True)
    return m, mc * dyc[..., None] + ma * da


def contract_b_joint(g: Factor, dg: Factor, c, u, K: int, *, nodes=20, rule="trapezoid"):
    r"""B_ik = sum_{jl} u_j u_l E[g'(x_i) g'(x_k) g(x_j) g(x_l)] = E[g'(x_i) g'(x_k) Delta^2],
    Delta = sum_j u_j g(x_j), x ~ N(0, c), for the students i, k < K; shape (K, K).

    One L-dimensional rule (L = c.shape[-1]) for all K(K+1)/2 x L(L+1)/2 index tuples
    together, instead of one 4-d rule per tuple. Whitening: the pivoted, clipped Cholesky
    factor of the 4-d rule (``_pivoted_factor``), x = A z; level m holds the variable
    perm[m], whose value depends on z_1..z_m only. Tensor-product rule with ``nodes`` per
    direction (an int, or one per direction; the last entry repeats), z_1 halved when g has
    a definite parity (the integrand is then even in z). The last direction is summed
    first: with t = g and s = g' of the last level's variable, its nine moments
    sum_q w_q t^a s^b (a, b <= 2) turn the integrand, a quadratic in t with factors s, into
    sums over the outer grid only; the cost is ~prod(nodes) evaluations of g and g' plus
    ~prod(nodes[:-1]) L^2 multiply-adds.

    Why one joint rule: all K(K+1)/2 x L(L+1)/2 I4 tuples of the ODE are expectations
    over the same L-dimensional Gaussian, so one rule serves them all, and Delta is formed
    at every node, so when the student has learned its teacher (Delta -> 0) the computed
    B vanishes with it; the sum of separately integrated tuples cancels to their absolute
    quadrature errors instead. For tanh, K = M = 2, nodes (20, 20, 14, 14) (39200 points)
    match the accuracy of the 30 tuples at (32, 16, 12, 10) (921600 points; numbers in
    ``tsjax.Activation.contract_i4``). Measured alternatives: sparse (Smolyak) grids of
    trapezoidal rules need ~2-3x fewer points for the same accuracy but evaluate g at every
    variable of every point (this nesting evaluates it ~once per point); Gauss-Hermite is
    5-50x less accurate at 8-16 nodes; for 12-16 nodes per direction the "narrow" offset
    (R - 1) is the best of R - 2 .. R. The cost grows like nodes^L, so the joint rule
    pays for L <= 5 (``tsjax._activations.JOINT_MAX_DIM``).

    Derivatives (in c and u): those of the computed sum, by automatic differentiation of
    the outer grid and the custom JVP of the last direction (``_last_moments``, exact for
    the same sum), so consistent with the value to round-off (what Rosenbrock solvers
    need); under ``jax.linearize`` a tangent costs ~L^2 operations per outer point, not per
    node: the Jacobian of a K = M = 2 right-hand side costs ~3 evaluations of B."""
    c = _float(c)
    L = c.shape[-1]
    if L < 2:
        raise ValueError(f"contract_b_joint: need L >= 2 variables, got {L}")
    dtype = c.dtype
    u = jnp.asarray(u, dtype)
    ns = _joint_nodes(nodes, L)
    half = g.parity != 0  # g'g' Delta^2 is even in z for odd or even g
    Zo, Wo, _, _ = _joint_grid(ns, rule, half)
    A, perm = _pivoted_factor(c)
    Ap = jnp.take_along_axis(A, perm[:, None], axis=0)  # level rows; Ap[m, k] = 0 for k > m
    ul = u[perm]
    cl = ul[L - 1]

    def partial_sums(zo, wo):
        yo = zo @ Ap[: L - 1, : L - 1].T  # (P, L-1) outer levels
        go, do = g.fn(yo), dg.fn(yo)
        m_t, m_tt, m_s, m_st, m_stt, m_ss, m_sst, m_sstt = _last_moments(
            g, dg, ns[-1], rule, zo @ Ap[L - 1, : L - 1], Ap[L - 1, L - 1]
        ).T
        delta = go @ ul[: L - 1]
        d2, dc = delta * delta, 2.0 * cl * delta
        cc = cl * cl
        e0 = wo * (d2 + dc * m_t + cc * m_tt)
        e1 = wo * (d2 * m_s + dc * m_st + cc * m_stt)
        e2 = wo * (d2 * m_ss + dc * m_sst + cc * m_sstt)
        b_oo = (do * e0[:, None]).T @ do
        b_ol = e1 @ do
        b_ll = jnp.sum(e2)
        return b_oo, b_ol, b_ll

    P = Zo.shape[0]
    bs = max(1, _JOINT_CHUNK_POINTS // ns[-1])
    if P <= bs:
        b_oo, b_ol, b_ll = partial_sums(jnp.asarray(Zo, dtype), jnp.asarray(Wo, dtype))
    else:
        nch = -(-P // bs)
        pad = nch * bs - P
        Zc = np.concatenate([Zo, np.zeros((pad, L - 1))]).reshape(nch, bs, L - 1)
        Wc = np.concatenate([Wo, np.zeros(pad)]).reshape(nch, bs)
        parts = jax.lax.map(
            lambda zw: partial_sums(*zw), (jnp.asarray(Zc, dtype), jnp.asarray(Wc, dtype))
        )
        b_oo, b_ol, b_ll = (jnp.sum(p, 0) for p in parts)
    B_lev = jnp.concatenate(
        [
            jnp.concatenate([b_oo, b_ol[:, None]], 1),
            jnp.concatenate([b_ol, b_ll[None]])[None, :],
        ],
        0,
    )
    onehot = (perm[None, :] == jnp.arange(K)[:, None]).astype(dtype)  # (K, L): level of i
    return onehot @ B_lev @ onehot.T
