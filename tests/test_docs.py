"""The documentation site builds without a warning (`mkdocs build --strict`)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_mkdocs_build_strict(tmp_path):
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    out = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    site = tmp_path / "site"
    for page in ("index.html", "conventions/index.html", "api/index.html", "errors/index.html"):
        assert (site / page).is_file(), page
    api = (site / "api" / "index.html").read_text()
    assert "solve_ode" in api and "simulate_order_params" in api and "RESULTS" in api
    assert (site / "notebooks" / "01_plateaus" / "index.html").is_file()
