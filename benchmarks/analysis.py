"""Benchmark: weight-space analysis (erf, float64, CPU).

1. Hessian of the population loss with respect to W (K = 10, M = 2, N = 50, and a larger N):
   ``tsjax.hessian`` (compiled; first call with compilation reported separately) against
   ``torch.func.hessian`` of the same closed-form loss written in PyTorch (CPU, float64;
   skipped with a message if PyTorch is not installed: it is not a dependency of tsjax)
   and against finite differences of the (compiled JAX) gradient with scipy
   (``scipy.optimize.approx_fprime`` of the gradient vector: K N + 1 gradients). The
   agreement of the three is printed.
2. ``tsjax.find_minimum`` from a ``tsjax.gradient_flow`` endpoint (K = 4, M = 2, N = 20):
   time and Newton steps to |grad| <= 1e-12, against scipy's BFGS on the same loss with the
   exact gradient from the same point (its iterations, time and final |grad|).

    python benchmarks/analysis.py [--N 50 200] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import time

# PyTorch's OpenMP threads busy-wait after each call by default and would steal the cores
# from XLA's threads in the next tsjax timing: let them sleep.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
from scipy.optimize import approx_fprime, minimize  # noqa: E402

import tsjax  # noqa: E402


def nets(K, M, N, seed=0):
    k = jax.random.key(seed)
    return (tsjax.init_student(jax.random.fold_in(k, 1), N, K),
            tsjax.init_teacher(k, N, M))  # fmt: skip


def best_of(f, repeat):
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = f()
        ts.append(time.perf_counter() - t0)
    return min(ts), out


def torch_hessian(W, v, Wt, vt):
    """torch.func.hessian of the erf closed-form loss eps_g(W) (float64, CPU)."""
    import torch

    torch.set_default_dtype(torch.float64)
    Wt_, v_, vt_ = (torch.tensor(np.asarray(a)) for a in (Wt, v, vt))
    K, N = W.shape

    def i2(Ca, Cb, Cab):  # erf(x / sqrt 2): (2 / pi) arcsin(C_ab / sqrt((1 + C_aa)(1 + C_bb)))
        return (2 / torch.pi) * torch.arcsin(Cab / torch.sqrt((1 + Ca)[:, None] * (1 + Cb)[None]))

    def loss(w):
        Wm = w.reshape(K, N)
        Q, R, T = Wm @ Wm.T / N, Wm @ Wt_.T / N, Wt_ @ Wt_.T / N
        q, t = torch.diagonal(Q), torch.diagonal(T)
        return 0.5 * (v_ @ i2(q, q, Q) @ v_ + vt_ @ i2(t, t, T) @ vt_ - 2 * v_ @ i2(q, t, R) @ vt_)

    x = torch.tensor(np.asarray(W).ravel())
    hess = torch.func.hessian(loss)
    return lambda: hess(x).numpy()


def hessian_case(K, M, N, repeat):
    s, t = nets(K, M, N)
    t0 = time.perf_counter()
    H = np.asarray(tsjax.hessian(s, t))
    t_first = time.perf_counter() - t0
    t_jax, H = best_of(lambda: tsjax.hessian(s, t).block_until_ready(), repeat)
    H = np.asarray(H)
    line = (f"Hessian K={K}, N={N} ({K * N}x{K * N}): tsjax {1e3 * t_jax:.1f} ms "
            f"(first call with compilation {t_first:.2f} s)")  # fmt: skip
    try:
        f = torch_hessian(s.W, s.v, t.W, t.v)
        f()
        t_torch, Ht = best_of(f, repeat)
        line += (f"; torch.func.hessian {1e3 * t_torch:.1f} ms ({t_torch / t_jax:.1f}x tsjax, "
                 f"max diff {np.max(np.abs(Ht - H)) / np.max(np.abs(H)):.1e} rel)")  # fmt: skip
    except ImportError:
        line += "; torch.func.hessian: PyTorch not installed"
    g = jax.jit(jax.grad(lambda w: tsjax.population_loss(tsjax.TwoLayerNet(w.reshape(K, N), s.v),
                                                          t)))  # fmt: skip
    x = np.asarray(s.W).ravel()
    g(x)

    def fd():  # the Jacobian of the gradient: K N + 1 gradient evaluations
        eps = 1e-6 * max(1.0, float(np.max(np.abs(x))))
        return approx_fprime(x, lambda y: np.asarray(g(y)), eps)

    t_fd, H_fd = best_of(fd, 1)
    err = np.max(np.abs(H_fd - H)) / np.max(np.abs(H))
    line += (f"; scipy finite differences of the gradient {t_fd:.2f} s ({t_fd / t_jax:.0f}x "
             f"tsjax; max diff {err:.1e} rel)")  # fmt: skip
    print(line, flush=True)


def minimum_case(K, M, N):
    s, t = nets(K, M, N, seed=N)
    end, _ = tsjax.gradient_flow(s, t, times=np.array([0.0, 200.0]))
    tsjax.find_minimum(end, t)  # compile
    t0 = time.perf_counter()
    _, cp = tsjax.find_minimum(end, t)
    t_newton = time.perf_counter() - t0

    def f(x):
        return tsjax.population_loss(tsjax.TwoLayerNet(x.reshape(K, N) * np.sqrt(N), s.v), t)

    fg = jax.jit(jax.value_and_grad(f))
    x0 = np.asarray(end.W).ravel() / np.sqrt(N)
    fg(x0)
    t0 = time.perf_counter()
    res = minimize(lambda x: tuple(np.asarray(a, dtype=np.float64) for a in fg(x)), x0, jac=True,
                   method="BFGS", options=dict(gtol=1e-12, maxiter=100_000))  # fmt: skip
    t_bfgs = time.perf_counter() - t0
    gn = float(np.linalg.norm(np.asarray(fg(res.x)[1])))
    print(f"find_minimum K={K}, M={M}, N={N} from a gradient-flow end: {1e3 * t_newton:.0f} ms, "
          f"{cp.steps} polishing steps after optimistix Newton, |grad| {cp.grad_norm:.1e}, "
          f"{cp.kind} (index {cp.index}, {cp.n_flat} flat); scipy BFGS: {1e3 * t_bfgs:.0f} ms, "
          f"{res.nit} iterations, |grad| {gn:.1e} ({res.message}); loss difference "
          f"{res.fun - cp.loss:+.1e}")  # fmt: skip


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--N", type=int, nargs="+", default=[50, 200])
    p.add_argument("--repeat", type=int, default=5)
    a = p.parse_args()
    print(f"device: {jax.devices()[0]}; jax {jax.__version__}; float64")
    for N in a.N:
        hessian_case(10, 2, N, a.repeat)
    minimum_case(4, 2, 20)


if __name__ == "__main__":
    main()
