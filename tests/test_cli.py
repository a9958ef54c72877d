"""The main job, `tsjax run`, on a small setting."""

import csv

import numpy as np

from tsjax.cli import main


def test_tsjax_run_writes_table_csv_and_plot(tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(
        [
            "run",
            "--N",
            "200",
            "--seeds",
            "2",
            "--alpha-max",
            "10",
            "--n-save",
            "11",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "eps_g ODE" in printed and "simulation" in printed
    assert (out / "learning_curve.png").stat().st_size > 1000
    with open(out / "learning_curves.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 11
    eg0 = float(rows[0]["eg_ode_mean"])
    assert np.isclose(eg0, float(rows[0]["eg_sim_mean"]))  # same initial conditions
    assert float(rows[-1]["eg_ode_mean"]) < eg0
    assert (out / "ode_seed0_order_params.csv").exists()


def test_tsjax_run_reports_divergence(tmp_path, capsys):
    rc = main(
        [
            "run",
            "--N",
            "100",
            "--seeds",
            "1",
            "--alpha-max",
            "50",
            "--lr",
            "5",
            "--out",
            str(tmp_path),
        ]
    )
    assert rc == 1
    assert "diverged at alpha" in capsys.readouterr().err
