"""The quadrature path of tsjax.Activation: I2, I3, I4, J2 of any activation.

* against the closed forms (erf, linear, quadratic, sin): 1e-10 relative, random
  covariances and coinciding indices, values and gradients;
* tanh, sigmoid, GELU, softplus, SiLU against Monte Carlo (1e6 samples, 4 standard errors);
* the accuracy of the default node counts on covariances of the size met in the ODEs
  (variances <= 1.2), against a high-node reference;
* ReLU by quadrature against its closed forms (kinks: algebraic convergence, stated);
* derivatives: consistent with the computed values (finite differences), correct along
  coinciding indices, and through jit / vmap; float32; the activation API.
"""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from scipy.special import erf  # noqa: E402

import tsjax  # noqa: E402
from tsjax._activations import GELU, Quadratic, Sigmoid, SiLU, Sin, Softplus, Tanh  # noqa: E402
from tsjax._quadrature import Factor, derivative_factor, expect2, expect4, rule  # noqa: E402

# index patterns into a 4x4 covariance, including coinciding indices (singular blocks)
I2_IDX = [(0, 1), (0, 0), (2, 3)]
I3_IDX = [(0, 1, 2), (0, 0, 1), (0, 1, 0), (0, 1, 1), (0, 0, 0), (1, 3, 2)]
I4_IDX = [(0, 1, 2, 3), (0, 0, 2, 3), (0, 1, 0, 3), (0, 0, 2, 2), (0, 1, 2, 2), (0, 0, 0, 0),
          (1, 0, 3, 1)]  # fmt: skip


def random_covariance(seed, L=4, vmax=1.5):
    """Random positive-definite covariance with variances in [0.3, vmax] (ODE-like)."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((L, L + 2))
    C = A @ A.T
    d = np.sqrt(rng.uniform(0.3, vmax, L) / np.diag(C))
    return C * d[:, None] * d[None, :]


def blocks(C, patterns):
    C = jnp.asarray(C)  # also a tracer (gradients with respect to C)
    return jnp.stack([C[np.ix_(p, p)] for p in patterns])


def integrals(act, C):
    """I2, J2 (pairs of I2_IDX), I3, I4 of ``act`` on the patterns above."""
    C = jnp.asarray(C)
    pa, pb = zip(*I2_IDX)
    pa, pb = np.array(pa), np.array(pb)
    i2 = act.i2(C[pa, pa], C[pa, pb], C[pb, pb])
    j2 = act.j2(C[pa, pa], C[pa, pb], C[pb, pb])
    return dict(i2=i2, j2=j2, i3=act.i3(blocks(C, I3_IDX)), i4=act.i4(blocks(C, I4_IDX)))


def max_rel(a, b, floor):
    return float(jnp.max(jnp.abs(a - b) / jnp.maximum(jnp.abs(b), floor)))


# ---------------------------------------------------------------------------------------
# rules
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["trapezoid", "trapezoid-narrow", "gauss-hermite"])
def test_rules(kind):
    for n in (1, 2, 7, 16, 33):
        z, w = rule(n, kind)
        assert z.shape == w.shape == (n,)
        assert np.all(w > 0) and abs(w.sum() - 1) < 1e-15
        np.testing.assert_array_equal(z, -z[::-1])
    # the variance: truncation at R costs ~exp(-R^2 / 2); the narrow rule (for bounded,
    # saturating g) trades range for resolution
    tol = {"trapezoid": 1e-11, "trapezoid-narrow": 1e-8, "gauss-hermite": 1e-12}[kind]
    z, w = rule(40, kind)
    assert abs(w @ z**2 - 1) < tol
    with pytest.raises(ValueError, match="rule"):
        rule(4, "simpson")


def test_trapezoid_beats_gauss_hermite_on_tanh():
    """The reason for the default rule: E[tanh(z)^2] (poles at +-i pi/2)."""
    from scipy.integrate import quad

    ref = quad(lambda x: np.tanh(x) ** 2 * np.exp(-x * x / 2) / np.sqrt(2 * np.pi), -40, 40,
               epsabs=1e-15, epsrel=1e-15, limit=400)[0]  # fmt: skip
    err = {k: abs(rule(40, k)[1] @ np.tanh(rule(40, k)[0]) ** 2 - ref) for k in
           ("trapezoid-narrow", "trapezoid", "gauss-hermite")}  # fmt: skip
    assert err["trapezoid-narrow"] < 1e-10 and err["trapezoid"] < 1e-9
    assert err["gauss-hermite"] > 1e-7


# ---------------------------------------------------------------------------------------
# against closed forms
# ---------------------------------------------------------------------------------------

HIGH = dict(nodes=64, nodes_i4=(48, 40, 36, 32))


@pytest.mark.parametrize(
    "closed, quad",
    [
        (tsjax.Erf(), tsjax.Activation(tsjax.Erf(), rule="trapezoid", **HIGH)),
        (
            tsjax.Linear(),
            tsjax.Activation(tsjax.Linear(), rule="gauss-hermite", nodes=8, nodes_i4=8),
        ),  # fmt: skip
        (Quadratic(), tsjax.Activation(Quadratic(), rule="gauss-hermite", nodes=8, nodes_i4=8)),
        pytest.param(
            Sin(),
            tsjax.Activation(Sin(), rule="trapezoid", nodes=64, nodes_i4=40),
            marks=pytest.mark.slow,
        ),
    ],
    ids=["erf", "linear", "quadratic", "sin"],
)
def test_quadrature_matches_closed_forms(closed, quad):
    """1e-10 relative (floor 1e-2 for values near 0) on 12 random covariances, all index
    patterns (generic and singular)."""
    worst = {}
    for seed in range(12):
        C = random_covariance(seed)
        q, c = integrals(quad, C), integrals(closed, C)
        for k in q:
            worst[k] = max(worst.get(k, 0.0), max_rel(q[k], c[k], 1e-2))
    assert max(worst.values()) < 1e-10, worst


@pytest.mark.slow  # the joint rule's gradients are checked in the default suite
def test_quadrature_gradients_match_erf_closed_form():
    """Gradients with respect to the full covariance (so blocks keep their coinciding
    indices, as in the ODEs) of sums of I2, J2, I3, I4, against the closed form."""
    quad = tsjax.Activation(tsjax.Erf(), rule="trapezoid", **HIGH)

    def total(act, C):
        r = integrals(act, C)
        return sum(jnp.sum(v * (1.0 + 0.1 * i)) for i, v in enumerate(r.values()))

    for seed in range(3):
        C = jnp.asarray(random_covariance(seed, vmax=1.0))
        gq = jax.grad(lambda C: total(quad, C))(C)
        gc = jax.grad(lambda C: total(tsjax.Erf(), C))(C)
        sym = lambda x: 0.5 * (x + x.T)  # noqa: E731
        np.testing.assert_allclose(sym(gq), sym(gc), rtol=0, atol=1e-8)


# ---------------------------------------------------------------------------------------
# against Monte Carlo
# ---------------------------------------------------------------------------------------

N_MC = 1_000_000


def _mc_check(act, g, dg, seed):
    C = random_covariance(seed)
    rng = np.random.default_rng(1000 + seed)
    u = rng.standard_normal((N_MC, 4)) @ np.linalg.cholesky(C).T
    G, D = g(u), dg(u)
    r = integrals(act, C)
    samples = dict(
        i2=[G[:, a] * G[:, b] for a, b in I2_IDX],
        j2=[D[:, a] * D[:, b] for a, b in I2_IDX],
        i3=[D[:, a] * u[:, b] * G[:, c] for a, b, c in I3_IDX],
        i4=[D[:, a] * D[:, b] * G[:, c] * G[:, d] for a, b, c, d in I4_IDX],
    )
    for k, cols in samples.items():
        for value, x in zip(np.asarray(r[k]), cols):
            se = x.std() / np.sqrt(N_MC)
            assert abs(value - x.mean()) <= 4 * se + 1e-12, (k, value, x.mean(), se)


def _np_sigmoid(x):
    return 0.5 * (1 + np.tanh(x / 2))


MC_ACTS = {
    "tanh": (Tanh(), np.tanh, lambda x: 1 - np.tanh(x) ** 2),
    "sigmoid": (Sigmoid(), _np_sigmoid, lambda x: _np_sigmoid(x) * (1 - _np_sigmoid(x))),
    "gelu": (
        GELU(),
        lambda x: x * (1 + erf(x / np.sqrt(2))) / 2,
        lambda x: (1 + erf(x / np.sqrt(2))) / 2 + x * np.exp(-x * x / 2) / np.sqrt(2 * np.pi),
    ),
    "softplus": (Softplus(), lambda x: np.logaddexp(0, x), _np_sigmoid),
    "silu": (
        SiLU(),
        lambda x: x * _np_sigmoid(x),
        lambda x: _np_sigmoid(x) * (1 + x * (1 - _np_sigmoid(x))),
    ),
}


@pytest.mark.parametrize("name", ["tanh", "sigmoid"])
@pytest.mark.parametrize("seed", [0, 1])
def test_tanh_sigmoid_against_monte_carlo(name, seed):
    _mc_check(*MC_ACTS[name], seed)


@pytest.mark.parametrize("name", ["gelu", "softplus", "silu"])
def test_other_builtins_against_monte_carlo(name):
    _mc_check(*MC_ACTS[name], 2)


# ---------------------------------------------------------------------------------------
# accuracy of the defaults
# ---------------------------------------------------------------------------------------


def _ode_like_covariances(n=6, seed=0):
    """(K=2, M=2) covariances [[Q, R], [R^T, T]] of the kind met along ODE trajectories:
    T ~ I, |Q_kk| <= 1.2, overlaps from ~0 (start, plateau) to ~1 (learned)."""
    rng = np.random.default_rng(seed)
    out = []
    for t in np.linspace(0, 1, n):
        Ws = rng.standard_normal((2, 400)) / np.sqrt(400)
        Ws /= np.linalg.norm(Ws, axis=1, keepdims=True)
        W = t * Ws[::-1] * rng.uniform(0.8, 1.05, (2, 1))
        W = W + (1 - t + 0.05) * 0.7 * rng.standard_normal((2, 400)) / np.sqrt(400)
        X = np.concatenate([W, Ws])
        out.append(X @ X.T)
    return out


ALL_I4 = [(i, k, j, l) for i in range(2) for k in range(i, 2) for j in range(4)
          for l in range(j, 4)]  # fmt: skip
ALL_I3 = [(i, p, j) for i in range(2) for p in range(4) for j in range(4)]


@pytest.mark.parametrize(
    "act, tol_i3, tol_i4",
    [
        pytest.param(Tanh(), 1e-8, 4e-4, marks=pytest.mark.slow),
        pytest.param(Sigmoid(), 1e-9, 4e-5, marks=pytest.mark.slow),
        pytest.param(GELU(), 1e-8, 1e-4, marks=pytest.mark.slow),
    ],
    ids=["tanh", "sigmoid", "gelu"],
)
def test_default_accuracy_on_ode_like_covariances(act, tol_i3, tol_i4):
    """The defaults (nodes=40, nodes_i4=(32, 16, 12, 10)) on all I3 and I4 blocks of the
    K = M = 2 ODE, relative to the largest |value|, against a high-node reference
    (measured with nodes_i4=(20, 16, 12, 10): tanh I3 3e-10, I4 2.5e-4; sigmoid 2e-10,
    1.7e-5; GELU 4e-12, 5e-5)."""
    ref = tsjax.Activation(act, nodes=96, nodes_i4=(64, 44, 32, 24), rule=act.rule)
    ref = type(act)(nodes=96, nodes_i4=(64, 44, 32, 24)) if type(act) is not Tanh else ref
    e3 = e4 = 0.0
    for C in _ode_like_covariances():
        b3, b4 = blocks(C, ALL_I3), blocks(C, ALL_I4)
        r3, r4 = ref.i3(b3), jax.lax.map(ref.i4, b4, batch_size=5)
        e3 = max(e3, float(jnp.max(jnp.abs(act.i3(b3) - r3)) / jnp.max(jnp.abs(r3))))
        e4 = max(e4, float(jnp.max(jnp.abs(act.i4(b4) - r4)) / jnp.max(jnp.abs(r4))))
    assert e3 < tol_i3 and e4 < tol_i4, (e3, e4)


def test_relu_by_quadrature_accuracy():
    """ReLU has kinks (g) and jumps (g'): the trapezoidal rule converges only
    algebraically. Stated accuracy with nodes=256, nodes_i4=48, against the closed forms
    (ReLU's I4: its 1-d integral, 1e-13), max relative errors over 4 random covariances
    (measured: I2 1.0e-3, J2 6.9e-3, I3 1.1e-2, I4 4.4e-2); use tsjax.ReLU for ReLU."""
    quad = tsjax.Activation(tsjax.ReLU(), nodes=256, nodes_i4=48, rule="trapezoid")
    worst = {}
    for seed in range(4):
        C = random_covariance(seed)
        q, c = integrals(quad, C), integrals(tsjax.ReLU(), C)
        for k in q:
            worst[k] = max(worst.get(k, 0.0), max_rel(q[k], c[k], 1e-2))
    assert worst["i2"] < 2e-3 and worst["j2"] < 1e-2, worst
    assert worst["i3"] < 2e-2 and worst["i4"] < 6e-2, worst


# ---------------------------------------------------------------------------------------
# derivatives
# ---------------------------------------------------------------------------------------


def test_derivative_is_consistent_with_the_computed_value():
    """jax.jvp of the quadrature = finite differences of the same quadrature (to round-off
    and O(h^2)), also for the coarse default rule: what the Rosenbrock solver needs."""
    act = Tanh(nodes=12, nodes_i4=8)
    C = jnp.asarray(random_covariance(5))
    V = jnp.asarray(np.random.default_rng(0).standard_normal((4, 4)))
    V = V + V.T
    for f in (lambda C: integrals(act, C)["i4"], lambda C: integrals(act, C)["i3"],
              lambda C: integrals(act, C)["i2"]):  # fmt: skip
        _, d = jax.jvp(f, (C,), (V,))
        h = 1e-5
        fd = (f(C + h * V) - f(C - h * V)) / (2 * h)
        np.testing.assert_allclose(d, fd, rtol=1e-7, atol=1e-9)


@pytest.mark.slow
def test_second_derivatives():
    act = tsjax.Activation(tsjax.Erf(), nodes=48, nodes_i4=32, rule="trapezoid-narrow")
    C = jnp.asarray(random_covariance(3, vmax=1.0))
    V = jnp.asarray(np.random.default_rng(1).standard_normal((4, 4)))
    V = V + V.T

    def hvp(a):
        return jax.jvp(jax.grad(lambda C: jnp.sum(a.i4(C[None]))), (C,), (V,))[1]

    hq, hc = hvp(act), hvp(tsjax.Erf())
    np.testing.assert_allclose(0.5 * (hq + hq.T), 0.5 * (hc + hc.T), atol=1e-8)


def test_jit_vmap_and_batching():
    act = Tanh()
    Cs = jnp.asarray(np.stack([random_covariance(s) for s in range(3)]))
    direct = act.i4(Cs)
    vm = jax.vmap(jax.jit(act.i4))(Cs)
    np.testing.assert_allclose(vm, direct, rtol=1e-12)

    @jax.jit
    def f(C):
        return act.i2(C[..., 0, 0], C[..., 0, 1], C[..., 1, 1]) + act.j2(
            C[..., 0, 0], C[..., 0, 1], C[..., 1, 1]
        )

    np.testing.assert_allclose(f(Cs), jax.vmap(f)(Cs), rtol=1e-12)


@pytest.mark.slow
def test_float32():
    act = Tanh()
    C = random_covariance(4)
    r64 = integrals(act, C)
    r32 = integrals(act, C.astype(np.float32))
    for k in r64:
        assert r32[k].dtype == jnp.float32
        np.testing.assert_allclose(r32[k], r64[k], rtol=2e-5, atol=2e-6)
    g = jax.grad(lambda C: jnp.sum(act.i4(blocks(C, I4_IDX))))(jnp.asarray(C, jnp.float32))
    assert g.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(g)))


def test_singular_and_near_singular_blocks():
    """Blocks that are singular to round-off or nearly so (a learned student): finite,
    accurate, continuous (erf by quadrature vs closed form)."""
    act = tsjax.Activation(tsjax.Erf(), nodes=48, nodes_i4=(48, 32, 24, 20),
                           rule="trapezoid-narrow")  # fmt: skip
    rng = np.random.default_rng(2)
    w = rng.standard_normal((3, 300)) / np.sqrt(300)
    for delta in (0.0, 1e-14, 1e-10, 1e-6, 1e-2):
        X = np.stack([w[0], w[0] + delta * w[1], w[1], w[2]])
        C = X @ X.T
        q, c = integrals(act, C), integrals(tsjax.Erf(), C)
        for k in q:
            assert np.all(np.isfinite(np.asarray(q[k])))
            np.testing.assert_allclose(q[k], c[k], rtol=0, atol=1e-9, err_msg=f"{k} {delta}")


# ---------------------------------------------------------------------------------------
# API
# ---------------------------------------------------------------------------------------


def test_get_activation_names_and_callables():
    for name in tsjax.ACTIVATIONS:
        act = tsjax.get_activation(name)
        assert act.name == name and isinstance(act, tsjax.Activation)
        x = jnp.linspace(-2.0, 2.0, 7)
        if name == "sign":  # decisions of the RL perceptron: no derivative, by design
            with pytest.raises(ValueError, match="'sign' has no derivative"):
                act.derivative(x)
            continue
        np.testing.assert_allclose(act.derivative(x), jax.vmap(jax.grad(act))(x), rtol=1e-12)
    assert tsjax.get_activation("TANH") == Tanh()
    assert tsjax.get_activation("logistic") == Sigmoid()
    assert tsjax.get_activation("swish") == SiLU()
    assert tsjax.get_activation(Tanh) == Tanh()
    f = lambda x: jnp.tanh(x) ** 3  # noqa: E731
    a = tsjax.get_activation(f)
    assert a.name == "<lambda>" and not a.closed_form
    assert tsjax.get_activation(a) is a
    with pytest.raises(ValueError, match=r"activation.*'cosh'.*tanh"):
        tsjax.get_activation("cosh")
    with pytest.raises(ValueError, match="activation"):
        tsjax.get_activation(3)
    with pytest.raises(ValueError, match="nodes"):
        tsjax.Activation(jnp.tanh, nodes=0)
    with pytest.raises(ValueError, match="nodes_i4"):
        tsjax.Activation(jnp.tanh, nodes_i4=(4, 4))
    with pytest.raises(ValueError, match="rule"):
        tsjax.Activation(jnp.tanh, rule="simpson")
    with pytest.raises(ValueError, match="parity"):
        tsjax.Activation(jnp.tanh, parity="yes")
    with pytest.raises(ValueError, match="fn"):
        tsjax.Activation()


def test_closed_form_flags_and_repr():
    assert tsjax.Erf().closed_form and tsjax.ReLU().closed_form and Sin().closed_form
    assert not Tanh().closed_form and not Sigmoid().closed_form
    assert repr(tsjax.Erf()) == "Erf()"
    assert "nodes_i4" in repr(Tanh()) and "name='sq'" in repr(
        tsjax.Activation(jnp.square, name="sq")
    )


def test_activations_are_static_and_hashable():
    """Equal activations hash equal (jit caches hit); a user function with its derivative,
    or without (jax.jvp), gives the same integrals; parity only changes the cost."""
    assert hash(Tanh()) == hash(Tanh()) and Tanh() == Tanh()
    assert Tanh() != Tanh(nodes=20)
    assert jax.tree_util.tree_leaves(Tanh()) == []
    C = random_covariance(6)
    a = tsjax.Activation(jnp.tanh, nodes=32, nodes_i4=12)
    b = tsjax.Activation(jnp.tanh, derivative=lambda x: 1 / jnp.cosh(x) ** 2, nodes=32,
                         nodes_i4=12, parity="odd")  # fmt: skip
    ra, rb = integrals(a, C), integrals(b, C)
    for k in ra:
        np.testing.assert_allclose(ra[k], rb[k], rtol=1e-12, atol=1e-14)


def test_expect_primitives_broadcast():
    g = Factor(jnp.tanh, -1)
    dg = derivative_factor(g)
    caa = jnp.linspace(0.5, 1.5, 3)[:, None]
    cab = jnp.full((1, 4), 0.2)
    assert expect2(g, g, caa, cab, 1.0).shape == (3, 4)
    assert expect2(dg, g, 1.0, 0.3, 1.0) == 0.0  # odd integrand: exactly 0
    C = jnp.asarray(random_covariance(0))
    assert expect4((dg, dg, g, g), jnp.broadcast_to(C, (2, 3, 4, 4))).shape == (2, 3)


# ---------------------------------------------------------------------------------------
# the contracted sums of the ODEs: A (from the K x L pairs) and B (the joint L-d rule)
# ---------------------------------------------------------------------------------------

U_TEST = jnp.array([1.0, 0.8, -1.0, -1.2])


def _contractions(act, C, u=U_TEST, K=2):
    from tsjax._integrals import i3_contracted, i4_contracted

    return i3_contracted(act, C, u, K), i4_contracted(act, C, u, K)


@pytest.mark.slow  # the ODE tests of quadrature activations use contract_i3 throughout
def test_contract_i3_from_pairs_equals_the_blocks():
    """A_ip from the K x L pair integrals = the sum over the K L^2 I3 blocks (round-off)."""
    from tsjax._integrals import i3_contracted_blocks

    for act in (Tanh(), Sigmoid(), GELU(), tsjax.Activation(jnp.tanh, nodes=24)):
        for C in _ode_like_covariances(3) + [random_covariance(7)]:
            C = jnp.asarray(C)
            a, _ = _contractions(act, C)
            np.testing.assert_allclose(a, i3_contracted_blocks(act, C, U_TEST, 2), atol=1e-14)


@pytest.mark.parametrize(
    "L, K", [(2, 1), (3, 2), (4, 2), pytest.param(5, 3, marks=pytest.mark.slow)]
)
def test_joint_rule_matches_erf_closed_form(L, K):
    """B_ik by the joint L-d rule (erf by quadrature, 48 nodes per direction, wide rule)
    = the closed form to 1e-10 relative to max |B|, also with a coinciding pair of
    variables (a singular covariance, as when a student has learned its teacher)."""
    nodes = 48 if L <= 4 else 20  # L = 5: cost; checks the general-L code path
    tol = 1e-10 if L <= 4 else 1e-5
    quad = tsjax.Activation(tsjax.Erf(), rule="trapezoid", nodes_joint=nodes)
    u = jnp.asarray(np.random.default_rng(L).uniform(-1.2, 1.2, L))
    for seed in range(3):
        C = random_covariance(seed, L=L)
        if seed == 2:  # variable L-1 = variable 0
            C[L - 1, :], C[:, L - 1] = C[0, :], C[:, 0]
            C[L - 1, L - 1] = C[0, 0]
        C = jnp.asarray(C)
        (_, bq), (_, bc) = _contractions(quad, C, u, K), _contractions(tsjax.Erf(), C, u, K)
        assert max_rel(bq, bc, float(jnp.max(jnp.abs(bc)))) < tol


@pytest.mark.slow
def test_joint_rule_gradients_match_erf_closed_form():
    """Derivatives of B in C and u (what the ODE Jacobian uses) against the closed form."""
    quad = tsjax.Activation(tsjax.Erf(), rule="trapezoid", nodes_joint=48)

    def total(act, C, u):
        _, b = _contractions(act, C, u)
        return jnp.sum(b * jnp.array([[1.0, 0.3], [0.3, 0.7]]))

    for seed in range(2):
        C = jnp.asarray(random_covariance(seed, vmax=1.0))
        gq = jax.grad(total, argnums=(1, 2))(quad, C, U_TEST)
        gc = jax.grad(total, argnums=(1, 2))(tsjax.Erf(), C, U_TEST)
        sym = lambda x: 0.5 * (x + x.T)  # noqa: E731
        np.testing.assert_allclose(sym(gq[0]), sym(gc[0]), rtol=0, atol=1e-8)
        np.testing.assert_allclose(gq[1], gc[1], rtol=0, atol=1e-8)


@pytest.mark.slow
def test_joint_rule_derivative_is_consistent_with_the_computed_value():
    """jax.jvp of the joint rule (its custom JVP of the last direction) = finite differences
    of the same sum, in C and u; and the second derivative (reverse mode through a
    Rosenbrock Jacobian) likewise."""
    act = Tanh(nodes_joint=10)
    rng = np.random.default_rng(0)
    for C, well_conditioned in ((random_covariance(5), True), (_ode_like_covariances()[-1], False)):
        C = jnp.asarray(C)
        V = jnp.asarray(rng.standard_normal((4, 4)))
        V, du = V + V.T, jnp.asarray(rng.standard_normal(4))

        def f(C, u):
            return _contractions(act, C, u)[1]

        _, d = jax.jvp(f, (C, U_TEST), (V, du))
        h = 1e-5
        fd = (f(C + h * V, U_TEST + h * du) - f(C - h * V, U_TEST - h * du)) / (2 * h)
        np.testing.assert_allclose(d, fd, rtol=1e-7, atol=1e-9)

        if well_conditioned:  # (near a singular block the FD of the JVP is inaccurate)

            def jv(C, V=V, du=du):
                return jax.jvp(f, (C, U_TEST), (V, du))[1][0, 1]

            g2 = jnp.sum(jax.grad(jv)(C) * V)
            fd2 = (jv(C + h * V) - jv(C - h * V)) / (2 * h)
            np.testing.assert_allclose(g2, fd2, rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize(
    "act, tol",
    [
        pytest.param(Tanh(), 3e-4, marks=pytest.mark.slow),  # suite time
        pytest.param(Sigmoid(), 1e-4, marks=pytest.mark.slow),
        pytest.param(GELU(), 3e-5, marks=pytest.mark.slow),
    ],
    ids=["tanh", "sigmoid", "gelu"],
)
def test_default_joint_rule_accuracy_on_ode_like_covariances(act, tol):
    """The default joint rule (nodes_joint=(20, 20, 14, 14)) on the B of the K = M = 2 ODE,
    absolute error / max |B| against 32 nodes per direction, 14 covariances from the
    start to a learned teacher (measured: tanh 2.1e-4, sigmoid 4.9e-5, GELU 1.0e-5; the
    30 I4 blocks at their defaults (32, 16, 12, 10): tanh 2.2e-4)."""
    ref = type(act)(nodes_joint=32)
    assert act.nodes_joint == (20, 20, 14, 14) and act._uses_joint_rule(4)
    err = 0.0
    for C in _ode_like_covariances() + _ode_like_covariances(8, seed=1):
        C = jnp.asarray(C)
        b, r = _contractions(act, C)[1], _contractions(ref, C)[1]
        err = max(err, float(jnp.max(jnp.abs(b - r)) / jnp.max(jnp.abs(r))))
    assert err < tol, err


def test_joint_rule_choice():
    """The joint rule for L = K + M <= 5; else, for nodes_joint=None and for closed-form
    I4, block by block."""
    t = Tanh()
    assert t._uses_joint_rule(4) and t._uses_joint_rule(5) and t._uses_joint_rule(2)
    assert not t._uses_joint_rule(6) and not Tanh(nodes_joint=None)._uses_joint_rule(4)
    C = jnp.asarray(random_covariance(1))
    from tsjax._integrals import i4_contracted_blocks

    blocks = Tanh(nodes_joint=None)
    np.testing.assert_array_equal(_contractions(blocks, C)[1],
                                  i4_contracted_blocks(blocks, C, U_TEST, 2))  # fmt: skip
    for closed in (tsjax.ReLU(), tsjax.Linear(), Quadratic(), Sin()):
        np.testing.assert_array_equal(_contractions(closed, C)[1],
                                      i4_contracted_blocks(closed, C, U_TEST, 2))  # fmt: skip
    with pytest.raises(ValueError, match="nodes_joint"):
        Tanh(nodes_joint=0)
    with pytest.raises(ValueError, match="nodes_joint"):
        tsjax.Activation(jnp.tanh, nodes_joint=(8, 0))
