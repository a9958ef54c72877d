r"""Online SGD of the actual networks (finite N), compiled with JAX.

Conventions (docs/conventions.md). At step t (time alpha = t / N before the step) the simulator
draws B fresh inputs x_b ~ N(0, I_N) and output noises zeta_b ~ N(0, 1) and, with
lambda = W x / sqrt(N), nu = W* x / sqrt(N), y = v* . g(nu) + sigma zeta,
Delta = v . g(lambda) - y, updates

    W <- W - (eta / sqrt(N)) mean_b[(v * g'(lambda) * Delta) x^T] - (kappa / N) W
    v <- v - (eta_v / N)     mean_b[g(lambda) Delta]              - (kappa / N) v [eta_v != 0]

with eta = lr(t / N), eta_v = lr_v(t / N) (numbers or schedules), sigma = ``noise`` and
kappa = ``weight_decay``. Both terms use the weights before the step.

Structure (all inside one ``jax.jit``; no Python loop over steps):

* The steps are grouped in blocks of L steps (L = 256, halved until L * B * N <= 2**19
  numbers, so a block of inputs takes at most 4 MiB in float64). An outer ``lax.scan`` runs
  over blocks; each block draws the inputs of its L steps at once,
  ``x, zeta = normal(split(fold_in(key, block)))`` of shapes (L, B, N) and (L, B) (see
  :func:`_draw_block`), and an inner ``lax.scan`` performs the L SGD steps. Drawing the
  inputs of a block in one call is about 5x faster than drawing them step by step with
  ``fold_in(key, t)`` (N = 500, CPU: ~140k vs ~26k steps/s); the random numbers dominate the
  cost of a step (benchmarks/simulate.py). The last, partial block uses the
  first steps of a full block, so the inputs of step t depend only on (key, t, N, B): a
  longer run continues a shorter one exactly.
* Order parameters are computed only at save steps: the inner step compares t with the next
  save step (a pointer that depends only on t, so it stays unbatched under ``jax.vmap``) and
  writes Q, R, v into a small (S, ...) buffer inside ``lax.cond``.
* Each block is wrapped in ``jax.checkpoint``, so reverse-mode differentiation stores only
  the weights at block boundaries and recomputes a block's inputs and steps on the way back
  (gradient of a 25 000-step run at N = 500: 12 MB of temporaries instead of 0.9 GB).

Divergence: the same criterion as ``solve_ode`` (``tsjax._checks.divergence_limits``): a
weight is non-finite, or max_k Q_kk > 10 max(1, max_k Q_kk(0), sum_nm |T_nm|), or
max_k v_k^2 > 10 max(1, max_k v_k(0)^2, sum_n v*_n^2). It is checked after every step (the
norms Q_kk are updated exactly from the quantities of the step, see :func:`_sgd_step`; the
weights themselves at save steps and at the end of every block), so ``diverged_at`` is the
alpha of the first step whose state crosses it. Values saved from then on are NaN, and
blocks after it are skipped (the weights are frozen). A negative or non-finite learning rate
at a step stops the run there in the same way (``RESULTS.invalid_input``).
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._activations import Activation
from ._checks import (
    bad_constants,
    bad_rates,
    check_alphas,
    check_flag,
    is_diverged,
    warn_if_float32,
)
from ._curricula import AbstractCurriculum, head_of, next_phase, phase_state, task_of_step
from ._networks import TwoLayerNet, check_heads, check_pair
from ._order_params import _is_concrete, covariance_from, eg_on_task
from ._problem import Problem, make_problem
from ._results import RESULTS, raise_if_failed, result_index
from ._rules import SGD, AbstractGradientRule, AbstractRule
from ._trajectory import DivergenceError, Trajectory, build_trajectory

__all__ = ["simulate"]

_MAX_BLOCK = 256
_BLOCK_NUMBERS = 2**19
_MAX_STEPS = 2**31 - 2**20
_SMALL_N = 3000
#: fold_in tag of the task numbers of a block (a stream of their own)
_TASK_STREAM = 0x7A5C
#: Precision in which the Gaussian inputs x are drawn. None (default): float32 resolution,
#: converted to the working dtype (float64 under x64), while the weights, the update and
#: the output noise stay in the working dtype. The random numbers dominate a step at small N
#: and float32 normals cost ~3.1 ns instead of ~11 ns each (threefry + inverse erf, CPU;
#: benchmarks/simulate.py). The inputs then have float32 resolution (computed exactly over
#: all 2**23 float32 uniforms: mean -3.3e-7, variance 1 - 1.1e-7, |x| <= 5.42, i.e. tails
#: beyond 5.4 sigma, probability 6e-8, are cut), far below the 1/sqrt(N) fluctuations of
#: the dynamics: tests/test_simulate_unit.py::test_float32_inputs_leave_the_dynamics_unchanged
#: compares learning curves and their seed-to-seed spread with exact float64 inputs.
#: ``jnp.float64`` restores exact float64 normals (private switch, read at trace time).
_SAMPLE_DTYPE = None


def _input_dtype(dtype, sample_dtype=None):
    """The dtype the inputs are drawn in: ``sample_dtype`` if given, else float32 when the
    working dtype is float64 (see ``_SAMPLE_DTYPE``), else the working dtype."""
    if sample_dtype is not None:
        return sample_dtype
    if _SAMPLE_DTYPE is not None:
        return _SAMPLE_DTYPE
    return jnp.float32 if jnp.dtype(dtype) == jnp.float64 else dtype


def _block_length(N: int, B: int) -> int:
    """Steps per block of random inputs: 256, halved until L * B * N <= 2**19."""
    L = _MAX_BLOCK
    while L > 1 and L * B * N > _BLOCK_NUMBERS:
        L //= 2
    return L


def _draw_block(key, block, L: int, B: int, N: int, dtype, sample_dtype=None):
    """Inputs x (L, B, N) and output noises zeta (L, B) of steps block*L ... block*L + L-1.

    ``sample_dtype``: the precision in which the inputs are drawn before conversion to
    ``dtype`` (default: :func:`_input_dtype`); the output noises are drawn in ``dtype``."""
    sdt = _input_dtype(dtype, sample_dtype)
    kx, kz = jax.random.split(jax.random.fold_in(key, block))
    x = jax.random.normal(kx, (L, B, N), sdt).astype(dtype)
    zeta = jax.random.normal(kz, (L, B), dtype)
    return x, zeta


def _sgd_step(
    W, v, Wt, vt, x, zeta, eta, eta_v, noise, weight_decay, act: Activation, q=None, rule=None
):
    """One SGD step on a mini-batch x (B, N) with output noises zeta (B,) (module docstring).

    Returns the new (W, v); with ``q`` = |w_k|^2 / N (K,) given, also the new q, updated
    exactly from the quantities of the step at O(B^2 N) extra cost instead of O(K N):

        q_k' = d^2 q_k - 2 d (1 / (N B)) sum_b s_kb lambda_kb
               + (1 / (N B^2)) sum_bb' s_kb s_kb' x_b . x_b' / N,   d = 1 - kappa / N,

    with s the rule's signal (``AbstractRule.signal``; eta g'(lambda) v Delta for SGD) (no
    derivative flows through q: it only detects divergence at the step where it
    happens)."""
    N = W.shape[-1]
    inv_sqrt_n = 1.0 / math.sqrt(N)
    # Local fields, stored as (K, B) and (M, B). Both products are the same numbers; which
    # one XLA:CPU runs fastest depends on N (measured: x W^T is ~2x faster for N <= 2000,
    # W x^T ~3x faster for N >= 5000), so the layout is picked from the static shape.
    if N <= _SMALL_N:
        lam = (x @ W.T).T * inv_sqrt_n
        nu = (x @ Wt.T).T * inv_sqrt_n
    else:
        lam = (W @ x.T) * inv_sqrt_n
        nu = (Wt @ x.T) * inv_sqrt_n
    g_lam = act(lam)
    delta = v @ g_lam - vt @ act(nu) - noise * zeta  # (B,): yhat - y
    rule = SGD() if rule is None else rule
    yhat = v @ g_lam
    s = rule.signal(act, lam, yhat, yhat - delta, v, eta)  # (K, B): eta times the error signal
    inv_b = 1.0 / x.shape[0]
    W_new = W - (inv_sqrt_n * inv_b) * (s @ x) - (weight_decay / N) * W
    v_new = (
        v
        - (eta_v * inv_b / N) * (g_lam @ delta)
        - (weight_decay / N) * v * (jnp.asarray(eta_v) != 0).astype(v.dtype)
    )
    if q is None:
        return W_new, v_new
    sg = jax.lax.stop_gradient
    s_, lam_, x_ = sg(s), sg(lam), sg(x)
    d = 1.0 - sg(weight_decay) / N
    gram = x_ @ x_.T / N  # (B, B)
    q_new = (
        d * d * q
        - (2.0 * d * inv_b / N) * jnp.sum(s_ * lam_, axis=1)
        + (inv_b * inv_b / N) * jnp.einsum("kb,bc,kc->k", s_, gram, s_)
    )
    return W_new, v_new, q_new


# --------------------------------------------------------------------------------------
# The compiled simulation
# --------------------------------------------------------------------------------------


@eqx.filter_jit
def _run(
    W,
    v,
    Wt,
    vt,
    problem,
    key,
    alphas,
    steps,
    save_steps,
    inverse,
    n_total,
    B,
    L,
    sample_dtype=None,
):
    """The trajectory at ``alphas`` (``steps`` = round(alphas * N)) and the index of its
    ``RESULTS`` item (the run stops at the step where divergence or an invalid rate is
    detected). ``save_steps`` are the unique ``steps``
    and ``save_steps[inverse] = steps``. ``v``: (K,) or (H, K) heads; ``vt``: (M,) or
    (P, M), the readouts of the P teachers over the stacked units of ``Wt``."""
    K, N = W.shape
    M = Wt.shape[0]
    dtype = W.dtype
    S = save_steps.shape[0]
    T = Wt @ Wt.T / N
    v_shape, vt_in = v.shape, vt
    v, vt = jnp.atleast_2d(v), jnp.atleast_2d(vt)
    n_heads, n_tasks = v.shape[0], vt.shape[0]
    act, lr, lr_v = problem.activation, problem.lr, problem.lr_v
    noise, cur = problem.noise, problem.curriculum
    limits = problem.divergence_limits(W @ W.T / N, T, v, vt)
    no_div = jnp.int32(n_total + 1)

    def bad(q_diag, W_or_R, v_):
        return (
            ~jnp.all(jnp.isfinite(W_or_R))
            | ~jnp.all(jnp.isfinite(v_))
            | is_diverged(jnp.diag(q_diag), v_, limits)
        )

    def record(i, t, W_, v_, bufs, t_det):
        Q = W_ @ W_.T / N
        R = W_ @ Wt.T / N
        bQ, bR, bv = bufs
        bufs = (bQ.at[i].set(Q), bR.at[i].set(R), bv.at[i].set(v_))
        t_det = jnp.where(bad(jnp.diagonal(Q), R, v_), jnp.minimum(t_det, t), t_det)
        return bufs, t_det

    def error_on(W_, v_):  # exact eps_g on task p of the current weights (threshold switch)
        return lambda p: eg_on_task(
            act, covariance_from(W_ @ W_.T / N, W_ @ Wt.T / N, T), v_, vt, p
        )

    def block(carry, c, length: int):
        W_, v_, bufs, t_det, cs = carry
        x, zeta = _draw_block(key, c, L, B, N, dtype, sample_dtype)
        u = _draw_tasks(key, c, L, dtype, cur)
        if length < L:
            x, zeta, u = x[:length], zeta[:length], u[:length]
        t0 = c * L
        i0 = jnp.searchsorted(save_steps, t0, side="left").astype(jnp.int32)

        def step(inner, inp):
            W_, v_, q_, bufs, t_det, i, cs = inner
            x_t, zeta_t, u_t, j = inp
            t = t0 + j
            is_save = (i < S) & (save_steps[jnp.minimum(i, S - 1)] == t)
            bufs, t_det = jax.lax.cond(
                is_save,
                lambda: record(jnp.minimum(i, S - 1), t, W_, v_, bufs, t_det),
                lambda: (bufs, t_det),
            )
            i = i + is_save.astype(jnp.int32)
            alpha = t.astype(dtype) / N
            eta = jnp.asarray(lr(alpha), dtype)
            eta_v = jnp.asarray(lr_v(alpha), dtype)
            weight_decay = jnp.asarray(problem.decay(alpha), dtype)
            rule_t = problem.rule.at(alpha)
            bad_now = bad_rates(eta, eta_v) | bad_rates(weight_decay, 0.0) | rule_t.bad()
            t_det = jnp.where(bad_now, jnp.minimum(t_det, t), t_det)
            p = task_of_step(cur, alpha, n_tasks, u_t, cs[0])
            h = head_of(jnp.asarray(p), n_heads) if n_heads > 1 else 0
            W_, vh, q_ = _sgd_step(
                W_, v_[h], Wt, vt[p], x_t, zeta_t, eta, eta_v, noise, weight_decay, act, q=q_,
                rule=rule_t,
            )  # fmt: skip
            v_ = v_.at[h].set(vh) if n_heads > 1 else vh[None]
            cs = next_phase(cur, cs, error_on(W_, v_), (t + 1).astype(dtype) / N)
            # divergence at its onset: the state after this step (t + 1 steps) is checked
            # through the exactly updated norms q (the weights themselves at saves and at
            # the end of the block)
            t_det = jnp.where(bad(q_, q_, v_), jnp.minimum(t_det, t + 1), t_det)
            return (W_, v_, q_, bufs, t_det, i, cs), None

        js = jnp.arange(length, dtype=jnp.int32)
        q0 = jax.lax.stop_gradient(jnp.sum(W_ * W_, axis=1) / N)
        init = (W_, v_, q0, bufs, t_det, i0, cs)
        (W_, v_, _, bufs, t_det, _, cs), _ = jax.lax.scan(step, init, (x, zeta, u, js))
        t_end = t0 + length
        end_bad = bad(jnp.sum(W_ * W_, axis=1) / N, W_, v_)
        t_det = jnp.where(end_bad, jnp.minimum(t_det, t_end), t_det)
        return W_, v_, bufs, t_det, cs

    def checkpointed_block(carry, c, length: int):
        fn = jax.checkpoint(lambda carry_, c_: block(carry_, c_, length), prevent_cse=False)
        return fn(carry, c)

    bufs = (
        jnp.zeros((S, K, K), dtype),
        jnp.zeros((S, K, M), dtype),
        jnp.zeros((S, n_heads, K), dtype),
    )
    carry = (W, v, bufs, no_div, phase_state(cur, dtype))
    carry = _scan_blocks(checkpointed_block, carry, n_total, L, lambda cr: cr[3] < no_div)
    W, v, bufs, t_det, (_, switched) = carry
    # The state after the last step (the run ends at the last save time).
    bufs, t_det = record(S - 1, jnp.int32(n_total), W, v, bufs, t_det)
    Q, R, vs = bufs[0][inverse], bufs[1][inverse], bufs[2][inverse]
    traj = _recorded_trajectory(
        problem, alphas, steps, t_det, n_total, N, Q, R, vs, T, vt_in, v_shape, switched
    )
    return traj, result_index(traj.result)


def _scan_blocks(run_block, carry, n_total: int, length: int, diverged):
    """``carry`` after ``n_total`` steps run as blocks: ``run_block(carry, c, n)`` performs
    the n steps of block c (``length`` steps each, the last block the remainder; the block
    number c is traced, n static). Once ``diverged(carry)`` holds, the remaining blocks are
    skipped and the state stays frozen. Shared by the network simulator and the
    order-parameter chain."""

    def guarded(cr, c, n: int):
        return jax.lax.cond(diverged(cr), lambda: cr, lambda: run_block(cr, c, n))

    n_full, rem = divmod(n_total, length)
    if n_full > 0:
        carry, _ = jax.lax.scan(
            lambda cr, c: (guarded(cr, c, length), None),
            carry,
            jnp.arange(n_full, dtype=jnp.int32),
        )
    if rem > 0:
        carry = guarded(carry, jnp.int32(n_full), rem)
    return carry


def _recorded_trajectory(
    problem, alphas, steps, t_det, n_total, N, Q, R, v, T, vt, v_shape, switched=None
) -> Trajectory:
    """The Trajectory of a simulation from its recorded states Q (S, K, K), R (S, K, M),
    v (S, H, K) at the save steps ``steps`` (S,): eps_g at each save, NaN from the detected
    stop step ``t_det`` on, ``diverged_at = t_det / N`` (inf if none before ``n_total``),
    and the ``result``: ``invalid_input`` if a rate was invalid at the stop (or noise /
    weight decay are), ``diverged`` otherwise. Shared by the network simulator and the
    order-parameter chain."""
    dtype = Q.dtype
    bad_in = bad_constants(problem.noise, problem.decay(0.0)) | problem.rule.bad()
    t_det = jnp.where(bad_in, jnp.zeros_like(t_det), t_det)
    stopped = t_det <= n_total
    alpha_det = t_det.astype(dtype) / N
    invalid = bad_in | (
        stopped & (bad_rates(*problem.rates(alpha_det)) | problem.rule.at(alpha_det).bad())
    )
    result = RESULTS.where(
        invalid,
        RESULTS.invalid_input,
        RESULTS.where(stopped, RESULTS.diverged, RESULTS.successful),
    )
    valid = steps < t_det
    diverged_at = jnp.where(stopped, alpha_det, jnp.inf).astype(dtype)
    return build_trajectory(
        problem, alphas, valid, Q, R, v, T, vt, diverged_at, result, v_shape, switched
    )


def _draw_tasks(key, block, L: int, dtype, curriculum):
    """Uniform numbers (L,) choosing the task of each step of a block (a mixture
    curriculum); zeros, and no random numbers drawn, for a one-hot curriculum (so the
    inputs of a single-teacher run are unchanged)."""
    if curriculum.one_hot:
        return jnp.zeros((L,), dtype)
    k = jax.random.fold_in(jax.random.fold_in(key, block), _TASK_STREAM)
    return jax.random.uniform(k, (L,), dtype)


# --------------------------------------------------------------------------------------
# Public wrapper
# --------------------------------------------------------------------------------------


def _check_key(key) -> None:
    dtype = getattr(key, "dtype", None)
    shape = getattr(key, "shape", None)
    if dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key) and shape == ():
        return
    if dtype == jnp.uint32 and shape == (2,):
        return
    raise ValueError(
        "key: expected one jax.random key (jax.random.key(seed) or jax.random.PRNGKey(seed)); "
        "use jax.vmap over a batch of keys for several seeds"
    )


def _save_steps(alphas, N: int) -> np.ndarray:
    if not _is_concrete(alphas):
        raise ValueError(
            "alphas: must be concrete (a numpy array or list), not traced under jit/vmap; "
            "close over it instead of passing it as a traced argument"
        )
    check_alphas(alphas)
    a = np.asarray(alphas, dtype=np.float64)
    steps = np.floor(a * N + 0.5).astype(np.int64)
    if steps[-1] > _MAX_STEPS:
        raise ValueError(
            f"alphas: the run would take {steps[-1]} SGD steps (alpha_max * N), more than "
            f"the supported {_MAX_STEPS}"
        )
    return steps


def _same_activation(a, b) -> bool:
    """True if two activations are the same function (type, structure and concrete values)."""
    if type(a) is not type(b):
        return False
    if jax.tree_util.tree_structure(a) != jax.tree_util.tree_structure(b):
        return False
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        if _is_concrete(x, y) and not np.array_equal(np.asarray(x), np.asarray(y)):
            return False
    return True


def _check_nets(student, teacher) -> None:
    check_pair(student, teacher)
    sa, ta = student.activation, teacher.activation
    if not _same_activation(sa, ta):
        raise ValueError(
            f"teacher: activation {ta!r} differs from the student's {sa!r}; simulate uses one "
            "activation g for both networks"
        )


def simulate(
    student: TwoLayerNet,
    teacher: TwoLayerNet,
    key,
    *,
    lr=None,
    lr_v=0.0,
    noise=0.0,
    weight_decay=0.0,
    alphas,
    batch_size: int = 1,
    throw: bool = True,
    curriculum: AbstractCurriculum | None = None,
    problem: Problem | None = None,
    rule: AbstractRule | None = None,
    inputs=None,
) -> Trajectory:
    r"""Online SGD of ``student`` on data labelled by ``teacher`` (finite N).

    Args:
        student: the :class:`~tsjax.TwoLayerNet` to train (K hidden units; initial state).
        teacher: the :class:`~tsjax.TwoLayerNet` teacher (M hidden units, same N and
            activation g as the student).
        key: a ``jax.random`` key (``jax.random.key`` or ``PRNGKey``). ``jax.vmap`` over a
            batch of keys gives independent runs.
        lr: first-layer learning rate eta >= 0, a number or a schedule eta(alpha).
        lr_v: second-layer learning rate eta_v >= 0 (0: second layer fixed), number or
            schedule.
        noise: standard deviation sigma >= 0 of the output noise of the teacher.
        weight_decay: kappa >= 0 (w <- w - (kappa/N) w per step; on v only if eta_v != 0).
        alphas: 1-D strictly increasing save times alpha >= 0 (concrete: numpy array or
            list). The state saved at ``alphas[i]`` is the one after round(alphas[i] * N)
            steps; ``alphas[0] = 0`` saves the initial state. The run takes
            round(alphas[-1] * N) steps.
        batch_size: B >= 1 samples per step (the update is the mean over the batch; for
            ``tsjax.RLPerceptron`` a step is one episode of T inputs: leave it at 1).
        throw: if True (default), a run that diverges or meets an invalid traced input
            raises, eagerly and under ``jit``/``vmap``/``grad`` (``tsjax.RESULTS``); if
            False the trajectory is returned with ``result`` and ``diverged_at`` set and NaN
            values from the stop on.
        curriculum: several teachers (``teacher`` from :func:`~tsjax.init_teachers`, ``v``
            of shape (P, M)): which one labels the sample of step t, drawn from pi(t / N)
            (``tsjax.TaskSwitch``, ``tsjax.Mixture``; default teacher 0). A student with
            ``v`` of shape (P, K) has one head per teacher (a step trains the head of its
            task only).
        problem: a :class:`~tsjax.Problem` instead of ``lr``, ``lr_v``, ``noise``,
            ``weight_decay`` and ``curriculum`` (its activation must be the networks').
        rule: the learning rule of the first layer: ``tsjax.SGD()`` (default),
            ``tsjax.AdaptiveBackprop(beta)``, ``tsjax.FeedbackAlignment(feedback=b)`` or
            ``tsjax.RLPerceptron(...)`` (episodes of T sign decisions; activation "sign")
            (``tsjax._rules``); ignored when ``problem`` is given (it has its own).
        inputs: the input model: None (Gaussian inputs) or ``tsjax.HiddenManifold(F,
            feature_map)``: latents c ~ N(0, I_D), inputs x = f(F c / sqrt D), the teacher
            (W* (M, D)) on the latent (``tsjax._inputs._manifold_simulate``; one teacher,
            one head, batch size 1).

    Returns:
        A :class:`~tsjax.Trajectory`: ``alpha`` (the requested save times), ``eg`` (the
        noise-free eps_g computed exactly from the saved order parameters), ``Q``, ``R``,
        ``v``, the teacher's ``T`` and ``v_star``, ``diverged_at`` and ``result``.

    Raises:
        ValueError: for invalid arguments (the message names the parameter); traced
            arguments are checked on their values during the run (a negative or non-finite
            rate at any step, negative noise or weight decay: ``RESULTS.invalid_input``).
        DivergenceError: with ``throw=True``, if the run diverged (see the module docstring
            for the criterion), naming the alpha. Under ``jax.jit``/``jax.vmap``/``jax.grad``
            the same message is raised when the compiled program runs, as JAX's
            ``JaxRuntimeError`` (a ``RuntimeError``).

    All numeric arguments (``lr``, ``lr_v``, ``noise``, ``weight_decay``, the networks'
    weights) may be traced: the function can be vmapped over them and differentiated
    (reverse mode recomputes each block of steps, see the module docstring). ``jax.grad``
    through a run that diverges raises with ``throw=True`` (the default) and gives NaN
    values and gradients with ``throw=False``. ``alphas`` and
    ``batch_size`` fix the shape of the computation and must be concrete.

    Inputs are drawn at float32 resolution and converted to the working precision (see
    ``_SAMPLE_DTYPE``; the learning curves and their fluctuations are those of exact float64
    inputs, tests/test_simulate_unit.py).

    Performance (CPU): a step costs about N Gaussian random numbers (~3 ns each) plus
    O(B K N) for the update (benchmarks/simulate.py: ~7.6x a numpy loop at N = 500, ~3.5x at
    N = 10^4, one seed). ``jax.vmap`` over seeds runs them in lockstep,
    which on a CPU is slower per seed than ``jax.lax.map`` over the keys (the weights of all
    seeds leave the cache); on a GPU vmap is the fast choice.
    """
    if inputs is not None:
        from ._inputs._hidden_manifold import HiddenManifold
        from ._inputs._manifold_simulate import simulate_manifold

        if not isinstance(inputs, HiddenManifold):
            raise ValueError(
                f"inputs: expected a tsjax.HiddenManifold (with its F), got {type(inputs).__name__}"
            )
        problem = make_problem(
            problem, activation=student.activation, lr=lr, lr_v=lr_v, noise=noise,
            weight_decay=weight_decay, curriculum=curriculum, rule=rule,
        )  # fmt: skip
        _check_key(key)
        if not isinstance(problem.rule, AbstractGradientRule):
            raise ValueError(f"rule: {problem.rule!r} is not simulated on the hidden manifold")
        traj = simulate_manifold(student, teacher, key, inputs, problem, alphas)
        if throw and not bool(jnp.isinf(traj.diverged_at)):
            raise DivergenceError(f"simulate diverged at alpha = {float(traj.diverged_at):.6g}")
        return traj
    _check_nets(student, teacher)
    problem = make_problem(
        problem, activation=student.activation, lr=lr, lr_v=lr_v, noise=noise,
        weight_decay=weight_decay, curriculum=curriculum, rule=rule,
    )  # fmt: skip
    if not _same_activation(problem.activation, student.activation):
        raise ValueError(
            f"problem: its activation {problem.activation!r} differs from the networks' "
            f"{student.activation!r}"
        )
    check_flag("throw", throw)
    _check_key(key)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise ValueError(f"batch_size: expected an integer >= 1, got {batch_size!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size: expected an integer >= 1, got {batch_size}")
    N = student.N
    steps = _save_steps(alphas, N)
    check_heads(student, teacher)
    problem.check(teacher.P, alphas, K=student.K)
    batch_size = problem.rule.samples_per_step(int(batch_size))
    unique_steps, inverse = np.unique(steps, return_inverse=True)
    n_total = int(steps[-1])

    dtype = jnp.result_type(student.W, student.v, teacher.W, teacher.v)
    warn_if_float32(jnp.zeros((), dtype))
    B = int(batch_size)
    traj, status = _run(
        student.W.astype(dtype),
        student.v.astype(dtype),
        teacher.W.astype(dtype),
        teacher.v.astype(dtype),
        problem,
        key,
        jnp.asarray(np.asarray(alphas, dtype=np.float64), dtype),
        jnp.asarray(steps, jnp.int32),
        jnp.asarray(unique_steps, jnp.int32),
        jnp.asarray(inverse.reshape(-1), jnp.int32),
        n_total,
        B,
        _block_length(N, B),
        _SAMPLE_DTYPE,
    )
    if throw:
        traj = raise_if_failed(
            traj, status, "simulate", lr=problem.lr, lr_v=problem.lr_v, noise=problem.noise,
            weight_decay=problem.weight_decay, rule=problem.rule,
        )  # fmt: skip
    return traj
