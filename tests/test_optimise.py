"""tsjax.optimise_schedule: decreases the objective, respects 0 <= eta <= eta_max, rejects
steps that make the ODE diverge (never returns NaN), objectives and input checks.

Small and fast: K = M = 2, short budgets, few steps, and the explicit ``diffrax.Tsit5``
solver, whose gradient compiles ~3x faster than Rodas5P's; the tests share one setup so
that the compiled gradient is reused (optimise_schedule caches it per setup)."""

import warnings

import diffrax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import tsjax
from tsjax._schedules import InverseTime, LogGridSchedule

OP0 = tsjax.OrderParams(
    np.diag([0.5, 0.6]), 0.1 * np.array([[1.0, 0.5], [0.3, 0.9]]), np.eye(2), np.ones(2),
    np.ones(2),
)  # fmt: skip
KW = dict(rtol=1e-6, atol=1e-9, progress=False, solver=diffrax.Tsit5(), noise=0.1)
A_MAX = 20.0


def _grid(value, eta_max):
    return LogGridSchedule.fit(value, alpha_max=A_MAX, eta_max=eta_max, n_knots=6)


@pytest.mark.slow
def test_final_objective_decreases_and_stays_in_bounds():
    s0 = _grid(0.3, 2.0)
    best, hist = tsjax.optimise_schedule(
        OP0, s0, alpha_max=A_MAX, eta_max=2.0, steps=8, optimizer=optax.adam(0.5), **KW
    )
    assert isinstance(best, LogGridSchedule)
    loss = hist["loss"]
    assert loss.shape == (9,) and np.all(np.isfinite(loss))
    assert hist["scale"].shape == hist["rejected"].shape == (8,)
    assert loss[int(hist["best_step"])] == loss.min() < 0.96 * loss[0]
    eta = np.asarray(best(jnp.linspace(0.0, A_MAX, 201)))
    assert np.all(eta > 0) and np.all(eta <= 2.0)
    np.testing.assert_array_equal(best.alpha_knots, s0.alpha_knots)
    # the returned schedule reproduces the recorded best loss
    tr = tsjax.solve_ode(OP0, lr=best, noise=0.1, alphas=[0.0, A_MAX], rtol=1e-6, atol=1e-9,
                         solver=diffrax.Tsit5())  # fmt: skip
    np.testing.assert_allclose(float(tr.eg[-1]), loss.min(), rtol=1e-10)


def test_divergent_steps_are_rejected_not_propagated():
    """eta_max = 50, far above the divergence threshold, and a huge gradient step: the first
    attempts make the ODE diverge and are rejected with the step halved; no NaN reaches the
    parameters or the history. With no halving allowed the optimisation stops with a
    warning and returns the initial schedule."""
    s0 = _grid(0.3, 50.0)
    best, hist = tsjax.optimise_schedule(
        OP0, s0, alpha_max=A_MAX, eta_max=50.0, steps=2, optimizer=optax.sgd(1e5),
        max_halvings=40, **KW,
    )  # fmt: skip
    assert hist["rejected"][0] > 0 and hist["scale"][0] < 1.0
    assert np.all(np.isfinite(hist["loss"])) and np.all(np.isfinite(np.asarray(best.theta)))
    with pytest.warns(RuntimeWarning, match="rejected"):
        best, hist = tsjax.optimise_schedule(
            OP0, s0, alpha_max=A_MAX, eta_max=50.0, steps=2, optimizer=optax.sgd(1e5),
            max_halvings=0, **KW,
        )  # fmt: skip
    assert hist["loss"].shape == (1,)
    np.testing.assert_array_equal(best.theta, s0.theta)
    # an initial schedule for which the ODE diverges is an input error
    with pytest.raises(ValueError, match="not finite"):
        tsjax.optimise_schedule(OP0, _grid(49.0, 50.0), alpha_max=A_MAX, eta_max=50.0,
                                steps=1, **KW)  # fmt: skip


@pytest.mark.slow
def test_objectives():
    """'mean' is the trapezoidal time average of eps_g; an array of alphas gives the mean of
    eps_g at those times; both decrease."""
    s0 = _grid(0.3, 2.0)
    a = np.linspace(0, A_MAX, 21)
    tr = tsjax.solve_ode(OP0, lr=s0, noise=0.1, alphas=a, rtol=1e-6, atol=1e-9,
                         solver=diffrax.Tsit5())  # fmt: skip
    for objective, expected in [
        ("mean", np.trapezoid(tr.eg, a) / A_MAX),
        (a[[5, 10, 20]], np.mean(np.asarray(tr.eg)[[5, 10, 20]])),
    ]:
        best, hist = tsjax.optimise_schedule(
            OP0, s0, alpha_max=A_MAX, eta_max=2.0, objective=objective, n_eval=21, steps=3,
            optimizer=optax.adam(0.5), **KW,
        )  # fmt: skip
        np.testing.assert_allclose(hist["loss"][0], expected, rtol=1e-8)
        assert hist["loss"].min() < hist["loss"][0]


def test_projection_of_parametric_families():
    s = InverseTime(5.0, -1.0, -2.0).constrain(1.0)
    assert float(s.eta0) == 1.0 and float(s.alpha0) > 0 and float(s.power) == 0.0
    pl = tsjax.PiecewiseLinear([3.0, 1.0, 2.0], [-0.5, 0.5, 3.0]).constrain(1.0)
    np.testing.assert_array_equal(pl.knots, [3.0, 3.0, 3.0])
    np.testing.assert_array_equal(pl.values, [0.0, 0.5, 1.0])


def test_input_checks():
    kw = dict(KW, steps=1)
    with pytest.raises(ValueError, match="eta_max"):
        tsjax.optimise_schedule(OP0, 0.4, alpha_max=5.0, eta_max=-1.0, **kw)
    with pytest.raises(ValueError, match="alpha_max"):
        tsjax.optimise_schedule(OP0, 0.4, alpha_max=0.0, eta_max=1.0, **kw)
    with pytest.raises(ValueError, match="objective"):
        tsjax.optimise_schedule(OP0, 0.4, alpha_max=5.0, eta_max=1.0, objective="max", **kw)
    with pytest.raises(ValueError, match="objective"):
        tsjax.optimise_schedule(OP0, 0.4, alpha_max=5.0, eta_max=1.0, objective=[6.0], **kw)
    with pytest.raises(ValueError, match="trainable"):
        tsjax.optimise_schedule(OP0, tsjax.from_optax(lambda t: 0.1 + 0 * t, 100),
                                alpha_max=5.0, eta_max=1.0, **kw)  # fmt: skip
    with pytest.raises(ValueError, match="bounded by its own eta_max"):
        tsjax.optimise_schedule(OP0, _grid(0.3, 2.0), alpha_max=A_MAX, eta_max=1.0, **kw)
    with pytest.raises(ValueError, match="leaves"):  # a family without projection
        tsjax.optimise_schedule(OP0, tsjax.from_optax(lambda t: 2.0 + 0 * t, 100),
                                alpha_max=A_MAX, eta_max=1.0, **kw)  # fmt: skip
    with pytest.raises(ValueError, match="steps"):
        tsjax.optimise_schedule(OP0, 0.4, alpha_max=5.0, eta_max=1.0, **dict(KW, steps=-1))


@pytest.mark.slow
def test_default_family_solver_and_callable_objective():
    """A number becomes a 32-knot LogGridSchedule; the default solver (Rodas5P); a callable
    objective; InverseTime is optimised over all its parameters and projected."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        best, hist = tsjax.optimise_schedule(OP0, 0.4, alpha_max=5.0, eta_max=1.0, steps=2,
                                             progress=False)  # fmt: skip
    assert isinstance(best, LogGridSchedule) and best.alpha_knots.shape == (32,)
    assert hist["loss"].min() < hist["loss"][0]
    best, hist = tsjax.optimise_schedule(
        OP0, InverseTime(0.9, 5.0), alpha_max=10.0, eta_max=1.0, n_eval=11, steps=3,
        objective=lambda tr: jnp.sum(tr.eg[-5:]), optimizer=optax.adam(0.3), **KW,
    )  # fmt: skip
    assert isinstance(best, InverseTime) and 0 <= float(best.eta0) <= 1.0
    assert hist["loss"].min() < hist["loss"][0]
