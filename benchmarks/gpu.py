"""Headline figures on whatever device JAX sees (GPU when there is one), each against a
baseline measured in the same run.

Run: ``python benchmarks/gpu.py`` (about 5 minutes on one GPU; on a CPU it uses smaller sizes
automatically, ``--tiny`` is the seconds-long setting the test suite runs). float64.

Figures (warm unless said otherwise; compilation reported separately):

1. ``tsjax.sweep`` points/s for erf K = 2 and K = 4 (M = 2, alpha 0 -> 1e3, a grid of
   learning rates x seeds; 8192 points on an accelerator), with default arguments; baseline:
   the same sweep with ``chunk_size`` = 1/20 of the grid (the CPU-style default).
2. The network simulator's SGD steps/s at N = 10^4 for 1 seed and for 256 seeds (``vmap``
   over keys); baseline: a plain numpy loop of the same update (1 seed, CPU).
3. The exact order-parameter chain with 4096 seeds (``vmap``), steps/s per seed and in all;
   baseline: the network simulator with 256 seeds at N = 10^4 (figure 2).
4. A gradient's cost: ``jax.value_and_grad`` of eps_g(alpha_max) with respect to the learning
   rate, over the forward solve (erf K = 4, M = 2, alpha to 1e4).
5. tanh (quadrature integrals) against erf (closed forms): one ``solve_ode`` each, K = M = 2.
"""

from __future__ import annotations

import argparse
import math
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

import tsjax  # noqa: E402


def timed(fn):
    """(result, seconds) of one call of fn, blocking until its arrays are ready."""
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - t0


def best(fn, reps=2):
    return min(timed(fn)[1] for _ in range(reps))


def sweep_figures(K, n_lr, n_seed, alpha_max, reps, baseline=True):
    lrs = list(np.linspace(0.1, 1.0, n_lr))
    seeds = list(range(n_seed))
    alphas = np.linspace(0.0, alpha_max, 11)
    n = n_lr * n_seed

    def run(**kw):
        return tsjax.sweep(K=K, M=2, lr=lrs, seed=seeds, N=1000, alphas=alphas, **kw).eg

    _, first = timed(run)
    warm = best(run, reps)
    if not baseline:
        print(f"sweep erf K={K}: {n} points, default chunks {n / warm:10.1f} points/s "
              f"(first call {first:.1f} s)")  # fmt: skip
        return
    small = max(1, n // 20)
    timed(lambda: run(chunk_size=small))
    base = best(lambda: run(chunk_size=small), reps)
    print(
        f"sweep erf K={K}: {n} points, default chunks {n / warm:10.1f} points/s "
        f"(first call {first:.1f} s) | chunk_size={small}: {n / base:10.1f} points/s "
        f"-> {base / warm:.1f}x"
    )


def numpy_steps_per_s(N, steps):
    """The SGD update of tsjax.simulate (erf, K = M = 2, lr 0.5), plain numpy, one seed."""
    from scipy.special import erf

    rng = np.random.default_rng(0)
    W, Wt = rng.standard_normal((2, N)), rng.standard_normal((2, N))
    v = vt = np.ones(2)
    sq, c = math.sqrt(N), math.sqrt(2 / math.pi)
    t0 = time.perf_counter()
    for _ in range(steps):
        x = rng.standard_normal(N)
        lam, nu = W @ x / sq, Wt @ x / sq
        d = v @ erf(lam / math.sqrt(2)) - vt @ erf(nu / math.sqrt(2))
        W -= (0.5 / sq) * np.outer(v * c * np.exp(-lam * lam / 2) * d, x)
    return steps / (time.perf_counter() - t0)


def simulator_figures(N, alpha_max, seeds_many, reps):
    teacher = tsjax.init_teacher(jax.random.key(0), N=N, M=2)
    student = tsjax.init_student(jax.random.key(1), N=N, K=2)
    alphas = np.array([0.0, alpha_max])
    steps = int(round(alpha_max * N))

    def one():
        return tsjax.simulate(student, teacher, jax.random.key(2), lr=0.5, alphas=alphas).eg

    keys = jax.random.split(jax.random.key(3), seeds_many)
    many_fn = jax.jit(
        jax.vmap(lambda k: tsjax.simulate(student, teacher, k, lr=0.5, alphas=alphas).eg)
    )
    _, c1 = timed(one)
    t1 = best(one, reps)
    _, cm = timed(lambda: many_fn(keys))
    tm = best(lambda: many_fn(keys), reps)
    np_rate = numpy_steps_per_s(N, min(steps, 2000))
    print(
        f"simulate N={N}: 1 seed {steps / t1:12.0f} steps/s (first call {c1:.1f} s); "
        f"{seeds_many} seeds {seeds_many * steps / tm:12.0f} steps/s in all "
        f"(first call {cm:.1f} s) | numpy loop, 1 seed: {np_rate:10.0f} steps/s "
        f"-> {steps / t1 / np_rate:.1f}x (1 seed), {seeds_many * steps / tm / np_rate:.1f}x (all)"
    )
    return seeds_many * steps / tm


def chain_figures(N, alpha_max, seeds, network_rate, reps):
    teacher = tsjax.init_teacher(jax.random.key(0), N=N, M=2)
    student = tsjax.init_student(jax.random.key(1), N=N, K=2)
    op0 = tsjax.order_params(student, teacher)
    alphas = np.array([0.0, alpha_max])
    steps = int(round(alpha_max * N))
    keys = jax.random.split(jax.random.key(4), seeds)
    fn = jax.jit(
        jax.vmap(lambda k: tsjax.simulate_order_params(op0, k, N=N, lr=0.5, alphas=alphas).eg)
    )
    _, c = timed(lambda: fn(keys))
    t = best(lambda: fn(keys), reps)
    rate = seeds * steps / t
    print(
        f"order-parameter chain N={N}, {seeds} seeds: {rate:12.0f} steps/s in all, "
        f"{steps / t:10.0f} per seed (first call {c:.1f} s) | network simulator (all "
        f"seeds): {network_rate:12.0f} steps/s -> {rate / network_rate:.1f}x"
    )


def _state(K, M, seed=0):
    rng = np.random.default_rng(seed)
    W, Wt = rng.standard_normal((K, 500)), rng.standard_normal((M, 500))
    return tsjax.OrderParams(W @ W.T / 500, W @ Wt.T / 500, Wt @ Wt.T / 500,
                             np.ones(K), np.ones(M))  # fmt: skip


def gradient_figure(alpha_max, reps, K=4):
    op0 = _state(K, 2)
    alphas = np.array([0.0, alpha_max])

    def loss(lr):
        return tsjax.solve_ode(op0, lr=lr, lr_v=0.5, noise=0.1, alphas=alphas).eg[-1]

    fwd = jax.jit(loss)
    vg = jax.jit(jax.value_and_grad(loss))
    timed(lambda: fwd(0.5))
    timed(lambda: vg(0.5))
    tf, tg = best(lambda: fwd(0.5), reps), best(lambda: vg(0.5), reps)
    print(
        f"gradient (erf K={K} M=2, alpha to {alpha_max:g}): forward {1e3 * tf:.1f} ms, "
        f"value_and_grad {1e3 * tg:.1f} ms -> {tg / tf:.2f} forward solves"
    )


def activation_figure(alpha_max, reps, K=2):
    op0 = _state(K, K)
    alphas = np.linspace(0.0, alpha_max, 11)
    out = {}
    for name in ("erf", "tanh"):
        fn = jax.jit(lambda lr, n=name: tsjax.solve_ode(op0, activation=n, lr=lr,
                                                         alphas=alphas).eg)  # fmt: skip
        _, c = timed(lambda f=fn: f(0.5))
        out[name] = (best(lambda f=fn: f(0.5), reps), c)
    (te, ce), (tt, ct) = out["erf"], out["tanh"]
    print(
        f"ODE K=M={K} to alpha {alpha_max:g}: tanh (quadrature) {1e3 * tt:.1f} ms "
        f"(first call {ct:.1f} s) | erf (closed form) {1e3 * te:.1f} ms (first call "
        f"{ce:.1f} s) -> {tt / te:.0f}x"
    )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="seconds-long sizes (the tests)")
    a = p.parse_args(argv)
    dev = jax.devices()[0]
    accel = dev.platform != "cpu"
    print(f"devices: {jax.devices()} ({jax.device_count()} in all), jax {jax.__version__}")
    if a.tiny:
        sizes = dict(n_lr=2, n_seed=2, alpha=20.0, N=200, sim_alpha=1.0, seeds=4, chain=8,
                     grad_alpha=50.0, act_alpha=5.0, reps=1, grad_K=1, act_K=1)  # fmt: skip
    elif accel:
        sizes = dict(n_lr=64, n_seed=128, alpha=1e3, N=10_000, sim_alpha=2.0, seeds=256,
                     chain=4096, grad_alpha=1e4, act_alpha=100.0, reps=2, grad_K=4,
                     act_K=2)  # fmt: skip
    else:
        sizes = dict(n_lr=8, n_seed=4, alpha=1e3, N=10_000, sim_alpha=0.5, seeds=16,
                     chain=256, grad_alpha=1e4, act_alpha=50.0, reps=2, grad_K=4,
                     act_K=2)  # fmt: skip
    print(f"sizes: {sizes}")
    r = sizes["reps"]
    for K in (2,) if a.tiny else (2, 4):
        sweep_figures(K, sizes["n_lr"], sizes["n_seed"], sizes["alpha"], r, not a.tiny)
    net_rate = simulator_figures(sizes["N"], sizes["sim_alpha"], sizes["seeds"], r)
    chain_figures(sizes["N"], sizes["sim_alpha"], sizes["chain"], net_rate, r)
    gradient_figure(sizes["grad_alpha"], r, sizes["grad_K"])
    activation_figure(sizes["act_alpha"], r, sizes["act_K"])


if __name__ == "__main__":
    main()
