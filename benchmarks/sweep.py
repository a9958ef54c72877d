"""Benchmark: an ODE sweep with ``tsjax.sweep`` against a loop of single ``solve_ode`` calls
and against scipy's ``solve_ivp`` per point, in the same run.

Grid (issue): K = 1..8, 8 learning rates, erf and ReLU, 2 seeds = 256 points; M = 2, second
layer fixed, output noise 0.1, initial networks at N = 1000, alpha from 0 to 1e3 (41 save
times), float64, default tolerances (rtol 1e-8, atol 1e-11).

The CPU cores are exposed to XLA as devices (``--xla_force_host_platform_device_count``, set
here before jax is imported) so that the sweep's chunks are sharded over all of them; a
single ``solve_ode`` and scipy use one core.

Measured, per (K, activation) group of 16 points (8 learning rates x 2 seeds):
  * sweep: ``tsjax.sweep`` on the whole grid with ``group_by=("K", "activation")`` (one
    compiled program per group, no padding or activation switching), first call (with
    compilation) and a second, warm call; and the default single-program sweep (every point
    padded to K_max, erf and ReLU switched per point) for comparison;
  * loop: ``solve_ode`` on one point per group (the middle learning rate), warm;
  * scipy: ``solve_ivp`` (LSODA, same tolerances) on the same point: for erf with a plain
    numpy right-hand side (benchmarks/_numpy_rhs.py), for ReLU (no numpy implementation of
    its I4) with tsjax's jitted ``vector_field`` as the right-hand side.

    python benchmarks/sweep.py [--K-max 8] [--alpha-max 1e3] [--devices 2] [--skip-single]

ReLU with large K is expensive (its I4 is a 73-node quadrature per index tuple, and the
solver's Jacobian costs n = K^2 + KM + K tangents of it): K = 8 takes minutes per point on a
CPU; use --K-max 4 for a run of a few minutes.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def _parse():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--K-max", type=int, default=8)
    p.add_argument("--alpha-max", type=float, default=1e3)
    p.add_argument("--devices", type=int, default=os.cpu_count() or 1)
    p.add_argument(
        "--skip-single",
        action="store_true",
        help="skip the default single-program (padded, switched) sweep",
    )
    return p.parse_args()


ARGS = _parse() if __name__ == "__main__" else None
if ARGS is not None and "XLA_FLAGS" not in os.environ:
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={ARGS.devices}"

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
from scipy.integrate import solve_ivp  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _numpy_rhs  # noqa: E402

import tsjax  # noqa: E402
from tsjax._sweep import sweep, sweep_point  # noqa: E402

M, NOISE, N, RTOL, ATOL = 2, 0.1, 1000, 1e-8, 1e-11
LRS = [float(x) for x in np.round(np.geomspace(0.05, 0.8, 8), 4)]
SEEDS = [0, 1]
ACTS = ["erf", "relu"]


def scipy_point(op, act, lr, alpha_max):
    K = op.K
    T, vs = np.asarray(op.T), np.asarray(op.v_star)
    if act == "erf":
        f = _numpy_rhs.make_rhs(K, M, T, vs, lr, 0.0, NOISE)
    else:
        unravel_q = K * K

        @jax.jit
        def vf(y):
            Q = y[:unravel_q].reshape(K, K)
            R = y[unravel_q : unravel_q + K * M].reshape(K, M)
            v = y[unravel_q + K * M :]
            d = tsjax.vector_field(
                tsjax.OrderParams(Q, R, op.T, v, op.v_star), activation=act, lr=lr, noise=NOISE
            )
            return jax.numpy.concatenate([d.Q.ravel(), d.R.ravel(), d.v])

        def f(t, y):
            return np.asarray(vf(y))

        f(0.0, np.zeros(K * K + K * M + K))  # compile outside the timing
    y0 = np.concatenate([np.ravel(op.Q), np.ravel(op.R), np.asarray(op.v)])
    t0 = time.perf_counter()
    sol = solve_ivp(f, (0.0, alpha_max), y0, method="LSODA", rtol=RTOL, atol=ATOL)
    return time.perf_counter() - t0, sol.status


def main():
    a = ARGS
    Ks = list(range(1, a.K_max + 1))
    alphas = np.concatenate([[0.0], np.geomspace(0.1, a.alpha_max, 40)])
    n_points = len(Ks) * len(LRS) * len(ACTS) * len(SEEDS)
    print(
        f"grid: K = {Ks}, lr = {LRS}, activation = {ACTS}, seeds = {SEEDS}: {n_points} points; "
        f"M = {M}, noise = {NOISE}, N = {N}, alpha 0 -> {a.alpha_max:g}\n"
        f"devices: {len(jax.devices())} x {jax.devices()[0].platform} "
        f"(os.cpu_count() = {os.cpu_count()})\n"
    )
    kw = dict(K=Ks, M=M, activation=ACTS, lr=LRS, noise=NOISE, seed=SEEDS, N=N, alphas=alphas)

    # the whole grid, one program per (K, activation)
    t0 = time.perf_counter()
    ds = sweep(**kw, group_by=("K", "activation"))
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    ds = sweep(**kw, group_by=("K", "activation"))
    warm = time.perf_counter() - t0
    status = np.bincount(ds.status.values.ravel(), minlength=3)
    print(
        f"sweep, group_by=(K, activation): first call {first:.1f} s (with {len(Ks) * 2} "
        f"compilations), warm {warm:.1f} s = {warm / n_points * 1e3:.1f} ms per point "
        f"(status ok/diverged/failed: {status.tolist()})"
    )
    if not a.skip_single:
        t0 = time.perf_counter()
        sweep(**kw)
        t_single_first = time.perf_counter() - t0
        t0 = time.perf_counter()
        sweep(**kw)
        t_single = time.perf_counter() - t0
        print(
            f"sweep, one program (padded to K = {max(Ks)}, erf/ReLU switched per point): "
            f"first call {t_single_first:.1f} s, warm {t_single:.1f} s = "
            f"{t_single / n_points * 1e3:.1f} ms per point"
        )

    # per group: sweep (warm, 16 points), a single solve_ode, scipy
    print(
        f"\n{'K':>2} {'act':>5} | {'sweep/point':>11} | {'solve_ode':>10} {'(compile)':>9} | "
        f"{'scipy LSODA':>11} | {'vs scipy':>8} {'vs loop':>7}"
    )
    rows = []
    lr_mid = LRS[len(LRS) // 2]
    for act in ACTS:
        for K in Ks:
            t0 = time.perf_counter()
            sweep(**{**kw, "K": K, "activation": act})
            t_grp = (time.perf_counter() - t0) / (len(LRS) * len(SEEDS))
            s, t, _ = sweep_point(K=K, M=M, seed=0, N=N)
            op = tsjax.order_params(s, t)
            t0 = time.perf_counter()
            try:
                tsjax.solve_ode(op, activation=act, lr=lr_mid, noise=NOISE, alphas=alphas)
            except tsjax.DivergenceError:
                pass
            t_compile = time.perf_counter() - t0
            t0 = time.perf_counter()
            try:
                tr = tsjax.solve_ode(op, activation=act, lr=lr_mid, noise=NOISE, alphas=alphas)
                tr.eg.block_until_ready()
            except tsjax.DivergenceError:
                pass
            t_one = time.perf_counter() - t0
            t_sp, st = scipy_point(op, act, lr_mid, a.alpha_max)
            rows.append((K, act, t_grp, t_one, t_sp))
            print(
                f"{K:2d} {act:>5} | {t_grp * 1e3:9.1f}ms | {t_one * 1e3:8.1f}ms "
                f"{t_compile:8.1f}s | {t_sp * 1e3:9.1f}ms | {t_sp / t_grp:7.1f}x "
                f"{t_one / t_grp:6.1f}x" + ("" if st == 0 else f"  (scipy status {st})"),
                flush=True,
            )
    for act in ACTS:
        sel = [r for r in rows if r[1] == act and r[0] <= 4]
        if sel:
            sp = sum(r[4] for r in sel) / sum(r[2] for r in sel)
            print(f"{act}, K <= 4: sweep per point is {sp:.1f}x faster than scipy (target 30x)")
    loop_total = sum(r[3] for r in rows) * len(LRS) * len(SEEDS)
    scipy_total = sum(r[4] for r in rows) * len(LRS) * len(SEEDS)
    print(
        f"\nwhole grid (estimated from the middle lr of each group): loop of solve_ode "
        f"{loop_total:.0f} s (+ compilations), scipy {scipy_total:.0f} s; sweep warm {warm:.0f} s"
    )


if __name__ == "__main__":
    main()
