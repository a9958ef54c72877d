"""tsjax.simulate_order_params (the exact finite-N order-parameter chain) against the network
simulator, in distribution.

Statistical tests (samples of independent runs from the same initial state, fixed keys, so
the outcome is deterministic): for each compared quantity, Welch's t-test for equal means and
the Brown-Forsythe test (Levene's test about the median, robust to the heavy tails of eps_g
after the plateau) for equal spreads; both must give p > 1e-3. A chain with the wrong N
(25 instead of 200) is rejected, so the tests have power."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tsjax
from tsjax._simulate_op import _chi2, _psd_cholesky, simulate_order_params

stats = pytest.importorskip("scipy.stats")
P_MIN = 1e-3


def _same_law(a, b, what):
    a, b = np.asarray(a), np.asarray(b)
    p_mean = stats.ttest_ind(a, b, equal_var=False).pvalue
    p_std = stats.levene(a, b, center="median").pvalue
    assert p_mean > P_MIN, f"{what}: means {a.mean():.6g} vs {b.mean():.6g} (p = {p_mean:.2g})"
    assert p_std > P_MIN, f"{what}: std {a.std():.6g} vs {b.std():.6g} (p = {p_std:.2g})"
    return p_mean


@pytest.mark.slow
def test_chain_matches_network_simulation_in_distribution():
    """N = 200, K = M = 2, erf, lr = 0.5, 48 seeds each, from one initial state: eps_g on the
    plateau (alpha = 50), during the escape (130) and after it (200)."""
    N, S = 200, 48
    teacher = tsjax.init_teacher(jax.random.key(10), N, 2)
    student = tsjax.init_student(jax.random.key(11), N, 2)
    op0 = tsjax.order_params(student, teacher)
    alphas = np.array([0.0, 50.0, 130.0, 200.0])
    chain = jax.vmap(lambda k: simulate_order_params(op0, k, N=N, lr=0.5, alphas=alphas).eg)
    eg_chain = np.asarray(chain(jax.random.split(jax.random.key(1), S)))
    eg_net = np.asarray(
        jax.lax.map(
            lambda k: tsjax.simulate(student, teacher, k, lr=0.5, alphas=alphas).eg,
            jax.random.split(jax.random.key(2), S),
            batch_size=8,
        )
    )
    np.testing.assert_allclose(eg_chain[:, 0], eg_net[:, 0], rtol=1e-12)
    for i, where in ((1, "plateau"), (2, "escape"), (3, "after")):
        _same_law(eg_chain[:, i], eg_net[:, i], f"eps_g at alpha = {alphas[i]:g} ({where})")
    # power: the spread on the plateau ~ 1/sqrt(N) tells a chain at N = 25 apart (from this
    # initial state the means hardly depend on N: the initial asymmetry drives the escape)
    wrong = jax.vmap(lambda k: simulate_order_params(op0, k, N=25, lr=0.5, alphas=alphas).eg)
    eg_wrong = np.asarray(wrong(jax.random.split(jax.random.key(3), S)))
    assert stats.levene(eg_wrong[:, 1], eg_net[:, 1], center="median").pvalue < P_MIN


def _one_step_increments(op_or_nets, N, B, n, **kw):
    """Increments of (Q, R, v) over one SGD step, n independent draws: chain and networks."""
    student, teacher = op_or_nets
    op0 = tsjax.order_params(student, teacher)
    alphas = np.array([0.0, 1.0 / N])
    keys = jax.random.split(jax.random.key(7), n)

    def flat(tr):
        return jnp.concatenate([tr.Q[-1].ravel(), tr.R[-1].ravel(), tr.v[-1]])

    ch = jax.vmap(
        lambda k: flat(simulate_order_params(op0, k, N=N, alphas=alphas, batch_size=B, **kw))
    )(keys)
    net = jax.vmap(
        lambda k: flat(tsjax.simulate(student, teacher, k, alphas=alphas, batch_size=B, **kw))
    )(jax.random.split(jax.random.key(8), n))
    start = np.concatenate([np.ravel(op0.Q), np.ravel(op0.R), np.asarray(op0.v)])
    return np.asarray(ch) - start, np.asarray(net) - start


@pytest.mark.parametrize(
    "singular",
    [pytest.param(False, marks=pytest.mark.slow), True],  # generic: slow (suite time)
    ids=["generic", "student=teacher"],
)
def test_one_step_law_with_batch_noise_decay_and_second_layer(singular):
    """The one-step increments of every order parameter (batch of 3: the Wishart part of the
    Gram matrix; output noise, weight decay, trained second layer) have the law of the
    network's; also when C is singular (the student equals the teacher)."""
    N, K, M, B = 30, 2, 2, 3
    teacher = tsjax.init_teacher(jax.random.key(0), N, M)
    if singular:
        student = tsjax.TwoLayerNet(teacher.W, 0.8)
    else:
        student = tsjax.init_student(jax.random.key(1), N, K, v=0.8)
    kw = dict(lr=0.9, lr_v=0.7, noise=0.5, weight_decay=0.3)
    d_ch, d_net = _one_step_increments((student, teacher), N, B, 4000, **kw)
    assert np.all(np.isfinite(d_ch))
    names = [f"Q{k}{l}" for k in range(K) for l in range(K)]
    names += [f"R{k}{n}" for k in range(K) for n in range(M)] + [f"v{k}" for k in range(K)]
    for j, name in enumerate(names):
        if name in ("Q10",):  # symmetric copy of Q01
            continue
        _same_law(d_ch[:, j], d_net[:, j], f"one-step increment of {name}")


def test_cholesky_and_chi2_helpers():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((5, 3))
    C = X @ X.T  # rank 3 (singular)
    A = np.asarray(_psd_cholesky(jnp.asarray(C)))
    np.testing.assert_allclose(A @ A.T, C, atol=1e-12)
    assert np.allclose(A, np.tril(A))
    x = np.asarray(_chi2(jax.random.key(0), 7.0, (40000,), jnp.float64))
    assert stats.kstest(x, stats.chi2(7.0).cdf).pvalue > P_MIN
    x = np.asarray(_chi2(jax.random.key(1), 0.5, (40000,), jnp.float64))  # boosted branch
    assert stats.kstest(x, stats.chi2(0.5).cdf).pvalue > P_MIN


def test_contract_divergence_and_errors():
    N = 100
    teacher = tsjax.init_teacher(jax.random.key(0), N, 2)
    student = tsjax.init_student(jax.random.key(1), N, 2)
    op0 = tsjax.order_params(student, teacher)
    alphas = np.linspace(0.0, 2.0, 5)
    tr = simulate_order_params(op0, jax.random.key(0), N=N, lr=0.5, alphas=alphas)
    assert isinstance(tr, tsjax.Trajectory) and tr.Q.shape == (5, 2, 2)
    assert np.isinf(float(tr.diverged_at))
    np.testing.assert_allclose(tr.eg[0], tsjax.generalisation_error(op0), rtol=1e-14)
    # a longer run continues a shorter one exactly
    tr2 = simulate_order_params(op0, jax.random.key(0), N=N, lr=0.5, alphas=[0.0, 1.0, 3.0])
    np.testing.assert_allclose(tr2.Q[1], tr.Q[2], rtol=1e-14)
    with pytest.raises(tsjax.DivergenceError, match="diverged at alpha"):
        simulate_order_params(op0, jax.random.key(0), N=N, lr=20.0, alphas=[0.0, 20.0])
    f = jax.jit(
        lambda k: simulate_order_params(op0, k, N=N, lr=20.0, alphas=[0.0, 10.0, 20.0], throw=False)
    )
    out = f(jax.random.key(0))
    assert np.isfinite(float(out.diverged_at)) and np.isnan(float(out.eg[-1]))
    with pytest.raises(ValueError, match="N"):
        simulate_order_params(op0, jax.random.key(0), N=4, lr=0.5, alphas=alphas)
    with pytest.raises(ValueError, match="lr"):
        simulate_order_params(op0, jax.random.key(0), N=N, lr=-1.0, alphas=alphas)
    with pytest.raises(ValueError, match="batch_size"):
        simulate_order_params(op0, jax.random.key(0), N=N, lr=0.5, alphas=alphas, batch_size=0)
