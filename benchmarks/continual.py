"""Benchmark: continual learning (two teachers, one task switch), against baselines measured
in the same run.

1. One switch run (erf, K = 2, M = 1 per teacher, single head, both layers at eta = 1,
   V = 0.6203, alpha 0 -> 100, switch at 50, the reference case of tests/data/continual):
   tsjax's ODE (warm, default solver, rtol 1e-8) against a plain numpy explicit-Euler
   integration of the same equations at dt = 1e-3 (what the authors' C++ code does,
   benchmarks/_numpy_rhs.py for the right-hand side), and the authors' C++/Eigen ODE figure
   measured on this kind of machine (43-50 s per run, quoted: their code is not in the
   repository). Printed: times and the largest difference in eps between the two.
2. The forgetting-vs-feature-similarity curve: ``tsjax.sweep`` over 101 values of V
   (teachers=2, switch at 50, alpha to 100) for a single-head student, compilation
   included, in one call (target: under 30 s on 2 cores, less than one run of the C++
   code), and the same with both heads settings (202 points).

    python benchmarks/continual.py [--devices 2] [--n-V 101] [--tiny]

``--tiny`` (used by the test suite) runs a small version of each figure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def _parse():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", type=int, default=os.cpu_count() or 1)
    p.add_argument("--n-V", type=int, default=101)
    p.add_argument("--tiny", action="store_true")
    return p.parse_args()


ARGS = _parse()
if "XLA_FLAGS" not in os.environ:
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={ARGS.devices}"

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _numpy_rhs  # noqa: E402

import tsjax  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CPP_SECONDS = "43-50 s"  # the authors' C++ ODE, one run, this kind of machine (issue #18)


def reference_state():
    init = json.loads((ROOT / "tests/data/continual/K2M1_single_fa0.5_ra1.init.json").read_text())
    R = np.asarray(init["R"]).reshape(2, 1)
    U = np.asarray(init["U"]).reshape(2, 1)
    V = float(init["V"][0])
    T = np.array([[init["T"][0], V], [V, init["S"][0]]])
    v_star = np.array([[1.0, 0.0], [0.0, 1.0]])
    return tsjax.OrderParams(init["Q"], np.concatenate([R, U], 1), T, init["h1"], v_star)


def euler_numpy(op, alpha_max, switch, dt):
    K = op.K
    T, vs = np.asarray(op.T), np.asarray(op.v_star)
    rhs = [_numpy_rhs.make_rhs(K, 2, T, vs[p], 1.0, 1.0, 0.0) for p in range(2)]
    y = np.concatenate([np.ravel(op.Q), np.ravel(op.R), np.ravel(op.v)])
    n = int(round(alpha_max / dt))
    n_switch = int(round(switch / dt))
    for i in range(n):
        y = y + dt * rhs[int(i >= n_switch)](i * dt, y)
    Q = y[: K * K].reshape(K, K)
    R = y[K * K : K * K + 2 * K].reshape(K, 2)
    v = y[K * K + 2 * K :]
    C = np.block([[Q, R], [R.T, T]])
    return np.array([_numpy_rhs.eg(C, v, vs[p]) for p in range(2)])


def one_run(alpha_max, switch, dt):
    op = reference_state()
    alphas = np.linspace(0.0, alpha_max, 101)
    cur = tsjax.TaskSwitch([switch])

    def run():
        tr = tsjax.solve_ode(op, lr=1.0, lr_v=1.0, alphas=alphas, curriculum=cur)
        return np.asarray(tr.eg_tasks[-1])

    t0 = time.perf_counter()
    run()
    first = time.perf_counter() - t0
    warm = []
    for _ in range(3):
        t0 = time.perf_counter()
        e_tsjax = run()
        warm.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    e_np = euler_numpy(op, alpha_max, switch, dt)
    t_np = time.perf_counter() - t0
    print(f"1. one switch run (K=2, M=1, alpha 0 -> {alpha_max:g}, switch at {switch:g}):")
    print(f"   tsjax solve_ode      : {1e3 * min(warm):8.1f} ms warm ({first:.1f} s first call)")
    print(f"   numpy Euler dt={dt:g} : {1e3 * t_np:8.1f} ms  ({t_np / min(warm):.0f}x tsjax)")
    print(f"   authors' C++ ODE     : {CPP_SECONDS} (quoted)")
    print(f"   final eps (teacher 1, 2): tsjax {e_tsjax}, numpy Euler {e_np}, "
          f"max |diff| {np.max(np.abs(e_tsjax - e_np)):.1e} (the Euler error)")  # fmt: skip


def forgetting_curve(n_V, alpha_max, switch, heads):
    V = list(np.round(np.linspace(0.0, 1.0, n_V), 6))
    alphas = np.linspace(0.0, alpha_max, 41)
    t0 = time.perf_counter()
    ds = tsjax.sweep(K=2, M=1, lr=1.0, lr_v=1.0, teachers=2, feature_similarity=V,
                     switch_at=switch, heads=heads, init_scale=1e-3, v0=1e-3, alphas=alphas,
                     N=10_000)  # fmt: skip
    elapsed = time.perf_counter() - t0
    n = int(ds.status.size)
    e = ds.eg_tasks.sel(task=0)
    i_s = int(np.searchsorted(alphas, switch))
    forgetting = (e.isel(alpha=-1) - e.isel(alpha=i_s)).values
    print(f"2. forgetting vs V, {n} points (heads={heads}) as one sweep: {elapsed:.1f} s "
          f"with compilation on {len(jax.devices())} devices (target < 30 s; C++: "
          f"{CPP_SECONDS} per point)")  # fmt: skip
    print(f"   status counts: {np.bincount(ds.status.values.ravel(), minlength=5)}; "
          f"forgetting at V = 0, 0.5, 1: "
          f"{np.round(np.take(forgetting, [0, len(V) // 2, -1], axis=0), 4).tolist()}")  # fmt: skip
    return elapsed


def main():
    print(f"device: {jax.devices()[0]} x {len(jax.devices())}; jax {jax.__version__}; float64")
    if ARGS.tiny:
        one_run(10.0, 5.0, 1e-2)
        forgetting_curve(5, 10.0, 5.0, 1)
        return
    one_run(100.0, 50.0, 1e-3)
    forgetting_curve(ARGS.n_V, 100.0, 50.0, 1)
    forgetting_curve(ARGS.n_V, 100.0, 50.0, [1, 2])


if __name__ == "__main__":
    main()
