"""tsjax.sweep: exactness against single calls, one compilation per shape class, chunking,
sharding over devices, divergence flags, netCDF round trip."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

import tsjax
from tsjax._simulate_op import simulate_order_params
from tsjax._sweep import TRACE_COUNTS, _Plan, load_sweep, save_sweep, sweep, sweep_point

RTOL = 3e-10  # round-off, amplified by the dynamics (padded vs unpadded arithmetic)


def _close(a, b, what):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, what
    np.testing.assert_allclose(a, b, rtol=RTOL, atol=1e-15, err_msg=what)


def test_sweep_equals_single_solve_ode_and_simulate_one_compilation():
    """Padded K (1 padded to 3), switched activation (erf/linear), several lr and seeds, a
    partial last chunk: one trace of the chunk function; every point equals solve_ode (and
    simulate, for a subset) to 3e-10."""
    alphas = np.linspace(0.0, 30.0, 7)
    TRACE_COUNTS.clear()
    kw = dict(noise=0.1, lr_v=0.2, weight_decay=0.01)
    ds = sweep(
        K=[1, 3],
        M=2,
        activation=["erf", "linear"],
        lr=[0.3, 0.6],
        seed=[0, 1],
        N=60,
        alphas=alphas,
        simulate="network",
        chunk_size=5,  # 16 points: chunks of 5, the last one padded
        **kw,
    )
    assert dict(TRACE_COUNTS) == {"ode+network": 1}
    assert ds.eg.dims == ("K", "activation", "lr", "seed", "alpha")
    assert (ds.status.values == 0).all() and (ds.status_sim.values == 0).all()
    for K in (1, 3):
        for act in ("erf", "linear"):
            for lr in (0.3, 0.6):
                for seed in (0, 1):
                    pt = ds.sel(K=K, activation=act, lr=lr, seed=seed)
                    s, t, key = sweep_point(K=K, M=2, seed=seed, N=60, activation=act)
                    op0 = tsjax.order_params(s, t)
                    tr = tsjax.solve_ode(op0, activation=act, lr=lr, alphas=alphas, **kw)
                    what = f"ODE K={K} {act} lr={lr} seed={seed}"
                    _close(pt.eg, tr.eg, what)
                    _close(pt.Q[:K, :K], tr.Q[-1], what)
                    _close(pt.R[:K], tr.R[-1], what)
                    _close(pt.v[:K], tr.v[-1], what)
                    _close(pt.T, op0.T, what)
                    assert np.isnan(pt.Q.values[K:]).all() and np.isnan(pt.v.values[K:]).all()
                    if K == 1 and lr == 0.3 and seed == 0:  # padded points
                        sim = tsjax.simulate(s, t, key, lr=lr, alphas=alphas, **kw)
                        what = f"simulate K={K} {act}"
                        _close(pt.eg_sim, sim.eg, what)
                        _close(pt.Q_sim[:K, :K], sim.Q[-1], what)
                        _close(pt.v_sim[:K], sim.v[-1], what)
    # a second grid of the same shape class does not compile again
    sweep(
        K=[1, 3],
        M=2,
        activation=["erf", "linear"],
        lr=[0.2, 0.4],
        seed=[5, 6],
        N=60,
        alphas=alphas,
        simulate="network",
        chunk_size=5,
        **kw,
    )
    assert dict(TRACE_COUNTS) == {"ode+network": 1}


def test_sweep_order_param_chain_padded_K_and_M_equals_single_calls():
    alphas = np.linspace(0.0, 10.0, 5)
    kw = dict(lr=0.5, noise=0.1, lr_v=0.3)
    TRACE_COUNTS.clear()
    ds = sweep(
        K=[1, 2], M=[1, 2], seed=0, N=40, alphas=alphas, simulate="order_params", ode=False, **kw
    )
    assert dict(TRACE_COUNTS) == {"op": 1}
    assert "eg" not in ds and "eg_sim" in ds
    for K, M in ((1, 1), (1, 2), (2, 1)):  # padded in K, in M, in both
        pt = ds.sel(K=K, M=M)
        s, t, key = sweep_point(K=K, M=M, seed=0, N=40)
        ch = simulate_order_params(tsjax.order_params(s, t), key, N=40, alphas=alphas, **kw)
        what = f"chain K={K} M={M}"
        _close(pt.eg_sim, ch.eg, what)
        _close(pt.Q_sim[:K, :K], ch.Q[-1], what)
        _close(pt.R_sim[:K, :M], ch.R[-1], what)
        _close(pt.v_sim[:K], ch.v[-1], what)


def test_large_grid_is_chunked_without_materialising_everything():
    """A 10^5-point grid is planned in chunks of bounded size (nothing is run here)."""
    from tsjax._sweep import SWEEP_DIMS

    values = {d: [0] for d in SWEEP_DIMS}
    values.update(
        K=[1, 2, 4, 8],
        M=[2],
        activation=[tsjax.get_activation("erf")],
        lr=list(np.linspace(0.1, 1.0, 250)),
        seed=list(range(100)),
        lr_v=[0.0],
        noise=[0.0],
        weight_decay=[0.0],
        init_scale=[1.0],
        feature_similarity=[1.0],
        readout_similarity=[1.0],
        switch_at=[None],
        heads=[1],
    )
    is_dim = {d: True for d in SWEEP_DIMS}
    common = dict(
        rtol=1e-8,
        atol=1e-11,
        solver=None,
        max_steps=1000,
        max_norm=10.0,
        sim=None,
        ode=True,
        batch_size=1,
        v0=1.0,
        v_star=1.0,
        dtype="float64",
        teachers=1,
    )
    plan = _Plan(
        values,
        is_dim,
        values["activation"],
        100,
        np.linspace(0, 1, 11),
        common,
        (),
        None,
        None,
        None,
    )
    assert plan.n_points == 100_000
    sizes = [len(m) for _, m in plan.chunks()]
    assert sum(sizes) == 100_000
    assert max(sizes) <= 1024 * len(jax.devices()) and len(sizes) >= 20
    g, members = next(iter(plan.chunks()))
    inputs = plan.point_inputs(plan.groups[g], members)
    assert all(x.shape[0] == plan.groups[g].chunk for x in inputs.values())


def test_group_by_diverged_points_and_netcdf_round_trip(tmp_path):
    """group_by="K": one trace per group; a diverging lr is flagged (status 1, alpha of
    divergence) and masked, for the ODE and the chain; save/load round trip."""
    alphas = np.linspace(0.0, 20.0, 11)
    TRACE_COUNTS.clear()
    ds = sweep(
        K=[1, 2], lr=[0.5, 6.0], N=50, alphas=alphas, simulate="order_params", group_by=["K"]
    )
    assert dict(TRACE_COUNTS) == {"ode+op": 2}
    assert ds.attrs["n_groups"] == 2
    assert ds.Q.sizes["k"] == 2 and np.isnan(ds.Q.sel(K=1).values[..., 1, :]).all()
    ok, bad = ds.sel(K=2, lr=0.5), ds.sel(K=2, lr=6.0)
    assert int(ok.status) == 0 and np.isinf(float(ok.diverged_at))
    assert int(bad.status) == 1 and 0 < float(bad.diverged_at) < 20
    after = alphas >= float(bad.diverged_at)
    assert np.isnan(bad.eg.values[after]).all() and np.isfinite(bad.eg.values[~after]).all()
    assert np.isnan(bad.Q.values).all() and np.isnan(bad.v.values).all()
    assert int(bad.status_sim) == 1 and np.isnan(bad.Q_sim.values).all()
    assert np.isfinite(float(bad.diverged_at_sim))
    # the single call raises for the diverged point
    s, t, _ = sweep_point(K=2, N=50)
    with pytest.raises(tsjax.DivergenceError):
        tsjax.solve_ode(tsjax.order_params(s, t), lr=6.0, alphas=alphas)
    # netCDF round trip, written atomically (no temporary files left)
    path = tmp_path / "sweep.nc"
    save_sweep(ds, path)
    assert sorted(os.listdir(tmp_path)) == ["sweep.nc"]
    back = load_sweep(path)
    for name in ds.data_vars:
        np.testing.assert_array_equal(back[name].values, ds[name].values)
        assert back[name].dims == ds[name].dims
    assert list(back.lr.values) == [0.5, 6.0] and list(back.K.values) == [1, 2]
    assert back.attrs["N"] == 50 and back.attrs["group_by"] == "K"


def test_bad_arguments_are_named():
    a = [0.0, 1.0]
    with pytest.raises(ValueError, match="K"):
        sweep(K=[0, 1], lr=0.5, alphas=a)
    with pytest.raises(ValueError, match="lr"):
        sweep(K=1, lr=[-0.1], alphas=a)
    with pytest.raises(ValueError, match="group_by"):
        sweep(K=1, lr=0.5, alphas=a, group_by=("lr",))
    with pytest.raises(ValueError, match="simulate"):
        sweep(K=1, lr=0.5, alphas=a, simulate="yes")
    with pytest.raises(ValueError, match="activation"):
        sweep(K=1, lr=0.5, alphas=a, activation="nope")
    with pytest.raises(ValueError, match="distinct"):
        sweep(K=[1, 1], lr=0.5, alphas=a)


_SHARDED = textwrap.dedent(
    """
    import json, sys
    import jax
    jax.config.update("jax_enable_x64", True)
    import numpy as np
    from tsjax._sweep import TRACE_COUNTS, sweep
    ds = sweep(K=[1, 2], lr=[0.3, 0.8, 6.0], seed=[0, 1], N=40,
               alphas=np.linspace(0, 10, 6), chunk_size=8)
    out = {k: np.nan_to_num(ds[k].values, nan=-1.0, posinf=-2.0).tolist()
           for k in ("eg", "Q", "R", "status", "diverged_at", "num_steps")}
    out["n_devices"] = len(jax.devices())
    out["traces"] = dict(TRACE_COUNTS)
    print("RESULT" + json.dumps(out))
    """
)


def _run_sharded(n_devices):
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={n_devices}"
    env["JAX_PLATFORMS"] = "cpu"
    p = subprocess.run(
        [sys.executable, "-c", _SHARDED], env=env, capture_output=True, text=True, timeout=600
    )
    assert p.returncode == 0, p.stderr[-3000:]
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT") :])


@pytest.mark.slow
def test_sharded_over_4_cpu_devices_equals_unsharded():
    one, four = _run_sharded(1), _run_sharded(4)
    assert one["n_devices"] == 1 and four["n_devices"] == 4
    assert one["traces"] == four["traces"] == {"ode": 1}
    for k in ("eg", "Q", "R", "status", "diverged_at", "num_steps"):
        np.testing.assert_array_equal(np.asarray(four[k]), np.asarray(one[k]), err_msg=k)
    assert 1 in np.asarray(one["status"])  # lr = 6 diverges


@pytest.mark.slow
def test_sweep_relu_padded_equals_solve_ode():
    alphas = np.linspace(0.0, 20.0, 5)
    ds = sweep(K=[1, 2], activation=["relu", "erf"], lr=0.3, noise=0.05, N=50, alphas=alphas)
    for K in (1, 2):
        s, t, _ = sweep_point(K=K, N=50)
        tr = tsjax.solve_ode(
            tsjax.order_params(s, t), activation="relu", lr=0.3, noise=0.05, alphas=alphas
        )
        pt = ds.sel(K=K, activation="relu")
        _close(pt.eg, tr.eg, f"relu K={K}")
        _close(pt.Q[:K, :K], tr.Q[-1], f"relu K={K}")


def test_default_chunk_uses_the_whole_group_on_accelerators():
    from tsjax._sweep import default_chunk

    # an accelerator: every point of the group at once, unless memory caps it
    assert default_chunk(8192, 10**9, "gpu") == 8192
    assert default_chunk(8192, 3000, "gpu") == 3000
    assert default_chunk(8192, 10**9, "tpu") == 8192
    # CPU: about 1/20 of a group, at least 8, at most 1024 per device
    assert default_chunk(8192, 10**9, "cpu") == 410
    assert default_chunk(100, 10**9, "cpu") == 8
    assert default_chunk(10**6, 10**9, "cpu") == 1024
    assert default_chunk(5, 10**9, "cpu") == 5
