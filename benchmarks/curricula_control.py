"""Benchmark: optimal curricula. ``tsjax.optimise_protocol`` optimising the replay fraction
r(alpha) after a task switch (two erf teachers of feature similarity 0.5, K = 2 multi-head
student, eta = eta_v = 1, switch at alpha = 30, alpha_F = 60, objective: the mean final
error over both tasks; notebook 09) against a direct method written with scipy in the same
run: the same piecewise-constant control, ``solve_ivp`` (LSODA) per interval on tsjax's
jitted right-hand side (``tsjax.vector_field(problem=...)``), L-BFGS-B with finite-
difference gradients, from the same start (r = 0.3), both to 0.1% of the optimum.

    python benchmarks/curricula_control.py [--n 10 30]

(the scipy method's cost grows with the number of intervals n: n + 1 objective evaluations
per finite-difference gradient; tsjax's adjoint gradient costs a few forward solves for any
n)
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

A1, AF, V = 30.0, 60.0, 0.5


def setting():
    k = jax.random.key(0)
    teachers = tsjax.init_teachers(jax.random.fold_in(k, 0), N=2000, M=1, P=2,
                                   feature_similarity=V)  # fmt: skip
    student = tsjax.init_student(jax.random.fold_in(k, 1), 2000, 2, scale=1e-3, v=1e-3, heads=2)
    return tsjax.order_params(student, teachers)


def problem(replay):
    return tsjax.Problem("erf", 1.0, 1.0, curriculum=tsjax.TaskSwitch([A1], replay=replay))


def scipy_direct(op0, n, x0):
    """r piecewise constant on n intervals of [A1, AF]; phase 1 integrated once."""
    K, M = op0.K, op0.M
    T, vs = op0.T, op0.v_star
    shapes = [(K, K), (K, M), op0.v.shape]
    sizes = [int(np.prod(s)) for s in shapes]

    def unflat(y):
        parts = jnp.split(y, np.cumsum(sizes)[:-1])
        return [p.reshape(s) for p, s in zip(parts, shapes)]

    @jax.jit
    def rhs_j(t, y, r):
        Q, R, v = unflat(y)
        d = tsjax.vector_field(tsjax.OrderParams(Q, R, T, v, vs), alpha=t, problem=problem(r))
        return jnp.concatenate([d.Q.ravel(), d.R.ravel(), d.v.ravel()])

    def solve(y, t0, t1, r):
        sol = solve_ivp(lambda t, y: np.asarray(rhs_j(t, y, r)), (t0, t1), y, method="LSODA",
                        rtol=1e-10, atol=1e-12)  # fmt: skip
        return sol.y[:, -1]

    y1 = solve(np.concatenate([np.ravel(op0.Q), np.ravel(op0.R), np.ravel(op0.v)]), 0.0,
               A1 * (1 - 1e-12), 0.0)  # fmt: skip
    edges = np.linspace(A1, AF, n + 1)

    def objective(x):
        y = y1
        for i in range(n):
            y = solve(y, edges[i], edges[i + 1], x[i])
        Q, R, v = (np.asarray(a) for a in unflat(jnp.asarray(y)))
        return float(np.mean(tsjax.generalisation_error(tsjax.OrderParams(Q, R, T, v, vs))))

    t0 = time.perf_counter()
    res = minimize(objective, x0, method="L-BFGS-B", bounds=[(0.0, 1.0)] * n,
                   options=dict(ftol=1e-13, gtol=1e-10, eps=1e-7))  # fmt: skip
    return res.fun, time.perf_counter() - t0, res.nfev


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, nargs="+", default=[10, 30])
    a = p.parse_args()
    print(f"device: {jax.devices()[0]}; jax {jax.__version__}; float64")
    op0 = setting()
    for n in a.n:
        run(op0, n)


def run(op0, n):
    edges = np.linspace(A1, AF, n + 1)[:-1]
    control = {"replay": tsjax.Control(0.0, 1.0, boundaries=edges)}
    t0 = time.perf_counter()
    _, h = tsjax.optimise_protocol(op0, problem(0.3), control, alpha_max=AF, objective="tasks",
                                   progress=False)  # fmt: skip
    t_cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    tsjax.optimise_protocol(op0, problem(0.31), control, alpha_max=AF, objective="tasks",
                            progress=False)  # fmt: skip
    t_warm = time.perf_counter() - t0
    best = float(h["final"])
    print(f"tsjax optimise_protocol, {n} intervals: {t_cold:.1f} s with compilation, "
          f"{t_warm:.1f} s compiled; mean final error {best:.7e}, certificate "
          f"{float(h['certificate']):.1e}, {int(h['iterations'])} L-BFGS-B iterations")  # fmt: skip
    es, ts, nfev = scipy_direct(op0, n, np.full(n, 0.3))
    print(f"scipy direct method: {ts:.1f} s, {nfev} objective evaluations, mean final error "
          f"{es:.7e} ({es / best - 1:+.1e} vs tsjax): {ts / t_cold:.1f}x / {ts / t_warm:.0f}x "
          f"tsjax")  # fmt: skip


if __name__ == "__main__":
    main()
