"""Reverse-mode gradients through ``solve_ode`` and ``simulate`` against central finite
differences (float64).

ODE: the loss is a scalar function of the trajectory; its gradient is taken with respect to
everything at once (the schedule's parameters, lr_v, noise, weight decay and the initial
order parameters) with one ``jax.value_and_grad``, then checked against central differences
along single hyperparameters and along random directions of the schedule and of the
initial order parameters (relative step 1e-5). Tolerances rtol = 1e-12, atol = 1e-14 make
the finite-difference error (solver error / step ~ 1e-7 relative) small next to 1e-5.

Simulator: the same key on both sides of the difference (common random numbers), so the
finite difference sees only the smooth dependence on the parameter.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tsjax
from tsjax._schedules import ExponentialDecay, InverseTime, LogGridSchedule, PiecewiseLinear

RTOL, ATOL = 1e-12, 1e-14
FD_REL = 1e-5  # relative finite-difference step
TOL = 1e-5  # relative agreement required


def _tree_dot(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return sum(jnp.vdot(x, y) for x, y in zip(la, lb, strict=True))


def _axpy(h, d, p):
    return jax.tree_util.tree_map(lambda di, pi: pi + h * di, d, p)


def _zeros_like(p):
    return jax.tree_util.tree_map(jnp.zeros_like, p)


def _direction(params, name, value):
    """A direction that perturbs only params[name] (by ``value``, a pytree like it)."""
    d = _zeros_like(params)
    d[name] = value
    return d


def _sym(a):
    return 0.5 * (a + a.T)


def _check(loss, params, directions, one_sided=()):
    """grad . d against the central difference along d for every direction (all leaves
    perturbed by FD_REL times their scale, so the step is relative); directions named in
    ``one_sided`` (parameters at 0, where negative values are invalid inputs) use a
    one-sided difference of the same order."""
    value, grad = jax.jit(jax.value_and_grad(loss))(params)
    assert np.isfinite(value)
    loss_j = jax.jit(loss)
    np.testing.assert_allclose(loss_j(params), value, rtol=1e-13)
    for label, d in directions:
        gd = float(_tree_dot(grad, d))
        if label in one_sided:
            # at the boundary of the allowed range (a rate or decay of 0): the second-order
            # one-sided difference (-3 f(0) + 4 f(h) - f(2h)) / 2h, no negative values
            f = [float(loss_j(_axpy(k * FD_REL, d, params))) for k in (0, 1, 2)]
            fd = (-3 * f[0] + 4 * f[1] - f[2]) / (2 * FD_REL)
        else:
            fd = float(loss_j(_axpy(FD_REL, d, params)) - loss_j(_axpy(-FD_REL, d, params)))
            fd /= 2 * FD_REL
        assert abs(gd - fd) <= TOL * abs(fd) + 1e-12 * abs(float(value)), (label, gd, fd)
        assert abs(fd) > 1e-9 * abs(float(value)), (label, "direction without effect", fd)


def _op_directions(params, rng):
    """Random symmetric directions of Q (and T) and random directions of R, v (and v*)."""
    op = params["op0"]
    K, M = op.K, op.M
    dq = 0.1 * _sym(rng.standard_normal((K, K))) * float(jnp.max(jnp.abs(op.Q)))
    dr = rng.standard_normal((K, M)) * jnp.abs(op.R)
    dv = 0.1 * rng.standard_normal(K)
    dop = tsjax.OrderParams(dq, dr, 0.1 * _sym(rng.standard_normal((M, M))), dv, 0.1 * dv[:M])
    return [("op0", _direction(params, "op0", dop))]


def _scalar_directions(params, names):
    out = []
    for name in names:
        x = params[name]
        scale = abs(float(x)) if float(x) != 0 else 1.0
        out.append((name, _direction(params, name, jnp.asarray(scale))))
    return out


def _schedule_directions(params, rng, n=2):
    s = params["lr"]
    out = []
    for i in range(n):
        leaves = [
            rng.standard_normal(np.shape(x)) * np.maximum(np.abs(np.asarray(x)), 1e-2)
            for x in jax.tree_util.tree_leaves(s)
        ]
        ds = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(s), leaves)
        out.append((f"lr schedule {i}", _direction(params, "lr", ds)))
    return out


def _loss_fn(activation, alphas, weights):
    alphas = jnp.asarray(alphas)
    weights = jnp.asarray(weights)

    def loss(p):
        traj = tsjax.solve_ode(
            p["op0"],
            activation=activation,
            lr=p["lr"],
            lr_v=p["lr_v"],
            noise=p["noise"],
            weight_decay=p["weight_decay"],
            alphas=alphas,
            rtol=RTOL,
            atol=ATOL,
        )
        return jnp.sum(weights * traj.eg)

    return loss


@pytest.mark.slow  # suite time; the public-API gradient tests stay in the default suite
def test_grad_erf_plateau_soft_committee():
    """erf, K = M = 2, v = v* = 1 fixed (lr_v = 0), through the plateau and the escape, with a
    piecewise-linear schedule whose knots are free (gradients with respect to kink
    positions). The derivatives with respect to lr_v and weight decay are taken at 0 (with
    kappa > 0 the decay of v switches on at lr_v != 0, a jump at lr_v = 0)."""
    rng = np.random.default_rng(0)
    op0 = tsjax.OrderParams(
        np.diag([0.5, 0.6]), 1e-3 * np.array([[1.0, 0.5], [0.3, 0.9]]), np.eye(2), np.ones(2),
        np.ones(2),
    )  # fmt: skip
    params = dict(
        op0=op0,
        lr=PiecewiseLinear(jnp.array([5.0, 40.0, 90.0]), jnp.array([0.6, 1.0, 0.7])),
        lr_v=jnp.asarray(0.0),
        noise=jnp.asarray(0.05),
        weight_decay=jnp.asarray(0.0),
    )
    alphas = np.array([0.0, 30.0, 80.0, 150.0])
    loss = _loss_fn("erf", alphas, [0.0, 1.0, 1.0, 1.0])
    directions = (
        _scalar_directions(params, ["noise", "weight_decay", "lr_v"])
        + _schedule_directions(params, rng)
        + _op_directions(params, rng)
    )
    _check(loss, params, directions, one_sided=("weight_decay", "lr_v"))


@pytest.mark.slow
def test_grad_erf_k4_m2_both_layers_noise():
    """erf, K = 4, M = 2, both layers trained, output noise 0.1, inverse-time schedule."""
    rng = np.random.default_rng(1)
    K, M = 4, 2
    Q = np.eye(K) + 0.05 * _sym(rng.standard_normal((K, K)))
    op0 = tsjax.OrderParams(Q, 0.05 * rng.standard_normal((K, M)), np.eye(M),
                            0.5 + 0.1 * rng.standard_normal(K), np.ones(M))  # fmt: skip
    params = dict(
        op0=op0,
        lr=InverseTime(jnp.asarray(0.8), jnp.asarray(20.0), jnp.asarray(1.0)),
        lr_v=jnp.asarray(0.5),
        noise=jnp.asarray(0.1),
        weight_decay=jnp.asarray(1e-3),
    )
    loss = _loss_fn("erf", [0.0, 10.0, 50.0, 100.0], [0.0, 1.0, 1.0, 1.0])
    directions = (
        _scalar_directions(params, ["noise", "weight_decay", "lr_v"])
        + _schedule_directions(params, rng)
        + _op_directions(params, rng)
    )
    _check(loss, params, directions)


@pytest.mark.slow
def test_grad_relu():
    """ReLU, K = 3, M = 2, both layers trained, noise, the flexible LogGridSchedule."""
    rng = np.random.default_rng(2)
    K, M = 3, 2
    Q = np.eye(K) + 0.05 * _sym(rng.standard_normal((K, K)))
    op0 = tsjax.OrderParams(Q, 0.1 * rng.standard_normal((K, M)), np.eye(M),
                            0.5 + 0.1 * rng.standard_normal(K), np.ones(M))  # fmt: skip
    lr = LogGridSchedule.fit(InverseTime(0.6, 10.0), alpha_max=60.0, eta_max=1.0, n_knots=6)
    params = dict(
        op0=op0,
        lr=lr,
        lr_v=jnp.asarray(0.3),
        noise=jnp.asarray(0.1),
        weight_decay=jnp.asarray(0.0),
    )
    loss = _loss_fn("relu", [0.0, 5.0, 30.0, 60.0], [0.0, 1.0, 1.0, 1.0])
    directions = (
        _scalar_directions(params, ["noise", "weight_decay", "lr_v"])
        + _schedule_directions(params, rng)
        + _op_directions(params, rng)
    )
    _check(loss, params, directions, one_sided=("weight_decay",))


def test_grad_through_public_api_concrete_checks_skipped():
    """eqx.filter_value_and_grad of solve_ode with a concrete schedule and initial state:
    the Python-side checks (validate, check_rate, divergence) skip tracers; the gradient
    PyTree has the schedule's structure."""
    op0 = tsjax.OrderParams(np.diag([0.5, 0.6]), 0.1 * np.eye(2), np.eye(2), np.ones(2),
                            np.ones(2))  # fmt: skip
    alphas = np.array([0.0, 5.0])

    def loss(sched, op):
        return tsjax.solve_ode(op, lr=sched, noise=0.1, alphas=alphas).eg[-1]

    sched = ExponentialDecay(0.8, 0.05)
    (val, (g_s, g_op)) = eqx.filter_value_and_grad(lambda so: loss(*so))((sched, op0))
    assert isinstance(g_s, ExponentialDecay) and isinstance(g_op, tsjax.OrderParams)
    assert np.isfinite(val) and float(g_s.eta0) != 0 and float(g_s.rate) != 0
    assert np.all(np.isfinite(np.asarray(g_op.Q))) and float(jnp.abs(g_op.R).sum()) > 0
    # (jax.grad with lr a plain float: tests/test_errors.py)


# ------------------------------------------------------------------------------------------
# finite-N simulator


def _nets(N, K, M, seed):
    kt, ks = jax.random.split(jax.random.key(seed))
    return tsjax.init_student(ks, N, K), tsjax.init_teacher(kt, N, M)


def test_grad_simulate_schedule_and_hyperparameters():
    """d(mean final eps_g over 4 seeds)/d(schedule parameters, lr_v, noise) of the
    finite-N simulator (straight through the scans, same keys) against central differences
    with common random numbers; 3 blocks of steps (checkpointed)."""
    N = 100
    student, teacher = _nets(N, 2, 2, seed=3)
    keys = jax.random.split(jax.random.key(5), 4)
    alphas = np.array([0.0, 3.0, 6.0])  # 600 steps: 2 full blocks of 256 and a partial one

    def loss(p):
        run = jax.vmap(
            lambda k: tsjax.simulate(
                student, teacher, k, lr=p["lr"], lr_v=p["lr_v"], noise=p["noise"], alphas=alphas
            ).eg[-1]
        )
        return jnp.mean(run(keys))

    params = dict(
        lr=InverseTime(jnp.asarray(0.9), jnp.asarray(2.0), jnp.asarray(1.0)),
        lr_v=jnp.asarray(0.2),
        noise=jnp.asarray(0.3),
    )
    value, grad = jax.jit(jax.value_and_grad(loss))(params)
    loss_j = jax.jit(loss)
    h = 1e-5
    for name, path in [
        ("eta0", lambda p: p["lr"].eta0),
        ("alpha0", lambda p: p["lr"].alpha0),
        ("power", lambda p: p["lr"].power),
        ("lr_v", lambda p: p["lr_v"]),
        ("noise", lambda p: p["noise"]),
    ]:
        x = float(path(params))
        plus = eqx.tree_at(path, params, jnp.asarray(x * (1 + h)))
        minus = eqx.tree_at(path, params, jnp.asarray(x * (1 - h)))
        fd = float(loss_j(plus) - loss_j(minus)) / (2 * h * x)
        g = float(path(grad))
        assert abs(g - fd) <= 1e-5 * abs(fd), (name, g, fd)
        assert abs(fd) > 1e-8, name
    assert np.isfinite(value)
