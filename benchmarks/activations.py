"""Benchmark: the order-parameter ODE with a quadrature activation (tanh) against the
closed-form erf, in the same run (issue: "any activation").

Cases: K = M = 2 and K = 4, M = 2; first layer trained with lr = 0.5, second layer fixed
(v = v* = 1), no noise; alpha from 0 to 1e3 (21 save points); initial order parameters of
random networks at N = 1000 (the same for both activations). For each case and activation
the script prints the time of the first call (tracing + compilation + run), of a warm call
(the median of ``--repeat`` further calls), their difference (~ the compilation time) and
the ratio tanh / erf. ``--nodes`` / ``--nodes-i4`` select the quadrature (default: tsjax's
defaults).

    python benchmarks/activations.py [--alpha-max 1e3] [--nodes 40] [--nodes-i4 32,20,16,12]
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

import tsjax  # noqa: E402
from tsjax._activations import DEFAULT_NODES, DEFAULT_NODES_I4, Tanh  # noqa: E402

N = 1000
LR = 0.5


def initial_state(K, M, seed=0):
    rng = np.random.default_rng(seed)
    W, Ws = rng.standard_normal((K, N)), rng.standard_normal((M, N))
    return tsjax.OrderParams(W @ W.T / N, W @ Ws.T / N, Ws @ Ws.T / N, np.ones(K), np.ones(M))


def timed(act, op, alphas, repeat):
    t0 = time.perf_counter()
    traj = tsjax.solve_ode(op, activation=act, lr=LR, alphas=alphas)
    traj.eg.block_until_ready()
    first = time.perf_counter() - t0
    warm = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        traj = tsjax.solve_ode(op, activation=act, lr=LR, alphas=alphas)
        traj.eg.block_until_ready()
        warm.append(time.perf_counter() - t0)
    return first, statistics.median(warm), traj


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--alpha-max", type=float, default=1e3)
    p.add_argument("--nodes", type=int, default=DEFAULT_NODES)
    p.add_argument(
        "--nodes-i4",
        type=lambda s: tuple(int(x) for x in s.split(",")),
        default=DEFAULT_NODES_I4,
        help="one int, or four comma-separated ints (per Cholesky direction)",
    )
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--cases", default="2x2,4x2", help="comma-separated KxM cases")
    a = p.parse_args()
    nodes_i4 = a.nodes_i4[0] if len(a.nodes_i4) == 1 else a.nodes_i4
    tanh = Tanh(nodes=a.nodes, nodes_i4=nodes_i4)
    alphas = np.linspace(0.0, a.alpha_max, 21)
    print(f"jax {jax.__version__}, {jax.devices()[0].platform}, float64; lr={LR}, v fixed")
    print(f"tanh: {tanh!r}")
    for case in a.cases.split(","):
        K, M = (int(x) for x in case.split("x"))
        op = initial_state(K, M)
        rows = {}
        for name, act in (("erf (closed form)", "erf"), ("tanh (quadrature)", tanh)):
            first, warm, traj = timed(act, op, alphas, a.repeat)
            rows[name] = (first, warm)
            print(
                f"K={K} M={M} {name:18s} first call {first:7.2f} s   warm {warm:8.3f} s   "
                f"compile ~{first - warm:6.2f} s   eg(alpha={a.alpha_max:g}) = "
                f"{float(traj.eg[-1]):.3e}",
                flush=True,
            )
        (fe, we), (ft, wt) = rows.values()
        print(f"K={K} M={M} ratio tanh/erf: warm {wt / we:.0f}x, first call {ft / fe:.1f}x")


if __name__ == "__main__":
    main()
