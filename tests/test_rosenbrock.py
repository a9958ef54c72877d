"""Tests of the Rosenbrock solvers (tsjax._rosenbrock): order, stiff accuracy, Diffrax
integration (PyTree state, SaveAt, step_ts, jumps, events) and gradients."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
import pytest
from scipy.integrate import solve_ivp

jax.config.update("jax_enable_x64", True)

import tsjax  # noqa: E402
from tsjax._rosenbrock import Rodas4, Rodas5P  # noqa: E402

SOLVERS = [(Rodas5P, 5), (Rodas4, 4)]


def _smooth_rhs(t, y, args):
    # nonlinear and non-autonomous, so that the df/dt terms are exercised
    return jnp.stack(
        [-y[1] + 0.3 * jnp.sin(t) * y[0] ** 2, y[0] - 0.5 * y[1] + 0.5 * jnp.cos(2 * t)]
    )


@pytest.fixture(scope="module")
def smooth_reference():
    y0 = np.array([1.0, 0.2])
    ref = solve_ivp(
        lambda t, y: np.asarray(_smooth_rhs(t, y, None)),
        (0.0, 2.0),
        y0,
        method="DOP853",
        rtol=1e-13,
        atol=1e-14,
        dense_output=True,
    )
    return y0, ref.sol


@pytest.mark.parametrize("solver_cls, order", SOLVERS)
def test_convergence_order(solver_cls, order, smooth_reference):
    """Constant steps: the global error ~ h^order; the dense output (local order
    order - 1) converges at least like h^(order - 1)."""
    y0, ref = smooth_reference
    t1 = 2.0
    tt = np.linspace(0.0, t1, 41)[1:-1] + 1e-3  # off the step grid
    errs, dense_errs = [], []
    for n in (10, 20, 40, 80):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(_smooth_rhs),
            solver_cls(),
            0.0,
            t1,
            jnp.asarray(t1 / n),
            jnp.asarray(y0),
            saveat=diffrax.SaveAt(t1=True, dense=True),
            max_steps=100,
        )
        errs.append(np.max(np.abs(np.asarray(sol.ys[-1]) - ref(t1))))
        dense = np.asarray(jax.vmap(sol.evaluate)(jnp.asarray(tt)))
        dense_errs.append(np.max(np.abs(dense - ref(tt).T)))
    slopes = np.log2(np.array(errs[:-1]) / np.array(errs[1:]))
    dense_slopes = np.log2(np.array(dense_errs[:-1]) / np.array(dense_errs[1:]))
    assert np.all(np.abs(slopes - order) < 0.3), slopes
    assert np.mean(dense_slopes) > order - 1.2, dense_slopes


@pytest.mark.parametrize("solver_cls, order", SOLVERS)
def test_embedded_error_estimate_order(solver_cls, order):
    """One step: the error estimate is O(h^order) (embedded method of order order-1)."""
    term = diffrax.ODETerm(_smooth_rhs)
    y0 = jnp.array([1.0, 0.2])
    est = []
    for h in (0.1, 0.05, 0.025):
        _, err, _, _, _ = solver_cls().step(term, 0.3, 0.3 + h, y0, None, None, False)
        est.append(float(jnp.max(jnp.abs(err))))
    slopes = np.log2(np.array(est[:-1]) / np.array(est[1:]))
    assert np.all(np.abs(slopes - order) < 0.3), slopes


@pytest.mark.parametrize("solver_cls", [Rodas5P, Rodas4])
def test_l_stable(solver_cls):
    """Stability function R(z) of y' = lambda y, z = h lambda: |R| <= 1 for Re z <= 0 and
    R(z) -> 0 as z -> -inf."""
    tab = solver_cls._tableau
    s = len(tab.c)

    def R(z):
        u = np.zeros(s, complex)
        for i in range(s):
            u[i] = (z * (1 + tab.a[i] @ u) + tab.C[i] @ u) / (1 / tab.gamma - z)
        return 1 + tab.m @ u

    radii = np.logspace(-3, 7, 60)
    angles = np.linspace(np.pi / 2, 3 * np.pi / 2, 41)
    assert max(abs(R(r * np.exp(1j * a))) for r in radii for a in angles) <= 1 + 1e-12
    assert abs(R(-1e12)) < 1e-10
    assert abs(R(-1e-2) - np.exp(-1e-2)) < 1e-12


def _robertson(t, y, args):
    y1, y2, y3 = y[0], y[1], y[2]
    return jnp.stack(
        [
            -0.04 * y1 + 1e4 * y2 * y3,
            0.04 * y1 - 1e4 * y2 * y3 - 3e7 * y2**2,
            3e7 * y2**2,
        ]
    )


ROBERTSON_TS = np.concatenate([[0.0], np.logspace(-4, 5, 19)])


@pytest.fixture(scope="module")
def robertson_reference():
    def f(t, y):
        return np.array(
            [
                -0.04 * y[0] + 1e4 * y[1] * y[2],
                0.04 * y[0] - 1e4 * y[1] * y[2] - 3e7 * y[1] ** 2,
                3e7 * y[1] ** 2,
            ]
        )

    def jac(t, y):
        return np.array(
            [
                [-0.04, 1e4 * y[2], 1e4 * y[1]],
                [0.04, -1e4 * y[2] - 6e7 * y[1], -1e4 * y[1]],
                [0.0, 6e7 * y[1], 0.0],
            ]
        )

    ts = ROBERTSON_TS
    ref = solve_ivp(f, (0.0, ts[-1]), [1.0, 0.0, 0.0], method="Radau", t_eval=ts,
                    rtol=1e-12, atol=1e-16, jac=jac)  # fmt: skip
    assert ref.success
    return ref.y.T


@pytest.mark.parametrize("solver_cls", [Rodas5P, Rodas4])
def test_robertson_stiff(solver_cls, robertson_reference):
    """Robertson's chemical kinetics to t = 1e5 (stiffness ratio ~1e11)."""
    ts = ROBERTSON_TS
    y0 = np.array([1.0, 0.0, 0.0])
    rtol, atol = 1e-8, 1e-14
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(_robertson),
        solver_cls(),
        0.0,
        ts[-1],
        None,
        jnp.asarray(y0),
        saveat=diffrax.SaveAt(ts=ts),
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        max_steps=10_000,
    )
    assert sol.result == diffrax.RESULTS.successful
    # stiff: an explicit method would need ~1e8 steps here
    assert int(sol.stats["num_steps"]) < 1000
    ys, ref = np.asarray(sol.ys), robertson_reference
    # global error: a modest multiple of the local tolerance
    ratio = np.abs(ys - ref) / (rtol * np.abs(ref) + atol)
    assert np.all(ratio <= 100), ratio.max()
    np.testing.assert_allclose(ys.sum(axis=1), 1.0, atol=1e-12)  # conservation


def test_pytree_state_saveat_step_ts_and_jump():
    """A dict state; a rate that jumps at t = 1 (jump_ts, so made_jump is exercised);
    save times hit exactly by step_ts. Exact solution known."""

    def rate(t):
        return jnp.where(t < 1.0, 1.0, 3.0)

    def f(t, y, args):
        return {"a": -rate(t) * y["a"], "b": jnp.stack([y["b"][1], -y["b"][0]]) * args}

    ts = jnp.linspace(0.0, 2.0, 9)
    y0 = {"a": jnp.array([[1.0, 2.0]]), "b": jnp.array([0.0, 1.0])}
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(f),
        Rodas5P(),
        0.0,
        2.0,
        None,
        y0,
        args=2.0,
        saveat=diffrax.SaveAt(ts=ts),
        stepsize_controller=diffrax.PIDController(
            rtol=1e-10, atol=1e-12, step_ts=ts, jump_ts=jnp.array([1.0])
        ),
    )
    assert sol.result == diffrax.RESULTS.successful
    t = np.asarray(ts)
    integral = np.where(t < 1.0, t, 1.0 + 3.0 * (t - 1.0))
    exact_a = np.exp(-integral)[:, None, None] * np.array([[1.0, 2.0]])
    exact_b = np.stack([np.sin(2 * t), np.cos(2 * t)], axis=1)
    np.testing.assert_allclose(np.asarray(sol.ys["a"]), exact_a, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(np.asarray(sol.ys["b"]), exact_b, rtol=0, atol=1e-8)


def test_event_located_with_dense_output():
    """y' = -y stops at y = 1/2: the event time ln 2 from the dense output."""

    def cond(t, y, args, **kwargs):
        return y - 0.5

    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(lambda t, y, args: -y),
        Rodas5P(),
        0.0,
        10.0,
        None,
        jnp.asarray(1.0),
        stepsize_controller=diffrax.PIDController(rtol=1e-8, atol=1e-10),
        event=diffrax.Event(cond, root_finder=optx.Newton(rtol=1e-12, atol=1e-12)),
    )
    assert sol.result == diffrax.RESULTS.event_occurred
    assert abs(float(sol.ts[-1]) - np.log(2.0)) < 1e-7


def test_grad_matches_finite_differences():
    """jax.grad through diffeqsolve (default RecursiveCheckpointAdjoint)."""

    def f(t, y, p):
        # stiff-ish, nonlinear, time-dependent
        return jnp.stack([-p[0] * y[0] + y[1] ** 2, -50.0 * (y[1] - jnp.cos(p[1] * t))])

    def loss(p, controller):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(f),
            Rodas5P(),
            0.0,
            2.0,
            None,
            jnp.array([1.0, 0.0]),
            args=p,
            saveat=diffrax.SaveAt(ts=jnp.array([0.5, 1.0, 2.0])),
            stepsize_controller=controller,
        )
        return jnp.sum(sol.ys**2)

    p = jnp.array([0.7, 1.3])
    # adaptive steps (the step sizes carry no gradient); central differences of the
    # adaptive solution agree to the tolerance
    pid = diffrax.PIDController(rtol=1e-10, atol=1e-12)
    g_pid = jax.grad(loss)(p, pid)
    eps = 1e-4
    fd = np.array([(loss(p + eps * e, pid) - loss(p - eps * e, pid)) / (2 * eps)
                   for e in jnp.eye(2)])  # fmt: skip
    np.testing.assert_allclose(np.asarray(g_pid), fd, rtol=1e-6, atol=1e-9)


def _pytree_loss(solver, p, t1, adjoint=None):
    """A stiff, nonlinear, time- and parameter-dependent problem on a PyTree state; the
    final time t1 is differentiated too (it moves the last step and the save point)."""

    def f(t, y, args):
        k, w = args["k"], args["w"]
        a, b = y["a"], y["b"]
        da = -k * a + b[0] * b[1] + 0.2 * jnp.sin(w * t)
        db = jnp.stack([-40.0 * (b[0] - jnp.cos(w * t) * a), -b[1] + k * a**2])
        return {"a": da, "b": db}

    # every step checkpointed: with fewer checkpoints than steps the recomputed steps may
    # differ from the forward pass at round-off, which moves the gradient by ~rtol
    adjoint = diffrax.RecursiveCheckpointAdjoint(checkpoints=4096) if adjoint is None else adjoint
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(f),
        solver,
        0.0,
        t1,
        None,
        {"a": p["a0"], "b": jnp.array([0.5, -0.2])},
        args={"k": p["k"], "w": p["w"]},
        saveat=diffrax.SaveAt(ts=jnp.array([0.3, 0.9]), t1=True),
        stepsize_controller=diffrax.PIDController(rtol=1e-9, atol=1e-11),
        adjoint=adjoint,
    )
    return jnp.sum(sol.ys["a"] ** 2) + jnp.sum(jnp.cos(sol.ys["b"]))


@pytest.mark.parametrize(
    "solver_cls", [Rodas5P, pytest.param(Rodas4, marks=pytest.mark.slow)]
)  # the adjoint code is shared; Rodas4 only changes the tableau
def test_custom_vjp_matches_autodiff(solver_cls):
    """The hand-written adjoint of the stages (default) against JAX differentiating every
    operation (custom_vjp=False): the same derivative of the discrete solution, to
    round-off, with respect to parameters, the initial state and the final time."""
    p = dict(a0=jnp.asarray(0.8), k=jnp.asarray(1.3), w=jnp.asarray(2.1))
    t1 = jnp.asarray(1.7)
    grad = jax.jit(jax.grad(_pytree_loss, argnums=(1, 2)), static_argnums=0)
    g_custom = grad(solver_cls(), p, t1)
    g_auto = grad(solver_cls(custom_vjp=False), p, t1)
    for x, y in zip(jax.tree_util.tree_leaves(g_custom), jax.tree_util.tree_leaves(g_auto)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-10, atol=1e-13)
    assert all(float(jnp.abs(x)) > 1e-6 for x in jax.tree_util.tree_leaves(g_custom))


def test_forward_mode_without_custom_vjp():
    """custom_vjp=False keeps forward mode (jax.jvp with diffrax.ForwardMode): the JVP
    along a direction equals the reverse-mode gradient (custom VJP) dotted with it."""
    p = dict(a0=jnp.asarray(0.8), k=jnp.asarray(1.3), w=jnp.asarray(2.1))
    t1 = jnp.asarray(1.7)
    d = dict(a0=jnp.asarray(0.3), k=jnp.asarray(-0.7), w=jnp.asarray(0.5))
    _, jvp = jax.jvp(
        lambda q: _pytree_loss(Rodas5P(custom_vjp=False), q, t1, diffrax.ForwardMode()),
        (p,),
        (d,),
    )
    g = jax.grad(_pytree_loss, argnums=1)(Rodas5P(), p, t1)
    expected = sum(float(g[n] * d[n]) for n in p)
    np.testing.assert_allclose(float(jvp), expected, rtol=1e-10)


def test_solve_ode_teacher_student():
    """The order-parameter ODE (erf, both layers trained, noise) against scipy's Radau."""
    rng = np.random.default_rng(0)
    K, M = 2, 1
    Q = 0.5 * np.eye(K) + 0.01 * rng.standard_normal((K, K))
    Q = (Q + Q.T) / 2
    R = 0.01 * rng.standard_normal((K, M))
    v = 0.3 * np.ones(K)
    op0 = tsjax.OrderParams(Q, R, np.eye(M), v, np.ones(M))
    alphas = np.concatenate([[0.0], np.logspace(-1, 3, 9)])
    kw = dict(activation="erf", lr=0.5, lr_v=0.5, noise=0.1)
    traj = tsjax.solve_ode(op0, alphas=alphas, solver=Rodas5P(), rtol=1e-9, atol=1e-12, **kw)

    n_q = K * K

    def flat_rhs(t, y):
        op = tsjax.OrderParams(
            y[:n_q].reshape(K, K), y[n_q : n_q + K * M].reshape(K, M), jnp.eye(M),
            y[n_q + K * M :], jnp.ones(M),
        )  # fmt: skip
        d = tsjax.vector_field(op, alpha=t, **kw)
        return jnp.concatenate([d.Q.ravel(), d.R.ravel(), d.v])

    rhs = jax.jit(flat_rhs)
    jac = jax.jit(jax.jacfwd(flat_rhs, argnums=1))
    y0 = np.concatenate([Q.ravel(), R.ravel(), v])
    ref = solve_ivp(
        lambda t, y: np.asarray(rhs(t, y)),
        (0.0, alphas[-1]),
        y0,
        method="Radau",
        t_eval=alphas,
        rtol=1e-12,
        atol=1e-14,
        jac=lambda t, y: np.asarray(jac(t, y)),
    )
    np.testing.assert_allclose(np.asarray(traj.Q), ref.y[:n_q].T.reshape(-1, K, K), atol=1e-7)
    np.testing.assert_allclose(np.asarray(traj.v), ref.y[n_q + K * M :].T, atol=1e-7)
