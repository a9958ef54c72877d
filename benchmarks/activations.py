"""Benchmark: the order-parameter ODE with a quadrature activation (tanh) against the
closed-form erf, in the same run (issue: "any activation"; target: tanh at most 20x erf).

Cases: K = M = 2 and K = 4, M = 2; first layer trained with lr = 0.5, second layer fixed
(v = v* = 1), no noise; alpha from 0 to 1e3 (21 save points); initial order parameters of
random networks at N = 1000 (the same for both activations). For each case, solver and
activation the script prints the time of the first call (tracing + compilation + run), of
a warm call (the median of ``--repeat`` further calls), their difference (~ the
compilation time), the number of solver steps and the ratio tanh / erf.

Solvers: ``rodas5p`` is what ``tsjax.solve_ode`` uses by default (the headline figure);
``tsit5`` (explicit, ``solver=diffrax.Tsit5()``) is printed for comparison, labelled.
``--nodes`` / ``--nodes-i4`` / ``--nodes-joint`` select the quadrature (default: tsjax's
defaults; ``--nodes-joint none``: the contracted I4 sums block by block, the method before
the joint rule).

    python benchmarks/activations.py [--alpha-max 1e3] [--solvers rodas5p,tsit5]
        [--nodes 40] [--nodes-i4 32,16,12,10] [--nodes-joint 20,20,14,14]
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax

jax.config.update("jax_enable_x64", True)

import diffrax  # noqa: E402
import numpy as np  # noqa: E402

import tsjax  # noqa: E402
import tsjax._ode as _ode  # noqa: E402
from tsjax._activations import (  # noqa: E402
    DEFAULT_NODES,
    DEFAULT_NODES_I4,
    DEFAULT_NODES_JOINT,
    Tanh,
)

N = 1000
LR = 0.5
SOLVERS = {"rodas5p": None, "tsit5": diffrax.Tsit5()}  # None: solve_ode's default
LABELS = {"rodas5p": "Rodas5P (default)", "tsit5": "Tsit5 (explicit)"}


def initial_state(K, M, seed=0):
    rng = np.random.default_rng(seed)
    W, Ws = rng.standard_normal((K, N)), rng.standard_normal((M, N))
    return tsjax.OrderParams(W @ W.T / N, W @ Ws.T / N, Ws @ Ws.T / N, np.ones(K), np.ones(M))


_STEPS = {}
_solve = _ode._solve


def _counting_solve(*args, **kwargs):
    traj, info = _solve(*args, **kwargs)
    _STEPS["n"] = info["num_steps"]
    return traj, info


_ode._solve = _counting_solve  # records the number of solver steps of the last call


def timed(act, op, alphas, repeat, solver):
    kw = dict(activation=act, lr=LR, alphas=alphas, solver=solver)
    t0 = time.perf_counter()
    traj = tsjax.solve_ode(op, **kw)
    traj.eg.block_until_ready()
    first = time.perf_counter() - t0
    warm = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        traj = tsjax.solve_ode(op, **kw)
        traj.eg.block_until_ready()
        warm.append(time.perf_counter() - t0)
    return first, statistics.median(warm), traj, int(_STEPS["n"])


def _ints(s):
    if s.lower() == "none":
        return None
    return tuple(int(x) for x in s.split(","))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--alpha-max", type=float, default=1e3)
    p.add_argument("--nodes", type=int, default=DEFAULT_NODES)
    p.add_argument(
        "--nodes-i4",
        type=_ints,
        default=DEFAULT_NODES_I4,
        help="one int, or four comma-separated ints (per Cholesky direction)",
    )
    p.add_argument(
        "--nodes-joint",
        type=_ints,
        default=DEFAULT_NODES_JOINT,
        help="one int, comma-separated ints (per direction), or 'none' (block by block)",
    )
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--cases", default="2x2,4x2", help="comma-separated KxM cases")
    p.add_argument("--solvers", default="rodas5p,tsit5", help=f"comma-separated of {list(SOLVERS)}")
    a = p.parse_args()
    nodes_i4 = a.nodes_i4[0] if len(a.nodes_i4) == 1 else a.nodes_i4
    nj = a.nodes_joint
    nodes_joint = nj[0] if nj is not None and len(nj) == 1 else nj
    tanh = Tanh(nodes=a.nodes, nodes_i4=nodes_i4, nodes_joint=nodes_joint)
    alphas = np.linspace(0.0, a.alpha_max, 21)
    print(f"jax {jax.__version__}, {jax.devices()[0].platform}, float64; lr={LR}, v fixed")
    print(f"tanh: {tanh!r}")
    for case in a.cases.split(","):
        K, M = (int(x) for x in case.split("x"))
        op = initial_state(K, M)
        for sname in a.solvers.split(","):
            rows = {}
            for name, act in (("erf (closed form)", "erf"), ("tanh (quadrature)", tanh)):
                first, warm, traj, steps = timed(act, op, alphas, a.repeat, SOLVERS[sname])
                rows[name] = (first, warm)
                print(
                    f"K={K} M={M} {LABELS[sname]:17s} {name:18s} first call {first:7.2f} s   "
                    f"warm {warm:8.3f} s   compile ~{first - warm:6.2f} s   steps {steps:5d}   "
                    f"eg(alpha={a.alpha_max:g}) = {float(traj.eg[-1]):.3e}",
                    flush=True,
                )
            (fe, we), (ft, wt) = rows.values()
            print(
                f"K={K} M={M} {LABELS[sname]:17s} ratio tanh/erf: warm {wt / we:.0f}x, "
                f"first call {ft / fe:.1f}x",
                flush=True,
            )


if __name__ == "__main__":
    main()
