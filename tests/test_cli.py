"""The main job, `tsjax run`, on a small setting."""

import csv

import numpy as np
import pytest

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
            "--no-cache",  # in-process: leave this process' JAX configuration alone
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
            "--no-cache",
        ]
    )
    assert rc == 1
    assert "diverged at alpha" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, match",
    [
        (["--lr", "nan"], "--lr must be finite"),
        (["--alpha-max", "inf"], "--alpha-max must be finite"),
        (["--noise", "-1"], "--noise must be finite and >= 0"),
    ],
)
def test_run_bad_numbers_give_one_line_messages(args, match, tmp_path):
    with pytest.raises(SystemExit, match=match):
        main(["run", "--out", str(tmp_path / "o"), *args])


def test_run_out_is_a_file(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(SystemExit, match="is a file"):
        main(["run", "--out", str(f)])
