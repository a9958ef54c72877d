"""The Gaussian integrals I2, I3, I4, J2 of every activation against Monte Carlo.

For u ~ N(0, C): I2(a,b) = E[g(u_a) g(u_b)], I3(a,b,c) = E[g'(u_a) u_b g(u_c)],
I4(a,b,c,d) = E[g'(u_a) g'(u_b) g(u_c) g(u_d)], J2(a,b) = E[g'(u_a) g'(u_b)].
Each closed form (or quadrature) must lie within 4 standard errors of a Monte-Carlo mean
over 2e6 samples, on random positive-definite covariances and with coinciding indices.
"""

import numpy as np
import pytest
from scipy.special import erf

import tsjax

N_SAMPLES = 2_000_000

G = {
    "erf": (lambda x: erf(x / np.sqrt(2)), lambda x: np.sqrt(2 / np.pi) * np.exp(-x * x / 2)),
    "linear": (lambda x: x, lambda x: np.ones_like(x)),
    "relu": (lambda x: np.maximum(x, 0), lambda x: (x > 0).astype(float)),
}

# index patterns (positions into a 4x4 covariance), including coinciding indices
I2_IDX = [(0, 1), (0, 0), (2, 3)]
J2_IDX = [(0, 1), (1, 1)]
I3_IDX = [(0, 1, 2), (0, 0, 1), (0, 1, 0), (0, 1, 1), (0, 0, 0), (1, 3, 2)]
I4_IDX = [
    (0, 1, 2, 3),
    (0, 0, 2, 3),
    (0, 1, 0, 3),
    (0, 0, 2, 2),
    (0, 1, 2, 2),
    (0, 0, 0, 0),
    (1, 0, 3, 1),
]


def random_covariance(seed, L=4):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((L, L + 2)) * rng.uniform(0.4, 1.3, size=(L, 1))
    return A @ A.T / (L + 2)


@pytest.fixture(scope="module", params=[0, 1, 2])
def samples(request):
    C = random_covariance(request.param)
    rng = np.random.default_rng(100 + request.param)
    u = rng.standard_normal((N_SAMPLES, 4)) @ np.linalg.cholesky(C).T
    return C, u


def _check(value, integrand):
    mean = integrand.mean()
    se = integrand.std() / np.sqrt(len(integrand))
    assert abs(float(value) - mean) <= 4 * se + 1e-12, (float(value), mean, se)


def _block(C, idx):
    idx = np.asarray(idx)
    return C[np.ix_(idx, idx)]


@pytest.mark.parametrize("name", ["erf", "linear", "relu"])
def test_i2_j2_against_monte_carlo(name, samples):
    C, u = samples
    act = tsjax.get_activation(name)
    g, dg = G[name]
    for a, b in I2_IDX:
        _check(act.i2(C[a, a], C[a, b], C[b, b]), g(u[:, a]) * g(u[:, b]))
    for a, b in J2_IDX:
        _check(act.j2(C[a, a], C[a, b], C[b, b]), dg(u[:, a]) * dg(u[:, b]))


@pytest.mark.parametrize("name", ["erf", "linear", "relu"])
def test_i3_against_monte_carlo(name, samples):
    C, u = samples
    act = tsjax.get_activation(name)
    g, dg = G[name]
    for a, b, c in I3_IDX:
        _check(act.i3(_block(C, (a, b, c))), dg(u[:, a]) * u[:, b] * g(u[:, c]))


@pytest.mark.parametrize("name", ["erf", "linear", "relu"])
def test_i4_against_monte_carlo(name, samples):
    C, u = samples
    act = tsjax.get_activation(name)
    g, dg = G[name]
    for a, b, c, d in I4_IDX:
        _check(
            act.i4(_block(C, (a, b, c, d))),
            dg(u[:, a]) * dg(u[:, b]) * g(u[:, c]) * g(u[:, d]),
        )


def test_generalisation_error_against_monte_carlo():
    """eps_g of a random (K=3, M=2) state against a Monte-Carlo average of the squared
    difference of the two network outputs (with the 1/2)."""
    rng = np.random.default_rng(7)
    C = random_covariance(7, L=5)
    K = 3
    op = tsjax.OrderParams(C[:K, :K], C[:K, K:], C[K:, K:], rng.normal(size=K), rng.normal(size=2))
    u = rng.standard_normal((N_SAMPLES, 5)) @ np.linalg.cholesky(C).T
    for name in ("erf", "relu", "linear"):
        g = G[name][0]
        diff = g(u[:, :K]) @ np.asarray(op.v) - g(u[:, K:]) @ np.asarray(op.v_star)
        _check(tsjax.generalisation_error(op, name), 0.5 * diff**2)


@pytest.mark.parametrize("name", ["erf", "relu", "linear"])
def test_vector_field_jacobian_finite_at_perfect_student(name):
    """At the global minimum (Q = R = T) the covariance is singular; the stiff solver needs
    a finite Jacobian there, and the right-hand side vanishes (noise-free)."""
    import jax

    I = np.eye(2)
    op = tsjax.OrderParams(I, I, I, np.ones(2), np.ones(2))

    def f(Q, R):
        d = tsjax.vector_field(tsjax.OrderParams(Q, R, I, op.v, op.v_star), activation=name, lr=0.3)
        return d.Q, d.R

    dQ, dR = f(op.Q, op.R)
    assert np.max(np.abs(np.asarray(dQ))) < 1e-12 and np.max(np.abs(np.asarray(dR))) < 1e-12
    for J in jax.tree_util.tree_leaves(jax.jacfwd(f, argnums=(0, 1))(op.Q, op.R)):
        assert np.all(np.isfinite(np.asarray(J)))


@pytest.mark.parametrize(
    "K, M", [(1, 1), (2, 2), pytest.param(4, 2, marks=pytest.mark.slow),
             pytest.param(7, 3, marks=pytest.mark.slow)]
)  # fmt: skip
def test_erf_contractions_equal_block_integrals(K, M):
    """Erf's shared-factor contractions (contract_i3/contract_i4) equal the generic sums of
    its block closed forms, values and (symmetrised) covariance gradients, also for a
    singular covariance (student 0 equal to teacher 0)."""
    import jax
    import jax.numpy as jnp

    from tsjax import _integrals as I

    act = tsjax.Erf()
    rng = np.random.default_rng(K * 10 + M)
    L = K + M
    for singular in (False, True):
        a = rng.standard_normal((L, L + 2))
        C = a @ a.T / (L + 2)
        if singular:
            C[0], C[:, 0] = C[K], C[:, K]
            C[0, 0] = C[K, K]
        C, u = jnp.asarray(C), jnp.asarray(rng.standard_normal(L))
        for fast, blocks in [
            (I.i3_contracted, I.i3_contracted_blocks),
            (I.i4_contracted, I.i4_contracted_blocks),
        ]:
            np.testing.assert_allclose(
                fast(act, C, u, K), blocks(act, C, u, K), rtol=1e-13, atol=1e-15
            )
            g1 = jax.grad(lambda C, f=fast, u=u: jnp.sum(f(act, C, u, K) ** 2))(C)
            g2 = jax.grad(lambda C, f=blocks, u=u: jnp.sum(f(act, C, u, K) ** 2))(C)
            np.testing.assert_allclose(g1 + g1.T, g2 + g2.T, rtol=1e-12, atol=1e-14)


def test_fast_arcsin_matches_numpy():
    import jax
    import jax.numpy as jnp

    from tsjax._special import asin

    x = np.concatenate([np.linspace(-1, 1, 100_001), [1e-300, -1e-12, 0.625, 0.62500001]])
    np.testing.assert_allclose(
        np.asarray(asin(jnp.asarray(x))), np.arcsin(x), rtol=4e-16, atol=3e-16
    )
    xs = np.linspace(-0.999, 0.999, 101)
    d = jax.vmap(jax.grad(asin))(jnp.asarray(xs))
    np.testing.assert_allclose(np.asarray(d), 1 / np.sqrt((1 - xs) * (1 + xs)), rtol=1e-14)
    assert np.isnan(float(asin(1.5)))
