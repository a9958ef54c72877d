r"""Summaries of a task switch: forgetting of the old task and transfer to the new one.

For a trajectory with ``eg_tasks`` (T, P) (any engine) and a switch from task ``old`` to task
``new`` at alpha_s (Lee, Goldt & Saxe 2021; Lee et al. 2022):

* ``error_old_at_switch``  eps_old(alpha_s): how well the old task was learnt;
* ``forgetting``           eps_old(alpha_end) - eps_old(alpha_s): the final increase of the
                           old task's error (catastrophic forgetting);
* ``max_forgetting``       max_{alpha >= alpha_s} eps_old(alpha) - eps_old(alpha_s);
* ``transfer_error``       eps_new(alpha_s): the zero-shot error on the new task at the
                           switch (before training on it);
* ``transfer``             eps_new(alpha_0) - eps_new(alpha_s): how much training on the
                           old task reduced the new task's error (positive: forward transfer).

Values at alpha_s are linearly interpolated on the save grid; include alpha_s in ``alphas``
for exact values. Written with ``jax.numpy`` only, so it works under ``jax.vmap`` (a batch of
trajectories, e.g. a sweep over feature similarity) and ``jax.grad``.
"""

from __future__ import annotations

import jax.numpy as jnp

from ._trajectory import Trajectory

__all__ = ["forgetting_transfer"]


def forgetting_transfer(traj: Trajectory, switch_at, *, old: int = 0, new: int = 1) -> dict:
    """Forgetting and transfer summaries of a switch at ``switch_at`` from task ``old`` to
    task ``new`` (module docstring). Returns a dict of scalars (arrays under ``vmap``)."""
    if not isinstance(traj, Trajectory) or traj.eg_tasks is None:
        raise ValueError("traj: expected a tsjax.Trajectory with eg_tasks")
    P = traj.eg_tasks.shape[-1]
    for name, i in (("old", old), ("new", new)):
        if not isinstance(i, int) or not 0 <= i < P:
            raise ValueError(f"{name}: a task index in [0, {P - 1}], got {i!r}")
    a = traj.alpha
    e_old, e_new = traj.eg_tasks[:, old], traj.eg_tasks[:, new]
    s = jnp.asarray(switch_at, a.dtype)
    old_s = jnp.interp(s, a, e_old)
    new_s = jnp.interp(s, a, e_new)
    after = a >= s
    peak = jnp.max(jnp.where(after, e_old, -jnp.inf))
    return dict(
        error_old_at_switch=old_s,
        forgetting=e_old[-1] - old_s,
        max_forgetting=jnp.maximum(peak, old_s) - old_s,
        transfer_error=new_s,
        transfer=e_new[0] - new_s,
    )
