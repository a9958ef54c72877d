"""Readers for the nn2pp reference data shipped in tests/data/nn2pp (see tests/data/README.md;
``TSJAX_REFERENCE`` may point to another copy of the reference folder)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

REF = (
    Path(os.environ.get("TSJAX_REFERENCE", Path(__file__).resolve().parent / "data")).resolve()
    / "nn2pp"
)


def available() -> bool:
    return REF.is_dir()


def read_tsv(name: str) -> dict[str, np.ndarray]:
    """Columns of a reference TSV (comment lines start with '#', then a header line)."""
    lines = [ln for ln in (REF / name).read_text().splitlines() if ln and not ln.startswith("#")]
    header = lines[0].split("\t")
    data = np.array([[float(x) for x in ln.split("\t")] for ln in lines[1:]])
    return {h: data[:, i] for i, h in enumerate(header)}


def read_ic(prefix: str):
    """(Q0, R0, T0, v0, v_star0) of ic/{prefix}_*.dat."""

    def ld(s):
        return np.loadtxt(REF / "ic" / f"{prefix}_{s}.dat", delimiter=",", ndmin=1)

    Q, R, T = (np.atleast_2d(ld(s)) for s in ("Q0", "R0", "T0"))
    return Q, R, T, ld("v0"), ld("A0")


def read_rhs() -> list[dict]:
    return json.loads((REF / "rhs_reference.json").read_text())["entries"]
