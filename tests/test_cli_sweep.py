"""`tsjax sweep CONFIG.toml --out FILE`: killed mid-run and rerun, it skips the finished chunks
and gives the result of an uninterrupted run."""

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tsjax._sweep import load_sweep
from tsjax.cli import main, read_sweep_config

CONFIG = """
K = [1, 2]
M = 2
activation = "erf"
lr = [0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8,
      0.85, 0.9, 0.95, 1.0, 1.05, 1.1, 1.15, 1.2, 1.25]
noise = 0.05
seed = 3
N = 50
alphas = { start = 0.0, stop = 300.0, num = 31 }
chunk_size = 1
"""


def _cmd(cfg, out):
    return [sys.executable, "-m", "tsjax", "sweep", str(cfg), "--out", str(out)]


def _env():
    env = dict(os.environ)
    env["JAX_PLATFORMS"] = "cpu"
    env.pop("XLA_FLAGS", None)
    return env


@pytest.mark.slow
def test_sweep_cli_is_resumable_after_a_kill(tmp_path):
    cfg = tmp_path / "sweep.toml"
    cfg.write_text(CONFIG)
    out = tmp_path / "result.nc"
    partial = Path(str(out) + ".partial")
    proc = subprocess.Popen(
        _cmd(cfg, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env()
    )
    t0 = time.time()
    try:
        while len(list(partial.glob("*/chunk-*.npz"))) < 3:
            assert proc.poll() is None, "the sweep ended before it could be interrupted"
            assert time.time() - t0 < 600, "no chunk finished in 10 minutes"
            time.sleep(0.02)
    finally:
        proc.kill()
        proc.wait()
    assert not out.exists()
    chunks = sorted(partial.glob("*/chunk-*.npz"))
    n_done = len(chunks)
    assert 3 <= n_done < 48
    # damage the resume folder: a truncated chunk, an empty one, a broken sweep.json
    chunks[0].write_bytes(chunks[0].read_bytes()[:100])
    chunks[1].write_bytes(b"")
    (chunks[0].parent / "sweep.json").write_text('{"hash": ')

    rerun = subprocess.run(_cmd(cfg, out), capture_output=True, text=True, env=_env(), timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"resuming from {n_done} finished chunks" in rerun.stdout
    for damaged in (chunks[0], chunks[1], chunks[0].parent / "sweep.json"):
        assert f"{damaged} is damaged" in rerun.stderr, rerun.stderr[-3000:]
    assert "chunk" in rerun.stderr and "<" in rerun.stderr  # tqdm bar with time left
    assert "48 points" in rerun.stdout
    assert out.exists() and not partial.exists()

    # an uninterrupted run (in this process) gives the same Dataset
    ref_path = tmp_path / "ref.nc"
    assert main(["sweep", str(cfg), "--out", str(ref_path), "--no-progress", "--no-cache"]) == 0
    ds, ref = load_sweep(out), load_sweep(ref_path)
    assert set(ds.data_vars) == set(ref.data_vars)
    for name in ref.data_vars:
        np.testing.assert_allclose(
            ds[name].values, ref[name].values, rtol=1e-12, equal_nan=True, err_msg=name
        )
    assert ds.eg.dims == ("K", "lr", "alpha")


def test_sweep_config_errors_are_named(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("K = [1]\nlr = 0.5\nalphas = [0.0, 1.0]\nlearning_rate = 3\n")
    with pytest.raises(SystemExit, match="learning_rate"):
        read_sweep_config(str(cfg))
    cfg.write_text("K = [1]\nalphas = [0.0, 1.0]\n")
    with pytest.raises(SystemExit, match="'lr'"):
        read_sweep_config(str(cfg))
    cfg.write_text('K = 1\nlr = 0.5\nalphas = { start = 0, stop = 5, num = 3, spacing = "x" }\n')
    with pytest.raises(SystemExit, match="spacing"):
        read_sweep_config(str(cfg))


def test_sweep_output_problems_are_found_before_any_work(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("K = 1\nlr = 0.5\nalphas = [0.0, 1.0]\n")
    with pytest.raises(SystemExit, match="is a folder"):
        main(["sweep", str(cfg), "--out", str(tmp_path)])
    existing = tmp_path / "old.nc"
    existing.write_text("precious")
    with pytest.raises(SystemExit, match="exists; pass --overwrite"):
        main(["sweep", str(cfg), "--out", str(existing)])
    assert existing.read_text() == "precious"
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(SystemExit, match="is a file, not a folder"):
        main(["sweep", str(cfg), "--out", str(afile / "sub" / "out.nc")])


def test_second_sweep_on_the_same_out_stops_at_once(tmp_path):
    import fcntl

    cfg = tmp_path / "c.toml"
    cfg.write_text("K = 1\nlr = 0.5\nalphas = [0.0, 1.0]\n")
    out = tmp_path / "out.nc"
    with open(str(out) + ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what a running sweep holds
        with pytest.raises(SystemExit, match="another tsjax sweep is writing"):
            main(["sweep", str(cfg), "--out", str(out), "--no-progress", "--no-cache"])
    assert not out.exists()


@pytest.mark.parametrize(
    "text, match",
    [
        ('K = 1\nlr = 0.5\nalphas = { start = 0, stop = 5, num = "x" }\n', "num must be"),
        ("K = 1\nlr = 0.5\nalphas = { start = 0, stop = inf, num = 3 }\n", "stop must be"),
        ('K = 1\nlr = 0.5\nalphas = [0, "a"]\n', "must hold numbers"),
        ("K = 1\nlr = 0.5\nalphas = [0.0, 1.0]\ngroup_by = 5\n", "group_by must be"),
        ('K = 1\nlr = 0.5\nalphas = [0.0, 1.0]\nprecision = "half"\n', "precision"),
    ],
)
def test_config_values_give_one_line_messages(tmp_path, text, match):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    with pytest.raises(SystemExit, match=match):
        read_sweep_config(str(cfg))


def test_files_follow_the_umask(tmp_path):
    import xarray as xr

    from tsjax._sweep import save_sweep
    from tsjax._trajectory import write_csv_atomic

    old = os.umask(0o022)
    try:
        write_csv_atomic(tmp_path / "a.csv", {"x": np.arange(3.0)})
        save_sweep(xr.Dataset({"eg": ("alpha", np.arange(3.0))}), tmp_path / "a.nc")
    finally:
        os.umask(old)
    for name in ("a.csv", "a.nc"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name


def test_example_config_parses():
    path = Path(__file__).resolve().parents[1] / "examples" / "sweep.toml"
    kwargs, precision = read_sweep_config(str(path))
    assert precision == "float64" and kwargs["K"] == [1, 2, 3, 4, 6, 8]
    assert kwargs["alphas"][0] == 0.0 and np.all(np.diff(kwargs["alphas"]) > 0)
