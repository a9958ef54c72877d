"""Learning-rate schedules: values, input checks, use in ``solve_ode`` and ``simulate``, and
the claim of the ``_schedules`` module docstring that breakpoints (jumps and kinks) keep the
ODE error at the solver tolerance, checked against an integration split by hand at the
breakpoints (each piece smooth, restarted from the end state of the previous one)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import tsjax
from tsjax._schedules import (
    Constant,
    ExponentialDecay,
    InverseTime,
    LogGridSchedule,
    OptaxSchedule,
    PiecewiseConstant,
    PiecewiseLinear,
    as_schedule,
    from_optax,
)

OP0 = tsjax.OrderParams(
    np.diag([0.5, 0.6]), 0.1 * np.array([[1.0, 0.5], [0.3, 0.9]]), np.eye(2), np.ones(2),
    np.ones(2),
)  # fmt: skip
OP0_V = tsjax.OrderParams(
    np.diag([0.5, 0.6]), 0.1 * np.array([[1.0, 0.5], [0.3, 0.9]]), np.eye(2),
    np.array([0.4, 0.7]), np.ones(2),
)  # fmt: skip
RTOL, ATOL = 1e-10, 1e-13


# ------------------------------------------------------------------------------------------
# values


def test_values_of_the_families():
    a = jnp.array([0.0, 0.5, 1.0, 2.0, 3.0, 10.0])
    np.testing.assert_allclose(Constant(0.3)(a), 0.3)
    np.testing.assert_allclose(InverseTime(0.8, 2.0, 1.5)(a), 0.8 / (1 + a / 2.0) ** 1.5)
    np.testing.assert_allclose(ExponentialDecay(0.8, 0.1)(a), 0.8 * np.exp(-0.1 * a))
    # left-continuous steps: alpha = boundary still uses the value on the left
    pc = PiecewiseConstant([1.0, 3.0], [0.5, 0.2, 0.1])
    np.testing.assert_allclose(pc(a), [0.5, 0.5, 0.5, 0.2, 0.2, 0.1])
    pl = PiecewiseLinear([1.0, 3.0], [0.6, 0.2])
    np.testing.assert_allclose(pl(a), [0.6, 0.6, 0.6, 0.4, 0.2, 0.2])
    # LogGridSchedule: a power law between knots, constant outside
    lg = LogGridSchedule.fit(InverseTime(0.8, 1.0), alpha_max=100.0, eta_max=1.0, n_knots=3)
    np.testing.assert_allclose(lg.alpha_knots, [1.0, 10.0, 100.0], rtol=1e-14)
    np.testing.assert_allclose(lg.values, 0.8 / (1 + lg.alpha_knots), rtol=1e-12)
    e1, e2 = lg.values[0], lg.values[1]
    s = np.log(3.0) / np.log(10.0)
    np.testing.assert_allclose(lg(3.0), e1 ** (1 - s) * e2**s, rtol=1e-12)
    np.testing.assert_allclose(lg(jnp.array([0.0, 0.5, 200.0])), [e1, e1, lg.values[2]])
    # numbers and callables of alpha
    assert isinstance(as_schedule(0.4), Constant)
    np.testing.assert_allclose(as_schedule(lambda x: 1 / (1 + x))(a), 1 / (1 + a))


def test_log_grid_is_bounded_for_any_theta():
    s = LogGridSchedule(jnp.geomspace(1.0, 100.0, 5), jnp.array([-50.0, -1, 0, 3, 50]), 0.7)
    eta = s(jnp.geomspace(1e-3, 1e3, 400))
    assert np.all(eta > 0) and np.all(eta <= 0.7)
    assert s.constrain(0.7) is s
    with pytest.raises(ValueError, match="eta_max"):
        s.constrain(0.5)


def test_optax_step_conversion():
    """step = alpha * N: an optax schedule of the step count as a schedule of alpha."""
    N = 1000
    fn = optax.exponential_decay(0.5, transition_steps=2000, decay_rate=0.1)
    s = from_optax(fn, N)
    assert isinstance(s, OptaxSchedule)
    a = jnp.array([0.0, 1.0, 2.0, 7.5])
    np.testing.assert_allclose(s(a), 0.5 * 0.1 ** (a * N / 2000), rtol=1e-12)
    pc = optax.piecewise_constant_schedule(0.5, {300: 0.4, 800: 0.5})
    s = from_optax(pc, N, breakpoint_steps=[300, 800])
    np.testing.assert_allclose(s.breakpoints(), [0.3, 0.8])
    # the simulator evaluates at alpha = t / N: exact step counts, new value from step 300 on
    t = jnp.arange(298, 303)
    np.testing.assert_allclose(s(t / N), [0.5, 0.5, 0.2, 0.2, 0.2])
    # the ODE stops just before the jump: every alpha below the breakpoint sees the old value
    below = jnp.nextafter(jnp.asarray(0.3), -jnp.inf)
    assert float(s(below)) == 0.5
    assert float(s(jnp.asarray(0.3))) == pytest.approx(0.2)


@pytest.mark.parametrize(
    "bad, match",
    [
        (Constant(-0.1), "lr"),
        (InverseTime(0.5, 0.0), "alpha0"),
        (PiecewiseConstant([2.0, 1.0], [0.1, 0.2, 0.3]), "non-decreasing"),
        (PiecewiseLinear([1.0, 2.0], [0.1, jnp.nan]), "lr"),
        (LogGridSchedule([1.0, 2.0], [0.0, 0.0], -1.0), "eta_max"),
    ],
)
def test_invalid_schedules_are_rejected(bad, match):
    with pytest.raises(ValueError, match=match):
        tsjax.solve_ode(OP0, lr=bad, alphas=[0.0, 1.0])


def test_shape_errors():
    with pytest.raises(ValueError, match="len"):
        PiecewiseConstant([1.0, 2.0], [0.1, 0.2])
    with pytest.raises(ValueError, match="same length"):
        PiecewiseLinear([1.0, 2.0], [0.1])
    with pytest.raises(ValueError, match="N"):
        OptaxSchedule(lambda t: 0.1, 0)


# ------------------------------------------------------------------------------------------
# every family in solve_ode and simulate

ALL = {
    "number": 0.5,
    "Constant": Constant(0.5),
    "InverseTime": InverseTime(0.8, 3.0),
    "ExponentialDecay": ExponentialDecay(0.8, 0.05),
    "PiecewiseConstant": PiecewiseConstant([2.3, 5.1], [0.8, 0.5, 0.3]),
    "PiecewiseLinear": PiecewiseLinear([1.7, 4.2, 7.0], [0.8, 0.4, 0.3]),
    "LogGridSchedule": LogGridSchedule.fit(
        InverseTime(0.8, 3.0), alpha_max=8.0, eta_max=1.0, alpha_min=0.5, n_knots=5
    ),  # fmt: skip
    "optax": from_optax(optax.cosine_decay_schedule(0.8, 8000, alpha=0.2), 1000),
    "callable": lambda a: 0.8 / (1.0 + a / 3.0),
}


FAST = ["PiecewiseConstant", "LogGridSchedule", "optax"]


@pytest.mark.parametrize(
    "names",
    [
        pytest.param(FAST, id="jumps-loggrid-optax", marks=pytest.mark.slow),
        pytest.param([k for k in ALL if k not in FAST], id="others", marks=pytest.mark.slow),
    ],
)
def test_families_in_solve_ode_and_simulate(names):
    """Each family as lr and as lr_v: the ODE and the simulator run, and the simulator's
    learning curve agrees with the ODE to O(1/sqrt(N)). (Every family compiles both anew:
    the default suite runs three of them, ``-m slow`` the others.)"""
    N = 300
    kt, ks, k = jax.random.split(jax.random.key(0), 3)
    teacher = tsjax.init_teacher(kt, N, 2)
    student = tsjax.init_student(ks, N, 2)
    op0 = tsjax.order_params(student, teacher)
    alphas = np.array([0.0, 2.0, 4.0, 8.0])
    for name in names:
        lr = ALL[name]
        ode = tsjax.solve_ode(op0, lr=lr, lr_v=lr, alphas=alphas)
        assert np.all(np.isfinite(ode.eg)), name
        sim = tsjax.simulate(student, teacher, k, lr=lr, lr_v=lr, alphas=alphas)
        assert np.all(np.isfinite(sim.eg)), name
        np.testing.assert_allclose(sim.eg, ode.eg, rtol=0.25, err_msg=name)
        # the schedule is evaluated, not a constant: a different curve from eta = 0.8
        e2 = tsjax.solve_ode(op0, lr=0.8, lr_v=0.8, alphas=alphas).eg[-1]
        assert abs(float(ode.eg[-1] - e2)) > 1e-3, name


def test_simulate_uses_the_schedule_step_by_step():
    """A schedule that is 0 after the first 10 steps freezes the weights at step 10, and the
    left-continuous step semantics (alpha = t / N = boundary uses the left value) holds."""
    N = 100
    kt, ks, k = jax.random.split(jax.random.key(1), 3)
    teacher = tsjax.init_teacher(kt, N, 2)
    student = tsjax.init_student(ks, N, 2)
    alphas = [0.0, 0.1, 0.11, 0.5]
    # boundary at step 10: steps 0..10 use 0.5, steps >= 11 use 0 -> frozen after 11 steps
    pc = PiecewiseConstant([0.1], [0.5, 0.0])
    tr = tsjax.simulate(student, teacher, k, lr=pc, alphas=alphas)
    assert not np.allclose(tr.Q[1], tr.Q[2])  # step 10 (alpha = 0.1) still moved
    np.testing.assert_array_equal(tr.Q[2], tr.Q[3])
    ref = tsjax.simulate(student, teacher, k, lr=0.5, alphas=alphas[:3])
    np.testing.assert_array_equal(tr.Q[:3], ref.Q)
    # the optax schedule, step = alpha N, jumps at step 11
    ox = from_optax(optax.piecewise_constant_schedule(0.5, {11: 0.0}), N, breakpoint_steps=[11])
    tr2 = tsjax.simulate(student, teacher, k, lr=ox, alphas=alphas)
    np.testing.assert_array_equal(tr2.Q, tr.Q)


# ------------------------------------------------------------------------------------------
# breakpoints: stepping onto jumps and kinks keeps the error at the solver tolerance


def _split_solve(op0, pieces, alphas_end, **kw):
    """Integrate piece by piece: ``pieces`` = [(a0, a1, lr_piece, lr_v_piece)], each a
    smooth schedule on its interval; returns the final order parameters."""
    op = op0
    for a0, a1, lr, lr_v in pieces:
        lr = _const(lr) if np.isscalar(lr) else lr
        lr_v = _const(lr_v) if np.isscalar(lr_v) else lr_v
        tr = tsjax.solve_ode(op, lr=lr, lr_v=lr_v, alphas=[a0, a1], rtol=RTOL, atol=ATOL, **kw)
        op = tr.final
    return op


def _close(op, ref, tol):
    for x, y in [(op.Q, ref.Q), (op.R, ref.R), (op.v, ref.v)]:
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=tol, atol=tol)


class _Affine(tsjax.Schedule):
    """f0 + (alpha - x0) / (x1 - x0) (f1 - f0): one interval of a piecewise-linear schedule,
    smooth (no breakpoints); array fields, so every interval reuses one compilation."""

    x0: jax.Array
    x1: jax.Array
    f0: jax.Array
    f1: jax.Array

    def __init__(self, x0, x1, f0, f1):
        self.x0, self.x1, self.f0, self.f1 = (jnp.asarray(float(x)) for x in (x0, x1, f0, f1))

    def __call__(self, a):
        return self.f0 + (a - self.x0) / (self.x1 - self.x0) * (self.f1 - self.f0)


class _PowerLaw(_Affine):
    """exp of the affine interpolation of log f in log alpha (a LogGridSchedule interval)."""

    def __call__(self, a):
        l0, l1 = jnp.log(self.x0), jnp.log(self.x1)
        g0, g1 = jnp.log(self.f0), jnp.log(self.f1)
        return jnp.exp(g0 + (jnp.log(a) - l0) / (l1 - l0) * (g1 - g0))


def _segment(x0, x1, f0, f1, log=False):
    """The smooth formula of one interval of a piecewise-linear (or, log=True, piecewise
    power-law) schedule (no breakpoints)."""
    return (_PowerLaw if log else _Affine)(x0, x1, f0, f1)


def _const(x):
    return Constant(jnp.asarray(float(x)))


def test_jumps_match_split_integration():
    """PiecewiseConstant for lr and lr_v with jumps at different, off-grid alphas."""
    lr = PiecewiseConstant([3.3, 7.77], [0.9, 0.3, 0.6])
    lr_v = PiecewiseConstant([5.05], [0.5, 0.1])
    alphas = np.array([0.0, 2.0, 6.0, 12.0])
    kw = dict(noise=0.2, weight_decay=1e-2)
    tr = tsjax.solve_ode(OP0_V, lr=lr, lr_v=lr_v, alphas=alphas, rtol=RTOL, atol=ATOL, **kw)
    pieces = [
        (0.0, 3.3, 0.9, 0.5),
        (3.3, 5.05, 0.3, 0.5),
        (5.05, 7.77, 0.3, 0.1),
        (7.77, 12.0, 0.6, 0.1),
    ]
    ref = _split_solve(OP0_V, pieces, 12.0, **kw)
    _close(tr.final, ref, 1e-8)


def test_kinks_match_split_integration():
    knots, vals = [1.5, 4.25, 9.0], [0.9, 0.3, 0.6]
    lr = PiecewiseLinear(knots, vals)
    tr = tsjax.solve_ode(OP0, lr=lr, alphas=[0.0, 5.0, 12.0], rtol=RTOL, atol=ATOL, noise=0.1)
    pieces = [
        (0.0, 1.5, 0.9, 0.0),
        (1.5, 4.25, _segment(1.5, 4.25, 0.9, 0.3), 0.0),
        (4.25, 9.0, _segment(4.25, 9.0, 0.3, 0.6), 0.0),
        (9.0, 12.0, 0.6, 0.0),
    ]
    _close(tr.final, _split_solve(OP0, pieces, 12.0, noise=0.1), 1e-8)


def test_log_grid_matches_split_integration():
    lr = LogGridSchedule.fit(
        PiecewiseConstant([3.0], [0.9, 0.2]), alpha_max=20.0, eta_max=1.0, n_knots=4
    )
    k, e = np.asarray(lr.alpha_knots), np.asarray(lr.values)
    tr = tsjax.solve_ode(OP0, lr=lr, alphas=[0.0, 20.0], rtol=RTOL, atol=ATOL)
    pieces = [(0.0, k[0], float(e[0]), 0.0)]
    pieces += [(k[i], k[i + 1], _segment(k[i], k[i + 1], e[i], e[i + 1], log=True), 0.0)
               for i in range(3)]  # fmt: skip
    _close(tr.final, _split_solve(OP0, pieces, 20.0), 1e-8)


def test_optax_jumps_match_split_integration():
    N = 1000
    fn = optax.piecewise_constant_schedule(0.9, {3300: 1 / 3, 7770: 2.0})
    lr = from_optax(fn, N, breakpoint_steps=[3300, 7770])
    tr = tsjax.solve_ode(OP0, lr=lr, alphas=[0.0, 12.0], rtol=RTOL, atol=ATOL)
    pieces = [(0.0, 3.3, 0.9, 0.0), (3.3, 7.77, 0.3, 0.0), (7.77, 12.0, 0.6, 0.0)]
    _close(tr.final, _split_solve(OP0, pieces, 12.0), 1e-8)


def test_breakpoints_reach_the_solver():
    """The jump times handed to the step-size controller: breakpoints of lr and lr_v, those
    at or after the final time dropped."""
    from tsjax._ode import _jump_ts

    alphas = jnp.array([0.0, 10.0])
    pb = tsjax.Problem(
        lr=PiecewiseConstant([2.0, 10.0], [1, 2, 3]), lr_v=PiecewiseLinear([4.0], [1.0])
    )
    ts = _jump_ts(pb, alphas)
    np.testing.assert_array_equal(np.sort(np.asarray(ts)), [2.0, 4.0, np.inf])
    assert _jump_ts(tsjax.Problem(lr=Constant(1.0), lr_v=InverseTime(1.0, 2.0)), alphas) is None
    # task switches of a curriculum are breakpoints too
    pb = tsjax.Problem(lr=1.0, curriculum=tsjax.TaskSwitch([3.0]))
    np.testing.assert_array_equal(np.asarray(_jump_ts(pb, alphas)), [3.0])
