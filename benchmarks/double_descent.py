"""Benchmark: the exact finite-training-set curve (one SVD) against explicit gradient descent
stepping, in the same run.

The paper's setting scaled to d = 100 and d = 1000 (n = 1.3 d, p = 0.7 d, kappa = 100,
sigma = 0): gradient descent with step lr = 1 / lambda_max(X^T X) for S steps, S large
enough for the second descent (kappa^2 / (lr lambda) scale), the test error recorded at 60
log-spaced steps. ``tsjax.linear_gd_error(..., lr=lr)`` (exact, compiled; first call and
warm) against (a) a compiled JAX loop of the S steps (``jax.lax.fori_loop``, recording at
the same steps) and (b) a numpy loop; both baselines give the same numbers as the exact
curve to round-off (printed), so "the same accuracy" costs S steps of O(n d) for them.
Also: 1000 datasets' exact curves at d = 100 in one vmapped call (``linear_gd_average``).

    python benchmarks/double_descent.py [--steps 200000] [--tiny]
"""

from __future__ import annotations

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import tsjax  # noqa: E402


def _gd_jax(X, y, teacher, S, lr, rec, n_steps):
    def body(k, carry):
        w, out, j = carry
        hit = (j < rec.shape[0]) & (rec[jnp.minimum(j, rec.shape[0] - 1)] == k)
        e = w - teacher
        out = jnp.where(hit, out.at[jnp.minimum(j, rec.shape[0] - 1)].set(e @ S @ e), out)
        w = w - lr * (X.T @ (X @ w - y))
        return w, out, j + hit.astype(jnp.int32)

    w0 = jnp.zeros(X.shape[1])
    out0 = jnp.zeros(rec.shape[0])
    return jax.lax.fori_loop(0, n_steps + 1, body, (w0, out0, jnp.int32(0)))[1]


_gd_jax_jit = jax.jit(_gd_jax, static_argnums=6)


def case(d, n_steps, numpy_steps):
    n, p = int(1.3 * d), int(0.7 * d)
    F = tsjax.two_scale_modulation(d, p, 100.0)
    task = tsjax.sample_linear_task(jax.random.key(0), n, F)
    X, y, w, S = task.X, task.y, task.teacher, task.input_cov
    lr = 1.0 / float(np.linalg.eigvalsh(np.asarray(X.T @ X)).max())
    rec = np.unique(np.round(np.geomspace(1, n_steps, 60))).astype(np.int64)
    kw = dict(teacher=w, input_cov=S, times=rec, lr=lr)
    t0 = time.perf_counter()
    E = np.asarray(tsjax.linear_gd_error(X, y, **kw))
    first = time.perf_counter() - t0
    warm = min(_timed(lambda: tsjax.linear_gd_error(X, y, **kw).block_until_ready())
               for _ in range(5))  # fmt: skip
    t0 = time.perf_counter()
    Ej = np.asarray(_gd_jax_jit(X, y, w, S, lr, jnp.asarray(rec), int(n_steps)))
    t_jax = time.perf_counter() - t0
    # numpy loop: timed over numpy_steps steps, extrapolated to n_steps
    Xn, yn, wn = np.asarray(X), np.asarray(y), np.zeros(d)
    t0 = time.perf_counter()
    for _ in range(numpy_steps):
        wn = wn - lr * (Xn.T @ (Xn @ wn - yn))
    t_np = (time.perf_counter() - t0) * n_steps / numpy_steps
    err = np.max(np.abs(Ej - E) / np.maximum(np.abs(E), 1e-300))
    print(
        f"d={d:5d} n={n:5d}, {n_steps} GD steps: exact curve {1e3 * warm:.2f} ms warm "
        f"(first call {first:.2f} s); JAX fori_loop {t_jax:.2f} s incl. compilation "
        f"({t_jax / warm:.0f}x), numpy loop ~{t_np:.1f} s (extrapolated from {numpy_steps} "
        f"steps; {t_np / warm:.0f}x); max relative difference exact vs loop {err:.1e}; "
        f"E: min {E.min():.3f}, at the last step {E[-1]:.2e}",
        flush=True,
    )


def _timed(f):
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=200_000)
    p.add_argument("--tiny", action="store_true", help="a small version (test suite)")
    a = p.parse_args()
    print(f"device: {jax.devices()[0]}; jax {jax.__version__}; float64")
    if a.tiny:
        case(50, 2000, 200)
        return
    case(100, a.steps, 20_000)
    case(1000, a.steps, 500)
    F = tsjax.two_scale_modulation(100, 70, 100.0)
    t = np.geomspace(0.05, 1e7, 100)
    tsjax.linear_gd_average(jax.random.key(1), 130, F, times=t, n_datasets=1000)
    t0 = time.perf_counter()
    m, _ = tsjax.linear_gd_average(jax.random.key(2), 130, F, times=t, n_datasets=1000)
    m.block_until_ready()
    print(
        f"1000 datasets x 100 times at d = 100 (linear_gd_average, warm): "
        f"{time.perf_counter() - t0:.2f} s",
        flush=True,
    )


if __name__ == "__main__":
    main()
