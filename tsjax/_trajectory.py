"""One trajectory type for the ODE and for the simulators."""

from __future__ import annotations

import os

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._curricula import realised
from ._io import atomic_write
from ._order_params import OrderParams, covariance_from, eg_from, eg_tasks_from
from ._results import RESULTS, DivergenceError

__all__ = ["Trajectory", "DivergenceError"]


class Trajectory(eqx.Module):
    """Order parameters and generalisation error at the save times.

    Fields (T = number of save times; extra leading axes appear under ``jax.vmap``):
        alpha: (T,) save times, alpha = steps / N.
        eg: (T,) noise-free generalisation error eps_g (docs/conventions.md).
        Q: (T, K, K), R: (T, K, M), v: (T, K) student order parameters.
        T: (M, M) and v_star: (M,) of the teacher (constant in time).
        diverged_at: scalar, the alpha at which the run diverged or stopped (``inf`` if it
            did not). Values saved after it are NaN.
        result: a :class:`~tsjax.RESULTS` item saying how the run ended (``successful``,
            ``diverged``, ``max_steps_reached``, ``solver_failure``, ``invalid_input``).
        eg_tasks: (T, P) eps_g of the student on each teacher (head p on teacher p for a
            multi-head student, the one head otherwise); (T, 1) with one teacher.
        switched_at: with a ``tsjax.ThresholdSwitch`` curriculum, the alphas at which the
            task switched (inf where it did not); None otherwise.

    With several teachers (``v_star`` (P, M)), ``eg`` is the error on the training
    distribution at each save time, sum_p pi_p(alpha) eg_tasks[:, p] (pi: the curriculum),
    and ``v`` is (T, H, K) when the student has H heads given as a 2-D ``v``.
    """

    alpha: Float[Array, " T"]
    eg: Float[Array, " T"]
    Q: Float[Array, "T K K"]
    R: Float[Array, "T K M"]
    v: Float[Array, "T K"]
    T: Float[Array, "M M"]
    v_star: Float[Array, " M"]
    diverged_at: Float[Array, ""]
    result: RESULTS = eqx.field(default_factory=lambda: RESULTS.successful)
    eg_tasks: Float[Array, "T P"] | None = None
    switched_at: Float[Array, " S"] | None = None

    @property
    def final(self) -> OrderParams:
        """The order parameters at the last save time."""
        return self.at(-1)

    def at(self, index: int) -> OrderParams:
        """The order parameters at save index ``index``."""
        return OrderParams(self.Q[index], self.R[index], self.T, self.v[index], self.v_star)

    @property
    def diverged(self):
        return jnp.isfinite(self.diverged_at)

    def to_dict(self) -> dict[str, np.ndarray]:
        """A flat dict of numpy arrays: ``alpha``, ``eg`` and one column per order parameter
        (``Q_k_l`` for k <= l, ``R_k_n``, ``v_k``; teacher ``T_n_m``, ``v_star_n``). Every
        column has the length of ``alpha`` (teacher values repeated), so it is a table."""
        alpha = np.asarray(self.alpha)
        if alpha.ndim != 1:
            raise ValueError("to_dict: only for a single (un-batched) trajectory")
        n = len(alpha)
        out = {"alpha": alpha, "eg": np.asarray(self.eg)}
        Q, R, v = np.asarray(self.Q), np.asarray(self.R), np.asarray(self.v)
        T, vs = np.asarray(self.T), np.asarray(self.v_star)
        K, M = R.shape[-2], R.shape[-1]
        if vs.ndim == 2 and self.eg_tasks is not None:
            for p in range(vs.shape[0]):
                out[f"eg_task_{p}"] = np.asarray(self.eg_tasks)[:, p]
        for k in range(K):
            for l in range(k, K):
                out[f"Q_{k}_{l}"] = Q[:, k, l]
        for k in range(K):
            for m in range(M):
                out[f"R_{k}_{m}"] = R[:, k, m]
        if v.ndim == 3:  # heads
            for h in range(v.shape[1]):
                for k in range(K):
                    out[f"v_{h}_{k}"] = v[:, h, k]
        else:
            for k in range(K):
                out[f"v_{k}"] = v[:, k]
        for n_ in range(M):
            for m in range(n_, M):
                out[f"T_{n_}_{m}"] = np.full(n, T[n_, m])
        if vs.ndim == 2:
            for p in range(vs.shape[0]):
                for m in range(M):
                    out[f"v_star_{p}_{m}"] = np.full(n, vs[p, m])
        else:
            for m in range(M):
                out[f"v_star_{m}"] = np.full(n, vs[m])
        return out

    def to_csv(self, path: str | os.PathLike, *, extra: dict[str, np.ndarray] | None = None):
        """Write :meth:`to_dict` (plus ``extra`` columns) as CSV, atomically (a temporary
        file in the same folder, then ``os.replace``), so that a saved file is never left
        half-written."""
        cols = self.to_dict()
        if extra:
            cols.update({k: np.asarray(v) for k, v in extra.items()})
        write_csv_atomic(path, cols)


def write_csv_atomic(path: str | os.PathLike, cols: dict[str, np.ndarray]) -> None:
    """Write equal-length columns as a CSV file atomically (``tsjax._io.atomic_write``)."""
    names = list(cols)
    data = np.column_stack([np.asarray(cols[k], dtype=np.float64) for k in names])

    def write(tmp):
        with open(tmp, "w") as f:
            np.savetxt(f, data, delimiter=",", header=",".join(names), comments="", fmt="%.17g")

    atomic_write(path, write, suffix=".csv")


def build_trajectory(
    problem,
    alphas,
    valid,
    Q,
    R,
    v,
    T,
    v_star_in,
    diverged_at,
    result,
    v_shape=None,
    switched=None,
) -> Trajectory:
    """The Trajectory of saved states Q (S, K, K), R (S, K, M), v (S, H, K): eps_g on every
    teacher (``eg_tasks``, (S, P)) and on the training distribution (``eg``: the
    curriculum-weighted mean over teachers at each save time); NaN where not ``valid``.
    ``v`` (S, H, K) is reshaped to (S,) + ``v_shape`` (the shape of the initial v, so a
    1-D one stays (S, K)). Shared by the ODE and the simulators."""
    act = problem.activation
    v_star = jnp.atleast_2d(v_star_in)
    cur = problem.curriculum
    switched_at = None
    if cur.error_thresholds() is not None:  # the time-based curriculum it realised
        switched_at = switched
        cur = realised(cur, switched)
    if v_star.shape[0] == 1 and v.shape[1] == 1:  # one teacher, one head: today's formula
        eg = jax.vmap(
            lambda Q_, R_, v_: eg_from(act, covariance_from(Q_, R_, T), v_[0], v_star[0])
        )(Q, R, v)
        eg_tasks = eg[:, None]
    else:
        eg_tasks = jax.vmap(
            lambda Q_, R_, v_: eg_tasks_from(act, covariance_from(Q_, R_, T), v_, v_star)
        )(Q, R, v)
        w = jax.vmap(lambda a: cur.weights(a, v_star.shape[0]))(alphas)
        eg = jnp.sum(w * eg_tasks, axis=-1)
    nan = jnp.asarray(jnp.nan, Q.dtype)
    if v_shape is not None:
        v = v.reshape(v.shape[:1] + tuple(v_shape))
    return Trajectory(
        alpha=alphas,
        eg=jnp.where(valid, eg, nan),
        Q=jnp.where(valid[:, None, None], Q, nan),
        R=jnp.where(valid[:, None, None], R, nan),
        v=jnp.where(valid.reshape((-1,) + (1,) * (v.ndim - 1)), v, nan),
        T=T,
        v_star=v_star_in,
        diverged_at=diverged_at,
        result=result,
        eg_tasks=jnp.where(valid[:, None], eg_tasks, nan),
        switched_at=switched_at,
    )
