"""Optimal learning-rate protocols: optimise_schedule's default against a direct
optimal-control optimum (tests/data/optimal, CasADi/ipopt, multiple and single shooting
agreeing to 10 digits) and against an independent direct method written here with scipy,
and the Pontryagin certificate."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tsjax

DATA = pathlib.Path(__file__).parent / "data" / "optimal"
OP0 = tsjax.OrderParams([[0.25]], [[0.0]], [[1.0]], [1.0], [1.0])


def _reference():
    rows = [line.split() for line in open(DATA / "perceptron_optimal_lr.tsv") if line[0] != "#"]
    return np.asarray(rows, dtype=np.float64)


def _final_eps(schedule, alpha_max, noise, op0=OP0):
    tr = tsjax.solve_ode(op0, lr=schedule, noise=noise, alphas=np.array([0.0, alpha_max]),
                         rtol=1e-11, atol=1e-14)  # fmt: skip
    return float(tr.eg[-1])


def test_default_reaches_the_optimal_control_optimum_with_a_certificate():
    """The shared case (erf perceptron, noise 0.3, Q0 = 0.25, 0 <= eta <= 3, alpha_F = 50):
    optimum 1.048151249e-3 for a piecewise-constant control on 100 uniform intervals."""
    ref = _reference()
    best, hist = tsjax.optimise_schedule(OP0, alpha_max=50.0, eta_max=3.0, noise=0.3,
                                         progress=False)  # fmt: skip
    eps = _final_eps(best, 50.0, 0.3)
    assert abs(eps / 1.048151249e-3 - 1) < 1e-4, eps  # target: 0.1%
    assert bool(hist["converged"]) and float(hist["certificate"]) < 1e-3
    # the protocol itself: the optimal-control values, interval by interval
    np.testing.assert_allclose(best.values, ref[:, 2], atol=2e-3 * ref[:, 2].max())
    # better than the best constant rate, whose own certificate is far from 0
    assert eps < 0.5 * hist["best_constant"][1]
    _, h0 = tsjax.optimise_schedule(OP0, alpha_max=50.0, eta_max=3.0, noise=0.3, steps=0,
                                    progress=False)  # fmt: skip
    assert float(h0["certificate"]) > 0.3 and not bool(h0["converged"])
    a, S = tsjax.switching_function(hist)
    assert a.shape == S.shape == (100,)


@pytest.mark.slow
def test_against_an_independent_scipy_direct_method():
    """A piecewise-constant control on 8 intervals, solve_ivp on tsjax's right-hand side and
    L-BFGS-B with finite-difference gradients (an independent direct method), K = M = 1,
    alpha_F = 5, from a zero-initialised student (Q0 = R0 = 0)."""
    from scipy.integrate import solve_ivp
    from scipy.optimize import minimize

    op0 = tsjax.OrderParams([[0.0]], [[0.0]], [[1.0]], [1.0], [1.0])
    n, a_max, eta_max, noise = 8, 5.0, 2.0, 0.2
    edges = np.linspace(0, a_max, n + 1)
    f = jax.jit(
        lambda Q, R, eta: tsjax.vector_field(
            tsjax.OrderParams(Q, R, jnp.ones((1, 1)), jnp.ones(1), jnp.ones(1)), lr=eta, noise=noise
        )
    )

    def eps_of(x):
        y = np.zeros(2)
        for i in range(n):

            def rhs(t, y, eta=x[i]):
                d = f(y[:1].reshape(1, 1), y[1:].reshape(1, 1), eta)
                return np.array([float(d.Q[0, 0]), float(d.R[0, 0])])

            y = solve_ivp(rhs, (edges[i], edges[i + 1]), y, rtol=1e-11, atol=1e-13).y[:, -1]
        return float(tsjax.generalisation_error(tsjax.OrderParams([[y[0]]], [[y[1]]], [[1.0]],
                                                                  [1.0], [1.0])))  # fmt: skip

    res = minimize(eps_of, np.full(n, 1.0), method="L-BFGS-B", bounds=[(0, eta_max)] * n,
                   options=dict(ftol=1e-14, gtol=1e-10, eps=1e-7))  # fmt: skip
    best, hist = tsjax.optimise_schedule(op0, alpha_max=a_max, eta_max=eta_max, noise=noise,
                                         n_controls=n, progress=False)  # fmt: skip
    eps = _final_eps(best, a_max, noise, op0)
    assert eps <= res.fun * (1 + 1e-6), (eps, res.fun)
    assert abs(eps / res.fun - 1) < 1e-4
    np.testing.assert_allclose(best.values, res.x, atol=2e-2)
    assert bool(hist["converged"])


def test_bad_input_and_frozen_boundaries():
    with pytest.raises(ValueError, match="eta_max"):
        tsjax.optimise_schedule(OP0, alpha_max=5.0, eta_max=0.0, progress=False)
    with pytest.raises(ValueError, match="alpha_max"):
        tsjax.optimise_schedule(OP0, alpha_max=-1.0, eta_max=1.0, progress=False)
    with pytest.raises(ValueError, match="n_controls"):
        tsjax.optimise_schedule(OP0, alpha_max=5.0, eta_max=1.0, n_controls=0, progress=False)
    with pytest.raises(ValueError, match="objective"):
        tsjax.optimise_schedule(OP0, alpha_max=5.0, eta_max=1.0, n_controls=2, steps=1,
                                objective=lambda tr: tr.eg, progress=False)  # fmt: skip
    pc = tsjax.PiecewiseConstant([1.0, 2.0], [0.1, 0.2, 0.3], train_boundaries=False)
    t = pc.trainable()
    assert t.boundaries is False and t.values is True
    pl = tsjax.PiecewiseLinear([1.0, 2.0], [0.1, 0.2], train_knots=False)
    assert pl.trainable().knots is False


@pytest.mark.slow
def test_optimised_protocol_carried_to_the_network_simulator():
    """The optimal protocol of the shared case run by online SGD at N = 1000 (16 seeds): the
    mean final eps_g equals the ODE's within finite-size error (4 standard errors plus a
    10/N bias budget, as in tests/test_ode_vs_simulation.py), and beats the best constant
    rate by far."""
    best, hist = tsjax.optimise_schedule(OP0, alpha_max=50.0, eta_max=3.0, noise=0.3,
                                         n_controls=50, progress=False)  # fmt: skip
    N, alphas = 1000, np.array([0.0, 50.0])
    diffs, finals = [], []
    for seed in range(16):
        k = jax.random.key(seed)
        t = tsjax.init_teacher(k, N, 1)  # T = 1 exactly
        # a student with Q = 0.25 and R = 0 exactly: half a unit vector orthogonal to w*
        z = jax.random.normal(jax.random.fold_in(k, 1), (N,))
        z = z - (z @ t.W[0]) / (t.W[0] @ t.W[0]) * t.W[0]
        s = tsjax.TwoLayerNet((0.5 * jnp.sqrt(N) * z / jnp.linalg.norm(z))[None], 1.0)
        sim = tsjax.simulate(s, t, jax.random.fold_in(k, 2), lr=best, noise=0.3, alphas=alphas)
        ode = tsjax.solve_ode(tsjax.order_params(s, t), lr=best, noise=0.3, alphas=alphas)
        diffs.append(float(sim.eg[-1] - ode.eg[-1]))
        finals.append(float(ode.eg[-1]))
    diffs = np.asarray(diffs)
    se = diffs.std(ddof=1) / np.sqrt(len(diffs))
    assert abs(diffs.mean()) <= 4 * se + 10 / N * np.mean(finals), (diffs.mean(), se)
    assert np.mean(finals) + diffs.mean() < 0.6 * hist["best_constant"][1]
