r"""Sweeps: the ODE (and optionally a simulator) over a grid of settings as one compiled program.

``tsjax.sweep`` runs the Cartesian product of the given values of K, M, activation, lr, lr_v,
noise, weight_decay, init_scale and seed and returns an ``xarray.Dataset``.

How a grid becomes one program
------------------------------
* **Padding.** Every student is padded to the largest K (every teacher to the largest M) of
  the grid with inactive units: v = 0 (v* = 0), zero overlaps with all other units and, for
  the ODE, unit self-overlap (Q_kk = 1, T_nn = 1, so that every Gaussian integral stays
  regular). An inactive unit never enters a sum (its second-layer weight is 0), its
  derivatives are masked to 0 and it is left out of the step-size controller's error norm
  (``tsjax._ode._MaskedRMSNorm``): the controller sees exactly the norm of the unpadded
  system, so a padded point takes the same steps as the single ``solve_ode`` call, and
  agrees with it to round-off (tests: 3e-10 relative; for scale, ``jax.jit(solve_ode)``
  and ``solve_ode`` themselves differ by up to ~1e-11 after a fast transient, from XLA's
  different fusion of the same formulas). Cost: a padded point costs what a K_max point
  costs. The simulators pad likewise: the network simulation with zero weight rows and
  v = 0 (exact when g(0) = 0, e.g. erf, ReLU, linear; otherwise use ``group_by=("K",)``),
  the order-parameter chain with zero overlaps and masked updates, drawing its random
  numbers so that the real units get the same numbers as in the unpadded chain.
* **Activations.** Several activations are dispatched per point with ``jax.lax.switch`` on an
  index (``_Switched``). Evaluated one point at a time (``lax.map``, the default on a CPU)
  only the selected branch runs; inside ``jax.vmap`` (``vmap_size > 1``, the default on a
  GPU) *every* activation's integrals are computed for every point, so a cheap activation in
  a sweep with ReLU pays for ReLU's I4.
* **group_by.** ``group_by=("K", "activation")`` (any of "K", "M", "activation") splits the
  grid into groups that are compiled separately, each padded to its own largest K, M and
  holding one activation: one compilation per group instead of one in all, but no padding
  or switching cost. Use it when K ranges widely (K = 1..8 padded to 8 costs ~8x the
  K = 1..4 points' own cost) or when activations differ much in cost.
* **Chunks.** The points of a group are processed in chunks of ``chunk_size`` points by one
  jitted function of fixed shapes (the last chunk is padded with copies of a point), so the
  grid size never causes a recompilation, and only one chunk's inputs and outputs live on
  the device at a time (a 10^5-point sweep allocates ~ chunk_size points' worth of device
  memory, plus the host arrays of the result). The initial order parameters (and, for a
  network simulation, the initial weights) of a chunk's points are computed on the host
  with the public functions (cached per (K, M, init_scale, seed)), so that they are bitwise
  those a single call starts from: initial conditions differing in the last bit (as XLA's
  fusion of the same formulas inside a larger program produces) can differ by ~1e-10 after
  a fast transient.
* **Devices.** With several devices (``jax.devices()``, or ``devices=``) each chunk is
  split across a 1-d mesh ``Mesh(devices, ("points",))`` with ``jax.shard_map``: every
  device runs its slice of the chunk. The same code runs on one device.

Several GPUs on one host: nothing to do (all visible GPUs are used; restrict them with
``CUDA_VISIBLE_DEVICES`` or ``devices=``). Several CPU cores: XLA runs one while loop on one
core, so expose the cores as devices, ``XLA_FLAGS=--xla_force_host_platform_device_count=2``
(set before importing jax). Several hosts: start the same script on every host with
``jax.distributed.initialize(coordinator_address=..., num_processes=..., process_id=...)``
(or with no arguments under SLURM/Open MPI/Cloud TPU) before calling ``sweep``; the mesh then
spans the devices of all hosts, every process builds the same chunks, feeds its own devices
(``jax.make_array_from_callback``) and gathers the results
(``jax.experimental.multihost_utils.process_allgather``), so every process returns the full
Dataset; only process 0 writes files (``save_sweep``, ``resume_dir``).

Initial conditions and reproducing a point
------------------------------------------
Point (K, M, init_scale, seed) starts from the networks (``key = jax.random.key(seed)``)

    teacher = tsjax.init_teacher(jax.random.fold_in(key, 0), N, M, v_star=v_star)
    student = tsjax.init_student(jax.random.fold_in(key, 1), N, K, scale=init_scale, v=v0)

the ODE from ``tsjax.order_params(student, teacher)``, the network simulation with SGD key
``jax.random.fold_in(key, 2)`` (``simulate(student, teacher, fold_in(key, 2), ...)``), the
order-parameter chain with that key too (``simulate_order_params``); ``sweep_point`` returns
these for a point. The teacher of a seed is the same for every K.

Output: see :func:`sweep`. Files: :func:`save_sweep` / :func:`load_sweep` (netCDF, atomic).
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import hashlib
import itertools
import json
import math
import os
import time
import uuid
import warnings
from collections.abc import Sequence

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._activations import Activation, get_activation
from ._checks import (
    DEFAULT_MAX_NORM,
    check_alphas,
    is_int_at_least,
    warn_if_float32,
)
from ._curricula import TaskSwitch, as_curriculum
from ._integrals import i3_contracted, i4_contracted
from ._io import atomic_write
from ._networks import TwoLayerNet, init_student, init_teacher, init_teachers, order_params
from ._ode import OdeState, _solve, default_solver
from ._order_params import OrderParams
from ._problem import Problem
from ._results import RESULT_NAMES, result_index
from ._rules import AbstractRule, as_rule
from ._schedules import Constant
from ._simulate import _block_length, _save_steps
from ._simulate import _run as _run_network
from ._simulate_op import _run_op

__all__ = ["sweep", "sweep_point", "save_sweep", "load_sweep", "SWEEP_DIMS", "STATUS"]


# --------------------------------------------------------------------------------------
# The swept quantities: adding one is adding a _Dim (and its keyword of ``sweep``)
# --------------------------------------------------------------------------------------


def _problem_setter(key, wrap=lambda x: x):
    def apply(kwargs, x):
        kwargs[key] = wrap(x)

    return apply


@dataclasses.dataclass(frozen=True)
class _Dim:
    """A swept quantity.

    ``role``: ``"shape"`` fixes the shapes of the compiled program (K, M, activation, heads:
    grouped or padded); ``"network"`` enters through the initial networks of a point (its
    keyword of :func:`sweep_point`); ``"problem"`` is a traced number of the learning problem,
    set on the keywords of :class:`~tsjax.Problem` by ``apply``. ``check(value, ctx)``
    validates and normalises one value (``ctx``: ``teachers``, ``alphas``), raising a
    ``ValueError`` that names the dimension. ``continual``: only with several teachers
    (``default`` otherwise). ``network_kw``: the :func:`sweep_point` keyword it sets;
    ``optional``: None means "not set". ``"rule"``: a learning rule (``tsjax._rules``);
    the numbers of a swept rule (its array leaves) are traced, its kind is fixed."""

    name: str
    role: str
    check: object
    apply: object = None
    continual: bool = False
    default: object = None
    network_kw: str | None = None
    optional: bool = False  # None is allowed (not set: e.g. no switch)


def _in_range(name, lo, hi, open_=False):
    return lambda x, ctx: _check_range(name, x, lo(ctx), hi(ctx), open_)


def _check_heads(x, ctx):
    h = _check_int("heads", x, 1)
    if h not in (1, ctx["teachers"]):
        raise ValueError(
            f"heads: 1 (single-head) or teachers = {ctx['teachers']} (multi-head), got {x!r}"
        )
    return h


def _check_seed(x, ctx):
    x = _check_int("seed", x, 0)
    if x >= 2**32:
        raise ValueError("seed: expected integers < 2**32")
    return x


_DIMS = (
    _Dim("K", "shape", lambda x, ctx: _check_int("K", x, 1), network_kw="K"),
    _Dim("M", "shape", lambda x, ctx: _check_int("M", x, 1), network_kw="M"),
    _Dim("activation", "shape", lambda x, ctx: get_activation(x)),
    _Dim("lr", "problem", lambda x, ctx: _check_float("lr", x), _problem_setter("lr", Constant)),
    _Dim(
        "lr_v", "problem", lambda x, ctx: _check_float("lr_v", x), _problem_setter("lr_v", Constant)
    ),  # fmt: skip
    _Dim("noise", "problem", lambda x, ctx: _check_float("noise", x), _problem_setter("noise")),
    _Dim(
        "weight_decay",
        "problem",
        lambda x, ctx: _check_float("weight_decay", x),
        _problem_setter("weight_decay"),
    ),  # fmt: skip
    _Dim(
        "init_scale",
        "network",
        lambda x, ctx: _check_float("init_scale", x, True),
        network_kw="init_scale",
    ),  # fmt: skip
    _Dim("seed", "network", _check_seed, network_kw="seed"),
    _Dim(
        "feature_similarity",
        "network",
        _in_range("feature_similarity", lambda c: -1.0 / max(c["teachers"] - 1, 1), lambda c: 1.0),
        continual=True,
        default=1.0,
        network_kw="feature_similarity",
    ),  # fmt: skip
    _Dim(
        "readout_similarity",
        "network",
        _in_range("readout_similarity", lambda c: -1.0, lambda c: 1.0),
        continual=True,
        default=1.0,
        network_kw="readout_similarity",
    ),  # fmt: skip
    _Dim(
        "switch_at",
        "problem",
        _in_range("switch_at", lambda c: c["alphas"][0], lambda c: c["alphas"][-1], True),
        _problem_setter("curriculum", lambda x: TaskSwitch(x)),
        continual=True,
        optional=True,
    ),
    _Dim("heads", "shape", _check_heads, continual=True, default=1, network_kw="heads"),
    _Dim("rule", "rule", lambda x, ctx: as_rule(x), optional=True),
    _Dim("delta", "inputs", lambda x, ctx: _check_float("delta", x, True), optional=True),
    _Dim("feature_map", "inputs", lambda x, ctx: _check_feature(x), optional=True),
)
#: The swept parameters, in the order of the Dataset's dimensions (the continual ones only
#: with several teachers, ``teachers=P > 1``).
SWEEP_DIMS = tuple(d.name for d in _DIMS)
_CONTINUAL_DIMS = tuple(d.name for d in _DIMS if d.continual)


def _freeze(tree):
    """A hashable copy of a pytree (arrays as (shape, values)), so that a fixed setting
    such as a curriculum can be a static part of the compiled chunk function."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    frozen = tuple(
        ("array", np.shape(x), tuple(np.ravel(np.asarray(x, np.float64)).tolist()))
        if eqx.is_array_like(x)
        else x
        for x in leaves
    )
    return treedef, frozen


def _thaw(frozen, dtype):
    treedef, leaves = frozen
    out = [
        jnp.asarray(np.reshape(np.asarray(x[2], np.float64), x[1]), dtype)
        if isinstance(x, tuple) and len(x) == 3 and x[0] == "array"
        else x
        for x in leaves
    ]
    return jax.tree_util.tree_unflatten(treedef, out)


def _check_feature(x):
    """A feature map's name (its constants are traced numbers of the point)."""
    from ._inputs._hidden_manifold import _check_constants, _resolve_feature

    if not isinstance(x, str):
        raise ValueError(f"feature_map: a sweep takes feature-map names, got {x!r}")
    name, _, consts = _resolve_feature(x)
    _check_constants(name, consts)
    return name


def _feature_consts(name: str) -> tuple[float, float, float]:
    """(mu1, mu_*^2, E f^2) of a named feature map."""
    from ._inputs._hidden_manifold import _resolve_feature

    _, _, (mu0, mu1, ef2) = _resolve_feature(name)
    return mu1, max(ef2 - mu1 * mu1, 0.0), ef2


def _manifold_point(spec, p, problem, Q, T, v, vt, alphas):
    """The hidden-manifold limit ODE of one point: delta and the feature map's constants
    traced, the typical initial densities sigma(rho) = rho Q0, r = 0, t = T0."""
    from ._inputs._hidden_manifold import HiddenManifoldLimit, _mp_nodes, typical_state
    from ._inputs._manifold_ode import solve_manifold_ode

    dtype = Q.dtype
    delta = p["delta"]
    rho, w = _mp_nodes(delta, spec.hmm_nodes)
    lim = HiddenManifoldLimit(delta, rho.astype(dtype), w.astype(dtype), p["fm_mu1"],
                              p["fm_mus2"], p["fm_ef2"], "swept", None)  # fmt: skip
    op = typical_state(lim, Q, T, v, vt)
    tr, nsteps = solve_manifold_ode(op, problem, alphas, spec.rtol, spec.atol, spec.hmm_solver,
                                    spec.max_steps, False, with_steps=True)  # fmt: skip
    return tr, nsteps


def _rule_params(rule) -> dict:
    """The scalar parameters of a rule by name, its nested modules' included (e.g. the RL
    perceptron's ``episode_length``, ``penalty`` and its reward's ``min_correct``)."""
    out = {}
    for f in dataclasses.fields(rule):
        x = getattr(rule, f.name)
        if isinstance(x, eqx.Module):
            out.update(_rule_params(x))
            continue
        a = np.asarray(x)
        if a.ndim == 0 and a.dtype != bool and np.issubdtype(a.dtype, np.number):
            out[f.name] = float(a)
    return out


def _rule_coords(rules: list, is_dim: bool) -> dict:
    """Coordinates of the rule: none for the default (SGD, not given), else its label
    (``repr``) and one coordinate per scalar parameter that every rule has (e.g. ``beta``,
    or ``episode_length``, ``min_correct``, ``penalty`` along ``rule``)."""
    if rules == [None]:
        return {}
    dims = ("rule",) if is_dim else ()
    labels = np.asarray([repr(r) for r in rules])
    out = {"rule": (dims, labels if is_dim else labels[0])}
    params = [_rule_params(r) for r in rules]
    for name in params[0]:
        if all(name in q for q in params):
            arr = np.asarray([q[name] for q in params], np.float64)
            out[name] = (dims, arr if is_dim else arr[0])
    return out


def _rule_kinds(rules: list) -> tuple[list, list]:
    """(specs, kind): the static parts of the sweep's rules, one per kind, and the kind of
    each rule. A kind is a structure (type, static fields such as the RL perceptron's
    episode length) with arrays of given shapes: one compiled program serves the rules of
    a kind (their arrays are traced), and each kind is a group of its own. The default
    (``[None]``): ([None], [0])."""
    if not any(isinstance(r, eqx.Module) for r in rules):
        return [None], [0] * len(rules)
    specs, sigs, kind = [], [], []
    for r in rules:
        leaves, td = jax.tree_util.tree_flatten(r)
        sig = (td, tuple(np.shape(x) if eqx.is_array(x) else ("static", x) for x in leaves))
        if sig not in sigs:
            sigs.append(sig)
            specs.append((td, tuple(None if eqx.is_array(x) else x for x in leaves)))
        kind.append(sigs.index(sig))
    return specs, kind


def _problem_of(act, p) -> Problem:
    """The learning problem of one point: the traced numbers of its problem dimensions."""
    kwargs = dict(activation=act)
    for d in _DIMS:
        if d.role == "problem" and d.name in p:
            d.apply(kwargs, p[d.name])
    return Problem(**kwargs)


#: Meaning of the ``status`` variables.
STATUS = {i: name for i, name in enumerate(RESULT_NAMES)}
_GROUPABLE = ("K", "M", "activation")
_SIM_KINDS = {False: None, None: None, True: "network", "network": "network", "order_params": "op"}

#: Number of traces of the compiled chunk function, by kind ("ode", "ode+network", ...).
#: A trace happens once per distinct shape class (group); tests/test_sweep.py checks it.
TRACE_COUNTS: collections.Counter = collections.Counter()


# --------------------------------------------------------------------------------------
# Activation switching
# --------------------------------------------------------------------------------------


class _Switched(Activation):
    """One of several activations, chosen by an (array) index: every method dispatches with
    ``jax.lax.switch`` (under ``jax.vmap`` all branches are evaluated)."""

    acts: tuple = eqx.field(static=True)
    index: jax.Array

    def __init__(self, acts, index):
        super().__init__()
        self.acts = tuple(acts)
        self.index = jnp.asarray(index, jnp.int32)

    @property
    def name(self) -> str:
        return "switch(" + ",".join(a.name for a in self.acts) + ")"

    @property
    def closed_form(self) -> bool:
        return all(a.closed_form for a in self.acts)

    def _sw(self, method, *args):
        fns = [lambda *a, _act=act: getattr(_act, method)(*a) for act in self.acts]
        return jax.lax.switch(self.index, fns, *args)

    def __call__(self, x):
        return self._sw("__call__", jnp.asarray(x))

    def derivative(self, x):
        return self._sw("derivative", jnp.asarray(x))

    def i2(self, caa, cab, cbb):
        caa, cab, cbb = jnp.broadcast_arrays(caa, cab, cbb)
        return self._sw("i2", caa, cab, cbb)

    def j2(self, caa, cab, cbb):
        caa, cab, cbb = jnp.broadcast_arrays(caa, cab, cbb)
        return self._sw("j2", caa, cab, cbb)

    def i3(self, c):
        return self._sw("i3", jnp.asarray(c))

    def i4(self, c):
        return self._sw("i4", jnp.asarray(c))

    # The contracted sums of the ODE, switched whole, so that every branch computes them
    # exactly as a single solve_ode with that activation does (erf's shared-factor closed
    # forms, the joint quadrature rule of quadrature activations).
    def contract_i3(self, C, u, K: int):
        fns = [lambda C, u, _a=act: i3_contracted(_a, C, u, K) for act in self.acts]
        return jax.lax.switch(self.index, fns, C, u)

    def contract_i4(self, C, u, K: int):
        fns = [lambda C, u, _a=act: i4_contracted(_a, C, u, K) for act in self.acts]
        return jax.lax.switch(self.index, fns, C, u)


def _pick_activation(acts, index):
    return acts[0] if len(acts) == 1 else _Switched(acts, index)


# --------------------------------------------------------------------------------------
# The static description of a compiled chunk function
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Spec:
    Ks: tuple  # the K values of the group (padded to max)
    Ms: tuple
    acts: tuple
    N: int
    alphas: tuple
    rtol: float
    atol: float
    solver: object
    max_steps: int
    max_norm: float
    sim: str | None  # None, "network" or "op"
    ode: bool
    batch_size: int
    v0: object  # float or "gaussian"
    v_star: object
    teachers: int  # P (1: one teacher, today's problem)
    heads: int  # H (1 or P)
    curriculum: object  # a fixed curriculum of every point, frozen (_freeze), or None
    rule: object  # (treedef, static leaves) of the learning rule, or None (SGD)
    hmm_nodes: int | None  # hidden-manifold limit: Marchenko-Pastur nodes (or None)
    hmm_solver: object
    vmap_size: int
    mesh: object  # jax.sharding.Mesh or None
    dtype: str

    @property
    def Kp(self) -> int:
        return max(self.Ks)

    @property
    def Mp(self) -> int:
        return max(self.Ms)

    @property
    def Mtot(self) -> int:
        """Stacked teacher units (P M; with several teachers M is one value per group)."""
        return self.teachers * self.Mp

    @property
    def kind(self) -> str:
        parts = (["ode"] if self.ode else []) + ([self.sim] if self.sim else [])
        return "+".join(parts)


def _point(spec: _Spec, p):
    """Everything computed for one point (inside jit; ``p``: dict of scalars)."""
    dtype = jnp.dtype(spec.dtype)
    N = spec.N
    Kp, Mp = spec.Kp, spec.Mp
    k_sgd = jax.random.fold_in(jax.random.key(p["seed"]), 2)
    Q, R, T, v, vt = p["Q0"], p["R0"], p["T0"], p["v0"], p["v_star0"]
    K = jnp.asarray(spec.Ks, jnp.int32)[p["k_idx"]]
    M = jnp.asarray(spec.Ms, jnp.int32)[p["m_idx"]] * spec.teachers
    Mp = spec.Mtot
    mk = (jnp.arange(Kp) < K).astype(dtype)
    mm = (jnp.arange(Mp) < M).astype(dtype)
    act = _pick_activation(spec.acts, p["act_idx"])
    problem = _problem_of(act, p)
    if spec.curriculum is not None:  # a fixed curriculum (switch_at is then not swept)
        problem = eqx.tree_at(lambda q: q.curriculum, problem, _thaw(spec.curriculum, dtype))
    if spec.rule is not None:  # the point's rule: its traced numbers in its fixed kind
        treedef, static = spec.rule
        leaves = iter(p[f"rule{j}"] for j in range(sum(x is None for x in static)))
        rule = jax.tree_util.tree_unflatten(
            treedef, [next(leaves) if x is None else x for x in static]
        )
        problem = eqx.tree_at(lambda q: q.rule, problem, rule)
    limits = problem.divergence_limits(Q, T, v, vt, spec.max_norm)
    alphas = jnp.asarray(spec.alphas, dtype)

    out = dict(T=T, v_star=vt)
    if spec.ode and spec.hmm_nodes is not None:  # the hidden-manifold limit
        traj, nsteps = _manifold_point(
            spec, p, problem, Q, T, v, vt, jnp.asarray(spec.alphas, dtype)
        )
        out.update(eg=traj.eg, Q=traj.Q[-1], R=traj.R[-1], v=traj.v[-1],
                   status=result_index(traj.result), diverged_at=traj.diverged_at,
                   num_steps=nsteps.astype(jnp.int32))  # fmt: skip
    elif spec.ode:
        # ODE: padded units get unit self-overlap so that every integral is regular.
        op0 = OrderParams(Q + jnp.diag(1.0 - mk), R, T + jnp.diag(1.0 - mm), v, vt)
        mask = OdeState(mk[:, None] * mk[None, :], mk[:, None] * mm[None, :], mk)
        traj, info = _solve(
            op0,
            problem,
            alphas,
            spec.rtol,
            spec.atol,
            spec.solver,
            spec.max_steps,
            limits,
            mask=mask,
        )
        status = result_index(traj.result)
        out.update(
            eg=traj.eg,
            eg_tasks=traj.eg_tasks,
            Q=traj.Q[-1],
            R=traj.R[-1],
            v=traj.v[-1],
            status=status,
            diverged_at=traj.diverged_at,
            num_steps=info["num_steps"].astype(jnp.int32),
        )
    if spec.sim is not None:
        a = np.asarray(spec.alphas, np.float64)
        steps = _save_steps(a, N)
        unique, inverse = np.unique(steps, return_inverse=True)
        sim_problem = problem
        if spec.sim == "network":
            st, _ = _run_network(
                p["W"],
                v,
                p["Wt"],
                vt,
                sim_problem,
                k_sgd,
                alphas,
                jnp.asarray(steps, jnp.int32),
                jnp.asarray(unique, jnp.int32),
                jnp.asarray(inverse.reshape(-1), jnp.int32),
                int(steps[-1]),
                spec.batch_size,
                _block_length(N, spec.batch_size),
            )
        else:
            st, _ = _run_op(
                Q,
                R,
                T,
                v,
                vt,
                mk,
                mm,
                limits,
                sim_problem,
                k_sgd,
                N,
                N - K - M,
                alphas,
                jnp.asarray(steps, jnp.int32),
                jnp.asarray(unique, jnp.int32),
                jnp.asarray(inverse.reshape(-1), jnp.int32),
                int(steps[-1]),
                spec.batch_size,
            )
        out.update(
            eg_sim=st.eg,
            eg_tasks_sim=st.eg_tasks,
            Q_sim=st.Q[-1],
            R_sim=st.R[-1],
            v_sim=st.v[-1],
            status_sim=result_index(st.result),
            diverged_at_sim=st.diverged_at,
        )
    # Padded units: NaN in the outputs.
    nan = jnp.asarray(jnp.nan, dtype)
    for name in ("Q", "Q_sim"):
        if name in out:
            out[name] = jnp.where(mk[:, None] * mk[None, :] != 0, out[name], nan)
    for name in ("R", "R_sim"):
        if name in out:
            out[name] = jnp.where(mk[:, None] * mm[None, :] != 0, out[name], nan)
    for name in ("v", "v_sim"):
        if name in out:
            out[name] = jnp.where(mk != 0, out[name], nan)
    if spec.teachers == 1:  # one teacher: one row of eg_tasks is eg itself
        out.pop("eg_tasks", None)
        out.pop("eg_tasks_sim", None)
    out["T"] = jnp.where(mm[:, None] * mm[None, :] != 0, T, nan)
    out["v_star"] = jnp.where(mm != 0, vt, nan)
    return out


def _chunk_impl(spec: _Spec, pts):
    TRACE_COUNTS[spec.kind] += 1  # runs at trace time only

    def local(p):
        b = spec.vmap_size
        return jax.lax.map(lambda q: _point(spec, q), p, batch_size=b if b > 1 else None)

    if spec.mesh is not None and spec.mesh.size > 1:
        local = _shard_map(local, spec.mesh, jax.sharding.PartitionSpec("points"))
    return local(pts)


def _shard_map(f, mesh, spec):
    """f mapped over the devices of ``mesh``, each device taking its slice of the leading
    axis (jax.shard_map; jax.experimental.shard_map on older jax)."""
    if hasattr(jax, "shard_map"):
        return jax.shard_map(f, mesh=mesh, in_specs=spec, out_specs=spec, check_vma=False)
    from jax.experimental.shard_map import shard_map  # pragma: no cover

    return shard_map(f, mesh=mesh, in_specs=spec, out_specs=spec, check_rep=False)


_chunk_jit = jax.jit(_chunk_impl, static_argnums=0)


# --------------------------------------------------------------------------------------
# Host side: the grid, groups, chunks
# --------------------------------------------------------------------------------------


def _as_list(name, value):
    """(values, is_dim): a list/tuple/1-d array is a dimension, anything else a scalar."""
    if isinstance(value, (list, tuple, np.ndarray)) and not isinstance(value, str):
        vals = list(np.asarray(value).tolist()) if isinstance(value, np.ndarray) else list(value)
        if len(vals) == 0:
            raise ValueError(f"{name}: expected at least one value")
        return vals, True
    return [value], False


def _check_int(name, x, lo):
    if not is_int_at_least(x, lo):
        raise ValueError(f"{name}: expected integers >= {lo}, got {x!r}")
    return int(x)


def _check_float(name, x, positive=False):
    if isinstance(x, (bool, str, bytes)):  # as solve_ode and simulate: no strings
        raise ValueError(f"{name}: expected numbers, got {x!r}")
    try:
        f = float(x)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name}: expected numbers (learning-rate schedules are not swept), got {x!r}"
        ) from None
    if not math.isfinite(f) or f < 0 or (positive and f == 0):
        raise ValueError(
            f"{name}: expected finite numbers {'> 0' if positive else '>= 0'}, got {x}"
        )
    return f


def _check_range(name, x, lo, hi, open_=False):
    if isinstance(x, (bool, str, bytes)) or x is None:
        raise ValueError(f"{name}: expected numbers in [{lo:g}, {hi:g}], got {x!r}")
    f = float(x)
    bad = not (lo < f < hi) if open_ else not (lo <= f <= hi)
    if not math.isfinite(f) or bad:
        br = ("(", ")") if open_ else ("[", "]")
        raise ValueError(f"{name}: expected numbers in {br[0]}{lo:g}, {hi:g}{br[1]}, got {x}")
    return f


def _activation_labels(acts):
    names = [a.name for a in acts]
    out = []
    for i, n in enumerate(names):
        out.append(n if names.count(n) == 1 else f"{n}_{i}")
    return out


def _device_memory(device) -> int:
    """Total memory of a device in bytes (deterministic, so that default chunk sizes are
    the same when a sweep is resumed)."""
    try:
        stats = device.memory_stats()
        if stats and "bytes_limit" in stats:
            return int(stats["bytes_limit"])
    except Exception:  # noqa: BLE001 - CPU devices may not implement memory_stats
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


def default_chunk(per_device: int, cap: int, platform: str) -> int:
    """Points per device in one compiled call when ``chunk_size`` is not given.

    * Accelerators (GPU/TPU): every point of the group at once, as far as a quarter of the
      device memory holds (``cap``): the points run in lockstep under ``vmap``, and a
      smaller chunk leaves most of the device idle (an H200 ran an erf sweep ~40x faster
      per point with 8192 points in one chunk than with ~13). Progress bars and
      resumability then count groups, not chunks.
    * CPU: about 20 chunks per group (at least 8 points, at most 1024 per device): the
      points of a chunk run one after another (``lax.map``), so small chunks cost nothing
      and give progress reports and resumable sweeps.
    """
    if platform != "cpu":
        return max(1, min(per_device, cap))
    return max(1, min(per_device, cap, 1024, max(8, -(-per_device // 20))))


def _bytes_per_point(Kp, Mp, n_alpha, N, sim, B, vmapped: bool) -> int:
    n_state = Kp * Kp + Kp * Mp + Kp + 1
    b = 8 * n_alpha * n_state * 3  # saved trajectory + outputs, with slack
    b += 8 * (n_state**2) * 4 if vmapped else 0  # Jacobian / LU per lockstep point
    if sim == "network":
        b += 8 * n_alpha * n_state * 2 + 8 * (Kp + Mp) * N  # the initial weights are inputs
        if vmapped:
            b += 8 * ((Kp + Mp) * N * 3 + _block_length(N, B) * B * N)
    elif sim == "op":
        b += 8 * n_alpha * n_state * 2
    return b


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclasses.dataclass
class _Group:
    spec: _Spec
    index: np.ndarray  # flat point indices of the grid
    chunk: int  # points per chunk


class _Plan:
    """The grid, its groups and chunks, and the assembly of the Dataset."""

    def __init__(
        self,
        values: dict,
        is_dim: dict,
        acts: list,
        N: int,
        alphas: np.ndarray,
        common: dict,
        group_by: tuple,
        chunk_size,
        vmap_size,
        devices,
    ):
        self.values, self.is_dim, self.acts = values, is_dim, acts
        self.N, self.alphas, self.common = N, alphas, common
        self.shape = tuple(len(values[d]) for d in SWEEP_DIMS)
        self.n_points = int(np.prod(self.shape))
        devices = list(jax.devices() if devices is None else devices)
        self.devices = devices
        n_dev = len(devices)
        mesh = jax.sharding.Mesh(np.asarray(devices), ("points",)) if n_dev > 1 else None
        self.mesh = mesh
        platform = devices[0].platform
        idx = np.arange(self.n_points)
        multi = np.stack(np.unravel_index(idx, self.shape), axis=-1)  # (n, 9)
        self.multi = multi
        teachers = common["teachers"]
        # heads change shapes, and stacked teachers are not padded: with several teachers
        # every group has one M and one number of heads
        g_names = list(group_by) + (["M", "heads"] if teachers > 1 else [])
        gdims = sorted({SWEEP_DIMS.index(d) for d in g_names})
        keys = [tuple(row) for row in multi[:, gdims]] if gdims else [()] * self.n_points
        # every kind of rule is a group of its own (its static structure is compiled in)
        rule_specs, rule_kind = _rule_kinds(values["rule"])
        dR = SWEEP_DIMS.index("rule")
        keys = [(rule_kind[row[dR]],) + k for row, k in zip(multi, keys, strict=True)]
        order = collections.OrderedDict()
        for i, k in enumerate(keys):
            order.setdefault(k, []).append(i)
        self.groups: list[_Group] = []
        dK, dM, dA = (SWEEP_DIMS.index(d) for d in ("K", "M", "activation"))
        mem = _device_memory(devices[0])
        for _, members in order.items():
            members = np.asarray(members)
            sub = multi[members]
            Ks = tuple(sorted({values["K"][i] for i in sub[:, dK]}))
            Ms = tuple(sorted({values["M"][i] for i in sub[:, dM]}))
            H = values["heads"][sub[0, SWEEP_DIMS.index("heads")]]
            a_idx = sorted(set(sub[:, dA].tolist()))
            g_acts = tuple(acts[i] for i in a_idx)
            rule0 = values["rule"][sub[0, dR]]  # a step's inputs: the rule's (an episode)
            batch = common["batch_size"]
            if isinstance(rule0, AbstractRule):
                batch = rule0.samples_per_step(batch)
            n_g = len(members)
            per_dev = -(-n_g // n_dev)
            if vmap_size is None:
                vm = 1 if platform == "cpu" else None
            else:
                vm = int(vmap_size)
            if chunk_size is None:
                bpp = _bytes_per_point(
                    max(Ks),
                    max(Ms) * teachers,
                    len(alphas),
                    N,
                    common["sim"],
                    common["batch_size"],
                    vm != 1,
                )
                local = default_chunk(per_dev, max(1, mem // 4 // bpp), platform)
            else:
                local = max(1, -(-int(chunk_size) // n_dev))
            if vm is None:
                vm = local
            vm = max(1, min(vm, local))
            local = -(-local // vm) * vm  # a multiple of the lockstep width
            spec = _Spec(
                Ks=Ks,
                Ms=Ms,
                acts=g_acts,
                N=N,
                alphas=tuple(float(a) for a in alphas),
                rtol=common["rtol"],
                atol=common["atol"],
                solver=common["solver"],
                max_steps=common["max_steps"],
                max_norm=common["max_norm"],
                sim=common["sim"],
                ode=common["ode"],
                batch_size=batch,
                v0=common["v0"],
                v_star=common["v_star"],
                teachers=teachers,
                heads=H,
                curriculum=common.get("curriculum"),
                rule=rule_specs[rule_kind[sub[0, dR]]],
                hmm_nodes=common.get("hmm_nodes"),
                hmm_solver=common.get("hmm_solver"),
                vmap_size=vm,
                mesh=mesh,
                dtype=common["dtype"],
            )
            self.groups.append(_Group(spec, members, local * n_dev))
        self.Kmax = max(values["K"])
        self.Mmax = max(values["M"]) * teachers
        self.Hmax = max(values["heads"])
        self.teachers = teachers
        self._ic_cache: dict = {}

    def point_inputs(self, group: _Group, members: np.ndarray) -> dict:
        """Per-point input arrays of a chunk (padded to the chunk size)."""
        n = group.chunk
        sel = np.concatenate([members, np.full(n - len(members), members[0])])
        m = self.multi[sel]
        spec = group.spec
        v = self.values
        dt = np.dtype(spec.dtype)
        col = {d: m[:, i] for i, d in enumerate(SWEEP_DIMS)}
        k_pos = {k: j for j, k in enumerate(spec.Ks)}
        m_pos = {k: j for j, k in enumerate(spec.Ms)}
        a_pos = {id(a): j for j, a in enumerate(spec.acts)}
        out = dict(
            k_idx=np.array([k_pos[v["K"][i]] for i in col["K"]], np.int32),
            m_idx=np.array([m_pos[v["M"][i]] for i in col["M"]], np.int32),
            act_idx=np.array([a_pos[id(self.acts[i])] for i in col["activation"]], np.int32),
            seed=np.array([v["seed"][i] for i in col["seed"]], np.uint32),
        )
        for d in _DIMS:  # the traced numbers of the learning problem
            if d.role == "problem" and v[d.name] != [None]:
                out[d.name] = np.array([v[d.name][i] for i in col[d.name]], dt)
        if spec.hmm_nodes is not None:
            out["delta"] = np.array([v["delta"][i] for i in col["delta"]], dt)
            consts = np.array([_feature_consts(v["feature_map"][i]) for i in col["feature_map"]])
            for j, name in enumerate(("fm_mu1", "fm_mus2", "fm_ef2")):
                out[name] = consts[:, j].astype(dt)
        if spec.rule is not None:
            for j, x in enumerate(self.rule_leaves(col["rule"], dt, spec.Kp)):
                out[f"rule{j}"] = x
        Kp, Mp, P, H = spec.Kp, spec.Mtot, spec.teachers, spec.heads
        keys = [self._ic_key(m[i]) for i in range(n)]
        ics = [self.initial(*k) for k in keys]
        v_shape = (Kp,) if P == 1 else (H, Kp)
        vs_shape = (Mp,) if P == 1 else (P, Mp)
        for j, name in enumerate(("Q0", "R0", "T0", "v0", "v_star0")):
            shape = {"Q0": (Kp, Kp), "R0": (Kp, Mp), "T0": (Mp, Mp), "v0": v_shape}.get(
                name, vs_shape
            )
            arr = np.zeros((n,) + shape, dt)
            for i, ic in enumerate(ics):
                x = ic[j]
                arr[(i,) + tuple(slice(0, s) for s in x.shape)] = x
            out[name] = arr
        if spec.sim == "network":
            out["W"] = np.zeros((n, Kp, self.N), dt)
            out["Wt"] = np.zeros((n, Mp, self.N), dt)
            for i, k in enumerate(keys):
                st, te, _ = self.networks(*k)
                out["W"][i, : st.K] = np.asarray(st.W)
                out["Wt"][i, : te.K] = np.asarray(te.W)
        return out

    def rule_leaves(self, idx, dt, Kp: int) -> tuple:
        """The array leaves of the points' rules, stacked over the points (vectors of K
        entries, e.g. a feedback vector, padded with zeros to Kp)."""
        cols = []
        for r in (self.values["rule"][i] for i in idx):
            leaves = [np.asarray(x, dt) for x in jax.tree_util.tree_leaves(r) if eqx.is_array(x)]
            cols.append([np.pad(x, (0, Kp - x.shape[0])) if x.ndim == 1 else x for x in leaves])
        return tuple(np.stack(c) for c in zip(*cols))

    def _ic_key(self, row) -> tuple:
        """((sweep_point keyword, value), ...) of the grid point with multi-index ``row``:
        what its initial networks depend on (the dimensions with a ``network_kw``)."""
        v = self.values
        return tuple(
            (d.network_kw, v[d.name][row[i]])
            for i, d in enumerate(_DIMS)
            if d.network_kw is not None and not (d.continual and self.teachers == 1)
        )

    def networks(self, *key):
        kw = dict(key, N=self.N, v0=self.common["v0"], v_star=self.common["v_star"])
        if self.teachers > 1:
            kw["teachers"] = self.teachers
        return sweep_point(**kw)

    def initial(self, *key):
        """(Q, R, T, v, v*) of a point, computed eagerly with the public functions (so that
        they are bitwise those of ``order_params(*sweep_point(...)[:2])``), cached."""
        if key not in self._ic_cache:
            if len(self._ic_cache) > 100_000:
                self._ic_cache.clear()
            st, te, _ = self.networks(*key)
            op = order_params(st, te)
            self._ic_cache[key] = tuple(np.asarray(x) for x in (op.Q, op.R, op.T, op.v, op.v_star))
        return self._ic_cache[key]

    def chunks(self):
        """(group number, flat indices) of every chunk, in order."""
        for g, group in enumerate(self.groups):
            for s in range(0, len(group.index), group.chunk):
                yield g, group.index[s : s + group.chunk]

    def run_chunk(self, g: int, members: np.ndarray) -> dict:
        group = self.groups[g]
        host = self.point_inputs(group, members)
        # Deal the points out to the devices round-robin (device d gets points d, d + n_dev,
        # ...): neighbouring grid points (e.g. increasing learning rates) cost alike, so each
        # device gets a share of the cheap and of the expensive ones.
        n_dev = 1 if self.mesh is None else self.mesh.size
        perm = np.arange(group.chunk).reshape(-1, n_dev).T.ravel()
        host = {k: x[perm] for k, x in host.items()}
        if self.mesh is not None:
            sharding = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec("points"))
            dev = {
                k: jax.make_array_from_callback(x.shape, sharding, lambda i, x=x: x[i])
                for k, x in host.items()
            }
        else:
            dev = {k: jax.device_put(x, self.devices[0]) for k, x in host.items()}
        out = _chunk_jit(group.spec, dev)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            out = multihost_utils.process_allgather(out, tiled=True)
        inv = np.argsort(perm)
        res = {k: np.asarray(x)[inv][: len(members)] for k, x in out.items()}
        res["index"] = np.asarray(members, np.int64)
        return res

    # -- assembly ----------------------------------------------------------------------

    def empty_results(self) -> dict:
        n, S = self.n_points, len(self.alphas)
        K, M, P = self.Kmax, self.Mmax, self.teachers
        dt = np.dtype(self.common["dtype"])
        vs = (M,) if P == 1 else (P, M)
        res = dict(T=np.full((n, M, M), np.nan, dt), v_star=np.full((n,) + vs, np.nan, dt))

        def block(suffix):  # the variables of one run type (ODE: "", simulation: "_sim")
            v = (K,) if P == 1 else (self.Hmax, K)
            shapes = dict(eg=(S,), Q=(K, K), R=(K, M), v=v, diverged_at=())
            if P > 1:
                shapes["eg_tasks"] = (S, P)
            out = {k + suffix: np.full((n,) + sh, np.nan, dt) for k, sh in shapes.items()}
            out["status" + suffix] = np.full((n,), -1, np.int8)
            return out

        if self.common["ode"]:
            res.update(block(""), num_steps=np.full((n,), -1, np.int32))
        if self.common["sim"] is not None:
            res.update(block("_sim"))
        return res

    @staticmethod
    def fill(results: dict, chunk: dict) -> None:
        idx = chunk["index"]
        for k, arr in results.items():
            x = chunk[k]
            if x.ndim == 1:
                arr[idx] = x
            else:
                sl = (idx,) + tuple(slice(0, s) for s in x.shape[1:])
                arr[sl] = x

    def dataset(self, results: dict, attrs: dict):
        import xarray as xr

        grid_dims = [d for d in SWEEP_DIMS if self.is_dim[d]]
        grid_shape = tuple(len(self.values[d]) for d in grid_dims)
        labels = _activation_labels(self.acts)
        coords = {}
        for d in SWEEP_DIMS:
            if self.teachers == 1 and d in _CONTINUAL_DIMS:
                continue
            if d == "rule":
                coords.update(_rule_coords(self.values[d], self.is_dim[d]))
                continue
            if d in ("delta", "feature_map") and self.values[d] == [None]:
                continue
            vals = labels if d == "activation" else self.values[d]
            if self.is_dim[d]:
                coords[d] = (d, np.asarray(vals))
            else:
                coords[d] = ((), np.asarray(vals[0]))
        coords["alpha"] = ("alpha", np.asarray(self.alphas))
        coords["k"] = ("k", np.arange(self.Kmax))
        coords["l"] = ("l", np.arange(self.Kmax))
        coords["n"] = ("n", np.arange(self.Mmax))
        coords["m"] = ("m", np.arange(self.Mmax))
        extra_dims = dict(
            eg=("alpha",),
            Q=("k", "l"),
            R=("k", "n"),
            v=("k",),
            T=("n", "m"),
            v_star=("n",),
        )
        if self.teachers > 1:
            coords["task"] = ("task", np.arange(self.teachers))
            coords["head"] = ("head", np.arange(self.Hmax))
            extra_dims.update(v=("head", "k"), v_star=("task", "n"), eg_tasks=("alpha", "task"))
        doc = dict(
            eg="generalisation error eps_g of the ODE (noise-free, docs/conventions.md); with "
            "several teachers, on the task(s) being trained",
            eg_tasks="eps_g on each teacher (head p on teacher p for a multi-head student)",
            Q="final student-student overlaps Q (ODE); NaN for padded units / diverged points",
            R="final student-teacher overlaps R (ODE)",
            v="final second-layer weights v (ODE)",
            T="teacher-teacher overlaps T",
            v_star="teacher second layer v*",
            status="; ".join(f"{k} {v}" for k, v in STATUS.items()) + " (tsjax.RESULTS)",
            diverged_at="alpha at which the run diverged or stopped (inf if it did not)",
            num_steps="number of accepted + rejected ODE solver steps",
        )
        data = {}
        for name, arr in results.items():
            base = name[:-4] if name.endswith("_sim") else name
            dims = grid_dims + list(extra_dims.get(base, ()))
            a = arr.reshape(grid_shape + arr.shape[1:])
            data[name] = xr.Variable(dims, a, attrs={"description": doc.get(base, "")})
            if name.endswith("_sim"):
                data[name].attrs["description"] = doc.get(base, "") + " (simulation)"
        ds = xr.Dataset(data, coords=coords, attrs=attrs)
        return ds


# --------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------


def sweep(
    *,
    K,
    M=2,
    lr,
    lr_v=0.0,
    noise=0.0,
    weight_decay=0.0,
    activation="erf",
    init_scale=1.0,
    seed=0,
    alphas,
    N: int = 1000,
    v0: float | str = 1.0,
    v_star: float | str = 1.0,
    simulate: bool | str = False,
    ode: bool = True,
    batch_size: int = 1,
    rtol: float | None = None,
    atol: float | None = None,
    solver=None,
    max_steps: int = 200_000,
    max_norm: float = DEFAULT_MAX_NORM,
    group_by: Sequence[str] = (),
    chunk_size: int | None = None,
    vmap_size: int | None = None,
    devices=None,
    resume_dir: str | os.PathLike | None = None,
    progress: bool = False,
    teachers: int = 1,
    feature_similarity=1.0,
    readout_similarity=1.0,
    switch_at=None,
    heads=1,
    curriculum=None,
    rule=None,
    delta=None,
    feature_map=None,
    hmm_nodes: int = 32,
):
    r"""Run the order-parameter ODE (and optionally a simulator) over a grid of settings.

    Every swept argument is a scalar or a list of values; the grid is the Cartesian product
    of the lists (a list of one value still makes a dimension of length 1, a scalar does
    not). Each point starts from random initial networks drawn at input dimension ``N``
    from its seed (module docstring; :func:`sweep_point` gives the networks of a point).

    Args:
        K: student hidden units (integers >= 1). Different K are padded to the largest.
        M: teacher hidden units (default 2). Different M are padded likewise.
        lr: first-layer learning rate(s) eta >= 0 (numbers; schedules are not swept).
        lr_v: second-layer learning rate(s) (0: second layer fixed).
        noise: output-noise standard deviation(s) sigma.
        weight_decay: weight decay(s) kappa.
        activation: activation name(s) or :class:`~tsjax.Activation` (several in one call).
        init_scale: std of the student's initial weights (``init_student(scale=...)``).
        seed: integer seed(s) >= 0 of the initial networks and of the SGD noise.
        alphas: 1-D increasing save times (``alphas[0]`` is the start; for a simulation
            the times are rounded to steps, ``round(alpha N)``).
        N: input dimension of the initial networks and of the simulations.
        v0, v_star: initial student / teacher second-layer weights: a number for every unit
            or ``"gaussian"`` (as in ``init_student``/``init_teacher``).
        simulate: ``False`` (ODE only), ``True`` or ``"network"`` (also ``tsjax.simulate``
            of the networks, cost ~N per step), or ``"order_params"`` (also the exact
            finite-N order-parameter chain ``tsjax.simulate_order_params``, cost independent
            of N) from the same initial conditions, SGD key ``fold_in(key(seed), 2)``.
        ode: integrate the ODE (default); ``ode=False`` with a ``simulate`` option runs the
            simulation only (variables with suffix ``_sim`` only).
        batch_size: mini-batch size of the simulations.
        rtol, atol, solver, max_steps, max_norm: as in :func:`~tsjax.solve_ode`.
        group_by: names among ``"K"``, ``"M"``, ``"activation"``: split the grid into
            separately compiled groups (no padding/switching across groups; module
            docstring). Default: one compiled program for the whole grid.
        chunk_size: points per compiled call (rounded up to a multiple of the number of
            devices times ``vmap_size``). Default (:func:`default_chunk`): on a GPU/TPU every
            point of a group at once, as far as a quarter of the device memory holds; on a
            CPU about 1/20 of a group (at least 8, at most 1024 points per device).
        vmap_size: points per device integrated in lockstep with ``jax.vmap`` (the rest of
            a chunk is looped over with ``lax.map``). Default 1 on a CPU (vectorising does
            not speed the compute-bound solver up there, and lockstep makes every point
            wait for the slowest) and the whole per-device chunk on a GPU/TPU.
        devices: the devices to shard chunks over (default ``jax.devices()``, all hosts).
        resume_dir: a folder for finished chunks (``.npz``): a rerun with the same arguments
            loads them and computes only the missing points (the CLI uses this).
        progress: show a progress bar over chunks (with an estimate of the time left).
        teachers: P, the number of teachers (default 1: today's problem). With P > 1
            (continual learning) each point draws its teachers with
            ``tsjax.init_teachers(..., P=P, feature_similarity=V, readout_similarity=rho)``
            and trains on teacher 0 until ``switch_at``, then on teacher 1, ... (a
            ``tsjax.TaskSwitch`` with P - 1 = 1 switch; P = 2 when ``switch_at`` is given);
            the following four arguments are then swept like the others:
        feature_similarity: V, the overlap of corresponding units of different teachers.
        readout_similarity: the cosine of the teachers' readouts (``init_teachers``).
        switch_at: the switch time(s) alpha_s (inside the save range; one switch).
        heads: 1 (single-head student) or P (multi-head: one head per teacher).
        curriculum: with several teachers, instead of a swept ``switch_at``: one curriculum
            for every point (``tsjax.TaskSwitch`` with any number of switches or
            ``replay``, ``tsjax.Mixture``, ``tsjax.ThresholdSwitch``); its numbers are
            compiled into the program.
        rule: the learning rule of the first layer (default SGD): one rule, or a list of
            rules (e.g. ``[tsjax.AdaptiveBackprop(b) for b in (0.5, 1, 2)]``, or RL
            perceptrons over T, n and the penalty), which makes the dimension ``rule``
            (labels: the rules' repr) with one coordinate per scalar parameter that every
            rule has (``beta``; ``episode_length``, ``min_correct``, ``penalty``;
            ``ds.swap_dims(rule="beta")`` indexes by one, ``ds.set_index(rule=[...])
            .unstack("rule")`` makes a grid of several). Rules of one kind (type and static
            structure, e.g. one episode length) share one compilation, their numbers being
            traced; each kind is a group of its own. ``tsjax.FeedbackAlignment(feedback=b)``
            needs every K equal to len(b).

    Returns:
        An ``xarray.Dataset`` with dimensions the swept (list) arguments in the order
        ``K, M, activation, lr, lr_v, noise, weight_decay, init_scale, seed`` (scalar
        arguments become scalar coordinates), ``alpha``, and the unit indices ``k``, ``l``
        (students, up to the largest K), ``n``, ``m`` (teachers). Variables:
        ``eg`` (grid, alpha); final ``Q`` (grid, k, l), ``R`` (grid, k, n), ``v`` (grid, k);
        ``T`` (grid, n, m), ``v_star`` (grid, n) of the teacher; ``status`` (the index of
        the run's :class:`~tsjax.RESULTS` item: 0 successful, 1 diverged, 2
        max_steps_reached, 3 solver_failure, 4 invalid_input), ``diverged_at`` (alpha
        where the run diverged or stopped, inf otherwise), ``num_steps``; with a
        simulation the same with suffix ``_sim``. Values of padded units are NaN, and so
        are the values of a diverged point from its divergence on (its final order
        parameters included): a sweep never raises for a diverged point.

    Exactness: each point equals the corresponding single ``solve_ode`` (``simulate``,
    ``simulate_order_params``) call from the same initial condition to round-off (tests:
    3e-10 relative, padded and activation-switched points included).
    """
    given = dict(
        K=K, M=M, activation=activation, lr=lr, lr_v=lr_v, noise=noise,
        weight_decay=weight_decay, init_scale=init_scale, seed=seed,
        feature_similarity=feature_similarity, readout_similarity=readout_similarity,
        switch_at=switch_at, heads=heads, rule=rule, delta=delta, feature_map=feature_map,
    )  # fmt: skip
    teachers = _check_int("teachers", teachers, 1)
    alphas_np0 = np.asarray(check_alphas(alphas), np.float64)
    ctx = dict(teachers=teachers, alphas=alphas_np0)
    values, is_dim = {}, {}
    for d in _DIMS:
        values[d.name], is_dim[d.name] = _as_list(d.name, given[d.name])
        if d.continual and teachers == 1:
            if values[d.name] != [d.default]:
                raise ValueError(
                    f"{d.name}: needs several teachers (teachers=P >= 2), got teachers=1"
                )
        elif not (d.optional and values[d.name] == [None]):
            values[d.name] = [d.check(x, ctx) for x in values[d.name]]
    if curriculum is not None:
        if teachers == 1:
            raise ValueError("curriculum: needs several teachers (teachers=P >= 2)")
        if values["switch_at"] != [None]:
            raise ValueError("curriculum: give either curriculum or switch_at, not both")
        curriculum = as_curriculum(curriculum)
        curriculum.check(teachers, alphas_np0)
    if teachers > 2 and values["switch_at"] != [None]:
        raise ValueError(
            f"switch_at: a swept switch time is one switch, between two teachers; got "
            f"teachers={teachers} (use solve_ode with tsjax.TaskSwitch for more)"
        )
    manifold = values["delta"] != [None]
    if values["feature_map"] != [None] and not manifold:
        raise ValueError("feature_map: needs delta (the hidden-manifold limit's D / N)")
    if manifold:
        if values["feature_map"] == [None]:
            values["feature_map"] = ["sign"]
        if teachers != 1 or simulate:
            raise ValueError(
                "delta: the hidden-manifold sweep runs the limit ODE of one teacher "
                "(teachers=1, simulate=False)"
            )
        if isinstance(hmm_nodes, bool) or not isinstance(hmm_nodes, int) or hmm_nodes < 2:
            raise ValueError(f"hmm_nodes: expected an integer >= 2, got {hmm_nodes!r}")
        group_by = tuple(group_by) + tuple(g for g in ("K", "M") if g not in group_by)
    rule_specs, _ = _rule_kinds(values["rule"])
    spec_rule = (
        None
        if rule_specs == [None]
        else (rule_specs[0] if len(rule_specs) == 1 else tuple(rule_specs))
    )
    if spec_rule is not None:  # every rule against every setting it meets
        for r, k_, a_, nz, lv in itertools.product(
            values["rule"], values["K"], values["activation"], values["noise"], values["lr_v"]
        ):
            Problem(a_, 0.0, lv, nz, 0.0, rule=r).check(K=k_)
    acts = values["activation"]
    for name, vals in values.items():
        if name != "activation" and len(set(map(str, vals))) != len(vals):
            raise ValueError(f"{name}: values must be distinct, got {vals}")
    N = _check_int("N", N, 1)
    for name, val in (("v0", v0), ("v_star", v_star)):
        if isinstance(val, str):
            if val.lower() != "gaussian":
                raise ValueError(f"{name}: expected a number or 'gaussian', got {val!r}")
        elif not isinstance(val, (int, float)) or isinstance(val, bool):
            raise ValueError(f"{name}: expected a number or 'gaussian', got {val!r}")
    v0 = v0.lower() if isinstance(v0, str) else float(v0)
    v_star = v_star.lower() if isinstance(v_star, str) else float(v_star)
    if simulate not in _SIM_KINDS:
        raise ValueError(
            f"simulate: expected False, True, 'network' or 'order_params', got {simulate!r}"
        )
    sim = _SIM_KINDS[simulate]
    if not ode and sim is None:
        raise ValueError("ode: ode=False needs a simulation (simulate=...)")
    batch_size = _check_int("batch_size", batch_size, 1)
    alphas_j = check_alphas(alphas)
    alphas_np = np.asarray(alphas_j, np.float64)
    if sim is not None:
        _save_steps(alphas_np, N)  # checks the number of steps
        if sim == "op" and N < max(values["K"]) + max(values["M"]) + batch_size:
            raise ValueError("N: the order-parameter chain needs N >= K + M + batch_size")
        if sim == "network":
            bad = [a.name for a in acts if float(a(jnp.zeros(()))) != 0.0]
            padded = "K" not in group_by and len(values["K"]) > 1
            if bad and padded:
                raise ValueError(
                    f"simulate='network' with padded K needs g(0) = 0, not so for {bad}: use "
                    "group_by=('K',) (no padding) or simulate='order_params'"
                )
    for g in group_by:
        if g not in _GROUPABLE:
            raise ValueError(f"group_by: expected names among {_GROUPABLE}, got {g!r}")
    group_by = tuple(d for d in _GROUPABLE if d in group_by)
    if chunk_size is not None:
        _check_int("chunk_size", chunk_size, 1)
    if vmap_size is not None:
        _check_int("vmap_size", vmap_size, 1)
    dtype = jnp.result_type(float)
    warn_if_float32(jnp.zeros((), dtype))
    f64 = dtype == jnp.float64
    common = dict(
        rtol=float((1e-8 if f64 else 1e-5) if rtol is None else rtol),
        atol=float((1e-11 if f64 else 1e-8) if atol is None else atol),
        solver=default_solver() if solver is None else solver,
        max_steps=int(max_steps),
        max_norm=float(max_norm),
        sim=sim,
        ode=bool(ode),
        batch_size=batch_size,
        v0=v0,
        v_star=v_star,
        dtype=str(np.dtype(dtype)),
        teachers=teachers,
        curriculum=None if curriculum is None else _freeze(curriculum),
        rule=spec_rule,
        hmm_nodes=int(hmm_nodes) if manifold else None,
        hmm_solver=(diffrax.Tsit5() if solver is None else solver) if manifold else None,
    )
    plan = _Plan(
        values, is_dim, acts, N, alphas_np, common, group_by, chunk_size, vmap_size, devices
    )
    # (one teacher: the continual settings are left out, so the hash of a sweep, hence its
    # resume folder, is the one of earlier versions)
    skip = set(_CONTINUAL_DIMS) | {"teachers", "curriculum"} if teachers == 1 else set()
    if spec_rule is None:  # the default rule: the hash of earlier versions
        skip = skip | {"rule"}
    if not manifold:
        skip = skip | {"delta", "feature_map", "hmm_nodes", "hmm_solver"}
    config = dict(
        values={
            k: (_activation_labels(acts) if k == "activation" else v)
            for k, v in values.items()
            if k not in skip
        },
        activations=[repr(a) for a in acts],
        is_dim={k: v for k, v in is_dim.items() if k not in skip},
        N=N,
        alphas=alphas_np.tolist(),
        common={k: (repr(v) if k == "solver" else v) for k, v in common.items() if k not in skip},
    )
    results = plan.empty_results()
    done = np.zeros(plan.n_points, bool)
    main = jax.process_index() == 0
    if resume_dir is not None:
        resume_dir = os.fspath(resume_dir)
        h = _hash(config)
        if main:
            os.makedirs(resume_dir, exist_ok=True)
        cfg_path = os.path.join(resume_dir, "sweep.json")
        old = _read_resume_hash(cfg_path)
        if old is not None and old != h:
            raise ValueError(
                f"resume_dir: {resume_dir} holds chunks of a different sweep "
                f"(config hash {old}, this one {h}); use another folder"
            )
        if old is None and main:
            _write_atomic_text(cfg_path, json.dumps(dict(hash=h, config=config), default=str))
        for path in sorted(glob.glob(os.path.join(resume_dir, "chunk-*.npz"))):
            chunk = _read_chunk(path, plan, results)
            if chunk is None:
                continue
            plan.fill(results, chunk)
            done[chunk["index"]] = True
    todo = [(g, m[~done[m]]) for g, m in plan.chunks()]
    todo = [(g, m) for g, m in todo if len(m)]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), unit="chunk", desc=f"sweep ({plan.n_points} points)")
    t0 = time.perf_counter()
    try:
        for g, members in todo:
            chunk = plan.run_chunk(g, members)
            plan.fill(results, chunk)
            if resume_dir is not None and main:
                _savez_atomic(os.path.join(resume_dir, f"chunk-{uuid.uuid4().hex}.npz"), chunk)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    elapsed = time.perf_counter() - t0
    from . import __version__

    attrs = dict(
        title="tsjax.sweep",
        tsjax_version=__version__,
        N=N,
        rtol=common["rtol"],
        atol=common["atol"],
        solver=repr(common["solver"]),
        max_steps=common["max_steps"],
        max_norm=common["max_norm"],
        v0=str(v0),
        v_star=str(v_star),
        simulate=str(sim),
        ode=int(bool(ode)),
        batch_size=batch_size,
        group_by=",".join(group_by),
        status_codes="; ".join(f"{k}: {v}" for k, v in STATUS.items()),
        n_groups=len(plan.groups),
        chunk_sizes=",".join(str(g.chunk) for g in plan.groups),
        n_devices=len(plan.devices),
        elapsed_s=elapsed,
        config_hash=_hash(config),
        activations=";".join(repr(a) for a in acts),
    )
    if teachers > 1:
        attrs["teachers"] = teachers
    return plan.dataset(results, attrs)


def sweep_point(
    *,
    K: int,
    M: int = 2,
    init_scale: float = 1.0,
    seed: int = 0,
    N: int = 1000,
    activation="erf",
    v0: float | str = 1.0,
    v_star: float | str = 1.0,
    teachers: int = 1,
    feature_similarity: float = 1.0,
    readout_similarity: float = 1.0,
    heads: int = 1,
) -> tuple[TwoLayerNet, TwoLayerNet, jax.Array]:
    """(student, teacher, sgd_key) of the sweep point (K, M, init_scale, seed) at input
    dimension N: ``tsjax.order_params(student, teacher)`` is its ODE initial condition and
    ``simulate(student, teacher, sgd_key, ...)`` its simulation. With ``teachers`` = P > 1
    the teacher is ``init_teachers(fold_in(key, 0), N=N, M=M, P=P, feature_similarity,
    readout_similarity, v_star=v_star)`` (``v_star`` a number) and the student has
    ``heads`` heads (2-D ``v``)."""
    key = jax.random.key(seed)
    if teachers == 1:
        teacher = init_teacher(
            jax.random.fold_in(key, 0), N, M, activation=activation, v_star=v_star
        )
        student = init_student(
            jax.random.fold_in(key, 1), N, K, activation=activation, scale=init_scale, v=v0
        )
        return student, teacher, jax.random.fold_in(key, 2)
    teacher = init_teachers(
        jax.random.fold_in(key, 0), N=N, M=M, P=teachers, feature_similarity=feature_similarity,
        readout_similarity=readout_similarity, activation=activation, v_star=v_star,
    )  # fmt: skip
    student = init_student(
        jax.random.fold_in(key, 1), N, K, activation=activation, scale=init_scale, v=v0,
        heads=heads,
    )  # fmt: skip
    return student, teacher, jax.random.fold_in(key, 2)


# --------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------


def _read_resume_hash(path: str) -> str | None:
    """The config hash recorded in a resume folder's ``sweep.json`` (None if there is none).
    A damaged file is reported, removed and written anew by the caller."""
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            h = json.load(f)["hash"]
        if not isinstance(h, str):
            raise TypeError("hash is not a string")
        return h
    except (OSError, ValueError, KeyError, TypeError) as e:
        warnings.warn(
            f"resume_dir: {path} is damaged ({type(e).__name__}: {e}); writing it anew (each "
            "chunk file is still checked against this sweep)",
            stacklevel=3,
        )
        if jax.process_index() == 0:
            os.unlink(path)
        return None


def _read_chunk(path: str, plan, results: dict) -> dict | None:
    """A finished chunk of ``plan`` read from ``path``, or None (with a warning naming the
    file, which is removed so that its points are computed again) if the file is truncated,
    empty, corrupted or does not belong to this sweep."""
    try:
        with np.load(path) as z:
            chunk = {k: z[k] for k in z.files}
        index = chunk["index"]
        if index.ndim != 1 or index.size == 0 or not np.issubdtype(index.dtype, np.integer):
            raise ValueError("no valid point index")
        if index.min() < 0 or index.max() >= plan.n_points:
            raise ValueError("point indices outside this sweep")
        for k, arr in results.items():  # names and shapes must fit this sweep's results
            x = chunk[k]
            if x.shape[:1] != index.shape or x.ndim != arr.ndim:
                raise ValueError(f"variable {k!r} has shape {x.shape}")
            if any(a < b for a, b in zip(arr.shape[1:], x.shape[1:])):
                raise ValueError(f"variable {k!r} has shape {x.shape}")
    except Exception as e:  # noqa: BLE001 - any unreadable file is recomputed
        warnings.warn(
            f"resume_dir: chunk file {path} is damaged ({type(e).__name__}: {e}); its "
            "points are computed again",
            stacklevel=3,
        )
        if jax.process_index() == 0 and os.path.exists(path):
            os.unlink(path)
        return None
    return chunk


def _write_atomic_text(path: str, text: str) -> None:
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)

    atomic_write(path, write, suffix=".txt")


def _savez_atomic(path: str, arrays: dict) -> None:
    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_write(path, write, suffix=".npz")


def save_sweep(ds, path: str | os.PathLike) -> None:
    """Write a sweep Dataset to ``path`` atomically (a temporary file in the same folder,
    then ``os.replace``): netCDF for ``.nc``/``.nc4``/``.h5`` (or any other suffix), zarr for
    ``.zarr`` (needs the ``zarr`` package). Only process 0 writes in a multi-host run."""
    if jax.process_index() != 0:
        return
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if path.rstrip("/").endswith(".zarr"):
        tmp = os.path.join(folder, f".tmp-{uuid.uuid4().hex}.zarr")
        old = os.path.join(folder, f".old-{uuid.uuid4().hex}.zarr")
        try:
            ds.to_zarr(tmp, mode="w")
            if os.path.exists(path):
                os.replace(path, old)
            os.replace(tmp, path)
        finally:
            import shutil

            for p in (tmp, old):
                if os.path.exists(p):
                    shutil.rmtree(p)
        return
    atomic_write(path, ds.to_netcdf, suffix=".nc")


def load_sweep(path: str | os.PathLike):
    """Read a Dataset written by :func:`save_sweep` (fully loaded; the file is closed)."""
    import xarray as xr

    path = os.fspath(path)
    if path.rstrip("/").endswith(".zarr"):
        return xr.open_zarr(path).load()
    with xr.open_dataset(path) as ds:
        return ds.load()
