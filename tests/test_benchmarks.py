"""benchmarks/gpu.py runs (on the CPU, in its seconds-long setting) and prints every
headline figure."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_benchmark_runs_tiny():
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--tiny"],
        capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    for needle in ("sweep erf K=2", "points/s", "simulate N=200",
                   "order-parameter chain", "value_and_grad", "tanh (quadrature)"):  # fmt: skip
        assert needle in text, (needle, text)


@pytest.mark.slow
def test_continual_benchmark_runs_tiny():
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "continual.py"), "--tiny", "--devices", "1"],
        capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    for needle in ("tsjax solve_ode", "numpy Euler", "forgetting vs V"):
        assert needle in out.stdout, (needle, out.stdout)


@pytest.mark.slow
@pytest.mark.parametrize(
    "script, needles",
    [("rules.py", ("AdaptiveBackprop(2)", "FeedbackAlignment", "x SGD")),
     ("double_descent.py", ("exact curve", "JAX fori_loop", "numpy loop")),
     ("rlp.py", ("tsjax sweep", "numpy Euler", "accuracy against solve_ode", "speed-up"))],
)  # fmt: skip
def test_rules_and_double_descent_benchmarks_run_tiny(script, needles):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--tiny"],
        capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    for needle in needles:
        assert needle in out.stdout, (needle, out.stdout)
