"""Benchmark: the cost of each learning rule's ODE relative to plain SGD, in the same run.

For erf (closed forms) at K = M = 2 and K = 4, M = 2 (second layer trained, sigma = 0.1),
and tanh (quadrature) at K = M = 2: ``tsjax.solve_ode`` from a small random student over
alpha 0 -> 200 with the default solver, compiled (the first call) and warm (best of
``--repeat``), for SGD (the baseline), adaptive back-propagation (beta = 2) and feedback
alignment (a random feedback vector). Adaptive back-propagation evaluates its Gaussian
integrals block by block at rescaled covariances (tsjax._rules); feedback alignment uses
SGD's integrals.

    python benchmarks/rules.py [--repeat 3] [--tiny]
"""

from __future__ import annotations

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

import tsjax  # noqa: E402


def case(activation, K, M, repeat, alpha_max):
    st, te, _ = tsjax.sweep_point(K=K, M=M, N=1000, init_scale=0.1, activation=activation)
    op = tsjax.order_params(st, te)
    al = np.linspace(0.0, alpha_max, 21)
    b = np.asarray(jax.random.normal(jax.random.key(7), (K,)))
    rules = {
        "SGD": tsjax.SGD(),
        "AdaptiveBackprop(2)": tsjax.AdaptiveBackprop(2.0),
        "FeedbackAlignment": tsjax.FeedbackAlignment(feedback=b),
    }
    base = None
    for name, rule in rules.items():

        def run(rule=rule):
            tr = tsjax.solve_ode(op, activation=activation, lr=0.5, lr_v=0.5, noise=0.1,
                                 alphas=al, rule=rule)  # fmt: skip
            return float(tr.eg[-1])

        t0 = time.perf_counter()
        eg = run()
        first = time.perf_counter() - t0
        warm = min(_timed(run) for _ in range(repeat))
        base = warm if base is None else base
        print(f"  {activation} K={K} M={M} {name:>20}: warm {1e3 * warm:8.1f} ms "
              f"({warm / base:4.1f}x SGD), first call {first:5.1f} s, eps_g(end) {eg:.4e}",
              flush=True)  # fmt: skip


def _timed(f):
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--tiny", action="store_true", help="a small version (test suite)")
    a = p.parse_args()
    print(f"device: {jax.devices()[0]}; jax {jax.__version__}; float64; baseline: SGD, same run")
    if a.tiny:
        case("erf", 2, 2, 1, 20.0)
        return
    case("erf", 2, 2, a.repeat, 200.0)
    case("erf", 4, 2, a.repeat, 200.0)
    case("tanh", 2, 2, 1, 200.0)


if __name__ == "__main__":
    main()
