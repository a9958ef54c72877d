"""The hidden manifold model: its ODE over the feature spectrum, the simulation of the
networks on its inputs, the Marchenko-Pastur limit.

Independent references: tsjax's simulation of the real networks on hidden-manifold inputs
(the dynamics are exact SGD on non-Gaussian inputs; the ODE assumes the Gaussian
equivalence); Gaussian inputs (f linear, D = N, F = sqrt(N) O: the model is today's with a
rotated teacher); the finite-N spectrum against the Marchenko-Pastur law as N grows.
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tsjax

REF = Path(__file__).resolve().parents[2] / "shared" / "reference" / "hmm"


def _case(N, D, K, M, seed=0, feature_map="sign"):
    k = jax.random.key(seed)
    F = jax.random.normal(jax.random.fold_in(k, 0), (N, D))
    hmm = tsjax.HiddenManifold(F, feature_map=feature_map)
    st = tsjax.init_student(jax.random.fold_in(k, 1), N, K)
    te = tsjax.init_teacher(jax.random.fold_in(k, 2), D, M)
    return hmm, st, te


def _ode_vs_sim(hmm, st, te, al, seeds, **hyper):
    op = tsjax.order_params(st, te, inputs=hmm)
    ode = np.asarray(tsjax.solve_ode(op, inputs=hmm, alphas=al, **hyper).eg)
    sims = np.stack([
        np.asarray(tsjax.simulate(st, te, jax.random.key(100 + s), inputs=hmm, alphas=al,
                                  **hyper).eg)
        for s in range(seeds)
    ])  # fmt: skip
    diff = sims - ode
    mean, se = diff.mean(0), diff.std(0, ddof=1) / np.sqrt(seeds)
    return ode, mean, se


@pytest.mark.slow
def test_reference_case_ode_against_the_simulation_of_the_same_networks():
    """The shared case (N = 1000, D = 500, K = 2, M = 1, sign, lr = 0.5): the ODE from its
    networks against tsjax's simulation of those networks (4 seeds; within 4 standard
    errors plus 2% for the O(N^-1/2) finite-size effects of one F)."""
    z = np.load(REF / "case_A_seed0.npz")
    hmm = tsjax.HiddenManifold(z["F"], feature_map="sign")
    st = tsjax.TwoLayerNet(z["student_W"], z["student_v"])
    te = tsjax.TwoLayerNet(z["teacher_W"], z["teacher_v"])
    al = np.array([0.0, 1.0, 5.0, 20.0])
    ode, mean, se = _ode_vs_sim(hmm, st, te, al, 4, lr=0.5)
    assert np.all(np.abs(mean) <= 4 * se + 0.02 * ode + 1e-12), (ode, mean, se)
    # the initial error is that of the given networks' order parameters
    ref = np.loadtxt(REF / "case_A_seed0_authors_ode_dt0.001.tsv", comments="#")
    np.testing.assert_allclose(ode[0], ref[0, 1], rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize(
    "feature_map, D, hyper",
    [
        ("sign", 500, dict(lr=0.5)),
        ("erf", 2000, dict(lr=0.5, lr_v=0.3)),
        ("sign", 1500, dict(lr=0.3, lr_v=0.3, noise=0.1)),
    ],
)
def test_ode_against_the_simulation_many_seeds(feature_map, D, hyper):
    """8 seeds, N = 1000, delta = D / N below and above 1, one and both layers: the mean
    difference within 4 standard errors plus a 10/N relative finite-size budget (the ODE
    is the N -> infinity limit at this F's spectrum; the Gaussian equivalence and the
    sample fluctuations leave O(1/N) biases)."""
    hmm, st, te = _case(1000, D, 2, 1, seed=3, feature_map=feature_map)
    al = np.array([0.0, 1.0, 4.0, 12.0])
    ode, mean, se = _ode_vs_sim(hmm, st, te, al, 8, **hyper)
    assert np.all(np.abs(mean) <= 4 * se + 10.0 / 1000 * ode), (ode, mean, se)


def test_gaussian_inputs_are_the_special_case_with_a_rotated_teacher():
    """f linear, D = N, F = sqrt(N) O: x = O c is Gaussian and the teacher acts on
    O^T x, so the model is today's ODE with the teacher W* O^T."""
    N, K, M = 60, 2, 2
    O, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((N, N)))
    hmm = tsjax.HiddenManifold(np.sqrt(N) * O, feature_map="linear")
    st = tsjax.init_student(jax.random.key(1), N, K)
    te = tsjax.init_teacher(jax.random.key(2), N, M)
    al = np.array([0.0, 2.0, 10.0, 30.0])
    op = tsjax.order_params(st, te, inputs=hmm)
    a = tsjax.solve_ode(op, inputs=hmm, lr=0.5, lr_v=0.2, alphas=al, rtol=1e-11, atol=1e-13)
    te_x = tsjax.TwoLayerNet(jnp.asarray(te.W) @ O.T, te.v)
    b = tsjax.solve_ode(tsjax.order_params(st, te_x), lr=0.5, lr_v=0.2, alphas=al, rtol=1e-11,
                        atol=1e-13)  # fmt: skip
    np.testing.assert_allclose(a.eg, b.eg, rtol=1e-8)
    np.testing.assert_allclose(a.Q, b.Q, rtol=1e-8, atol=1e-12)


@pytest.mark.slow
def test_finite_spectrum_converges_to_the_marchenko_pastur_limit():
    """The same macroscopic start (sigma(rho) = rho W, r = 0, t = T) on the spectrum of a
    random F at growing N (delta = 0.5) and in the limit: the difference in eps_g falls
    like 1/N (linear statistics of the spectrum)."""
    K, M = 2, 1
    st0 = tsjax.init_student(jax.random.key(0), 100, K)
    te0 = tsjax.init_teacher(jax.random.key(1), 50, M)
    al = np.array([0.0, 2.0, 8.0])
    lim = tsjax.HiddenManifold.limit(0.5, "sign", nodes=32)
    op_l = tsjax.order_params(st0, te0, inputs=lim)
    e_lim = np.asarray(tsjax.solve_ode(op_l, inputs=lim, lr=0.5, alphas=al).eg)
    errs = []
    for N in (200, 800):
        e_N = []
        for j in range(3):  # the difference is a random O(1/N) number per F: rms over 3
            F = jax.random.normal(jax.random.fold_in(jax.random.key(N), j), (N, N // 2))
            hmm = tsjax.HiddenManifold(F, "sign")
            n = hmm.rho.shape[0]
            op = tsjax.ManifoldOrderParams(
                op_l.W, hmm.rho[:, None, None] * op_l.W[None], jnp.zeros((n, K, M)),
                jnp.broadcast_to(op_l.T, (n, M, M)), op_l.T, op_l.v, op_l.v_star, hmm,
            )  # fmt: skip
            e = np.asarray(tsjax.solve_ode(op, inputs=hmm, lr=0.5, alphas=al).eg)
            e_N.append(np.max(np.abs(e - e_lim)))
        errs.append(np.sqrt(np.mean(np.square(e_N))))
    assert errs[1] < errs[0] / 2.5, errs  # 1/N would give 4, 1/sqrt(N) 2


@pytest.mark.slow
def test_gradients_through_the_limit():
    st = tsjax.init_student(jax.random.key(0), 100, 2)
    te = tsjax.init_teacher(jax.random.key(1), 50, 1)
    al = np.array([0.0, 3.0])

    def f(delta, lr):
        lim = tsjax.HiddenManifold.limit(delta, "sign", nodes=16)
        op = tsjax.order_params(st, te, inputs=lim)
        return tsjax.solve_ode(op, inputs=lim, lr=lr, alphas=al, rtol=1e-11, atol=1e-13).eg[-1]

    g = jax.grad(f, argnums=(0, 1))(0.7, 0.5)
    h = 1e-5
    fd = (
        (f(0.7 + h, 0.5) - f(0.7 - h, 0.5)) / (2 * h),
        (f(0.7, 0.5 + h) - f(0.7, 0.5 - h)) / (2 * h),
    )
    np.testing.assert_allclose(np.asarray(g), np.asarray(fd), rtol=1e-5)


def test_feature_map_constants_by_quadrature():
    """Closed forms of sign and erf against the generic quadrature of a user function."""
    F = np.ones((4, 3))
    for name, fn in (("sign", jnp.sign), ("erf", lambda u: jax.scipy.special.erf(u / np.sqrt(2)))):
        a = tsjax.HiddenManifold(F, feature_map=name)
        b = tsjax.HiddenManifold(F, feature_map=fn)
        np.testing.assert_allclose([b.mu1, b.ef2], [a.mu1, a.ef2], rtol=1e-8)


def test_bad_input_of_the_hidden_manifold():
    with pytest.raises(ValueError, match="F: expected a matrix"):
        tsjax.HiddenManifold(np.ones(5))
    with pytest.raises(ValueError, match="F: has non-finite"):
        tsjax.HiddenManifold(np.full((3, 2), np.nan))
    with pytest.raises(ValueError, match="feature_map: E f"):
        tsjax.HiddenManifold(np.ones((3, 2)), feature_map=lambda u: jnp.maximum(u, 0.0))
    with pytest.raises(ValueError, match="feature_map"):
        tsjax.HiddenManifold(np.ones((3, 2)), feature_map="cubic")
    with pytest.raises(ValueError, match="delta"):
        tsjax.HiddenManifold.limit(0.0)
    hmm, st, te = _case(20, 10, 2, 1)
    bad_te = tsjax.init_teacher(jax.random.key(0), 20, 1)
    with pytest.raises(ValueError, match="teacher: input dimension 20 differs from the latent"):
        tsjax.order_params(st, bad_te, inputs=hmm)
    bad_st = tsjax.init_student(jax.random.key(0), 10, 2)
    with pytest.raises(ValueError, match="student: input dimension 10"):
        tsjax.order_params(bad_st, te, inputs=hmm)
    with pytest.raises(ValueError, match="teacher: input dimension"):
        tsjax.simulate(st, bad_te, jax.random.key(0), inputs=hmm, lr=0.5, alphas=[0.0, 1.0])
    op = tsjax.order_params(st, te, inputs=hmm)
    with pytest.raises(ValueError, match="op0"):
        tsjax.solve_ode(tsjax.order_params(st, tsjax.init_teacher(jax.random.key(0), 20, 1)),
                        inputs=hmm, lr=0.5, alphas=[0.0, 1.0])  # fmt: skip
    with pytest.raises(ValueError, match="rule"):
        tsjax.solve_ode(op, inputs=hmm, lr=0.5, alphas=[0.0, 1.0],
                        rule=tsjax.AdaptiveBackprop(2.0))  # fmt: skip


def test_sweep_over_delta_and_feature_map_equals_single_runs():
    al = np.linspace(0.0, 6.0, 4)
    ds = tsjax.sweep(K=2, M=1, lr=0.5, alphas=al, N=200, init_scale=0.1,
                     delta=[0.5, 2.0], feature_map=["sign", "erf"], hmm_nodes=16)  # fmt: skip
    assert ds.eg.dims == ("delta", "feature_map", "alpha")
    st, te, _ = tsjax.sweep_point(K=2, M=1, N=200, init_scale=0.1)
    op = tsjax.order_params(st, te)
    for i, d in enumerate((0.5, 2.0)):
        for j, fm in enumerate(("sign", "erf")):
            lim = tsjax.HiddenManifold.limit(d, fm, nodes=16)
            o = tsjax.ManifoldOrderParams(
                op.Q, lim.rho[:, None, None] * op.Q[None], jnp.zeros((16, 2, 1)),
                jnp.broadcast_to(op.T, (16, 1, 1)), op.T, op.v, op.v_star, lim,
            )  # fmt: skip
            ref = tsjax.solve_ode(o, inputs=lim, lr=0.5, alphas=al).eg
            np.testing.assert_allclose(ds.eg.values[i, j], ref, rtol=1e-10)
    with pytest.raises(ValueError, match="delta"):
        tsjax.sweep(K=2, M=1, lr=0.5, alphas=al, N=200, delta=[0.0])
    with pytest.raises(ValueError, match="feature_map: needs delta"):
        tsjax.sweep(K=2, M=1, lr=0.5, alphas=al, N=200, feature_map="erf")
