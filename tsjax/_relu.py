"""ReLU, g(x) = max(0, x), g'(x) = Theta(x): closed forms for I2, J2, I3 and a numerical
I4 (no closed form is known).

With rho = C_ab / sqrt(C_aa C_bb) (Cho & Saul 2009 arc-cosine kernels):

    I2 = (sqrt(C_aa C_bb - C_ab^2) + C_ab (pi - arccos rho)) / (2 pi)
    J2 = (pi - arccos rho) / (2 pi)

I3 follows from Stein's lemma applied to u_b:
    I3 = C_ab E[delta(u_a) relu(u_c)] + C_bc E[Theta(u_a) Theta(u_c)]
       = C_ab sqrt(C_aa C_cc - C_ac^2) / (2 pi C_aa) + C_bc J2(a, c).

I4 = E[Theta(u_a) Theta(u_b) relu(u_c) relu(u_d)] has no known closed form; it is reduced
to a one-dimensional integral of closed forms (Gaussian interpolation), see ``_i4_relu``.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from ._activations import Activation
from ._special import asin


def _safe_sqrt(x):
    # sqrt with a finite derivative at 0 (singular blocks have determinant exactly 0).
    pos = x > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, x, 1.0)), 0.0)


def _pair(caa, cab, cbb):
    """(sqrt(C_aa C_bb - C_ab^2), theta = arccos(rho)) for a 2x2 covariance, robust at and
    near singular blocks. Blocks that are singular to round-off (coinciding indices, or
    |rho| = 1 up to a few ulps) get exactly det = 0 and theta in {0, pi}, held fixed under
    differentiation: the derivative of arccos is infinite there, but along the directions
    that keep the indices coinciding (the only ones the ODE moves along) rho stays +-1. For
    I2 the two infinite terms cancel exactly, so its derivative stays exact."""
    prod = caa * cbb
    det = prod - cab * cab
    eps = jnp.finfo(jnp.result_type(det)).eps
    sing = det <= 16 * eps * prod
    root = _safe_sqrt(jnp.where(sing, 0.0, det))
    rho = jnp.where(sing, 0.0, cab / jnp.sqrt(jnp.where(sing, 1.0, prod)))
    theta = jnp.where(
        sing, jnp.where(cab > 0, 0.0, jnp.pi), jnp.pi / 2 - asin(jnp.clip(rho, -1, 1))
    )
    return root, theta


class ReLU(Activation):
    """g(x) = max(0, x). I2, J2, I3 in closed form; I4 numerically (see ``i4``)."""

    @property
    def name(self) -> str:
        return "relu"

    def __call__(self, x):
        return jnp.maximum(jnp.asarray(x), 0.0)

    def derivative(self, x):
        x = jnp.asarray(x)
        return (x > 0).astype(x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else float)

    def i2(self, caa, cab, cbb):
        root, theta = _pair(caa, cab, cbb)
        return (root + cab * (jnp.pi - theta)) / (2 * jnp.pi)

    def j2(self, caa, cab, cbb):
        _, theta = _pair(caa, cab, cbb)
        return (jnp.pi - theta) / (2 * jnp.pi)

    def i3(self, c):
        caa, cab, cac = c[..., 0, 0], c[..., 0, 1], c[..., 0, 2]
        cbc, ccc = c[..., 1, 2], c[..., 2, 2]
        root, theta = _pair(caa, cac, ccc)
        return (cab * root / caa + cbc * (jnp.pi - theta)) / (2 * jnp.pi)

    def i4(self, c):
        """I4 = E[Theta(u_a) Theta(u_b) relu(u_c) relu(u_d)] for the (..., 4, 4) covariance of
        (u_a, u_b, u_c, u_d), by a 73-node double-exponential quadrature of a 1-d integral of
        closed forms (see :func:`_i4_relu` for the method, its accuracy and its gradient).
        Reads the upper triangle of ``c``; singular blocks (coinciding indices) are allowed."""
        return _i4_relu(c)

    def d4(self, c):
        """D4 = E[Theta(u_a) Theta(u_b) Theta(u_c) Theta(u_d)], the orthant probability
        (Plackett's P4, by the quadrature of :func:`_i4_relu`; singular blocks allowed)."""
        return _i4_relu(c, return_p4=True)[1]


# ---------------------------------------------------------------------------------------
# I4 by Gaussian interpolation
# ---------------------------------------------------------------------------------------

# Tanh-sinh (double-exponential) rule on u in [0, 1], with t = 1 - u^2 (see _i4_relu).
# x_k = k h, |k| <= n; u_k = 1 / (1 + exp(-pi sinh x_k)). float64: h = 1/12, n = 36 (73 nodes,
# u and 1 - u down to 2e-14, so the truncated ends weigh < 1e-13); float32: n = 26 (53 nodes,
# u and 1 - u down to 1e-6, s = u^2 >= 1e-12, so that s^3 and the squared denominators in
# the derivatives stay normal float32 numbers).
_TS_H = 1.0 / 12.0
_TS_N = {8: 36, 4: 26}

_PAIRS = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))


def _others(*idx):
    return tuple(m for m in range(4) if m not in idx)


@functools.lru_cache(maxsize=16)
def _ts_nodes(h: float, n: int):
    """(s, t, w): s = u^2, t = 1 - s (both computed without cancellation) and weights w
    such that int_0^1 F(t) dt ~= sum_k w_k F(t_k) (w includes dt/du = 2u)."""
    x = np.arange(-n, n + 1) * h
    y = np.pi * np.sinh(x)
    u = 1.0 / (1.0 + np.exp(-y))
    v = 1.0 / (1.0 + np.exp(y))  # 1 - u
    du = h * np.pi * np.cosh(x) * u * v
    return u * u, v * (1.0 + u), 2.0 * u * du


def _safe_arcsin(x):
    # arcsin with a finite derivative at |x| = 1 (round-off can put partial correlations there).
    ok = jnp.abs(x) < 1.0
    return jnp.where(ok, asin(jnp.where(ok, x, 0.0)), jnp.sign(x) * (jnp.pi / 2))


def _pick(p, q):
    # Two algebraically identical formulas for a minor: keep the smaller one. When indices
    # coincide, one of them is exactly 0 (a factor is a difference of bitwise-equal numbers),
    # also when XLA contracts a*b - c*d into a fused multiply-add.
    return jnp.where(jnp.abs(p) <= jnp.abs(q), p, q)


def _unit_i4_integrand(r, s, t):
    """Integrand of the Gaussian-interpolation formula for unit variances, and P4'(t).

    r: dict (i, j) -> correlation r_ij (i < j), arrays broadcasting against s, t (the
    nodes). Works with the interpolated correlation matrix R(t) = t R + s I, s = 1 - t,
    whose minors are polynomials in (t, s) with coefficients that are minors of R; the
    coefficients are computed once, in forms that vanish exactly for coinciding indices, so
    the minors of R(t) keep full relative accuracy even for s ~ 1e-28 (no 1 - t cancellation).
    """

    def rr(i, j):
        return 1.0 if i == j else r[(min(i, j), max(i, j))]

    def dd(k, l, j):  # r_kl - r_jk r_jl: partial covariance of (k, l) given j, at t = 1
        return rr(k, l) - rr(j, k) * rr(j, l)

    def p2(i, j):  # 1 - r_ij^2
        return 1.0 - rr(i, j) * rr(i, j)

    # 3x3 principal minors of R (key: the excluded index), by elimination on either pivot.
    det3 = {}
    for m in range(4):
        i, j, k = _others(m)
        via_i = p2(i, j) * p2(i, k) - dd(j, k, i) * dd(j, k, i)
        via_j = p2(j, i) * p2(j, k) - dd(i, k, j) * dd(i, k, j)
        det3[m] = jnp.maximum(_pick(via_i, via_j), 0.0)
    # 3x3 minors R[(i, j, k), (i, j, l)], {i, j} = complement of {k, l}.
    x3 = {}
    for k, l in _PAIRS:
        i, j = _others(k, l)
        via_i = p2(i, j) * dd(k, l, i) - dd(j, l, i) * dd(k, j, i)
        via_j = p2(j, i) * dd(k, l, j) - dd(i, l, j) * dd(k, i, j)
        x3[(k, l)] = _pick(via_i, via_j)

    t2, ts = t * t, t * s
    # minors of R(t) = t R + s I (its diagonal is t + s = 1)
    m2 = {p: t2 * p2(*p) + s * (2.0 * t + s) for p in _PAIRS}  # 1 - t^2 r^2

    def mm2(i, j):
        return m2[(min(i, j), max(i, j))]

    tri = {}  # principal 3x3 minor of R(t) without index m
    for m in range(4):
        i, j, k = _others(m)
        tri[m] = (
            t2 * t * det3[m] + t2 * s * (p2(i, j) + p2(i, k) + p2(j, k)) + 3.0 * ts * s + s * s * s
        )
    sq = {m: _safe_sqrt(tri[m]) for m in range(4)}
    pc = {}  # partial correlation of (k, l) given the other two, at R(t)
    for k, l in _PAIRS:
        i, j = _others(k, l)
        num = t2 * t * x3[(k, l)] + t2 * s * (dd(k, l, j) + dd(k, l, i)) + ts * s * rr(k, l)
        # (num / sq_k) / sq_l, not num / (sq_k sq_l): the squared denominators of the
        # derivatives stay normal numbers (float32, I4(a,a,a,a): sq ~ s ~ 1e-12).
        ok = (sq[k] > 0) & (sq[l] > 0)
        q = num / jnp.where(ok, sq[k], 1.0) / jnp.where(ok, sq[l], 1.0)
        pc[(k, l)] = jnp.clip(jnp.where(ok, q, 0.0), -1.0, 1.0)

    def orth2(k, l):  # P(u_k > 0, u_l > 0 | the other two = 0)
        return 0.25 + _safe_arcsin(pc[(min(k, l), max(k, l))]) / (2 * jnp.pi)

    def cov1(m, l, k):  # Cov(u_m, u_l | u_k = 0) at R(t)
        return mm2(k, m) if m == l else t2 * dd(m, l, k) + ts * rr(m, l)

    a, b, c, d = 0, 1, 2, 3
    two_pi = 2.0 * jnp.pi

    # (a, b): r_ab E[delta_a delta_b relu_c relu_d]
    #       = r_ab phi2_ab(0, 0) E[relu_c relu_d | u_a = u_b = 0]   (ReLU I2, conditional cov)
    rho = pc[(c, d)]
    sqcd = sq[c] * sq[d]  # = m2_ab sqrt(S_cc S_dd), S: covariance of (c, d) given (a, b)
    i2 = sqcd * (_safe_sqrt((1.0 - rho) * (1.0 + rho)) + rho * (jnp.pi / 2 + _safe_arcsin(rho)))
    den = mm2(a, b) * jnp.sqrt(mm2(a, b))
    ok = den > 0
    f_ab = rr(a, b) * jnp.where(ok, i2 / jnp.where(ok, den, 1.0), 0.0) / (two_pi * two_pi)

    # (k, j), k in {a, b}, j in {c, d}: r_kj E[delta_k Theta_o Theta_j relu_m]
    #   = r_kj phi(0) E[Theta_o Theta_j Theta_m u_m | u_k = 0]      (o, m: the other two)
    #   and by Stein E[Theta_x Theta_y Theta_z u_m | .] = sum_l S_ml phi_l(0) P(rest > 0 | u_l = 0)
    def orthant_moment(k, o, m):
        tot = 0.0
        for l in (o, c, d):
            sll = mm2(k, l)
            rest = tuple(q for q in (o, c, d) if q != l)
            tot = tot + cov1(m, l, k) / jnp.sqrt(two_pi * sll) * orth2(*rest)
        return tot

    f_x = 0.0
    for k, o in ((a, b), (b, a)):
        f_x = f_x + (rr(k, c) * orthant_moment(k, o, d) + rr(k, d) * orthant_moment(k, o, c))
    f_x = f_x / math.sqrt(2.0 * math.pi)

    # (c, d): r_cd P4(t), integrated by parts -> r_cd (1 - t) P4'(t), with Plackett's
    # P4'(t) = sum_ij r_ij phi2_ij(0, 0) P(other two > 0 | u_i = u_j = 0).
    dp4 = 0.0
    for i, j in _PAIRS:
        dp4 = dp4 + rr(i, j) / (two_pi * jnp.sqrt(mm2(i, j))) * orth2(*_others(i, j))
    return f_ab + f_x + rr(c, d) * s * dp4, dp4


def _correlations(c):
    """Upper-triangle correlations r_ij = C_ij / sqrt(C_ii C_jj), pushed into [-1, 1]."""
    r = {}
    for i, j in _PAIRS:
        cij, cc = c[..., i, j], c[..., i, i] * c[..., j, j]
        x = cij / jnp.sqrt(cc)
        # Exactly +-1 for coinciding indices (C_ij = C_ii = C_jj), also under jit, where XLA
        # may evaluate x / sqrt(y) as x * rsqrt(y) and miss 1 by an ulp.
        x = jnp.where(cij * cij == cc, jnp.sign(cij), x)
        r[(i, j)] = jnp.where(x > 1.0, 1.0, jnp.where(x < -1.0, -1.0, x))
    # The derivative of I4 in r_ab is infinite where |r_ab| = 1 (u_a = +-u_b, e.g. I4(a,a,c,d)):
    # there we differentiate with r_ab held fixed, i.e. along the singular set. Gradients
    # along covariances that keep the indices coinciding (the way the ODE gathers its
    # blocks) are then exact; the one-sided derivative across the set (+infinity) is dropped.
    rab = r[(0, 1)]
    r[(0, 1)] = jnp.where(jnp.abs(rab) == 1.0, jax.lax.stop_gradient(rab), rab)
    return r


def _i4_relu(c, h: float | None = None, n: int | None = None, return_p4: bool = False):
    r"""ReLU I4 = E[Theta(u_a) Theta(u_b) relu(u_c) relu(u_d)], u ~ N(0, c), c (..., 4, 4).

    Method (Gaussian interpolation, Plackett 1954 / Price's theorem). By scale invariance of
    Theta and homogeneity of relu, I4(C) = sqrt(C_cc C_dd) F(R), R the correlation matrix.
    Along R(t) = t R + (1 - t) I, t in [0, 1], the heat-equation identity gives
    dE_t[f]/dt = sum_{i<j} r_ij E_t[d_i d_j f] for f = Theta_a Theta_b relu_c relu_d, so

      F(R) = 1/(8 pi) + r_cd / 16 + int_0^1 [ f_ab + f_x + r_cd (1 - t) P4'(t) ] dt,

    1/(8 pi) = E[Theta]^2 E[relu]^2 being the independent value at t = 0, and every term a
    closed form at R(t) (positive definite for t < 1, even when R is singular):
      f_ab = r_ab phi2_ab(0,0) E[relu_c relu_d | u_a = u_b = 0] (ReLU I2 of the conditional
             covariance);
      f_x  = sum_{k in {a,b}, j in {c,d}} r_kj phi(0) E[Theta_o Theta_j Theta_m u_m | u_k = 0],
             a 3-d orthant first moment, by Stein's lemma a sum of
             Cov(u_m, u_l | u_k) phi_l(0) (1/4 + arcsin(rho_{pq|kl}) / (2 pi));
      the pair (c, d) contributes r_cd E_t[Theta_a Theta_b Theta_c Theta_d] = r_cd P4(t), the
             4-d orthant probability, integrated by parts with P4(0) = 1/16 and Plackett's
             P4'(t) = sum_{i<j} r_ij phi2_ij(0,0) (1/4 + arcsin(rho_{kl|ij}(t)) / (2 pi)).
    All conditional quantities are minors of R(t), written as polynomials in (t, s = 1 - t)
    whose coefficients are minors of R (computed once, exactly zero for coinciding indices),
    so they keep their relative accuracy as s -> 0.

    Why this route: R(t) is positive definite for t < 1 whatever R is, so one formula covers
    generic, singular and near-singular blocks without case distinctions. The direct Stein
    reduction I4 = C_cd P4 + (3-d closed forms) evaluated at R itself is 0/0 for coinciding
    indices, and its terms have direction-dependent limits there (only their sum is
    continuous). Integrating the (c, d) term by parts avoids a nested integral for P4(t).
    Naive evaluation at t = 1 - s would lose ~eps/s relative accuracy near t = 1, where the
    singular cases put O(sqrt(s)) of the integral (errors ~1e-8); the (t, s)-polynomial minors
    remove that loss.

    Quadrature. For singular R (coinciding indices: I4(a,a,c,d), I4(a,b,a,d), I4(a,a,c,c),
    I4(a,a,a,a), ...) the integrand behaves like (1 - t)^(-1/2) as t -> 1 (phi2_ab), and a
    near-coincidence 1 - r = delta puts a feature of width delta there. With t = 1 - u^2 the
    integrand in u is bounded (and analytic for exact coincidences); a tanh-sinh rule in u
    (nodes double-exponentially dense at both ends) resolves features down to u ~ 1e-14, so
    one fixed rule serves generic, singular and near-singular blocks: 73 nodes in float64.

    Accuracy (float64; references: Monte Carlo, the 2-d and 3-d closed forms of the singular
    patterns, and an independent reduction -- conditioning on (u_c, u_d), 2-d Gauss-Legendre,
    exact bivariate orthant probabilities via Owen's T): |error| < 3e-14 on 200 random
    positive-definite blocks; < 1e-14 on exactly singular blocks (I4(a,a,a,a) = C_aa/2, ...);
    for a near-coincidence 1 - r = delta in [1e-16, 1e-2] < 1e-10 (about 1e-11 at delta = 1e-8,
    6e-11 at 1e-11, 2e-10 at the round-off level 1e-16, where the input itself only fixes I4
    to ~sqrt(eps)). Halving h (146 nodes) changes results by < 7e-11 over 2400 generic,
    singular and near-singular blocks. P4 (``return_p4``) comes with the same accuracy.
    float32 (53 nodes): ~1e-6 relative, near-coincidences limited by the rounding of the input.

    Cost: one pass over 73 nodes of ~40 closed-form terms (6 arcsin); ~2 ms per 200 blocks
    jitted on 2 CPU cores, ~4.5 ms with the gradient. Intermediates have shape (..., 73).

    Gradients: plain autodiff through the quadrature (exact for positive-definite c, to
    ~1e-10 relative). The derivative in r_ab = corr(u_a, u_b) is +infinity where |r_ab| = 1;
    there it is taken with r_ab held fixed (see ``_correlations``), which makes gradients
    along coincidence-preserving directions (e.g. of I4(C[idx][:, idx]) with idx = (k, k, n, m)
    w.r.t. the full covariance) exact and everything finite. Only the upper triangle of c is
    read.
    """
    c = jnp.asarray(c)
    if not jnp.issubdtype(c.dtype, jnp.floating):
        c = c.astype(float)
    dtype = c.dtype
    if h is None:
        h = _TS_H
    if n is None:
        n = _TS_N[8 if jnp.dtype(dtype).itemsize >= 8 else 4]
    s, t, w = (jnp.asarray(q, dtype) for q in _ts_nodes(float(h), int(n)))
    r = _correlations(c)
    integrand, dp4 = _unit_i4_integrand({k: v[..., None] for k, v in r.items()}, s, t)
    unit = 1.0 / (8.0 * jnp.pi) + r[(2, 3)] / 16.0 + jnp.sum(w * integrand, axis=-1)
    i4 = jnp.sqrt(c[..., 2, 2] * c[..., 3, 3]) * unit
    if return_p4:
        return i4, 1.0 / 16.0 + jnp.sum(w * dp4, axis=-1)
    return i4
