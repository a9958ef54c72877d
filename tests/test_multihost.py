"""Multi-host sweeps: two processes on localhost (CPU, ``jax.distributed.initialize`` with a
local coordinator, gloo collectives) give every process the Dataset of a single-process
sweep."""

import os
import socket
import subprocess
import sys

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import tsjax  # noqa: E402

SWEEP = dict(K=[1, 2], M=1, lr=[0.3, 0.6], seed=[0, 1], N=100)
ALPHAS = np.linspace(0.0, 20.0, 5)

WORKER = """
import sys
pid, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
import jax
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2,
                           process_id=pid, initialization_timeout=120)
import numpy as np
import pytest
import tsjax
assert jax.process_count() == 2 and len(jax.devices()) == 2
ds = tsjax.sweep(**SWEEP, alphas=np.linspace(0.0, 20.0, 5))
np.save(f"{out}/eg{pid}.npy", ds.eg.values)
np.save(f"{out}/status{pid}.npy", ds.status.values)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_on_localhost_equal_one(tmp_path):
    port = str(_free_port())
    code = f"SWEEP = {SWEEP!r}\n" + WORKER
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(pid), port, str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        for pid in (0, 1)
    ]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=600)[0])
    finally:
        for p in procs:
            p.kill()
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    ref = tsjax.sweep(**SWEEP, alphas=ALPHAS)
    for pid in (0, 1):  # every process holds the full result
        eg = np.load(tmp_path / f"eg{pid}.npy")
        np.testing.assert_allclose(eg, ref.eg.values, rtol=1e-10, atol=0)
        np.testing.assert_array_equal(np.load(tmp_path / f"status{pid}.npy"), ref.status.values)
