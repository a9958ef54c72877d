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
