"""Unit tests of the networks and of the finite-N SGD simulator (tsjax._networks,
tsjax._simulate)."""

import jax

jax.config.update("jax_enable_x64", True)

import math  # noqa: E402
import warnings  # noqa: E402

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from scipy.special import erf  # noqa: E402

import tsjax._simulate as sim  # noqa: E402
from tsjax._activations import Erf, get_activation  # noqa: E402
from tsjax._networks import TwoLayerNet, init_student, init_teacher, order_params  # noqa: E402
from tsjax._order_params import OrderParams, generalisation_error  # noqa: E402
from tsjax._simulate import simulate  # noqa: E402
from tsjax._trajectory import DivergenceError, Trajectory  # noqa: E402

# ------------------------------------------------------------------------------------------
# numpy reference of one SGD step (docs/conventions.md), erf / linear activations


def _g(name, x):
    return erf(x / math.sqrt(2)) if name == "erf" else x


def _gp(name, x):
    return math.sqrt(2 / math.pi) * np.exp(-x * x / 2) if name == "erf" else np.ones_like(x)


def np_step(W, v, Wt, vt, x, zeta, eta, eta_v, sigma, kappa, act="erf"):
    """x (B, N), zeta (B,): the mean over the batch of the per-sample updates."""
    N = W.shape[1]
    dW = np.zeros_like(W)
    dv = np.zeros_like(v)
    for xb, zb in zip(x, zeta, strict=True):
        lam = W @ xb / math.sqrt(N)
        nu = Wt @ xb / math.sqrt(N)
        y = vt @ _g(act, nu) + sigma * zb
        delta = v @ _g(act, lam) - y
        dW += np.outer(v * _gp(act, lam) * delta, xb)
        dv += _g(act, lam) * delta
    B = len(x)
    W_new = W - eta / math.sqrt(N) * dW / B - kappa / N * W
    v_new = v - eta_v / N * dv / B - kappa / N * v * (eta_v != 0)
    return W_new, v_new


def _nets(N, K, M, act="erf", seed=0):
    kt, ks = jax.random.split(jax.random.key(seed))
    return init_student(ks, N, K, activation=act), init_teacher(kt, N, M, activation=act)


# ------------------------------------------------------------------------------------------
# networks


def test_order_params_and_call():
    rng = np.random.default_rng(0)
    N, K, M = 30, 3, 2
    W, Wt = rng.standard_normal((K, N)), rng.standard_normal((M, N))
    v, vt = rng.standard_normal(K), rng.standard_normal(M)
    s = TwoLayerNet(W=W, v=v, activation="erf")
    t = TwoLayerNet(W=Wt, v=vt, activation=Erf())
    assert (s.K, s.N, t.K, t.N) == (K, N, M, N)
    op = order_params(s, t)
    np.testing.assert_allclose(op.Q, W @ W.T / N, rtol=1e-13)
    np.testing.assert_allclose(op.R, W @ Wt.T / N, rtol=1e-13)
    np.testing.assert_allclose(op.T, Wt @ Wt.T / N, rtol=1e-13)
    np.testing.assert_array_equal(op.v, v)
    np.testing.assert_array_equal(op.v_star, vt)
    x = rng.standard_normal(N)
    manual = sum(v[k] * erf(W[k] @ x / math.sqrt(N) / math.sqrt(2)) for k in range(K))
    np.testing.assert_allclose(s(x), manual, rtol=1e-13)
    xs = rng.standard_normal((4, N))
    np.testing.assert_allclose(s(xs), [s(x_) for x_ in xs], rtol=1e-13)
    lin = TwoLayerNet(W=W, v=v, activation="linear")
    np.testing.assert_allclose(lin(x), v @ (W @ x) / math.sqrt(N), rtol=1e-13)
    # a scalar v is broadcast
    np.testing.assert_array_equal(TwoLayerNet(W=W, v=2.0).v, np.full(K, 2.0))
    # eps_g of the pair equals the Monte-Carlo average of (f - f*)^2 / 2 (rough check)
    xs = rng.standard_normal((20000, N))
    mc = 0.5 * np.mean((np.asarray(s(xs)) - np.asarray(t(xs))) ** 2)
    np.testing.assert_allclose(generalisation_error(op), mc, rtol=0.05)


def test_network_validation():
    W = np.ones((2, 5))
    with pytest.raises(ValueError, match="^W:"):
        TwoLayerNet(W=np.ones(5), v=np.ones(2))
    with pytest.raises(ValueError, match="^v:"):
        TwoLayerNet(W=W, v=np.ones(3))
    with pytest.raises(ValueError, match="^activation:"):
        TwoLayerNet(W=W, v=np.ones(2), activation="tanhh")
    with pytest.raises(ValueError, match="^x:"):
        TwoLayerNet(W=W, v=np.ones(2))(np.ones(4))
    with pytest.raises(ValueError, match="^teacher:"):
        order_params(TwoLayerNet(W=W), TwoLayerNet(W=np.ones((2, 6))))
    with pytest.raises(ValueError, match="^student:"):
        order_params(W, TwoLayerNet(W=W))
    with pytest.raises(ValueError, match="^N:"):
        TwoLayerNet.gaussian(jax.random.key(0), 0, 2)
    with pytest.raises(ValueError, match="^v:"):
        TwoLayerNet.gaussian(jax.random.key(0), 5, 2, v="uniform")


def test_gaussian_constructors():
    key = jax.random.key(1)
    N = 400
    t = init_teacher(key, N, 3)
    np.testing.assert_allclose(np.diag(order_params(t, t).Q), 1.0, rtol=1e-13)
    np.testing.assert_array_equal(t.v, np.ones(3))
    n2 = TwoLayerNet.gaussian(key, N, 2, scale=0.3, normalise=True, v=np.array([1.0, -1.0]))
    np.testing.assert_allclose(np.linalg.norm(n2.W, axis=1), 0.3 * math.sqrt(N), rtol=1e-13)
    np.testing.assert_array_equal(n2.v, [1.0, -1.0])
    s = init_student(key, N, 4, scale=1e-3, v="gaussian", activation="relu")
    assert s.activation == get_activation("relu")
    assert s.v.shape == (4,) and len(np.unique(np.asarray(s.v))) == 4
    q = np.diag(order_params(s, t).Q)
    assert np.all((q > 0.5e-6) & (q < 2e-6))  # scale^2 = 1e-6 up to O(1/sqrt(N))
    s1 = init_student(key, N, 4)  # default: std-1 entries, Q_kk ~ 1
    assert np.all(np.abs(np.diag(order_params(s1, t).Q) - 1) < 0.3)


# ------------------------------------------------------------------------------------------
# one SGD step


@pytest.mark.parametrize("N", [7, sim._SMALL_N + 1])  # both layouts of the local fields
@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("act", ["erf", "linear"])
def test_sgd_step_matches_numpy(N, B, act):
    rng = np.random.default_rng(N + B)
    K, M = 3, 2
    W, Wt = rng.standard_normal((K, N)), rng.standard_normal((M, N))
    v, vt = rng.standard_normal(K), rng.standard_normal(M)
    x, zeta = rng.standard_normal((B, N)), rng.standard_normal(B)
    for eta, eta_v, sigma, kappa in [(0.7, 0.0, 0.0, 0.0), (0.7, 0.3, 0.5, 0.2)]:
        W1, v1 = sim._sgd_step(W, v, Wt, vt, x, zeta, eta, eta_v, sigma, kappa, get_activation(act))
        W2, v2 = np_step(W, v, Wt, vt, x, zeta, eta, eta_v, sigma, kappa, act)
        np.testing.assert_allclose(W1, W2, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(v1, v2, rtol=1e-12, atol=1e-14)
        if eta_v == 0:
            np.testing.assert_array_equal(v1, v)
        # the exact norm update used to detect divergence at its onset
        q = np.sum(W * W, axis=1) / N
        *_, q1 = sim._sgd_step(W, v, Wt, vt, x, zeta, eta, eta_v, sigma, kappa,
                               get_activation(act), q=q)  # fmt: skip
        np.testing.assert_allclose(q1, np.sum(W2 * W2, axis=1) / N, rtol=1e-11)


def test_simulate_matches_numpy_steps():
    """simulate reproduces a numpy loop of the update on the same inputs, across a block
    boundary, with a mini-batch, a schedule, noise, weight decay and a trained v."""
    N, K, M, B = 10, 3, 2, 2
    s, t = _nets(N, K, M, seed=3)
    L = sim._block_length(N, B)
    assert L == 256
    alphas = np.array([0.0, 0.1, 0.2, 25.6, 25.7, 30.0])  # steps 0, 1, 2, 256, 257, 300
    key = jax.random.key(7)

    def lr(a):
        return 0.3 / (1.0 + 0.1 * a)

    kw = dict(lr_v=0.2, noise=0.3, weight_decay=0.05, batch_size=B)
    traj = simulate(s, t, key, lr=lr, alphas=alphas, **kw)
    xs, zs = zip(*(sim._draw_block(key, c, L, B, N, jnp.float64) for c in range(2)), strict=True)
    xs, zs = np.concatenate(xs), np.concatenate(zs)
    W, v = np.asarray(s.W), np.asarray(s.v)
    Wt, vt = np.asarray(t.W), np.asarray(t.v)
    saved = {}
    for step in range(301):
        saved[step] = (W @ W.T / N, W @ Wt.T / N, v)
        W, v = np_step(W, v, Wt, vt, xs[step], zs[step], lr(step / N), 0.2, 0.3, 0.05)
    for i, step in enumerate([0, 1, 2, 256, 257, 300]):
        Q, R, v_ = saved[step]
        np.testing.assert_allclose(traj.Q[i], Q, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(traj.R[i], R, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(traj.v[i], v_, rtol=1e-10, atol=1e-13)
        eg = generalisation_error(OrderParams(Q, R, Wt @ Wt.T / N, v_, vt))
        np.testing.assert_allclose(traj.eg[i], eg, rtol=1e-10)
    assert isinstance(traj, Trajectory)
    np.testing.assert_array_equal(traj.alpha, alphas)
    assert traj.Q.shape == (6, K, K) and traj.R.shape == (6, K, M) and traj.v.shape == (6, K)
    np.testing.assert_allclose(traj.T, Wt @ Wt.T / N, rtol=1e-13)
    assert not np.isfinite(traj.diverged_at)

    # a shorter run is a prefix of the longer one; save times that round to the same step
    # (0.05 * N = 0.5 -> 1 step, like 0.1) give the same record; alphas need not start at 0
    short = simulate(s, t, key, lr=lr, alphas=np.array([0.05, 0.1, 25.65]), **kw)
    np.testing.assert_allclose(short.Q[0], saved[1][0], rtol=1e-10)
    np.testing.assert_array_equal(short.Q[0], short.Q[1])
    np.testing.assert_allclose(short.Q[2], saved[257][0], rtol=1e-10)


def test_linear_mean_eg_exact():
    """Linear g, fixed v: with u = W^T v / sqrt(N) and e = u - u*, one step is
    e <- (I - c x x^T) e + c sigma zeta x, c = eta |v|^2 / N, and eps_g = |e|^2 / 2, so
    E[eps_g] after t steps is r^t eps0 + (1 - r^t)/(1 - r) c^2 sigma^2 N / 2 exactly at
    finite N, with r = 1 - 2c + c^2 (N + 2)."""
    N, eta, sigma, seeds = 100, 0.5, 0.5, 512
    s, t = _nets(N, 2, 2, act="linear", seed=5)
    alphas = np.array([0.0, 0.2, 0.5])
    keys = jax.random.split(jax.random.key(11), seeds)
    run = jax.vmap(lambda k: simulate(s, t, k, lr=eta, noise=sigma, alphas=alphas).eg)
    eg = np.asarray(run(keys))  # (seeds, 3)
    eps0 = eg[0, 0]
    np.testing.assert_allclose(eg[:, 0], eps0)
    c = eta * float(s.v @ s.v) / N
    r = 1 - 2 * c + c * c * (N + 2)
    for j, a in enumerate(alphas[1:], start=1):
        steps = round(a * N)
        expected = r**steps * eps0 + (1 - r**steps) / (1 - r) * c * c * sigma**2 * N / 2
        sem = eg[:, j].std(ddof=1) / math.sqrt(seeds)
        assert abs(eg[:, j].mean() - expected) < 4 * sem, (eg[:, j].mean(), expected, sem)
        assert abs(expected - eps0) > 20 * sem  # the test can tell the dynamics apart


# ------------------------------------------------------------------------------------------
# transformations


def test_vmap_over_keys_and_lr():
    N = 50
    s, t = _nets(N, 2, 2, seed=2)
    alphas = np.array([0.0, 1.0, 2.0])
    keys = jax.random.split(jax.random.key(4), 4)
    trajs = jax.vmap(lambda k: simulate(s, t, k, lr=0.5, alphas=alphas))(keys)
    assert trajs.eg.shape == (4, 3) and trajs.Q.shape == (4, 3, 2, 2)
    assert trajs.diverged_at.shape == (4,)
    np.testing.assert_allclose(trajs.eg[:, 0], trajs.eg[0, 0])  # same initial state
    assert len(np.unique(np.round(np.asarray(trajs.eg[:, -1]), 12))) == 4  # independent
    one = simulate(s, t, keys[1], lr=0.5, alphas=alphas)
    np.testing.assert_allclose(trajs.Q[1], one.Q, rtol=1e-12)
    lrs = jnp.array([0.2, 0.9])
    by_lr = jax.vmap(lambda lr: simulate(s, t, keys[0], lr=lr, noise=0.1, alphas=alphas))(lrs)
    for i, lr in enumerate([0.2, 0.9]):
        ref = simulate(s, t, keys[0], lr=lr, noise=0.1, alphas=alphas)
        np.testing.assert_allclose(by_lr.eg[i], ref.eg, rtol=1e-12)
    # legacy uint32 keys work too
    simulate(s, t, jax.random.PRNGKey(0), lr=0.5, alphas=alphas)


def test_grad_wrt_lr_matches_finite_difference():
    s, t = _nets(20, 2, 2, seed=6)
    alphas = np.array([0.0, 2.0])

    def final_eg(lr):
        return simulate(s, t, jax.random.key(1), lr=lr, alphas=alphas).eg[-1]

    g = jax.grad(final_eg)(0.5)
    h = 1e-5
    fd = (final_eg(0.5 + h) - final_eg(0.5 - h)) / (2 * h)
    np.testing.assert_allclose(g, fd, rtol=1e-6)


# ------------------------------------------------------------------------------------------
# validation, divergence, precision


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(lr=-0.1), "lr"),
        (dict(lr_v=-1.0), "lr_v"),
        (dict(noise=-0.5), "noise"),
        (dict(weight_decay=-1e-3), "weight_decay"),
        (dict(lr=float("nan")), "lr"),
        (dict(batch_size=0), "batch_size"),
        (dict(batch_size=1.5), "batch_size"),
        (dict(alphas=np.array([[0.0, 1.0]])), "alphas"),
        (dict(alphas=np.array([0.0, 2.0, 1.0])), "alphas"),
        (dict(alphas=np.array([1.0, 1.0])), "alphas"),
        (dict(alphas=np.array([-1.0, 1.0])), "alphas"),
        (dict(alphas=np.array([])), "alphas"),
        (dict(key=3), "key"),
        (dict(teacher=TwoLayerNet(W=np.ones((2, 11)))), "teacher"),
        (dict(teacher=TwoLayerNet(W=np.ones((2, 10)), activation="relu")), "teacher"),
        (dict(student=np.ones((2, 10))), "student"),
    ],
)
def test_bad_inputs(kwargs, name):
    s, t = _nets(10, 2, 2)
    args = dict(student=s, teacher=t, key=jax.random.key(0), lr=0.5, alphas=np.array([0.0, 1.0]))
    args.update(kwargs)
    with pytest.raises(ValueError, match=f"^{name}:"):
        simulate(**args)


def test_traced_alphas_rejected():
    s, t = _nets(10, 2, 2)
    with pytest.raises(ValueError, match="^alphas:"):
        jax.jit(lambda a: simulate(s, t, jax.random.key(0), lr=0.5, alphas=a).eg)(
            jnp.array([0.0, 1.0])
        )


def test_divergence():
    # erf saturates: at lr = 5 (K = M = 2, N = 500) the student norms grow without bound but
    # slowly (Q_kk ~ 30 at alpha = 50), past 10x their natural scale (the criterion shared
    # with solve_ode); ReLU and linear networks explode within the first block.
    N = 500
    alphas = np.linspace(0.0, 50.0, 51)
    s, t = _nets(N, 2, 2, act="erf", seed=0)
    with pytest.raises(DivergenceError, match=r"alpha = [0-9.]+"):
        simulate(s, t, jax.random.key(2), lr=5.0, alphas=alphas)
    traj = simulate(s, t, jax.random.key(2), lr=0.5, alphas=alphas)
    assert np.all(np.isfinite(traj.eg))
    s, t = _nets(N, 2, 2, act="linear", seed=0)
    with pytest.raises(DivergenceError, match=r"alpha = [0-9.]+"):
        simulate(s, t, jax.random.key(2), lr=5.0, alphas=alphas)
    # under jit with throw=False: no exception, diverged_at set, NaN from there on
    traj = jax.jit(lambda k: simulate(s, t, k, lr=5.0, alphas=alphas, throw=False))(
        jax.random.key(2)
    )
    d = float(traj.diverged_at)
    assert 0 < d <= 256 / N + 1e-12  # detected at the latest at the end of the first block
    alpha = np.asarray(traj.alpha)
    assert np.all(np.isnan(np.asarray(traj.eg)[alpha >= d]))
    assert np.all(np.isnan(np.asarray(traj.Q)[alpha >= d]))
    assert np.all(np.isfinite(np.asarray(traj.eg)[alpha < d]))
    # reported at its onset: the run to one step before is fine, the step after diverges
    n = int(round(d * N))
    before = simulate(s, t, jax.random.key(2), lr=5.0, alphas=[0.0, (n - 1) / N], throw=False)
    at = simulate(s, t, jax.random.key(2), lr=5.0, alphas=[0.0, n / N], throw=False)
    assert not bool(before.diverged) and float(at.diverged_at) == n / N


def test_float32_warns(monkeypatch):
    from tsjax import _checks

    monkeypatch.setattr(_checks, "_F32_WARNED", [False])
    s, t = _nets(10, 2, 2)
    s32 = TwoLayerNet(W=np.asarray(s.W, np.float32), v=np.asarray(s.v, np.float32))
    t32 = TwoLayerNet(W=np.asarray(t.W, np.float32), v=np.asarray(t.v, np.float32))
    with pytest.warns(UserWarning, match="jax_enable_x64"):
        traj = simulate(s32, t32, jax.random.key(0), lr=0.5, alphas=np.array([0.0, 1.0]))
    assert traj.eg.dtype == jnp.float32
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # only once
        simulate(s32, t32, jax.random.key(0), lr=0.5, alphas=np.array([0.0, 1.0]))


def test_float32_inputs_leave_the_dynamics_unchanged():
    """The default draws the inputs at float32 resolution (tsjax._simulate._SAMPLE_DTYPE):
    the learning curve (K = M = 2 erf, N = 200, lr 0.5, noise 0.1, through the plateau and
    its escape) and its seed-to-seed spread are those of exact float64 inputs. 32 seeds each;
    at four times, Welch's t-test on the means and the Brown-Forsythe test on the spreads
    must not reject at p = 1e-3 (eight tests: a false alarm has probability < 1%)."""
    from scipy import stats

    N, seeds = 200, 32
    s, t = _nets(N, 2, 2, act="erf", seed=4)
    alphas = np.array([0.0, 20.0, 60.0, 100.0, 150.0])
    keys = jax.random.split(jax.random.key(11), seeds)

    def curves():
        run = jax.jit(lambda ks: jax.lax.map(
            lambda k: simulate(s, t, k, lr=0.5, noise=0.1, alphas=alphas).eg, ks))  # fmt: skip
        return np.asarray(run(keys))

    default = curves()
    try:
        sim._SAMPLE_DTYPE = jnp.float64  # read at trace time
        exact = curves()
    finally:
        sim._SAMPLE_DTYPE = None
    assert not np.allclose(default, exact)  # different random numbers, same law
    for i in range(1, len(alphas)):
        a, b = default[:, i], exact[:, i]
        assert stats.ttest_ind(a, b, equal_var=False).pvalue > 1e-3, (alphas[i], a.mean(), b.mean())
        assert stats.levene(a, b, center="median").pvalue > 1e-3, (alphas[i], a.std(), b.std())
