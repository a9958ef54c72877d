"""Benchmark: one forward ODE solve against one reverse-mode gradient (issue #4).

Case: erf, K=4, M=2, both layers trained, output noise sigma = 0.1, an inverse-time
schedule eta(alpha) = 0.5 / (1 + alpha/1000) for the first layer and lr_v = 0.5, from the
initial condition of benchmarks/ode.py (T = I, Q = I + 1e-9 noise, R = 1e-9 noise,
v = 1 + 1e-9 noise). Loss: eps_g at the final time. The gradient is taken with respect to
the schedule parameters, lr_v, noise and the initial order parameters at once.

Figures (warm: after compilation, best of ``--repeat``):
* the forward solve and value_and_grad to alpha = ``--alpha-max`` (default 1e4), their
  ratio (target: <= ~5);
* the peak memory of the gradient to alpha = 1e5 (``--alpha-mem``): the temporary buffers
  of the compiled gradient (XLA's ``memory_analysis``), and the process' maximum resident
  set size (``resource.getrusage``) before and after running it.

    python benchmarks/grad.py [--alpha-max 1e4] [--alpha-mem 1e5] [--repeat 5]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import tsjax  # noqa: E402
from tsjax._ode import GRAD_CHECKPOINTS  # noqa: E402

K, M = 4, 2


def initial_state(seed=1):
    rng = np.random.default_rng(seed)
    Q = np.eye(K) + 1e-9 * np.triu(rng.standard_normal((K, K)))
    Q = np.triu(Q) + np.triu(Q, 1).T
    R = 1e-9 * rng.standard_normal((K, M))
    v = np.ones(K) + 1e-9 * rng.standard_normal(K)
    return tsjax.OrderParams(Q, R, np.eye(M), v, np.ones(M))


def make(alpha_max):
    alphas = jnp.array([0.0, alpha_max])

    def loss(p):
        traj = tsjax.solve_ode(
            p["op0"], lr=p["lr"], lr_v=p["lr_v"], noise=p["noise"], alphas=alphas
        )
        return traj.eg[-1]

    params = dict(
        op0=initial_state(),
        lr=tsjax.InverseTime(0.5, 1000.0),
        lr_v=jnp.asarray(0.5),
        noise=jnp.asarray(0.1),
    )
    return loss, params


def best_time(fn, params, repeat):
    jax.block_until_ready(fn(params))  # compile (and warm)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        jax.block_until_ready(fn(params))
        times.append(time.perf_counter() - t)
    return min(times)


def maxrss_mib():
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024 if sys.platform != "darwin" else r / 2**20


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--alpha-max", type=float, default=1e4)
    p.add_argument("--alpha-mem", type=float, default=1e5)
    p.add_argument("--repeat", type=int, default=5)
    a = p.parse_args(argv)

    print(f"device: {jax.devices()[0]}; jax {jax.__version__}; K={K} M={M}; "
          f"checkpoints={GRAD_CHECKPOINTS}")  # fmt: skip
    loss, params = make(a.alpha_max)
    fwd = jax.jit(loss)
    vg = jax.jit(jax.value_and_grad(loss))
    t_f = best_time(fwd, params, a.repeat)
    t_g = best_time(vg, params, a.repeat)
    val, g = vg(params)
    steps = int(
        tsjax._ode._solve(  # the number of solver steps of the forward solve
            params["op0"], tsjax.Problem("erf", params["lr"], params["lr_v"], params["noise"]),
            jnp.array([0.0, a.alpha_max]), 1e-8, 1e-11, tsjax.Rodas5P(), 200_000,
            tsjax._checks.divergence_limits(params["op0"].Q, params["op0"].T, params["op0"].v,
                                            params["op0"].v_star),
        )[1]["num_steps"]
    )  # fmt: skip
    print(f"alpha_max = {a.alpha_max:g}: eps_g = {float(val):.6e}, {steps} solver steps")
    print(f"  forward solve      : {1e3 * t_f:9.1f} ms")
    print(f"  value_and_grad     : {1e3 * t_g:9.1f} ms")
    print(f"  ratio grad/forward : {t_g / t_f:9.2f}  (target <= ~5)")
    print(f"  d eps_g / d eta0 = {float(g['lr'].eta0):.4e}, d/d lr_v = {float(g['lr_v']):.4e}")

    loss_m, params_m = make(a.alpha_mem)
    rss0 = maxrss_mib()
    vg_m = jax.jit(jax.value_and_grad(loss_m))
    compiled = vg_m.lower(params_m).compile()
    mem = compiled.memory_analysis()
    fwd_m = jax.jit(loss_m).lower(params_m).compile().memory_analysis()
    t = time.perf_counter()
    val_m, _ = jax.block_until_ready(compiled(params_m))
    t_m = time.perf_counter() - t
    rss1 = maxrss_mib()
    print(f"alpha_max = {a.alpha_mem:g}: eps_g = {float(val_m):.6e}, gradient {t_m:.2f} s")
    if mem is not None:
        print(f"  gradient temporaries (XLA memory_analysis): "
              f"{mem.temp_size_in_bytes / 2**20:8.2f} MiB "
              f"(forward solve: {fwd_m.temp_size_in_bytes / 2**20:.2f} MiB)")  # fmt: skip
    print(f"  process max RSS: {rss0:.0f} MiB before, {rss1:.0f} MiB after the gradient")


if __name__ == "__main__":
    main()
