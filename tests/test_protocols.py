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


def test_default_path_small_converges_with_a_certificate():
    """The default method (best constant warm start, L-BFGS-B, certificate) at a small
    size with an explicit solver: converged, well below the best constant rate, and the
    certificate of the warm start itself is far from 0 (the full shared case: -m slow)."""
    import diffrax

    kw = dict(alpha_max=10.0, eta_max=3.0, noise=0.3, n_controls=8, progress=False,
              solver=diffrax.Tsit5(), rtol=1e-9, atol=1e-12)  # fmt: skip
    best, hist = tsjax.optimise_schedule(OP0, **kw)
    assert bool(hist["converged"]) and float(hist["certificate"]) < 1e-3
    assert float(hist["final"]) < 0.9 * hist["best_constant"][1]
    _, h0 = tsjax.optimise_schedule(OP0, steps=0, **kw)
    assert float(h0["certificate"]) > 0.1 and not bool(h0["converged"])


@pytest.mark.slow
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


# --------------------------------------------------------------------------------------
# optimise_protocol: several controls jointly, curricula as controls
# --------------------------------------------------------------------------------------


def test_protocol_bad_input():
    pb = tsjax.Problem("erf", lr=0.5)
    ok = {"lr": tsjax.Control(0.0, 1.0, n=2)}
    with pytest.raises(ValueError, match="unknown control 'noise'"):
        tsjax.optimise_protocol(OP0, pb, {"noise": tsjax.Control(0, 1)}, alpha_max=1.0)
    with pytest.raises(ValueError, match="lower < upper"):
        tsjax.Control(1.0, 1.0)
    with pytest.raises(ValueError, match=r"controls\['lr'\].*leaves the bounds"):
        tsjax.optimise_protocol(OP0, pb, {"lr": tsjax.Control(0.0, 0.4)}, alpha_max=1.0)
    with pytest.raises(ValueError, match="TaskSwitch"):
        tsjax.optimise_protocol(OP0, pb, {"replay": tsjax.Control(0.0, 1.0)}, alpha_max=1.0)
    with pytest.raises(ValueError, match="alpha_max"):
        tsjax.optimise_protocol(OP0, pb, ok, alpha_max=0.0)
    with pytest.raises(ValueError, match="controls"):
        tsjax.optimise_protocol(OP0, pb, {}, alpha_max=1.0)
    with pytest.raises(ValueError, match=r"controls\['lr'\]: expected a tsjax.Control"):
        tsjax.optimise_protocol(OP0, pb, {"lr": (0, 1)}, alpha_max=1.0)
    with pytest.raises(ValueError, match="boundaries"):
        tsjax.optimise_protocol(OP0, pb, {"lr": tsjax.Control(0, 1, boundaries=[0.5, 2.0])},
                                alpha_max=1.0)  # fmt: skip
    with pytest.raises(ValueError, match="problem"):
        tsjax.optimise_protocol(OP0, None, ok, alpha_max=1.0)
    # per-value bounds: one per control value
    with pytest.raises(ValueError, match=r"controls\['lr'\].lower: expected one bound per"):
        tsjax.optimise_protocol(OP0, pb, {"lr": tsjax.Control([0, 0], 1.0, n=3)}, alpha_max=1.0)
    with pytest.raises(ValueError, match="different lengths"):
        tsjax.Control([0.0, 0.0], [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match=r"controls\['lr'\]: the initial value"):
        tsjax.optimise_protocol(OP0, pb, {"lr": tsjax.Control([0, 0.6], [1, 1], n=2)},
                                alpha_max=1.0)  # fmt: skip
    # a time-dependent decay and replay fraction are checked like rates
    with pytest.raises(ValueError, match="weight_decay"):
        tsjax.Problem("erf", weight_decay=tsjax.Constant(-1.0)).check()
    with pytest.raises(ValueError, match="replay"):
        tsjax.TaskSwitch([1.0], replay=tsjax.Constant(1.5)).check(2, np.array([0.0, 2.0]))


@pytest.mark.slow
def test_joint_rate_and_decay_protocol_is_locally_optimal():
    """lr and weight decay as joint controls (3 intervals each, K = M = 1, noise 0.5,
    alpha_F = 4): the certificate vanishes, and an independent check of the first-order
    conditions by forward solves alone (no adjoint): moving any control value by +-1e-3
    (inside its bounds) does not lower the objective beyond the second-order term."""
    import diffrax

    noise, a_max = 0.5, 4.0
    kw = dict(rtol=1e-10, atol=1e-13, solver=diffrax.Tsit5())
    pb = tsjax.Problem("erf", lr=0.5, noise=noise, weight_decay=0.05)
    controls = {"lr": tsjax.Control(0.0, 2.0, n=3), "weight_decay": tsjax.Control(0.0, 0.2, n=3)}
    best, hist = tsjax.optimise_protocol(OP0, pb, controls, alpha_max=a_max, progress=False, **kw)
    assert bool(hist["converged"]), hist["certificate"]
    final = float(hist["final"])
    assert final < float(hist["initial"])
    alphas = np.array([0.0, a_max])
    tr = tsjax.solve_ode(OP0, problem=best, alphas=alphas, **kw)
    np.testing.assert_allclose(float(tr.eg[-1]), final, rtol=1e-12)
    assert isinstance(best.weight_decay, tsjax.PiecewiseConstant)
    for name, c in controls.items():
        vals = np.asarray(hist["controls"][name]["values"])
        for i in range(3):
            for d in (-1e-3, 1e-3):
                u = vals.copy()
                u[i] = np.clip(u[i] + d * (c.upper - c.lower), c.lower, c.upper)
                if u[i] == vals[i]:
                    continue
                sched = tsjax.PiecewiseConstant(best.lr.boundaries, u, train_boundaries=False)
                moved = eqx_tree_at(best, name, sched)
                e = float(tsjax.solve_ode(OP0, problem=moved, alphas=alphas, **kw).eg[-1])
                assert e >= final - 1e-9 * final, (name, i, d, e - final)


def eqx_tree_at(problem, name, value):
    import equinox as eqx

    return eqx.tree_at(lambda p: getattr(p, name), problem, value)


@pytest.mark.slow
def test_optimal_replay_fraction_is_not_constant_in_time():
    """Continual learning (Mori, Sarao Mannelli, Mignacco et al., ICLR 2025): after a switch
    from teacher 0 to teacher 1 (K = 2, multi-head student, feature similarity of the
    teachers 0.62), the replay fraction r(alpha) that minimises the mean final error over
    both tasks starts at 0 (focus on the new task) and then rises to about one half: it
    is not constant, and it beats the best constant replay fraction."""
    import sys

    sys.path.insert(0, str(pathlib.Path(__file__).parent))
    from test_continual import _reference_state

    op = _reference_state()
    op0 = tsjax.OrderParams(op.Q, op.R, op.T, np.stack([op.v, op.v]), op.v_star)
    a1, aF = 30.0, 60.0
    pb = tsjax.Problem("erf", lr=1.0, lr_v=1.0, curriculum=tsjax.TaskSwitch([a1], replay=0.3))
    edges = np.linspace(a1, aF, 31)
    # the best constant replay fraction: one control interval after the switch
    const, hc = tsjax.optimise_protocol(
        op0, pb, {"replay": tsjax.Control(0.0, 1.0, boundaries=[a1])}, alpha_max=aF,
        objective="tasks", progress=False,
    )  # fmt: skip
    best, h = tsjax.optimise_protocol(
        op0, pb, {"replay": tsjax.Control(0.0, 1.0, boundaries=edges[:-1])}, alpha_max=aF,
        objective="tasks", progress=False,
    )  # fmt: skip
    assert bool(h["converged"]) and bool(hc["converged"])
    r = np.asarray(h["controls"]["replay"]["values"])[1:]  # after the switch
    r_const = float(hc["controls"]["replay"]["values"][1])
    assert 0.3 < r_const < 0.6
    # focus first: no replay right after the switch; then replay of about one half
    assert np.all(r[:4] < 1e-6), r
    assert np.all(np.abs(r[-10:] - 0.5) < 0.05), r
    gain = 1 - float(h["final"]) / float(hc["final"])
    assert gain > 0.05, gain
    # the optimum, evaluated independently by solve_ode at tight tolerance
    tr = tsjax.solve_ode(op0, problem=best, alphas=np.array([0.0, aF]), rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(float(np.mean(tr.eg_tasks[-1])), float(h["final"]), rtol=1e-6)


@pytest.mark.slow
def test_switch_time_replay_and_rates_jointly():
    """Switch time, replay fraction and both learning rates as joint controls (bounded):
    converges, does at least as well as the replay fraction alone, and the optimal switch
    time satisfies its first-order condition by forward solves alone (moving it by
    +-0.05 does not lower the objective beyond the second-order term)."""
    import sys

    sys.path.insert(0, str(pathlib.Path(__file__).parent))
    from test_continual import _reference_state

    op = _reference_state()
    op0 = tsjax.OrderParams(op.Q, op.R, op.T, np.stack([op.v, op.v]), op.v_star)
    aF = 40.0
    pb = tsjax.Problem("erf", lr=1.0, lr_v=1.0, curriculum=tsjax.TaskSwitch([20.0], replay=0.3))
    edges = list(np.linspace(0.0, aF, 11)[1:-1])
    only, h1 = tsjax.optimise_protocol(
        op0, pb, {"replay": tsjax.Control(0.0, 1.0, boundaries=edges)}, alpha_max=aF,
        objective="tasks", progress=False,
    )  # fmt: skip
    controls = {
        "replay": tsjax.Control(0.0, 1.0, boundaries=edges),
        "switch_at": tsjax.Control(5.0, 35.0),
        "lr": tsjax.Control(0.0, 2.0, n=10),
        "lr_v": tsjax.Control(0.0, 2.0, n=10),
    }
    best, h = tsjax.optimise_protocol(op0, pb, controls, alpha_max=aF, objective="tasks",
                                      progress=False)  # fmt: skip
    assert bool(h["converged"]), h["certificate"]
    assert float(h["final"]) <= float(h1["final"]) * (1 + 1e-9)
    s = float(h["controls"]["switch_at"]["values"][0])
    alphas = np.array([0.0, aF])

    def err(problem):
        tr = tsjax.solve_ode(op0, problem=problem, alphas=alphas, rtol=1e-11, atol=1e-14)
        return float(np.mean(tr.eg_tasks[-1]))

    e0 = err(best)
    np.testing.assert_allclose(e0, float(h["final"]), rtol=1e-6)
    cur = best.curriculum
    for d in (-0.05, 0.05):
        if 5.0 <= s + d <= 35.0:
            moved = tsjax.TaskSwitch([s + d], cur.tasks, replay=cur.replay)
            import equinox as eqx

            e = err(eqx.tree_at(lambda p: p.curriculum, best, moved))
            assert e >= e0 * (1 - 1e-6), (d, e - e0)


def test_time_dependent_decay_and_replay_are_the_constants_when_constant():
    """A Constant schedule as weight decay or replay fraction gives the same run as the
    number (ODE and network simulator), and a piecewise-constant one is stepped onto."""
    import sys

    sys.path.insert(0, str(pathlib.Path(__file__).parent))
    from test_continual import _reference_state

    op0 = _reference_state()
    al = np.linspace(0.0, 20.0, 5)
    kw = dict(lr=1.0, lr_v=1.0, alphas=al)
    a = tsjax.solve_ode(
        op0, weight_decay=0.01, curriculum=tsjax.TaskSwitch([10.0], replay=0.3), **kw
    )
    b = tsjax.solve_ode(
        op0,
        weight_decay=tsjax.Constant(0.01),
        curriculum=tsjax.TaskSwitch([10.0], replay=tsjax.Constant(0.3)),
        **kw,
    )
    np.testing.assert_array_equal(a.eg_tasks, b.eg_tasks)
    pb = tsjax.Problem(
        "erf",
        1.0,
        1.0,
        0.0,
        tsjax.PiecewiseConstant([5.0], [0.0, 0.01]),
        tsjax.TaskSwitch([10.0], replay=tsjax.PiecewiseConstant([15.0], [0.0, 0.3])),
    )
    assert set(np.asarray(pb.breakpoints()).tolist()) == {5.0, 10.0, 15.0}


@pytest.mark.slow
def test_time_dependent_decay_and_replay_in_the_network_simulator():
    k = jax.random.key(0)
    t = tsjax.init_teachers(k, N=200, M=1, P=2, feature_similarity=0.5)
    s = tsjax.init_student(jax.random.fold_in(k, 1), 200, 2, scale=0.1, heads=2)
    kws = dict(lr=1.0, lr_v=1.0, alphas=np.array([0.0, 2.0, 4.0]))
    x = tsjax.simulate(
        s, t, k, weight_decay=0.05, curriculum=tsjax.TaskSwitch([1.0], replay=0.3), **kws
    )
    y = tsjax.simulate(
        s,
        t,
        k,
        weight_decay=tsjax.Constant(0.05),
        curriculum=tsjax.TaskSwitch([1.0], replay=tsjax.Constant(0.3)),
        **kws,
    )
    np.testing.assert_allclose(x.eg_tasks, y.eg_tasks, rtol=1e-12)
