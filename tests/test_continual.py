"""Several teachers, task switches and multi-head students (continual learning).

Independent checks: the reference C++ ODE of Lee, Goldt & Saxe (tests/data/continual), the
single-teacher engines (P = 1 must reproduce them to round-off), the mixture's vector field
against the per-task fields it averages, and the ODE against both simulators at finite N
(tolerance as in tests/test_ode_vs_simulation.py: 4 standard errors of the seed mean plus a
1/N bias budget).
"""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tsjax

DATA = pathlib.Path(__file__).parent / "data" / "continual"


def _reference_state(name="K2M1_single_fa0.5_ra1"):
    init = json.loads((DATA / f"{name}.init.json").read_text())
    K = len(init["Q"])
    R = np.asarray(init["R"]).reshape(K, -1)
    U = np.asarray(init["U"]).reshape(K, -1)
    M = R.shape[1]
    T, S, V = (np.asarray(init[k]).reshape(M, M) for k in ("T", "S", "V"))
    T_tot = np.block([[T, V], [V.T, S]])
    v_star = np.zeros((2, 2 * M))
    v_star[0, :M], v_star[1, M:] = init["th1"], init["th2"]
    return tsjax.OrderParams(init["Q"], np.concatenate([R, U], 1), T_tot, init["h1"], v_star)


def _read_tsv(path):
    rows = [line.split("\t") for line in open(path) if line[0] not in "#s"]
    return np.asarray(rows, dtype=np.float64)


def test_reference_cpp_ode_single_head_switch():
    """Their explicit Euler (dt = 1e-3, float32 integrals) is within 9e-5 absolute, 1.3e-3
    relative of an exact integration (folder README): compare at 2e-4 absolute."""
    op0 = _reference_state()
    ref = _read_tsv(DATA / "K2M1_single_fa0.5_ra1.ode.tsv")[::10]
    tr = tsjax.solve_ode(
        op0, lr=1.0, lr_v=1.0, alphas=ref[:, 1], curriculum=tsjax.TaskSwitch([50.0])
    )
    err = np.abs(np.asarray(tr.eg_tasks) - ref[:, 3:5])
    assert err.max() < 2e-4, err.max()
    # the switch: forgetting of teacher 1 and learning of teacher 2 are both visible
    i50 = np.searchsorted(ref[:, 1], 50.0)
    assert tr.eg_tasks[i50, 0] < 1e-3 < tr.eg_tasks[-1, 0]
    assert tr.eg_tasks[-1, 1] < 1e-3
    # the summaries (exact at the saved switch time)
    f = tsjax.forgetting_transfer(tr, 50.0)
    np.testing.assert_allclose(f["error_old_at_switch"], tr.eg_tasks[i50, 0], rtol=1e-12)
    np.testing.assert_allclose(f["forgetting"], tr.eg_tasks[-1, 0] - tr.eg_tasks[i50, 0])
    assert f["max_forgetting"] >= f["forgetting"] > 0.1
    np.testing.assert_allclose(f["transfer_error"], tr.eg_tasks[i50, 1], rtol=1e-12)
    assert f["transfer"] > 0  # learning teacher 1 helped with teacher 2 (V = 0.62)
    # eg is the error on the task being trained
    np.testing.assert_allclose(tr.eg[: i50 - 1], tr.eg_tasks[: i50 - 1, 0], rtol=1e-14)
    np.testing.assert_allclose(tr.eg[i50 + 1 :], tr.eg_tasks[i50 + 1 :, 1], rtol=1e-14)


def _state(K, M, seed=0, N=2000):
    rng = np.random.default_rng(seed)
    W, Wt = rng.standard_normal((K, N)), rng.standard_normal((M, N))
    return tsjax.OrderParams(W @ W.T / N, W @ Wt.T / N, Wt @ Wt.T / N, np.ones(K), np.ones(M))


@pytest.mark.slow  # suite time
@pytest.mark.parametrize("activation", ["erf", "relu"])
def test_one_teacher_in_the_stacked_form_is_todays_problem(activation):
    op = _state(2, 2)
    alphas = np.linspace(0, 10, 6)
    kw = dict(activation=activation, lr=0.5, lr_v=0.3, noise=0.1, weight_decay=0.01)
    ref = tsjax.solve_ode(op, alphas=alphas, **kw)
    op2 = tsjax.OrderParams(op.Q, op.R, op.T, op.v[None], op.v_star[None])
    tr = tsjax.solve_ode(op2, alphas=alphas, **kw)
    np.testing.assert_allclose(tr.eg, ref.eg, rtol=1e-12)
    np.testing.assert_allclose(tr.v[:, 0], ref.v, rtol=1e-12)
    assert tr.eg_tasks.shape == (6, 1) and ref.eg_tasks.shape == (6, 1)
    # the simulators too (same random numbers: no task numbers are drawn)
    key = jax.random.key(3)
    s = tsjax.init_student(jax.random.key(1), 200, 2, activation=activation)
    t = tsjax.init_teacher(jax.random.key(2), 200, 2, activation=activation)
    a = np.linspace(0, 2, 3)
    r1 = tsjax.simulate(s, t, key, alphas=a, **{k: kw[k] for k in kw if k != "activation"})
    s2 = tsjax.TwoLayerNet(s.W, s.v[None], activation)
    t2 = tsjax.TwoLayerNet(t.W, t.v[None], activation)
    r2 = tsjax.simulate(s2, t2, key, alphas=a, **{k: kw[k] for k in kw if k != "activation"})
    np.testing.assert_allclose(r2.eg, r1.eg, rtol=1e-12)
    c1 = tsjax.simulate_order_params(op, key, N=200, alphas=a, **kw)
    c2 = tsjax.simulate_order_params(op2, key, N=200, alphas=a, **kw)
    np.testing.assert_allclose(c2.eg, c1.eg, rtol=1e-12)


def _two_teachers(K=2, M=1, V=0.5, heads=1, N=1000, seed=0, activation="erf", scale=1.0):
    k = jax.random.key(seed)
    t = tsjax.init_teachers(
        jax.random.fold_in(k, 0), N=N, M=M, P=2, feature_similarity=V, activation=activation
    )
    s = tsjax.init_student(
        jax.random.fold_in(k, 1), N, K, activation=activation, scale=scale, heads=heads
    )
    return s, t


@pytest.mark.slow
def test_mixture_field_is_the_weighted_sum_and_switch_matches_single_task():
    s, t = _two_teachers(K=2, M=1, heads=2)
    op = tsjax.order_params(s, t)
    kw = dict(lr=0.7, lr_v=0.4, noise=0.2, weight_decay=0.05)
    f0 = tsjax.vector_field(op, curriculum=tsjax.SingleTask(0), **kw)
    f1 = tsjax.vector_field(op, curriculum=tsjax.SingleTask(1), **kw)
    fm = tsjax.vector_field(op, curriculum=tsjax.Mixture([0.3, 0.7]), **kw)
    for name in ("Q", "R", "v"):
        a = 0.3 * getattr(f0, name) + 0.7 * getattr(f1, name)
        np.testing.assert_allclose(getattr(fm, name), a, rtol=1e-12, atol=1e-15)
    # a multi-head task trains its own head only
    assert np.all(f0.v[1] == 0) and np.all(f1.v[0] == 0)
    # replay: a fraction r of old-task samples after the switch
    fr = tsjax.vector_field(op, curriculum=tsjax.TaskSwitch([1.0], replay=0.25), alpha=2.0, **kw)
    np.testing.assert_allclose(fr.Q, 0.25 * f0.Q + 0.75 * f1.Q, rtol=1e-12)
    # a switch: teacher 0 then teacher 1, as two single-task runs chained by hand
    alphas = np.array([0.0, 2.0, 4.0])
    tr = tsjax.solve_ode(op, alphas=alphas, curriculum=tsjax.TaskSwitch([2.0]), rtol=1e-11, **kw)
    a = tsjax.solve_ode(op, alphas=alphas[:2], rtol=1e-11, **kw).final
    b = tsjax.solve_ode(
        a, alphas=alphas[1:] - 2.0, curriculum=tsjax.SingleTask(1), rtol=1e-11, **kw
    )
    np.testing.assert_allclose(tr.Q[-1], b.Q[-1], rtol=1e-8)
    np.testing.assert_allclose(tr.v[-1], b.v[-1], rtol=1e-8)


def _ode_and_sims(activation, K, M, heads, curriculum, alphas, seeds=8, N=1000, **kw):
    eg_ode, eg_net, eg_chain = [], [], []
    for seed in range(seeds):
        s, t = _two_teachers(K, M, 0.6, heads, N, seed, activation)
        op = tsjax.order_params(s, t)
        eg_ode.append(tsjax.solve_ode(op, activation=activation, alphas=alphas,
                                      curriculum=curriculum, **kw).eg_tasks)  # fmt: skip
        key = jax.random.key(100 + seed)
        eg_net.append(
            tsjax.simulate(s, t, key, alphas=alphas, curriculum=curriculum, **kw).eg_tasks
        )
        eg_chain.append(
            tsjax.simulate_order_params(op, key, N=N, activation=activation, alphas=alphas,
                                        curriculum=curriculum, **kw).eg_tasks
        )  # fmt: skip
    return (np.stack(x) for x in (eg_ode, eg_net, eg_chain))


def _within_finite_size_error(sim, ode, N, C=10.0):
    diff = sim - ode
    se = diff.std(0, ddof=1) / np.sqrt(diff.shape[0])
    tol = 4 * se + C / N * ode.mean(0) + 1e-12
    assert np.all(np.abs(diff.mean(0)) <= tol), (diff.mean(0), tol)


def test_switch_ode_against_both_simulators_erf_single_head():
    alphas = np.linspace(0, 12, 7)
    ode, net, chain = _ode_and_sims(
        "erf", 2, 1, 1, tsjax.TaskSwitch([6.0]), alphas, lr=1.0, lr_v=1.0
    )
    _within_finite_size_error(net, ode, 1000)
    _within_finite_size_error(chain, ode, 1000)


@pytest.mark.slow
@pytest.mark.parametrize("activation", ["erf", "relu"])
@pytest.mark.parametrize("heads", [1, 2])
@pytest.mark.parametrize("KM", [(2, 1), (3, 2)])
def test_switch_ode_against_both_simulators(activation, heads, KM):
    alphas = np.linspace(0, 20, 11)
    lr = 1.0 if activation == "erf" else 0.3
    ode, net, chain = _ode_and_sims(
        activation, *KM, heads, tsjax.TaskSwitch([10.0]), alphas, lr=lr, lr_v=lr, noise=0.1
    )
    _within_finite_size_error(net, ode, 1000)
    _within_finite_size_error(chain, ode, 1000)


@pytest.mark.slow
def test_mixture_ode_against_both_simulators():
    alphas = np.linspace(0, 12, 7)
    cur = tsjax.TaskSwitch([4.0], replay=0.3)
    ode, net, chain = _ode_and_sims("erf", 2, 1, 2, cur, alphas, lr=1.0, lr_v=1.0)
    _within_finite_size_error(net, ode, 1000)
    _within_finite_size_error(chain, ode, 1000)


def test_init_teachers_exact_overlaps_and_readouts():
    for P, M, V in ((2, 1, 0.6203), (3, 2, -0.3), (2, 3, 1.0)):
        t = tsjax.init_teachers(jax.random.key(0), N=300, M=M, P=P, feature_similarity=V,
                                readout_similarity=0.4)  # fmt: skip
        o = tsjax.teacher_overlaps(t)
        want = (1 - V) * np.eye(P) + V
        np.testing.assert_allclose(o["feature"], want, atol=1e-12)
        T = o["T"]
        np.testing.assert_allclose(T, np.kron(want, np.eye(M)), atol=1e-12)
        if M > 1:
            np.testing.assert_allclose(o["readout"][0, 1:], 0.4, atol=1e-12)
        assert t.v.shape == (P, P * M) and np.all(t.v[0, M:] == 0)


@pytest.mark.slow
def test_gradients_wrt_switch_time_and_replay_fraction():
    """d eps / d (switch time, replay fraction, lr) against central finite differences."""
    s, t = _two_teachers(K=2, M=1, heads=1, N=500)
    op = tsjax.order_params(s, t)
    alphas = np.array([0.0, 5.0])

    def loss(x):
        cur = tsjax.TaskSwitch(x[0], replay=x[1])
        tr = tsjax.solve_ode(op, lr=x[2], lr_v=1.0, alphas=alphas, curriculum=cur,
                             rtol=1e-12, atol=1e-14)  # fmt: skip
        return jnp.mean(tr.eg_tasks[-1])

    x0 = jnp.array([3.0, 0.2, 0.8])
    g = np.asarray(jax.grad(loss)(x0))
    for i, h in enumerate((1e-4, 1e-5)):  # (lr: tests/test_gradients.py)
        e = np.zeros(3)
        e[i] = h
        fd = (loss(x0 + e) - loss(x0 - e)) / (2 * h)
        np.testing.assert_allclose(g[i], fd, rtol=1e-5)


def test_bad_continual_inputs():
    s, t = _two_teachers(K=2, M=1, heads=2, N=100)
    op = tsjax.order_params(s, t)
    a = np.linspace(0, 10, 3)
    with pytest.raises(ValueError, match="switch_at"):
        tsjax.solve_ode(op, lr=1.0, alphas=a, curriculum=tsjax.TaskSwitch([6.0, 4.0]))
    with pytest.raises(ValueError, match="switch_at"):
        tsjax.solve_ode(op, lr=1.0, alphas=a, curriculum=tsjax.TaskSwitch([12.0]))
    with pytest.raises(ValueError, match="probs"):
        tsjax.solve_ode(op, lr=1.0, alphas=a, curriculum=tsjax.Mixture([0.5, 0.6]))
    with pytest.raises(ValueError, match="probs"):
        tsjax.solve_ode(op, lr=1.0, alphas=a, curriculum=tsjax.Mixture([1.0]))
    with pytest.raises(ValueError, match="tasks"):
        tsjax.solve_ode(op, lr=1.0, alphas=a, curriculum=tsjax.TaskSwitch([5.0], tasks=(0, 2)))
    with pytest.raises(ValueError, match="replay"):
        tsjax.solve_ode(op, lr=1.0, alphas=a, curriculum=tsjax.TaskSwitch([5.0], replay=1.5))
    with pytest.raises(ValueError, match="feature_similarity"):
        tsjax.init_teachers(jax.random.key(0), N=10, M=1, P=2, feature_similarity=1.2)
    with pytest.raises(ValueError, match="feature_similarity"):
        tsjax.init_teachers(jax.random.key(0), N=10, M=1, P=3, feature_similarity=-0.9)
    with pytest.raises(ValueError, match="v:"):
        tsjax.OrderParams(op.Q, op.R, op.T, np.ones((3, 2)), op.v_star)
    with pytest.raises(ValueError, match="v_star"):
        tsjax.OrderParams(op.Q, op.R, op.T, op.v, np.ones((2, 3)))
    with pytest.raises(ValueError, match="heads"):
        tsjax.simulate(tsjax.init_student(jax.random.key(0), 100, 2, heads=3), t,
                       jax.random.key(1), lr=1.0, alphas=a)  # fmt: skip
    with pytest.raises(ValueError, match="curriculum"):
        tsjax.solve_ode(op, lr=1.0, alphas=a, curriculum="switch")


@pytest.mark.slow  # suite time
@pytest.mark.parametrize("SLOW", [False, True])
def test_sweep_over_feature_similarity_and_heads_equals_single_calls(SLOW):
    """The continual dimensions of sweep: each point equals solve_ode and the chain from the
    same initial condition (sweep_point) to round-off."""
    alphas = np.linspace(0, 8, 5)
    ds = tsjax.sweep(K=[1, 2], M=1, lr=1.0, lr_v=1.0, teachers=2, feature_similarity=[0.2, 0.9],
                     heads=[1, 2], switch_at=4.0, init_scale=1e-2, alphas=alphas, N=200,
                     simulate="order_params", ode=SLOW)  # fmt: skip
    assert ds.eg_tasks_sim.dims == ("K", "feature_similarity", "heads", "alpha", "task")
    for K, V, H in ((1, 0.2, 2), (2, 0.9, 1)):
        s, t, key = tsjax.sweep_point(K=K, M=1, init_scale=1e-2, N=200, teachers=2,
                                      feature_similarity=V, heads=H)  # fmt: skip
        cur = tsjax.TaskSwitch([4.0])
        op = tsjax.order_params(s, t)
        pt = ds.sel(K=K, feature_similarity=V, heads=H)
        if SLOW:  # the ODE's points (the default suite checks the chain's)
            tr = tsjax.solve_ode(op, lr=1.0, lr_v=1.0, alphas=alphas, curriculum=cur)
            np.testing.assert_allclose(pt.eg_tasks.values, tr.eg_tasks, rtol=1e-9, atol=1e-14)
            np.testing.assert_allclose(pt.v.values[:H, :K], tr.v[-1].reshape(H, K), rtol=1e-9)
        ch = tsjax.simulate_order_params(op, key, N=200, lr=1.0, lr_v=1.0, alphas=alphas,
                                         curriculum=cur)  # fmt: skip
        np.testing.assert_allclose(pt.eg_tasks_sim.values, ch.eg_tasks, rtol=1e-9, atol=1e-14)
    with pytest.raises(ValueError, match="heads"):
        tsjax.sweep(K=2, lr=1.0, teachers=2, heads=3, alphas=alphas)
    with pytest.raises(ValueError, match="feature_similarity"):
        tsjax.sweep(K=2, lr=1.0, feature_similarity=[0.5], alphas=alphas)
    with pytest.raises(ValueError, match="switch_at"):
        tsjax.sweep(K=2, lr=1.0, teachers=2, switch_at=9.0, alphas=alphas)


@pytest.mark.slow
def test_threshold_switch_ode_and_simulators():
    """The ODE switches exactly where the active task's error crosses the threshold (a
    root-found event), and then equals the time-based switch at the realised time; the
    simulators apply the same criterion to the exact eps_g after every step, so their switch
    times scatter around the ODE's by O(1/sqrt(N))."""
    s, t = _two_teachers(K=2, M=1, heads=2, N=1000)
    op = tsjax.order_params(s, t)
    alphas = np.linspace(0, 20, 11)
    cur = tsjax.ThresholdSwitch(0.02)
    kw = dict(lr=1.0, lr_v=1.0, alphas=alphas)
    tr = tsjax.solve_ode(op, curriculum=cur, **kw)
    a_s = float(tr.switched_at[0])
    assert 0 < a_s < 20
    at = tsjax.solve_ode(op, lr=1.0, lr_v=1.0, alphas=np.array([0.0, a_s]), rtol=1e-10)
    np.testing.assert_allclose(at.eg_tasks[-1, 0], 0.02, rtol=1e-6)
    ref = tsjax.solve_ode(op, curriculum=tsjax.TaskSwitch([a_s]), **kw)
    np.testing.assert_allclose(tr.eg_tasks, ref.eg_tasks, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(tr.eg, ref.eg, rtol=1e-7, atol=1e-10)
    sims = [
        tsjax.simulate_order_params(op, jax.random.key(i), N=1000, curriculum=cur, **kw)
        for i in range(4)
    ]
    sw = np.array([float(x.switched_at[0]) for x in sims])
    assert np.all(np.abs(sw - a_s) < 0.2 * a_s), (sw, a_s)
    net = tsjax.simulate(s, t, jax.random.key(9), curriculum=cur, **kw)
    assert abs(float(net.switched_at[0]) - a_s) < 0.2 * a_s
    with pytest.raises(ValueError, match="threshold"):
        tsjax.solve_ode(op, curriculum=tsjax.ThresholdSwitch(-1.0), **kw)
    never = tsjax.solve_ode(op, curriculum=tsjax.ThresholdSwitch(1e-9), **kw)
    assert np.isinf(never.switched_at[0])
    np.testing.assert_allclose(never.eg, never.eg_tasks[:, 0], rtol=1e-14)


def test_problem_object_equals_keywords():
    op = _state(2, 2)
    alphas = np.linspace(0, 5, 3)
    pb = tsjax.Problem("erf", lr=0.5, lr_v=0.2, noise=0.1, weight_decay=0.01)
    a = tsjax.solve_ode(op, problem=pb, alphas=alphas)
    b = tsjax.solve_ode(op, lr=0.5, lr_v=0.2, noise=0.1, weight_decay=0.01, alphas=alphas)
    np.testing.assert_array_equal(a.eg, b.eg)
    s = tsjax.init_student(jax.random.key(0), 100, 2)
    t = tsjax.init_teacher(jax.random.key(1), 100, 2)
    c = tsjax.simulate(s, t, jax.random.key(2), problem=pb, alphas=alphas)
    d = tsjax.simulate(s, t, jax.random.key(2), lr=0.5, lr_v=0.2, noise=0.1,
                       weight_decay=0.01, alphas=alphas)  # fmt: skip
    np.testing.assert_array_equal(c.eg, d.eg)
    with pytest.raises(ValueError, match="problem"):
        tsjax.simulate(s, t, jax.random.key(2), problem=tsjax.Problem("relu"), alphas=alphas)
    with pytest.raises(ValueError, match="lr"):
        tsjax.solve_ode(op, alphas=alphas)


@pytest.mark.parametrize(
    "cur",
    [pytest.param(tsjax.ThresholdSwitch(0.05), marks=pytest.mark.slow),
     pytest.param(tsjax.Mixture([0.25, 0.75]), marks=pytest.mark.slow)],
    ids=["threshold", "mixture"],
)  # fmt: skip
def test_sweep_with_a_fixed_curriculum(cur):
    """curriculum= of sweep: a threshold switch or a mixture for every point, equal to the
    single solve_ode call."""
    alphas = np.linspace(0, 10, 6)
    ds = tsjax.sweep(K=2, M=1, lr=1.0, lr_v=1.0, teachers=2, feature_similarity=0.5,
                     heads=2, curriculum=cur, alphas=alphas, N=300)  # fmt: skip
    s, t, _ = tsjax.sweep_point(K=2, M=1, N=300, teachers=2, feature_similarity=0.5, heads=2)
    tr = tsjax.solve_ode(tsjax.order_params(s, t), lr=1.0, lr_v=1.0, alphas=alphas,
                         curriculum=cur)  # fmt: skip
    np.testing.assert_allclose(ds.eg_tasks.values, tr.eg_tasks, rtol=1e-8, atol=1e-13)
    with pytest.raises(ValueError, match="curriculum"):
        tsjax.sweep(K=2, lr=1.0, teachers=2, switch_at=5.0, curriculum=cur, alphas=alphas)
