"""First calls in fresh processes: what a newcomer (or a notebook kernel) pays before the
first result, dominated by tracing and XLA compilation.

Run: ``python benchmarks/first_call.py`` (about 2-4 minutes on 2 cores). Each case runs in a
new Python process (import excluded from its time) three ways: cold (no persistent cache),
with an empty persistent compilation cache (``tsjax.enable_compilation_cache``; this run
fills it) and with that cache warm (a second process), and warm with ``EQX_ON_ERROR=off`` (Equinox's
switch for its run-time checks: Diffrax checks the save times with a host callback, which
JAX does not store in the cache; see the README). The baseline is the same call warm in
the same process (the cost of the computation itself). The number of XLA compilations of the
cold call is counted from JAX's compile log. ``--case NAME`` runs one case.

Cases (targets of issue 17 in brackets):

* ``solve_ode``: erf, K = 4, M = 2, both layers (lr_v = 0.5), noise 0.1, alpha to 1e3
  [<= 4 s cold, <= 2 s with a warm cache];
* ``relu``: ReLU solve_ode, K = M = 2, alpha to 1e3 [<= 8 s cold];
* ``grad``: ``jax.grad`` of an erf final error (K = M = 2) with respect to lr [<= 8 s cold];
* ``sweep``: the first erf sweep group (K = 2, 4 lr x 2 seeds) [<= 8 s cold];
* ``run``: ``tsjax run`` end to end, as a subprocess [<= 25 s].
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

CASES = {
    "solve_ode": """
op0 = state(4, 2)
f = lambda: tsjax.solve_ode(op0, activation="erf", lr=0.5, lr_v=0.5, noise=0.1,
                            alphas=np.linspace(0, 1e3, 101)).eg
""",
    "relu": """
op0 = state(2, 2)
f = lambda: tsjax.solve_ode(op0, activation="relu", lr=0.5, alphas=np.linspace(0, 1e3, 101)).eg
""",
    "grad": """
op0 = state(2, 2)
loss = lambda lr: tsjax.solve_ode(op0, lr=lr, alphas=np.array([0.0, 100.0])).eg[-1]
f = lambda: jax.grad(loss)(0.5)
""",
    "sweep": """
f = lambda: tsjax.sweep(K=2, M=2, lr=[0.2, 0.4, 0.6, 0.8], seed=[0, 1], N=1000,
                        alphas=np.linspace(0, 1e3, 51)).eg.values
""",
}

PRELUDE = """
import time, sys, json, logging, io
t_import = time.perf_counter()
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
import tsjax
if CACHE:
    tsjax.enable_compilation_cache(CACHE)
t_import = time.perf_counter() - t_import
log = io.StringIO()
handler = logging.StreamHandler(log)
logging.getLogger("jax").addHandler(handler)
logging.getLogger("jax").setLevel(logging.WARNING)
jax.config.update("jax_log_compiles", True)

def state(K, M):
    rng = np.random.default_rng(0)
    W, Wt = rng.standard_normal((K, 500)), rng.standard_normal((M, 500))
    return tsjax.OrderParams(W @ W.T / 500, W @ Wt.T / 500, Wt @ Wt.T / 500, np.ones(K), np.ones(M))
"""

EPILOGUE = """
t0 = time.perf_counter(); jax.block_until_ready(f()); first = time.perf_counter() - t0
n_compiles = log.getvalue().count("Finished XLA compilation") or log.getvalue().count("Compiling")
t0 = time.perf_counter(); jax.block_until_ready(f()); warm = time.perf_counter() - t0
print(json.dumps(dict(first=first, warm=warm, compiles=n_compiles, import_s=t_import)))
"""


def run_case(name: str, cache: str | None, env: dict | None = None) -> dict:
    code = f"CACHE = {cache!r}\n" + PRELUDE + CASES[name] + EPILOGUE
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=1200,
        env=dict(os.environ, **(env or {})),
    )
    if out.returncode != 0:
        raise RuntimeError(f"case {name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_cli(out_dir: str, cache_env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "tsjax", "run", "--out", out_dir],
        check=True,
        capture_output=True,
        env=dict(os.environ, **cache_env),
        timeout=1200,
    )
    return time.perf_counter() - t0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", choices=[*CASES, "run"], action="append")
    a = p.parse_args(argv)
    cases = a.case or [*CASES, "run"]
    print(f"{'case':<10} {'cold first':>11} {'compiles':>9} {'empty cache':>12} "
          f"{'warm cache':>11} {'+EQX off':>9} {'warm call':>10}")  # fmt: skip
    for name in cases:
        with tempfile.TemporaryDirectory() as cache:
            if name == "run":
                with tempfile.TemporaryDirectory() as out:
                    cold = run_cli(out, {"TSJAX_CACHE_DIR": cache})
                    warm = run_cli(out, {"TSJAX_CACHE_DIR": cache})
                print(f"{'run':<10} {cold:10.1f}s {'':>9} {'':>12} {warm:10.1f}s  (tsjax run "
                      "end to end, first process fills the cache, second reuses it)")  # fmt: skip
                continue
            c = run_case(name, None)
            e = run_case(name, cache)
            w = run_case(name, cache)
            with tempfile.TemporaryDirectory() as cache2:
                off = {"EQX_ON_ERROR": "off"}
                run_case(name, cache2, off)
                x = run_case(name, cache2, off)
            print(f"{name:<10} {c['first']:10.2f}s {c['compiles']:9d} {e['first']:11.2f}s "
                  f"{w['first']:10.2f}s {x['first']:8.2f}s {c['warm']:9.3f}s")  # fmt: skip


if __name__ == "__main__":
    main()
