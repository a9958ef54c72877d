"""Analysis of the dynamics: fixed points, stability, critical learning rates, plateaus,
weight-space Hessians, gradient flow and critical points.

Independent references: Saad & Solla's small-eta symmetric plateau (closed form), the
critical learning rate of the perceptron pi sqrt(15) / 3 (derived in docs/analysis.md) and
direct integration just below and above the values found for K = M = 2, 3; finite
differences of the gradient; the Hessian's rank and spectrum derived by hand (linear:
(v v^T kron I_N) / N; quadratic: the tangent space of {W^T diag(v) W}, dimension
K N - K (K - 1) / 2); the order-parameter ODE without its eta^2 terms; scipy's BFGS.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tsjax


@pytest.mark.parametrize("K", [2, pytest.param(3, marks=pytest.mark.slow)])
def test_symmetric_plateau_small_eta_closed_form(K):
    """Saad & Solla (1995): Q_ii = Q_ik = 1/(2K - 1), R_in = 1/sqrt(K (2K - 1)),
    eps = (K / pi) (pi / 6 - K arcsin(1 / (2K))) in the limit eta -> 0."""
    q0, r0 = 0.3, 0.2
    guess = tsjax.OrderParams(np.full((K, K), 0.1) + (q0 - 0.1) * np.eye(K), np.full((K, K), r0),
                              np.eye(K), np.ones(K), np.ones(K))  # fmt: skip
    fp = tsjax.fixed_point(guess, lr=1e-7, subspace="symmetric")
    q, r = 1 / (2 * K - 1), 1 / np.sqrt(K * (2 * K - 1))
    np.testing.assert_allclose(np.asarray(fp.Q), np.full((K, K), q), atol=1e-5)
    np.testing.assert_allclose(np.asarray(fp.R), np.full((K, K), r), atol=1e-5)
    eps = K / np.pi * (np.pi / 6 - K * np.arcsin(1 / (2 * K)))
    np.testing.assert_allclose(float(tsjax.generalisation_error(fp)), eps, rtol=1e-5)
    # the residual is at machine precision
    d = tsjax.vector_field(fp, lr=1e-7)
    assert float(jnp.max(jnp.abs(d.Q))) < 1e-20 and float(jnp.max(jnp.abs(d.R))) < 1e-20
    # a saddle: one unstable direction (the escape), found without the subspace too
    st = tsjax.stability(fp, lr=1e-7)
    assert np.sum(np.real(st.eigenvalues) > 1e-12) >= 1


@pytest.mark.slow
def test_plateau_height_and_escape_time_from_the_symmetric_fixed_point():
    """K = M = 2, eta = 0.5. (1) From a small asymmetric start the plateau found in the
    ODE's learning curve has the height of the symmetric fixed point at that eta. (2) From
    the fixed point perturbed by delta along R's antisymmetric direction, the plateau ends
    at log(1 / delta) / lambda_max + const: between delta = 1e-4 and 1e-7 the end moves by
    log(1e3) / lambda_max (the unstable eigenvalue of the fixed point)."""
    K, eta = 2, 0.5
    guess = tsjax.OrderParams(np.full((K, K), 0.2) + 0.1 * np.eye(K), np.full((K, K), 0.3),
                              np.eye(K), np.ones(K), np.ones(K))  # fmt: skip
    fp = tsjax.fixed_point(guess, lr=eta, subspace="symmetric")
    lam = tsjax.stability(fp, lr=eta).max_real
    assert lam > 0
    alphas = np.linspace(0, 500, 1001)
    op0 = tsjax.OrderParams([[0.2, 0.0], [0.0, 0.2]], [[1e-3, 0.0], [0.0, 5e-4]], np.eye(K),
                            np.ones(K), np.ones(K))  # fmt: skip
    ps = tsjax.find_plateaus(tsjax.solve_ode(op0, lr=eta, alphas=alphas))
    assert len(ps) == 1, ps
    np.testing.assert_allclose(ps[0].height, float(tsjax.generalisation_error(fp)), rtol=1e-2)
    ends = []
    for delta in (1e-4, 1e-7):
        # w_1,2 = w +- delta (B_1 - B_2) from the plateau's w_1 = w_2 = w (a valid state)
        P = np.array([[1.0, -1.0], [-1.0, 1.0]])
        R = np.asarray(fp.R) + delta * P
        op = tsjax.OrderParams(np.asarray(fp.Q) + 2 * delta**2 * P, R, fp.T, fp.v, fp.v_star)
        ps = tsjax.find_plateaus(tsjax.solve_ode(op, lr=eta, alphas=alphas))
        assert len(ps) == 1 and ps[0].onset == 0.0, ps
        ends.append(ps[0].end)
    np.testing.assert_allclose(ends[1] - ends[0], np.log(1e3) / lam, rtol=0.05)


def test_critical_learning_rate_of_the_perceptron():
    op = tsjax.OrderParams([[1.0]], [[1.0]], [[1.0]], [1.0], [1.0])
    lr_c = tsjax.critical_learning_rate(op)
    np.testing.assert_allclose(lr_c, np.pi * np.sqrt(15) / 3, rtol=1e-10)


def test_critical_learning_rate_of_the_relu_perceptron():
    """Linearising at perfect learning (T = v = v* = 1, lambda = nu + xi): with a = R - 1,
    b = Q - 1, da/dalpha = -eta a / 2 and db/dalpha = eta (1 - eta) a + (eta^2 / 2 - eta) b
    (E[Theta(nu) nu^2] = 1/2, E[Theta(nu)] = 1/2): unstable for eta > 2."""
    op = tsjax.OrderParams([[1.0]], [[1.0]], [[1.0]], [1.0], [1.0])
    np.testing.assert_allclose(tsjax.critical_learning_rate(op, activation="relu"), 2.0,
                               rtol=1e-10)  # fmt: skip
    J = np.asarray(tsjax.jacobian(op, activation="relu", lr=0.8))
    eta = 0.8  # rows dQ, dR; columns Q, R
    np.testing.assert_allclose(J, [[eta**2 / 2 - eta, eta * (1 - eta)], [0.0, -eta / 2]],
                               atol=1e-12)  # fmt: skip


def test_jacobian_at_perfect_learning_linearisation_and_quadrature():
    """The linearisation of B at perfect learning (the ReLU path) applied to erf, whose
    closed forms are analytic there, reproduces autodiff; the quadrature activation's
    extrapolation from inside the PSD cone reproduces the closed form to its accuracy."""
    import equinox as eqx

    from tsjax._analysis._fixed_points import _AtRest

    T = np.array([[1.0, 0.3], [0.3, 0.8]])  # variances where the quadrature is accurate
    v = np.array([0.7, -1.2])
    op = tsjax.OrderParams(T, T, T, v, v)
    J = np.asarray(tsjax.jacobian(op, activation="erf", lr=1.3, lr_v=0.7))
    pb = tsjax.Problem("erf", lr=1.3, lr_v=0.7)
    pb = eqx.tree_at(lambda p: p.activation, pb, _AtRest(pb.activation))
    np.testing.assert_allclose(tsjax.jacobian(op, problem=pb), J, atol=1e-13)
    Jq = np.asarray(tsjax.jacobian(op, activation=tsjax.Activation(tsjax.Erf()), lr=1.3))
    J0 = np.asarray(tsjax.jacobian(op, activation="erf", lr=1.3))
    # the default joint rule of B errs by up to ~2e-4 of max |B| (tsjax.Activation)
    np.testing.assert_allclose(Jq, J0, atol=5e-5 * np.abs(J0).max())


def test_sin_perceptron_above_its_critical_rate_settles_on_another_fixed_point():
    """Perfect learning of the sin perceptron loses stability by a real eigenvalue through 0:
    just above lr_c the student settles on a nearby stable fixed point with R > 1,
    eps_g > 0, which Newton finds and which is stable; below lr_c it learns perfectly."""
    op = tsjax.OrderParams([[1.0]], [[1.0]], [[1.0]], [1.0], [1.0])
    lr_c = tsjax.critical_learning_rate(op, activation="sin")
    R0 = np.array([[1 - 1e-4]])
    op0 = tsjax.OrderParams(R0 @ R0.T + 1e-8, R0, [[1.0]], [1.0], [1.0])
    al = np.array([0.0, 400.0])
    below = tsjax.solve_ode(op0, activation="sin", lr=0.97 * lr_c, alphas=al)
    above = tsjax.solve_ode(op0, activation="sin", lr=1.03 * lr_c, alphas=al)
    assert float(below.eg[-1]) < 1e-12
    assert float(above.eg[-1]) > 1e-2
    fp = tsjax.fixed_point(above.final, activation="sin", lr=1.03 * lr_c)
    np.testing.assert_allclose(fp.R, above.final.R, rtol=1e-8)
    assert float(fp.R[0, 0]) > 1.0
    assert tsjax.stability(fp, activation="sin", lr=1.03 * lr_c).max_real < 0


@pytest.mark.slow
@pytest.mark.parametrize(
    "K, activation", [(2, "erf"), (3, "erf"), (2, "relu"), (3, "relu"), (1, "tanh")]
)
def test_critical_learning_rate_by_direct_integration(K, activation):
    """Below lr_c a small perturbation of perfect learning decays, above it grows."""
    op = tsjax.OrderParams(np.eye(K), np.eye(K), np.eye(K), np.ones(K), np.ones(K))
    lr_c = tsjax.critical_learning_rate(op, activation=activation)
    rng = np.random.default_rng(0)
    # a valid state: w_k = sum_n R_kn B_n + 1e-6 z_k (T = I), so Q = R R^T + 1e-12 I
    R0 = np.eye(K) + 1e-6 * rng.standard_normal((K, K))
    Q0 = R0 @ R0.T + 1e-12 * np.eye(K)
    op0 = tsjax.OrderParams(Q0, R0, np.eye(K), np.ones(K), np.ones(K))
    dist = []
    # long enough for the slow growth just above lr_c: 40 e-folds of the unstable mode
    lam = tsjax.stability(tsjax.OrderParams(np.eye(K), np.eye(K), np.eye(K), np.ones(K),
                                            np.ones(K)), activation=activation,
                          lr=1.03 * lr_c).max_real  # fmt: skip
    assert lam > 0
    a_end = 40.0 / lam
    for lr in (0.97 * lr_c, 1.03 * lr_c):
        tr = tsjax.solve_ode(op0, activation=activation, lr=lr, alphas=np.array([0.0, a_end]),
                             throw=False)  # fmt: skip
        dist.append(float(np.max(np.abs(np.asarray(tr.R[-1]) - np.eye(K)))))
    assert dist[0] < 1e-6 and not dist[1] < 1e-5, (lr_c, dist)


def test_bad_input_of_the_analysis():
    op = tsjax.OrderParams([[0.5]], [[0.1]], [[1.0]], [1.0], [1.0])
    with pytest.raises(ValueError, match="subspace"):
        tsjax.fixed_point(op, lr=0.5, subspace="nonsense")
    with pytest.raises(ValueError, match="subspace"):
        tsjax.fixed_point(op, lr=0.5, subspace=np.array([0, 1, 2]))
    with pytest.raises(tsjax.ConvergenceError, match="did not converge|singular"):
        tsjax.fixed_point(op, lr=0.5, noise=0.0, max_steps=1)
    # a linear student with two units for a one-unit teacher: a continuum of fixed points
    lin = tsjax.OrderParams([[0.5, 0.2], [0.2, 0.5]], [[0.5], [0.5]], [[1.0]], [1.0, 1.0], [1.0])
    with pytest.raises(tsjax.ConvergenceError, match="singular"):
        tsjax.fixed_point(lin, activation="linear", lr=0.1)
    # ReLU at a singular covariance away from perfect learning (two coinciding students
    # that have not learned the teacher): the field is not differentiable there
    same = tsjax.OrderParams(np.full((2, 2), 0.5), [[0.5], [0.5]], [[1.0]], [1.0, 1.0], [1.0])
    with pytest.raises(ValueError, match="activation: jacobian at a singular"):
        tsjax.jacobian(same, activation="relu", lr=0.5)
    with pytest.raises(ValueError, match="lr_max"):
        tsjax.critical_learning_rate(tsjax.OrderParams([[1.0]], [[1.0]], [[1.0]], [1.0], [1.0]),
                                     lr_max=1.0)  # fmt: skip
    with pytest.raises(ValueError, match="op_star: not a fixed point"):
        tsjax.critical_learning_rate(op)
    s = tsjax.TwoLayerNet(np.ones((2, 4)), 1.0)
    t = tsjax.TwoLayerNet(np.ones((1, 4)), 1.0)
    with pytest.raises(ValueError, match="wrt"):
        tsjax.hessian(s, t, wrt="v")
    with pytest.raises(ValueError, match="times"):
        tsjax.gradient_flow(s, t, times=[1.0])


# --------------------------------------------------------------------------------------
# weight space
# --------------------------------------------------------------------------------------


def _nets(K, M, N, seed=0, activation="erf", scale=1.0):
    k = jax.random.key(seed)
    t = tsjax.init_teacher(k, N, M, activation=activation)
    s = tsjax.init_student(jax.random.fold_in(k, 1), N, K, activation=activation, scale=scale)
    return s, t


def test_hessian_against_finite_differences_of_the_gradient():
    s, t = _nets(2, 1, 5)
    H = np.asarray(tsjax.hessian(s, t, wrt="Wv"))
    K, N = s.W.shape

    def grad(x):
        return np.asarray(
            jax.grad(lambda y: tsjax.population_loss(
                tsjax.TwoLayerNet(y[: K * N].reshape(K, N), y[K * N :]), t))(x)
        )  # fmt: skip

    x = np.concatenate([np.ravel(s.W), np.ravel(s.v)])
    h = 1e-5
    fd = np.stack([(grad(x + h * e) - grad(x - h * e)) / (2 * h) for e in np.eye(x.size)], 1)
    np.testing.assert_allclose(H, fd, atol=1e-8 * np.max(np.abs(H)))
    np.testing.assert_allclose(H, H.T, atol=1e-14)
    assert H.shape == (K * N + K, K * N + K)
    assert np.asarray(tsjax.hessian(s, t)).shape == (K * N, K * N)


@pytest.mark.parametrize(
    "act",
    [
        "erf",
        pytest.param("relu", marks=pytest.mark.slow),
        pytest.param("quadratic", marks=pytest.mark.slow),
    ],
)
def test_structured_hessian_equals_autodiff_hessian(act):
    """tsjax.hessian's structured formula against jax.hessian of the same loss."""
    from tsjax._analysis._weight_space import _loss

    s, t = _nets(3, 2, 7, activation=act)
    s = tsjax.TwoLayerNet(s.W, jnp.array([0.7, -1.2, 0.4]), act)
    a = tsjax.get_activation(act)
    K, N = 3, 7
    x = jnp.concatenate([s.W.ravel(), s.v])
    ref = jax.hessian(lambda y: _loss(y[: K * N].reshape(K, N), y[K * N :], t.W, t.v, a))(x)
    H = tsjax.hessian(s, t, activation=act, wrt="Wv")
    np.testing.assert_allclose(np.asarray(H), np.asarray(ref), atol=1e-14 * np.max(np.abs(ref)))


@pytest.mark.parametrize("N", [6, pytest.param(10, marks=pytest.mark.slow)])
def test_hessian_rank_at_the_teacher_matching_point(N):
    K = 3
    rng = np.random.default_rng(N)
    W = rng.standard_normal((K, N))
    v = np.array([1.0, -0.7, 1.3])
    for act, rank in (("linear", N), ("erf", K * N), ("quadratic", K * N - K * (K - 1) // 2)):
        net = tsjax.TwoLayerNet(W, v, act)
        w, r = tsjax.hessian_spectrum(tsjax.hessian(net, net, activation=act))
        assert r == rank, (act, r, rank)
        assert w.min() > -1e-10 * w.max()  # a minimum
    # the linear network's spectrum: |v|^2 / N, N-fold, and 0
    net = tsjax.TwoLayerNet(W, v, "linear")
    w, _ = tsjax.hessian_spectrum(tsjax.hessian(net, net, activation="linear"))
    np.testing.assert_allclose(w[-N:], np.full(N, v @ v / N), rtol=1e-12)
    assert np.max(np.abs(w[:-N])) < 1e-14
    # with v (Couto et al.): H = J^T J / N, J = du/dtheta for u = W^T v, so the N nonzero
    # eigenvalues are those of (|v|^2 I_N + W^T W) / N (a shifted Wishart spectrum)
    w, r = tsjax.hessian_spectrum(tsjax.hessian(net, net, activation="linear", wrt="Wv"))
    assert r == N
    ref = np.linalg.eigvalsh((v @ v * np.eye(N) + W.T @ W) / N)
    np.testing.assert_allclose(w[-N:], ref, rtol=1e-10)


def test_gradient_flow_equals_the_ode_without_its_eta_squared_terms():
    """Order parameters of the weight-space flow at times t against the ODE's first-order
    (in eta) field integrated to alpha = t / eta, K = 3, M = 2, N = 40, erf, v trained."""
    import diffrax

    s, t = _nets(3, 2, 40, seed=3, scale=0.5)
    times = np.linspace(0.0, 5.0, 6)
    end, tr = tsjax.gradient_flow(s, t, times=times, train_v=True)
    op0 = tsjax.order_params(s, t)

    def f1(_, y, args):
        op = tsjax.OrderParams(y[0], y[1], op0.T, y[2], op0.v_star)
        _, d = jax.jvp(lambda lr: tsjax.vector_field(op, lr=lr, lr_v=lr), (0.0,), (1.0,))
        return (d.Q, d.R, d.v)

    ctrl = diffrax.PIDController(rtol=1e-11, atol=1e-13)
    sol = diffrax.diffeqsolve(diffrax.ODETerm(f1), diffrax.Tsit5(), 0.0, 5.0, None,
                              (op0.Q, op0.R, op0.v), saveat=diffrax.SaveAt(ts=times),
                              stepsize_controller=ctrl)  # fmt: skip
    np.testing.assert_allclose(np.asarray(tr.Q), np.asarray(sol.ys[0]), atol=1e-8)
    np.testing.assert_allclose(np.asarray(tr.R), np.asarray(sol.ys[1]), atol=1e-8)
    np.testing.assert_allclose(np.asarray(tr.v), np.asarray(sol.ys[2]), atol=1e-8)
    np.testing.assert_allclose(float(tr.eg[-1]), float(tsjax.population_loss(end, t)), rtol=1e-12)


@pytest.mark.parametrize("N", [8, pytest.param(20, marks=pytest.mark.slow)])
def test_gradient_flow_then_newton_reaches_a_critical_point_like_bfgs(N):
    """K = 4, M = 2 from a random student: the flow's end refined by find_minimum has
    |grad| < 1e-12; scipy's BFGS on the same closed-form loss from the same start reaches
    the same loss."""
    from scipy.optimize import minimize

    K, M = 4, 2
    s, t = _nets(K, M, N, seed=N)
    end, _ = tsjax.gradient_flow(s, t, times=np.array([0.0, 200.0]))
    at, cp = tsjax.find_minimum(end, t)
    assert cp.grad_norm < 1e-12
    assert cp.kind in ("minimum", "saddle")

    def f(x):
        return tsjax.population_loss(tsjax.TwoLayerNet(x.reshape(K, N) * np.sqrt(N), s.v), t)

    fg = jax.jit(jax.value_and_grad(f))
    res = minimize(lambda x: tuple(np.asarray(a, dtype=np.float64) for a in fg(x)),
                   np.ravel(s.W) / np.sqrt(N), jac=True, method="BFGS",
                   options=dict(gtol=1e-10, maxiter=20000))  # fmt: skip
    np.testing.assert_allclose(cp.loss, res.fun, rtol=1e-6, atol=1e-10)


@pytest.mark.slow
def test_fixed_point_with_two_teachers_and_a_mixture():
    """Several teachers (continual learning): the fixed point of a single-head student
    trained on a 50/50 mixture of two teachers of overlap 0.5 has a vanishing mixture field
    and equal errors on both teachers (the symmetry of the problem)."""
    T = np.array([[1.0, 0.5], [0.5, 1.0]])
    op = tsjax.OrderParams([[0.8, 0.1], [0.1, 0.8]], [[0.7, 0.3], [0.2, 0.6]], T, np.ones((1, 2)),
                           np.eye(2))  # fmt: skip
    cur = tsjax.Mixture([0.5, 0.5])
    fp = tsjax.fixed_point(op, lr=0.3, curriculum=cur)
    d = tsjax.vector_field(fp, lr=0.3, curriculum=cur)
    assert float(jnp.max(jnp.abs(d.Q))) < 1e-15 and float(jnp.max(jnp.abs(d.R))) < 1e-15
    e = np.asarray(tsjax.generalisation_error(fp))
    np.testing.assert_allclose(e[0], e[1], rtol=1e-10)
    assert len(tsjax.stability(fp, lr=0.3, curriculum=cur).eigenvalues) == 7
