"""ReLU I4 = E[Theta(u_a) Theta(u_b) relu(u_c) relu(u_d)]: quadrature vs Monte Carlo,
closed forms of the singular (coinciding-index) patterns, an independent 2-d reduction,
near-singular blocks, gradients, batching, float32."""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from scipy.special import ndtr, owens_t  # noqa: E402

from tsjax import ReLU  # noqa: E402
from tsjax._relu import _i4_relu  # noqa: E402

# ---------------------------------------------------------------------------------------
# independent references (numpy / scipy)
# ---------------------------------------------------------------------------------------


def _bvn_cdf(h, k, rho):
    """Phi2(h, k; rho) via Owen's T (h, k nonzero), vectorised."""
    sq = np.sqrt(1 - rho * rho)
    ah = (k - rho * h) / (h * sq)
    ak = (h - rho * k) / (k * sq)
    beta = np.where((h * k > 0) | ((h * k == 0) & (h + k >= 0)), 0.0, 0.5)
    return 0.5 * ndtr(h) + 0.5 * ndtr(k) - owens_t(h, ah) - owens_t(k, ak) - beta


def _quadrant_grid(So, n=200):
    """Polar Gauss-Legendre grid on the quadrant x, y > 0 for the density N(0, So):
    returns x, y, weights * density."""
    Pinv = np.linalg.inv(So)
    rmax = np.sqrt(2 * 42 * np.linalg.eigvalsh(So).max())
    z, wz = np.polynomial.legendre.leggauss(n)
    r, wr = (z + 1) / 2 * rmax, wz * rmax / 2
    th, wt = (z + 1) * np.pi / 4, wz * np.pi / 4
    rr, tt = np.meshgrid(r, th, indexing="ij")
    x, y = rr * np.cos(tt), rr * np.sin(tt)
    q = Pinv[0, 0] * x * x + 2 * Pinv[0, 1] * x * y + Pinv[1, 1] * y * y
    dens = np.exp(-q / 2) / (2 * np.pi * np.sqrt(np.linalg.det(So)))
    return x, y, np.outer(wr, wt) * rr * dens


def _conditional(C, inner, outer):
    So = C[np.ix_(outer, outer)]
    X = C[np.ix_(inner, outer)]
    Bm = X @ np.linalg.inv(So)
    S = C[np.ix_(inner, inner)] - Bm @ X.T
    return So, Bm, S


def ref_cd(C):
    """(I4, P4) conditioning on (u_c, u_d): quadrant integral of u_c u_d (resp. 1) times the
    exact conditional orthant probability of (u_a, u_b). Independent of the Gaussian-
    interpolation method; needs C_{cd,cd} and the conditional covariance of (a, b) regular."""
    So, Bm, S = _conditional(C, [0, 1], [2, 3])
    x, y, w = _quadrant_grid(So)
    sa, sb = np.sqrt(S[0, 0]), np.sqrt(S[1, 1])
    p = _bvn_cdf((Bm[0, 0] * x + Bm[0, 1] * y) / sa, (Bm[1, 0] * x + Bm[1, 1] * y) / sb,
                 S[0, 1] / (sa * sb))  # fmt: skip
    return np.sum(w * x * y * p), np.sum(w * p)


def ref_bd(C):
    """I4 conditioning on (u_b, u_d): quadrant integral of u_d E[Theta_a relu_c | u_b, u_d]
    (closed form), regular when u_a and u_c nearly coincide (student-teacher alignment)."""
    So, Bm, S = _conditional(C, [0, 2], [1, 3])
    x, y, w = _quadrant_grid(So)
    sa, sc = np.sqrt(S[0, 0]), np.sqrt(S[1, 1])
    rho = S[0, 1] / (sa * sc)
    hx = (Bm[0, 0] * x + Bm[0, 1] * y) / sa
    hy = (Bm[1, 0] * x + Bm[1, 1] * y) / sc
    sq = np.sqrt(1 - rho * rho)
    pdf = lambda z: np.exp(-z * z / 2) / np.sqrt(2 * np.pi)
    e = pdf(hy) * ndtr((hx - rho * hy) / sq) + rho * pdf(hx) * ndtr((hy - rho * hx) / sq)
    inner = sc * (hy * _bvn_cdf(hx, hy, rho) + e)  # E[1{X>0} Y 1{Y>0}]
    return np.sum(w * y * inner)


def _p3(S):
    s = np.sqrt(np.diag(S))
    R = S / np.outer(s, s)
    return 1 / 8 + (np.arcsin(R[0, 1]) + np.arcsin(R[0, 2]) + np.arcsin(R[1, 2])) / (4 * np.pi)


def _delta_moment(S, x, y, z):
    """E[delta(u_x) 1{u_y>0} 1{u_z>0} u_z] for a 3x3 covariance S (Stein, closed form)."""
    Sp = S - np.outer(S[:, x], S[x, :]) / S[x, x]
    inner = (np.sqrt(Sp[z, z]) + Sp[z, y] / np.sqrt(Sp[y, y])) / (2 * np.sqrt(2 * np.pi))
    return inner / np.sqrt(2 * np.pi * S[x, x])


def theta_relu_relu(S):
    """E[Theta(u0) relu(u1) relu(u2)] (Stein on u1): I4(a,a,c,d) and I4(a,b,a,d)."""
    return (
        S[1, 2] * _p3(S) + S[1, 0] * _delta_moment(S, 0, 1, 2) + S[1, 1] * _delta_moment(S, 1, 0, 2)
    )


def theta_theta_relu2(S):
    """E[Theta(u0) Theta(u1) relu(u2)^2] (Stein on u2): I4(a,b,c,c)."""
    return (
        S[2, 2] * _p3(S) + S[2, 0] * _delta_moment(S, 0, 1, 2) + S[2, 1] * _delta_moment(S, 1, 0, 2)
    )


def theta_relu2(S):
    """E[Theta(u0) relu(u1)^2] for 2x2 S: I4(a,a,c,c), I4(a,b,b,b)."""
    rho = S[0, 1] / np.sqrt(S[0, 0] * S[1, 1])
    szz = S[1, 1] - S[0, 1] ** 2 / S[0, 0]
    return S[1, 1] * (0.25 + np.arcsin(rho) / (2 * np.pi)) + S[0, 1] * np.sqrt(szz) / (
        2 * np.pi * np.sqrt(S[0, 0])
    )


def i2relu(S):
    """E[relu(u0) relu(u1)]: I4(a,b,a,b), I4(a,a,a,d)."""
    rho = S[0, 1] / np.sqrt(S[0, 0] * S[1, 1])
    return (np.sqrt(S[0, 0] * S[1, 1] - S[0, 1] ** 2) + S[0, 1] * (np.pi - np.arccos(rho))) / (
        2 * np.pi
    )


def sub(S, idx):
    return S[np.ix_(idx, idx)]


# pattern (indices into a 3x3 base covariance) -> closed form
SINGULAR = {
    (0, 0, 1, 2): lambda S: theta_relu_relu(S),
    (0, 1, 0, 2): lambda S: theta_relu_relu(sub(S, (1, 0, 2))),
    (0, 0, 1, 1): lambda S: theta_relu2(sub(S, (0, 1))),
    (0, 1, 2, 2): lambda S: theta_theta_relu2(S),
    (0, 0, 0, 0): lambda S: S[0, 0] / 2,
    (0, 1, 0, 1): lambda S: i2relu(sub(S, (0, 1))),
    (0, 0, 0, 1): lambda S: i2relu(sub(S, (0, 1))),
    (0, 1, 1, 1): lambda S: theta_relu2(sub(S, (0, 1))),
}


def random_cov(rng, n, k=None):
    """Wishart-like n x n covariance with diagonal between 0.3 and 3."""
    A = rng.standard_normal((n, k or n + 2))
    C = A @ A.T
    d = np.sqrt(np.diag(C))
    R = C / np.outer(d, d)
    s = np.sqrt(rng.uniform(0.3, 3.0, n))
    return R * np.outer(s, s)


def monte_carlo(C, n=1_000_000, seed=0):
    w, V = np.linalg.eigh(C)
    L = V * np.sqrt(np.clip(w, 0, None))
    u = np.random.default_rng(seed).standard_normal((n, 4), dtype=np.float32) @ L.T.astype(
        np.float32
    )
    f = (u[:, 0] > 0) * (u[:, 1] > 0) * np.maximum(u[:, 2], 0) * np.maximum(u[:, 3], 0)
    return f.mean(), f.std() / np.sqrt(n)


_i4_jit = jax.jit(_i4_relu, static_argnames=("h", "n", "return_p4"))
_grad_jit = jax.jit(jax.grad(lambda c: jnp.sum(_i4_relu(c))))


def i4(C, **kw):
    return float(_i4_jit(jnp.asarray(C), **kw))


def near_pair(S, delta, which):
    """4x4 covariance from the 3x3 base S for (a, b, c, d) with corr = 1 - delta between a and
    b (which="ab": two students on the same teacher) or between a and c (which="ac": student
    on its teacher), the extra direction orthogonal to everything else."""
    L = np.linalg.cholesky(S)
    W = np.zeros((4, 5))
    W[0, :3], W[2, :3], W[3, :3] = L[0], L[1], L[2]
    f = np.zeros(5)
    f[3] = np.sqrt(S[0, 0])
    rho = 1.0 - delta
    if which == "ab":
        W[1] = rho * W[0] + np.sqrt(1 - rho * rho) * f
    else:
        W[1] = np.array([0.3, -0.5, 0.2, 0.0, 0.6])
        W[2] = rho * W[0] + np.sqrt(1 - rho * rho) * f
    return W @ W.T


# ---------------------------------------------------------------------------------------
# 1. Monte Carlo
# ---------------------------------------------------------------------------------------


def test_monte_carlo_generic():
    rng = np.random.default_rng(0)
    for trial in range(4):
        C = random_cov(rng, 4)
        m, se = monte_carlo(C, seed=trial)
        assert abs(i4(C) - m) < 4 * se, (C, i4(C), m, se)


@pytest.mark.parametrize("idx", list(SINGULAR) + [(0, 1, 1, 0), (1, 0, 2, 2)])
def test_monte_carlo_singular(idx):
    S = random_cov(np.random.default_rng(1), 3)
    C = sub(S, idx)
    m, se = monte_carlo(C, seed=2)
    assert abs(i4(C) - m) < 4 * se, (idx, i4(C), m, se)


# ---------------------------------------------------------------------------------------
# 2. high precision
# ---------------------------------------------------------------------------------------


def test_generic_vs_independent_reduction():
    """I4 and the 4-d orthant probability P4 vs conditioning on (u_c, u_d) (2-d quadrature,
    exact bivariate orthant probabilities): measured agreement ~1e-15."""
    rng = np.random.default_rng(3)
    for _ in range(4):
        C = random_cov(rng, 4)
        ref_i4, ref_p4 = ref_cd(C)
        val, p4 = _i4_jit(jnp.asarray(C), return_p4=True)
        assert abs(float(val) - ref_i4) < 1e-12
        assert abs(float(p4) - ref_p4) < 1e-12


@pytest.mark.parametrize("seed", [0, 1])
def test_singular_closed_forms(seed):
    """Coinciding indices reduce I4 to 2- and 3-d closed forms (measured error ~1e-15)."""
    S = random_cov(np.random.default_rng(10 + seed), 3)
    for idx, exact in SINGULAR.items():
        assert abs(i4(sub(S, idx)) - exact(S)) < 1e-12, idx
    # symmetric in (a, b) and in (c, d)
    for idx in [(0, 0, 1, 2), (0, 1, 0, 2), (0, 1, 2, 2)]:
        a, b, c, d = idx
        assert abs(i4(sub(S, (b, a, d, c))) - i4(sub(S, idx))) < 1e-13
    # I4(a, a, a, a) = E[Theta(u) relu(u)^2] = C_aa / 2, any scale
    for caa in (1e-3, 1.0, 50.0):
        assert abs(i4(np.full((4, 4), caa)) - caa / 2) < 1e-13 * max(caa, 1)
    # u_b = -u_a: Theta(u_a) Theta(u_b) = 0
    D = np.diag([1.0, -1.0, 1.0, 1.0])
    assert abs(i4(D @ sub(S, (0, 0, 1, 2)) @ D)) < 1e-13


def test_independent_coordinates():
    d = np.array([0.4, 2.0, 1.3, 0.7])
    assert abs(i4(np.diag(d)) - np.sqrt(d[2] * d[3]) / (8 * np.pi)) < 1e-15


def test_convergence_node_doubling():
    """Halving the tanh-sinh step (146 instead of 73 nodes) changes I4 by < 1e-9 (measured:
    < 1e-15 generic and singular, < 2e-11 for near-coincidences)."""
    rng = np.random.default_rng(4)
    S = random_cov(rng, 3)
    cases = [random_cov(rng, 4) for _ in range(2)]
    cases += [sub(S, idx) for idx in SINGULAR]
    cases += [near_pair(S, delta, w) for delta in (1e-4, 1e-8, 1e-12) for w in ("ab", "ac")]
    f1 = jax.jit(lambda c: _i4_relu(c))
    f2 = jax.jit(lambda c: _i4_relu(c, h=1 / 24, n=72))
    Cs = jnp.asarray(np.stack(cases))
    assert np.max(np.abs(np.asarray(f1(Cs)) - np.asarray(f2(Cs)))) < 1e-9


# ---------------------------------------------------------------------------------------
# 3. near-singular blocks
# ---------------------------------------------------------------------------------------


def test_near_singular_students_same_teacher():
    """corr(u_a, u_b) = 1 - delta. Reference: conditioning on (c, d) (regular here).
    Continuity: I4(delta = 0) - I4(delta) = sqrt(2 delta)/(2 pi) E[relu_c relu_d | u_a = 0]
    + O(delta) (the derivative in corr_ab is phi2_ab(0, 0) E[relu_c relu_d | a = b = 0])."""
    S = random_cov(np.random.default_rng(5), 3)
    exact0 = i4(sub(S, (0, 0, 1, 2)))
    Scd = S[1:, 1:] - np.outer(S[1:, 0], S[0, 1:]) / S[0, 0]
    for delta in (1e-6, 1e-8):
        C = near_pair(S, delta, "ab")
        val = i4(C)
        assert np.isfinite(val)
        assert abs(val - ref_cd(C)[0]) < 1e-10
        jump = np.sqrt(2 * delta) / (2 * np.pi) * i2relu(Scd)  # ~2e-5 * O(0.1) at 1e-8
        assert abs((exact0 - val) - jump) < 10 * delta
    for delta in (1e-12, 1e-15, 1e-17):  # down to exact round-off coincidence
        val = i4(near_pair(S, delta, "ab"))
        assert np.isfinite(val) and abs(val - exact0) < 1e-7


def test_near_singular_student_on_teacher():
    """corr(u_a, u_c) = 1 - delta: I4 is linear in delta there (Theta_a relu_c is
    continuous), so the singular value is approached as O(delta)."""
    S = random_cov(np.random.default_rng(6), 3)
    C0 = near_pair(S, 0.0, "ac")  # exactly coinciding rows a and c
    assert np.array_equal(C0[0], C0[2])
    exact0 = i4(C0)
    for delta in (1e-6, 1e-8, 1e-12):
        C = near_pair(S, delta, "ac")
        val = i4(C)
        assert abs(val - ref_bd(C)) < 1e-11
        assert abs(val - exact0) < 0.2 * delta + 1e-12


# ---------------------------------------------------------------------------------------
# 4. gradients
# ---------------------------------------------------------------------------------------


def _fd_upper(f, C, eps):
    g = np.zeros((4, 4))
    for i in range(4):
        for j in range(i, 4):
            E = np.zeros((4, 4))
            E[i, j] = eps
            g[i, j] = (f(C + E) - f(C - E)) / (2 * eps)
    return g


def test_gradient_generic_fd():
    rng = np.random.default_rng(7)
    for _ in range(2):
        C = random_cov(rng, 4)
        g = np.asarray(_grad_jit(jnp.asarray(C)))
        fd = _fd_upper(i4, C, 1e-6)
        assert np.all(np.tril(g, -1) == 0)  # only the upper triangle is read
        np.testing.assert_allclose(np.triu(g), fd, rtol=1e-5, atol=1e-9 * np.abs(fd).max())


def test_gradient_near_singular_fd():
    """corr(u_a, u_b) = 1 - 1e-6: d I4 / d C_ab ~ 1/sqrt(delta) is large but exact."""
    C = near_pair(random_cov(np.random.default_rng(8), 3), 1e-6, "ab")
    g = np.asarray(_grad_jit(jnp.asarray(C)))
    fd = _fd_upper(i4, C, 1e-10)
    np.testing.assert_allclose(np.triu(g), fd, rtol=1e-5, atol=1e-6 * np.abs(fd).max())


@pytest.mark.parametrize("idx", list(SINGULAR))
def test_gradient_singular(idx):
    """Singular blocks: gradients are finite, and exact along coincidence-preserving
    directions, i.e. for C = S[idx][:, idx] as a function of the base covariance S (how the
    ODE gathers its blocks) -- compared with finite differences of the closed forms."""
    S = random_cov(np.random.default_rng(9), 3)
    ix = np.array(idx)
    gC = np.asarray(_grad_jit(jnp.asarray(sub(S, idx))))
    assert np.all(np.isfinite(gC))
    # chain rule through the gather C = S[idx][:, idx] (what jax.grad of the composition does)
    gS = np.zeros((3, 3))
    np.add.at(gS, (ix[:, None].repeat(4, 1), ix[None, :].repeat(4, 0)), gC)
    gS = gS + gS.T - np.diag(np.diag(gS))  # derivative along E_ij + E_ji
    n, eps = max(idx) + 1, 1e-6
    for i in range(n):
        for j in range(i, n):
            E = np.zeros((3, 3))
            E[i, j] = E[j, i] = eps
            fd = (SINGULAR[idx](S + E) - SINGULAR[idx](S - E)) / (2 * eps)
            assert abs(gS[i, j] - fd) < 1e-8, (idx, i, j, gS[i, j], fd)


# ---------------------------------------------------------------------------------------
# batching, jit, vmap, float32
# ---------------------------------------------------------------------------------------


def test_batched_jit_vmap():
    rng = np.random.default_rng(11)
    S = random_cov(rng, 3)
    blocks = [random_cov(rng, 4) for _ in range(9)] + [sub(S, idx) for idx in SINGULAR]
    blocks += [near_pair(S, 1e-8, "ab")]
    Cs = np.stack(blocks[:18]).reshape(3, 6, 4, 4)  # (n1, n2, 4, 4)
    out = jax.jit(ReLU().i4)(jnp.asarray(Cs))
    assert out.shape == (3, 6)
    single = np.array([i4(C) for C in Cs.reshape(-1, 4, 4)]).reshape(3, 6)
    np.testing.assert_allclose(np.asarray(out), single, rtol=0, atol=1e-12)
    vm = jax.jit(jax.vmap(jax.vmap(ReLU().i4)))(jnp.asarray(Cs))
    np.testing.assert_allclose(np.asarray(vm), single, rtol=0, atol=1e-12)
    g = _grad_jit(jnp.asarray(Cs))
    assert g.shape == Cs.shape and np.all(np.isfinite(np.asarray(g)))
    for k, C in enumerate(Cs.reshape(-1, 4, 4)[:3]):  # per-block gradients
        np.testing.assert_allclose(np.asarray(g).reshape(-1, 4, 4)[k], _grad_jit(C), atol=1e-13)


def test_float32():
    """float32 (53 nodes): relative error ~1e-6, no NaN in values or gradients."""
    rng = np.random.default_rng(12)
    S = random_cov(rng, 3)
    Cs = np.stack([random_cov(rng, 4)] + [sub(S, idx) for idx in SINGULAR])
    c32 = jnp.asarray(Cs, jnp.float32)
    val = _i4_jit(c32)
    assert val.dtype == jnp.float32
    ref = np.array([i4(C) for C in np.asarray(c32, np.float64)])
    np.testing.assert_allclose(np.asarray(val), ref, rtol=1e-5)
    g = _grad_jit(c32)
    assert np.all(np.isfinite(np.asarray(g)))
