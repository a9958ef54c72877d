"""Benchmark: optimal learning-rate protocols. ``tsjax.optimise_schedule`` (defaults:
piecewise-constant control, best-constant warm start, L-BFGS-B with exact adjoint gradients)
against a direct method written with scipy in the same run (the same piecewise-constant
control, ``solve_ivp`` on tsjax's jitted right-hand side, L-BFGS-B with finite-difference
gradients), both to 0.1% of the optimum of the control grid.

Settings (erf, second layer fixed, eps_g(alpha_F) under 0 <= eta <= eta_max):
  1. the shared optimal-control case (tests/data/optimal): K = M = 1, noise 0.3, Q0 = 0.25,
     eta_max = 3, alpha_F = 50 (optimum 1.048151249e-3 on 100 intervals, CasADi/ipopt:
     95 s single shooting, 440 s multiple shooting on this kind of machine, quoted);
  2. K = 2, M = 1 from a near-zero student, noise 0.1, eta_max = 3, alpha_F = 5.
For each: tsjax with 100 intervals (time including compilation) and, on a grid of
``--n-scipy`` intervals (default 25), tsjax (with compilation, and compiled) and scipy to
the same accuracy.

    python benchmarks/protocols.py [--n-scipy 25]
"""

from __future__ import annotations

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from scipy.integrate import solve_ivp  # noqa: E402
from scipy.optimize import minimize  # noqa: E402

import tsjax  # noqa: E402

SETTINGS = {
    "perceptron (shared case)": dict(
        op0=tsjax.OrderParams([[0.25]], [[0.0]], [[1.0]], [1.0], [1.0]),
        alpha_max=50.0, eta_max=3.0, noise=0.3, reference=1.048151249e-3,
    ),
    "K=2, M=1 near zero": dict(
        op0=tsjax.OrderParams(np.diag([1e-6, 2e-6]), [[1e-4], [-5e-5]], [[1.0]], [1.0, 1.0],
                              [1.0]),
        alpha_max=5.0, eta_max=3.0, noise=0.1, reference=None,
    ),
}  # fmt: skip


def final_eps(op0, schedule, alpha_max, noise):
    tr = tsjax.solve_ode(op0, lr=schedule, noise=noise, alphas=np.array([0.0, alpha_max]),
                         rtol=1e-11, atol=1e-14)  # fmt: skip
    return float(tr.eg[-1])


def scipy_direct(op0, n, alpha_max, eta_max, noise, x0):
    """Piecewise-constant control, solve_ivp (LSODA) per interval on tsjax's RHS, L-BFGS-B
    with finite differences."""
    K, M = op0.K, op0.M
    T, vs, v = op0.T, op0.v_star, op0.v
    edges = np.linspace(0.0, alpha_max, n + 1)

    @jax.jit
    def rhs_j(y, eta):
        Q = y[: K * K].reshape(K, K)
        R = y[K * K :].reshape(K, M)
        d = tsjax.vector_field(tsjax.OrderParams(Q, R, T, v, vs), lr=eta, noise=noise)
        return jnp.concatenate([d.Q.ravel(), d.R.ravel()])

    def eps(x):
        y = np.concatenate([np.ravel(op0.Q), np.ravel(op0.R)])
        for i in range(n):
            sol = solve_ivp(lambda t, y, e=x[i]: np.asarray(rhs_j(y, e)),
                            (edges[i], edges[i + 1]), y, method="LSODA", rtol=1e-10,
                            atol=1e-12)  # fmt: skip
            y = sol.y[:, -1]
        Q, R = y[: K * K].reshape(K, K), y[K * K :].reshape(K, M)
        return float(tsjax.generalisation_error(tsjax.OrderParams(Q, R, T, v, vs)))

    t0 = time.perf_counter()
    res = minimize(eps, x0, method="L-BFGS-B", bounds=[(0.0, eta_max)] * n,
                   options=dict(ftol=1e-13, gtol=1e-10, eps=1e-7))  # fmt: skip
    return res.fun, time.perf_counter() - t0, res.nfev


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-scipy", type=int, default=25)
    a = p.parse_args()
    print(f"device: {jax.devices()[0]}; jax {jax.__version__}; float64")
    for name, s in SETTINGS.items():
        op0, amax, emax, noise = s["op0"], s["alpha_max"], s["eta_max"], s["noise"]
        t0 = time.perf_counter()
        best, hist = tsjax.optimise_schedule(op0, alpha_max=amax, eta_max=emax, noise=noise,
                                             progress=False)  # fmt: skip
        t100 = time.perf_counter() - t0
        e100 = final_eps(op0, best, amax, noise)
        ref = s["reference"]
        gap = f", {e100 / ref - 1:+.1e} vs the optimal-control optimum" if ref else ""
        print(f"{name}: tsjax, 100 intervals: {t100:.1f} s with compilation, eps {e100:.7e}"
              f"{gap}; certificate {float(hist['certificate']):.1e}, "
              f"{int(hist['iterations'])} L-BFGS-B iterations; best constant rate "
              f"{hist['best_constant'][1]:.4e}")  # fmt: skip
        n = a.n_scipy
        t0 = time.perf_counter()
        best_n, _ = tsjax.optimise_schedule(op0, alpha_max=amax, eta_max=emax, noise=noise,
                                            n_controls=n, progress=False)  # fmt: skip
        tn = time.perf_counter() - t0
        t0 = time.perf_counter()  # again, compiled (a new setting of the same shapes)
        tsjax.optimise_schedule(op0, alpha_max=amax, eta_max=emax, noise=noise * 1.01,
                                n_controls=n, progress=False)  # fmt: skip
        tw = time.perf_counter() - t0
        en = final_eps(op0, best_n, amax, noise)
        x0 = np.full(n, float(hist["best_constant"][0]))
        es, ts, nfev = scipy_direct(op0, n, amax, emax, noise, x0)
        print(f"  {n} intervals: tsjax {tn:.1f} s with compilation, {tw:.1f} s compiled "
              f"(eps {en:.7e}); scipy direct method {ts:.1f} s, {nfev} objective evaluations "
              f"(eps {es:.7e}): {ts / tn:.1f}x / {ts / tw:.0f}x tsjax")  # fmt: skip


if __name__ == "__main__":
    main()
