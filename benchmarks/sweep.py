"""Benchmark: an ODE sweep with ``tsjax.sweep`` against a loop of single ``solve_ode`` calls
and against scipy's ``solve_ivp`` per point, in the same run.

Grid (issue #3): K = 1..8, 8 learning rates, erf and ReLU, 2 seeds = 256 points; M = 2,
second layer fixed, output noise 0.1, initial networks at N = 1000, alpha from 0 to 1e3
(41 save times), float64, rtol 1e-8, atol 1e-11 for every solver (tsjax's and scipy's).

The CPU cores are exposed to XLA as devices (``--xla_force_host_platform_device_count``, set
here before jax is imported) so that the sweep's chunks are sharded over all of them; a
single ``solve_ode`` and scipy use one core.

Solver: ``--solver tsit5`` (default here) integrates with Diffrax's explicit Tsit5, the
faster choice for alpha up to ~1e3 (see ``solve_ode``'s docstring); ``--solver default``
uses solve_ode's default, the Rosenbrock method Rodas5P (robust for long, stiff runs). The
table also shows the default solver's sweep for K <= ``--K-compare`` so that both are
measured in the same run.

Measured, per (K, activation) group of 16 points (8 learning rates x 2 seeds):
  * per group: ``tsjax.sweep`` on the group (first call with compilation, then a warm
    call; ``vmap_size`` points per device in lockstep: ``--vmap-erf`` for erf, ``--vmap-relu``
    for ReLU); the sums over the groups are the whole grid's times (what
    ``sweep(..., group_by=("K", "activation"))`` does in one call);
  * loop: warm ``solve_ode`` (same solver) on every point of the group, per point;
  * scipy: ``solve_ivp`` on every point of the group (K <= ``--K-compare``; the middle
    learning rate only above), with LSODA (the fastest scipy method here) and with RK45
    (solve_ivp's default): for erf with a plain vectorised numpy right-hand side
    (benchmarks/_numpy_rhs.py), for ReLU (no numpy implementation of its I4) with tsjax's
    jitted ``vector_field`` as the right-hand side.

    python benchmarks/sweep.py [--K-max 8] [--alpha-max 1e3] [--devices 2]
                               [--solver tsit5|default] [--K-compare 4]

ReLU with large K is expensive: its I4 is a 73-node quadrature per index tuple
(K(K+1)/2 x L(L+1)/2 tuples, L = K + M).
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
    p.add_argument("--solver", choices=["tsit5", "default"], default="tsit5")
    p.add_argument("--K-compare", type=int, default=4)
    p.add_argument("--vmap-erf", type=int, default=8)
    p.add_argument("--vmap-relu", type=int, default=1)
    return p.parse_args()


ARGS = _parse() if __name__ == "__main__" else None
if ARGS is not None and "XLA_FLAGS" not in os.environ:
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={ARGS.devices}"

import diffrax  # noqa: E402
import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
from scipy.integrate import solve_ivp  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _numpy_rhs  # noqa: E402

import tsjax  # noqa: E402
from tsjax._sweep import STATUS, sweep, sweep_point  # noqa: E402

M, NOISE, N, RTOL, ATOL = 2, 0.1, 1000, 1e-8, 1e-11
LRS = [float(x) for x in np.round(np.geomspace(0.05, 0.8, 8), 4)]
SEEDS = [0, 1]
ACTS = ["erf", "relu"]


def scipy_point(op, act, lr, alpha_max, method):
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
    sol = solve_ivp(f, (0.0, alpha_max), y0, method=method, rtol=RTOL, atol=ATOL)
    return time.perf_counter() - t0, sol.status


def warm(fn):
    fn()
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main():
    a = ARGS
    Ks = list(range(1, a.K_max + 1))
    alphas = np.concatenate([[0.0], np.geomspace(0.1, a.alpha_max, 40)])
    n_points = len(Ks) * len(LRS) * len(ACTS) * len(SEEDS)
    solver = diffrax.Tsit5() if a.solver == "tsit5" else None
    sname = "Tsit5" if a.solver == "tsit5" else "Rodas5P (default)"
    print(
        f"grid: K = {Ks}, lr = {LRS}, activation = {ACTS}, seeds = {SEEDS}: {n_points} points; "
        f"M = {M}, noise = {NOISE}, N = {N}, alpha 0 -> {a.alpha_max:g}; solver {sname}, "
        f"rtol {RTOL:g}, atol {ATOL:g}\n"
        f"devices: {len(jax.devices())} x {jax.devices()[0].platform} "
        f"(os.cpu_count() = {os.cpu_count()})\n",
        flush=True,
    )
    kw = dict(M=M, lr=LRS, noise=NOISE, seed=SEEDS, N=N, alphas=alphas, solver=solver)

    print(
        f"per point, ms (sweep: {sname} on the group alone; 'Rodas' = the same with the "
        f"default solver; loop: solve_ode one point at a time; scipy over the same points)"
    )
    print(
        f"{'K':>2} {'act':>5} | {'sweep':>8} {'Rodas':>8} | {'loop':>8} | {'LSODA':>8} "
        f"{'RK45':>8} | {'vs LSODA':>8} {'vs RK45':>7} {'vs loop':>7}"
    )
    rows = []
    n_grp = len(LRS) * len(SEEDS)
    t_first = t_grid = 0.0
    status = np.zeros(len(STATUS), int)
    for act in ACTS:
        vm = a.vmap_erf if act == "erf" else a.vmap_relu
        for K in Ks:
            gkw = {**kw, "K": K, "activation": act, "vmap_size": vm}
            t0 = time.perf_counter()
            sweep(**gkw)
            t_first += time.perf_counter() - t0
            t0 = time.perf_counter()
            ds = sweep(**gkw)
            t_grp = time.perf_counter() - t0
            t_grid += t_grp
            t_grp /= n_grp
            status += np.bincount(ds.status.values.ravel(), minlength=len(STATUS))
            t_rod = float("nan")
            if K <= a.K_compare and solver is not None:
                t_rod, _ = warm(lambda gkw=gkw: sweep(**{**gkw, "solver": None}))
                t_rod /= n_grp
            pts = [(lr, seed) for lr in LRS for seed in SEEDS]
            if K > a.K_compare:
                pts = [(LRS[len(LRS) // 2], 0)]
            ops = {
                seed: tsjax.order_params(*sweep_point(K=K, M=M, seed=seed, N=N)[:2])
                for seed in SEEDS
            }
            solve = jax.jit(
                lambda op, lr, act=act: (
                    tsjax.solve_ode(
                        op, activation=act, lr=lr, noise=NOISE, alphas=alphas, solver=solver
                    ).eg
                )
            )
            solve(ops[0], LRS[0]).block_until_ready()
            t_loop = t_ls = t_rk = 0.0
            bad = 0
            for lr, seed in pts:
                t0 = time.perf_counter()
                solve(ops[seed], lr).block_until_ready()
                t_loop += time.perf_counter() - t0
                dt, st = scipy_point(ops[seed], act, lr, a.alpha_max, "LSODA")
                t_ls += dt
                bad += st != 0
                if K <= a.K_compare:
                    dt, st = scipy_point(ops[seed], act, lr, a.alpha_max, "RK45")
                    t_rk += dt
                    bad += st != 0
            t_loop, t_ls = t_loop / len(pts), t_ls / len(pts)
            t_rk = t_rk / len(pts) if K <= a.K_compare else float("nan")
            rows.append((K, act, t_grp, t_loop, t_ls, t_rk))
            print(
                f"{K:2d} {act:>5} | {t_grp * 1e3:8.2f} {t_rod * 1e3:8.2f} | {t_loop * 1e3:8.2f} | "
                f"{t_ls * 1e3:8.1f} {t_rk * 1e3:8.1f} | {t_ls / t_grp:7.1f}x {t_rk / t_grp:6.1f}x "
                f"{t_loop / t_grp:6.1f}x" + ("" if not bad else f"  ({bad} scipy runs failed)"),
                flush=True,
            )
    print()
    for act in ACTS:
        sel = [r for r in rows if r[1] == act and r[0] <= 4]
        if sel:
            ls = sum(r[4] for r in sel) / sum(r[2] for r in sel)
            rk = sum(r[5] for r in sel) / sum(r[2] for r in sel)
            worst = min(r[4] / r[2] for r in sel)
            print(
                f"{act}, K <= 4: sweep per point is {ls:.1f}x faster than scipy LSODA (worst K: "
                f"{worst:.1f}x), {rk:.1f}x faster than scipy RK45 (target 30x)"
            )
    print(
        f"whole grid ({n_points} points, one sweep per (K, activation) group, {sname}): first "
        f"calls {t_first:.1f} s (with {len(rows)} compilations), warm {t_grid:.1f} s = "
        f"{t_grid / n_points * 1e3:.1f} ms per point (status: "
        + ", ".join(f"{n} {name}" for n, name in zip(status.tolist(), STATUS.values()))
        + ")"
    )
    loop_total = sum(r[3] for r in rows) * n_grp
    scipy_total = sum(r[4] for r in rows) * n_grp
    print(
        f"whole grid: sweep warm {t_grid:.0f} s; loop of solve_ode {loop_total:.0f} s "
        f"(+ compilations); scipy LSODA {scipy_total:.0f} s (K > {a.K_compare}: estimated "
        f"from the middle learning rate)"
    )


if __name__ == "__main__":
    main()
