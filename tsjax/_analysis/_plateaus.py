r"""Plateaus of a learning curve.

A plateau is a maximal stretch of the saved curve eps_g(alpha) on which the error is
nearly constant, |d ln eps_g / d alpha| <= ``rel_slope`` (finite differences between save
points), that lasts at least ``min_length`` units of alpha and is followed by a real drop
(the error falls by the factor ``drop`` before the end of the trajectory). The last
condition separates a plateau from the slow final convergence.
"""

from __future__ import annotations

import equinox as eqx
import numpy as np

from .._trajectory import Trajectory

__all__ = ["Plateau", "find_plateaus"]


class Plateau(eqx.Module):
    """A plateau of a learning curve: ``onset`` and ``end`` (alpha), ``height`` (the median
    eps_g between them) and ``index`` (the save points [i0, i1] it covers)."""

    onset: float
    end: float
    height: float
    index: tuple

    @property
    def length(self) -> float:
        return self.end - self.onset


def find_plateaus(
    traj: Trajectory,
    *,
    rel_slope: float = 1e-2,
    min_length: float = 10.0,
    drop: float = 2.0,
) -> list[Plateau]:
    """The plateaus of ``traj.eg`` (module docstring), in time order.

    Args:
        traj: a :class:`~tsjax.Trajectory` (save points dense enough to resolve the
            plateau: a few per unit of its length).
        rel_slope: the largest relative rate |d ln eps / d alpha| on a plateau.
        min_length: the shortest plateau, in units of alpha.
        drop: the factor by which eps_g must fall after the plateau.
    """
    for name, x in (("rel_slope", rel_slope), ("min_length", min_length), ("drop", drop)):
        if not (np.isscalar(x) and np.isfinite(x) and x > 0):
            raise ValueError(f"{name}: expected a positive number, got {x!r}")
    if drop <= 1:
        raise ValueError(f"drop: expected a factor > 1, got {drop!r}")
    a = np.asarray(traj.alpha, dtype=np.float64)
    e = np.asarray(traj.eg, dtype=np.float64)
    ok = np.isfinite(e) & (e > 0)
    a, e = a[ok], e[ok]
    if a.size < 3:
        return []
    rate = np.abs(np.diff(np.log(e)) / np.diff(a))  # per interval between save points
    flat = rate <= rel_slope
    out = []
    i = 0
    n = flat.size
    while i < n:
        if not flat[i]:
            i += 1
            continue
        j = i
        while j + 1 < n and flat[j + 1]:
            j += 1
        i0, i1 = i, j + 1  # save points covered
        height = float(np.median(e[i0 : i1 + 1]))
        if a[i1] - a[i0] >= min_length and np.min(e[i1:]) <= height / drop:
            out.append(Plateau(float(a[i0]), float(a[i1]), height, (int(i0), int(i1))))
        i = j + 1
    return out
