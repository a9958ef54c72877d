r"""The exact finite-N order-parameter chain: online SGD in the variables (Q, R, v) alone.

For Gaussian inputs the SGD dynamics of the order parameters is itself a Markov chain.
Write L = K + M, C = [[Q, R], [R^T, T]] and let S be an L-dimensional subspace of R^N that
contains the K student and M teacher weight vectors (N >= L). For a fresh input
x ~ N(0, I_N), its coordinates xi in an orthonormal basis of S and its component x_perp
orthogonal to S are independent, xi ~ N(0, I_L) and |x_perp|^2 ~ chi^2_{N-L}. The local
fields z = (lambda, nu) = W_all x / sqrt(N) are z = A xi with A A^T = C, and

    |x|^2 = |xi|^2 + chi^2_{N-L}.

Any A with A A^T = C gives the same joint law of (z, |x|^2): two square roots of C differ by
an orthogonal factor, A = A_0 O, and xi is rotation invariant. This holds for singular C
too (a student equal to a teacher, a rank-deficient T): the directions of S outside the
span of the weights just behave like more orthogonal directions. (This is the
"|x|^2 = z^T C^+ z + chi^2_{N-r}" decomposition with r = rank C, written so that the rank
never has to be decided numerically.) For a mini-batch of B inputs the Gram matrix
G_bb' = x_b . x_b' / N is (Xi^T Xi + W) / N with Xi = (xi_1 ... xi_B) and W ~ Wishart(N - L,
I_B) independent of Xi, drawn by the Bartlett decomposition W = P P^T, P lower triangular
with P_ii^2 ~ chi^2_{N-L-i+1} and P_ij ~ N(0, 1) (i > j).

One step (docs/conventions.md) w_k' = a w_k - (1 / (B sqrt N)) sum_b c_kb x_b with
a = 1 - kappa/N and c (K, B) the learning rule's signal (``AbstractRule.signal``; for SGD
c_kb = eta v_k g'(lambda_kb) Delta_b, Delta_b = v.g(lambda_b) - v*.g(nu_b) - sigma zeta_b;
for the RL perceptron an episode of B = T decisions), then gives exactly

    Q' = a^2 Q - (a / (B N)) (c lambda^T + lambda c^T) + (1 / (B^2 N)) c G c^T
    R' = a R - (1 / (B N)) c nu^T
    v' = v - (eta_v / (B N)) g(lambda) Delta - (kappa / N) v [eta_v != 0]

(c, lambda: (K, B); nu: (M, B)). So a step costs O(L^3) (a Cholesky factor of C, computed
by an unrolled, semidefinite-safe Cholesky) and O(L B + B^2) random numbers, whatever N.
The chain is exact in law for every finite N (not an approximation for large N); its
trajectories are not those of ``tsjax.simulate`` for the same key (different random
variables), only their distribution is the same (tests/test_simulate_op.py).

Random numbers: the steps are grouped in blocks of ``_BLOCK`` steps; block c draws all its
numbers from ``fold_in(key, c)`` (the xi of the students and of the teachers from separate
keys, with the unit axis first), so the numbers of step t depend only on (key, t, B), and a
longer run continues a shorter one exactly. Padded (masked) units, as used by
``tsjax.sweep``, take no random numbers away from the real ones: a padded point reproduces
the unpadded chain.

Divergence: the criterion of ``solve_ode`` and ``simulate`` (``tsjax._checks``), checked
after every step (``diverged_at`` is the alpha of the first step whose state crosses it);
values from then on are NaN.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._activations import Activation
from ._checks import (
    bad_rates,
    check_flag,
    is_diverged,
    warn_if_float32,
)
from ._curricula import AbstractCurriculum, head_of, next_phase, phase_state, task_of_step
from ._order_params import OrderParams, covariance_from, eg_on_task
from ._problem import Problem, make_problem
from ._results import raise_if_failed, result_index
from ._rules import SGD, AbstractRule
from ._simulate import (
    _check_key,
    _draw_tasks,
    _recorded_trajectory,
    _save_steps,
    _scan_blocks,
)
from ._trajectory import Trajectory

__all__ = ["simulate_order_params"]

#: Steps per block of random numbers.
_BLOCK = 256
#: Inner-loop unrolling of the steps of a block (unrolling 4-16 steps was not faster on a CPU
#: and compiles slower).
_UNROLL = 1


def _psd_cholesky(C):
    """A lower-triangular A with A A^T = C for a symmetric positive semi-definite C (static
    size, unrolled). A pivot below 100 eps C_jj is treated as 0 (its column is set to 0),
    which is exact for singular C up to round-off."""
    L = C.shape[-1]
    eps = jnp.finfo(C.dtype).eps
    A = [[None] * L for _ in range(L)]
    zero = jnp.zeros_like(C[..., 0, 0])
    for j in range(L):
        s = C[..., j, j]
        for k in range(j):
            s = s - A[j][k] * A[j][k]
        ok = s > 100 * eps * C[..., j, j]
        d = jnp.sqrt(jnp.where(ok, s, 1.0))
        A[j][j] = jnp.where(ok, d, 0.0)
        inv = jnp.where(ok, 1.0 / d, 0.0)
        for i in range(j + 1, L):
            t = C[..., i, j]
            for k in range(j):
                t = t - A[i][k] * A[j][k]
            A[i][j] = t * inv
        for i in range(j):
            A[i][j] = zero
    return jnp.stack([jnp.stack(row, axis=-1) for row in A], axis=-2)


def _chi2(key, df, shape, dtype):
    """Exact chi^2_df samples (df > 0, may be traced): 2 Gamma(df/2) by the Marsaglia-Tsang
    rejection method, vectorised (one normal and one uniform per element and round; the
    rare rejected elements are redrawn until all are accepted; Gamma(a) = Gamma(a + 1)
    U^(1/a) for a < 1). About 4x faster here than ``jax.random.chisquare``, whose per-element
    loops split keys."""
    a = jnp.broadcast_to(jnp.asarray(df, dtype) / 2, shape)
    boost = a < 1
    a1 = jnp.where(boost, a + 1, a)
    d = a1 - 1.0 / 3.0
    c = 1.0 / jnp.sqrt(9.0 * d)
    k_rounds, k_boost = jax.random.split(key)

    def draw(i):
        k1, k2 = jax.random.split(jax.random.fold_in(k_rounds, i))
        x = jax.random.normal(k1, shape, dtype)
        u = jax.random.uniform(k2, shape, dtype)
        v = (1.0 + c * x) ** 3
        pos = v > 0
        ok = pos & (jnp.log(u) < 0.5 * x * x + d - d * v + d * jnp.log(jnp.where(pos, v, 1.0)))
        return d * v, ok

    def body(state):
        val, ok, i = state
        new, new_ok = draw(i)
        return jnp.where(ok, val, new), ok | new_ok, i + 1

    val, ok = draw(0)
    val, _, _ = jax.lax.while_loop(lambda s: ~jnp.all(s[1]), body, (val, ok, 1))
    u = jax.random.uniform(k_boost, shape, dtype)
    val = jnp.where(boost, val * u ** (1.0 / a), val)
    return 2.0 * val


def _draw_block(key, block, Kp: int, Mp: int, n_steps: int, B: int, dof, dtype):
    """Random numbers of steps block*n_steps ...: xi_s (n_steps, Kp, B), xi_t (n_steps, Mp, B),
    the Bartlett factor P (n_steps, B, B) of Wishart(dof, I_B) and output noises zeta
    (n_steps, B). The unit axis comes first when drawing, so that padding (larger Kp, Mp)
    leaves the numbers of the real units unchanged."""
    ks, kt, kc, ko, kz = jax.random.split(jax.random.fold_in(key, block), 5)
    xi_s = jnp.moveaxis(jax.random.normal(ks, (Kp, n_steps, B), dtype), 0, 1)
    xi_t = jnp.moveaxis(jax.random.normal(kt, (Mp, n_steps, B), dtype), 0, 1)
    df = jnp.asarray(dof, dtype) - jnp.arange(B, dtype=dtype)  # chi^2 dofs of P_ii^2
    chi2 = _chi2(kc, df, (n_steps, B), dtype)
    P = jnp.sqrt(chi2)[..., :, None] * jnp.eye(B, dtype=dtype)
    if B > 1:
        P = P + jnp.tril(jax.random.normal(ko, (n_steps, B, B), dtype), -1)
    zeta = jax.random.normal(kz, (n_steps, B), dtype)
    return xi_s, xi_t, P, zeta


def _op_step(Q, R, v, T, vt, mk, mm, rnd, eta, eta_v, noise, kappa, N, act: Activation, rule=None):
    """One exact SGD step of the order parameters (module docstring). mk (Kp,), mm (Mp,):
    1 for real, 0 for padded units (padded units must have v = v* = 0 and zero overlaps
    with the real ones)."""
    xi_s, xi_t, P, zeta = rnd
    Kp = Q.shape[-1]
    B = zeta.shape[-1]
    dtype = Q.dtype
    A = _psd_cholesky(covariance_from(Q, R, T))
    xi = jnp.concatenate([xi_s * mk[:, None], xi_t * mm[:, None]], axis=0)  # (L, B)
    z = A @ xi
    lam, nu = z[:Kp], z[Kp:]
    g_lam = act(lam)
    delta = v @ g_lam - vt @ act(nu) - noise * zeta  # (B,)
    rule = SGD() if rule is None else rule
    yhat = v @ g_lam
    c = rule.signal(act, lam, yhat, yhat - delta, v, eta)  # (Kp, B): eta times the signal
    n = jnp.asarray(N, dtype)
    G = (xi.T @ xi + P @ P.T) / n  # (B, B): x_b . x_b' / N
    a = 1.0 - kappa / n
    inv_bn = 1.0 / (B * n)
    cl = c @ lam.T
    dQ = (a * a - 1.0) * Q - (a * inv_bn) * (cl + cl.T) + (inv_bn / B) * (c @ G @ c.T)
    dR = (a - 1.0) * R - inv_bn * (c @ nu.T)
    dv = -(eta_v * inv_bn) * (g_lam @ delta) - (kappa / n) * v * (eta_v != 0).astype(dtype)
    mQ = mk[:, None] * mk[None, :]
    mR = mk[:, None] * mm[None, :]
    return (
        Q + jnp.where(mQ != 0, dQ, 0.0),
        R + jnp.where(mR != 0, dR, 0.0),
        v + jnp.where(mk != 0, dv, 0.0),
    )


def _run_op(
    Q0,
    R0,
    T,
    v0,
    vt,
    mk,
    mm,
    limits,
    problem,
    key,
    N,
    dof,
    alphas,
    steps,
    save_steps,
    inverse,
    n_total: int,
    B: int,
    block: int = _BLOCK,
    unroll: int = _UNROLL,
):
    """The chain from (Q0, R0, v0) (traceable; ``N`` and ``dof`` = N - K - M may be traced,
    the step counts are static). Returns the Trajectory and the index of its
    ``RESULTS`` item. ``v0``: (K,) or (H, K) heads; ``vt``: (M,) or (P, M) readouts."""
    Kp, Mp = R0.shape
    dtype = Q0.dtype
    v_shape, vt_in = v0.shape, vt
    v0, vt = jnp.atleast_2d(v0), jnp.atleast_2d(vt)
    n_heads, n_tasks = v0.shape[0], vt.shape[0]
    act, lr, lr_v = problem.activation, problem.lr, problem.lr_v
    noise, cur = problem.noise, problem.curriculum
    S = save_steps.shape[0]
    n_f = jnp.asarray(N, dtype)
    no_div = jnp.int32(n_total + 1)

    def bad(Q, R, v):
        return ~jnp.all(jnp.isfinite(R)) | ~jnp.all(jnp.isfinite(Q)) | is_diverged(Q, v, limits)

    def record(i, t, Q, R, v, bufs, t_det, is_save=True):
        # Unconditional writes (into the spare row S when this is not a save step): under
        # jax.vmap a lax.cond would become a select that copies the whole buffers per step.
        i = jnp.where(is_save, i, S)
        bQ, bR, bv = bufs
        bufs = (bQ.at[i].set(Q), bR.at[i].set(R), bv.at[i].set(v))
        t_det = jnp.where(is_save & bad(Q, R, v), jnp.minimum(t_det, t), t_det)
        return bufs, t_det

    def error_on(Q, R, v):  # exact eps_g on task p (threshold switch)
        return lambda p: eg_on_task(act, covariance_from(Q, R, T), v, vt, p)

    def run_block(carry, c, length: int):
        Q, R, v, bufs, t_det, cs = carry
        rnd = _draw_block(key, c, Kp, Mp, block, B, dof, dtype)
        u = _draw_tasks(key, c, block, dtype, cur)
        if length < block:
            rnd, u = jax.tree_util.tree_map(lambda x: x[:length], (rnd, u))
        t0 = c * block
        i0 = jnp.searchsorted(save_steps, t0, side="left").astype(jnp.int32)

        def step(inner, inp):
            Q, R, v, bufs, t_det, i, cs = inner
            r, u_t, j = inp
            t = t0 + j
            is_save = (i < S) & (save_steps[jnp.minimum(i, S - 1)] == t)
            bufs, t_det = record(jnp.minimum(i, S - 1), t, Q, R, v, bufs, t_det, is_save)
            i = i + is_save.astype(jnp.int32)
            alpha = t.astype(dtype) / n_f
            eta = jnp.asarray(lr(alpha), dtype)
            eta_v = jnp.asarray(lr_v(alpha), dtype)
            weight_decay = jnp.asarray(problem.decay(alpha), dtype)
            rule_t = problem.rule.at(alpha)
            bad_now = bad_rates(eta, eta_v) | bad_rates(weight_decay, 0.0) | rule_t.bad()
            t_det = jnp.where(bad_now, jnp.minimum(t_det, t), t_det)
            p = task_of_step(cur, alpha, n_tasks, u_t, cs[0])
            h = head_of(jnp.asarray(p), n_heads) if n_heads > 1 else 0
            Q, R, vh = _op_step(
                Q, R, v[h], T, vt[p], mk, mm, r, eta, eta_v, noise, weight_decay, N, act,
                rule_t,
            )  # fmt: skip
            v = v.at[h].set(vh) if n_heads > 1 else vh[None]
            cs = next_phase(cur, cs, error_on(Q, R, v), (t + 1).astype(dtype) / n_f)
            # divergence at its onset: the state after this step (t + 1 steps)
            t_det = jnp.where(bad(Q, R, v), jnp.minimum(t_det, t + 1), t_det)
            return (Q, R, v, bufs, t_det, i, cs), None

        js = jnp.arange(length, dtype=jnp.int32)
        (Q, R, v, bufs, t_det, _, cs), _ = jax.lax.scan(
            step, (Q, R, v, bufs, t_det, i0, cs), (rnd, u, js), unroll=min(unroll, length)
        )
        t_end = t0 + length
        t_det = jnp.where(bad(Q, R, v), jnp.minimum(t_det, t_end), t_det)
        return Q, R, v, bufs, t_det, cs

    bufs = (
        jnp.zeros((S + 1, Kp, Kp), dtype),
        jnp.zeros((S + 1, Kp, Mp), dtype),
        jnp.zeros((S + 1, n_heads, Kp), dtype),
    )
    carry = (Q0, R0, v0, bufs, no_div, phase_state(cur, dtype))
    carry = _scan_blocks(run_block, carry, n_total, block, lambda cr: cr[4] < no_div)
    Q, R, v, bufs, t_det, (_, switched) = carry
    bufs, t_det = record(S - 1, jnp.int32(n_total), Q, R, v, bufs, t_det)
    Qs, Rs, vs = bufs[0][inverse], bufs[1][inverse], bufs[2][inverse]
    traj = _recorded_trajectory(
        problem, alphas, steps, t_det, n_total, n_f, Qs, Rs, vs, T, vt_in, v_shape, switched
    )
    return traj, result_index(traj.result)


_run_op_jit = eqx.filter_jit(_run_op)


def simulate_order_params(
    op0: OrderParams,
    key,
    *,
    N: int,
    activation: str | Activation = "erf",
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
) -> Trajectory:
    r"""Online SGD at finite N simulated exactly in the order parameters (Q, R, v).

    The SGD dynamics of ``tsjax.simulate`` (docs/conventions.md) for Gaussian inputs, written as a
    Markov chain on the order parameters: each step draws the K + M local fields of a fresh
    input (and |x|^2 / N, or the B x B Gram matrix of a mini-batch) from their exact joint
    law given the current (Q, R, T) and applies the exact one-step update of Q, R and v
    (module docstring). A step costs O((K + M)^3) whatever N is, so N = 10^6 costs per step
    what N = 100 does (a run still takes alphas[-1] * N steps).

    Args:
        op0: initial :class:`~tsjax.OrderParams` (Q, R, T, v, v*); the covariance
            [[Q, R], [R^T, T]] must be positive semi-definite.
        key: a ``jax.random`` key; ``jax.vmap`` over keys gives independent runs.
        N: input dimension, an integer >= K + M + batch_size.
        activation: name or :class:`~tsjax.Activation` (the same g for student and teacher).
        lr: first-layer learning rate eta >= 0, a number or a schedule eta(alpha).
        lr_v: second-layer learning rate eta_v >= 0 (0: second layer fixed).
        noise: output-noise standard deviation sigma >= 0.
        weight_decay: kappa >= 0 (w <- w - (kappa/N) w per step; on v only if eta_v != 0).
        alphas: 1-D strictly increasing save times alpha >= 0 (concrete). As in
            ``simulate``, the state saved at ``alphas[i]`` is the one after
            round(alphas[i] * N) steps.
        batch_size: B >= 1 samples per step (the update is the mean over the batch; for
            ``tsjax.RLPerceptron`` a step is one episode of T inputs: leave it at 1).
        throw: raise on failure (default) or return the flagged trajectory (below).
        curriculum: with several teachers (``op0.v_star`` (P, M)), which one labels the
            sample of step t, drawn from pi(t / N) (see ``simulate``).
        problem: a :class:`~tsjax.Problem` instead of the keywords ``activation``, ``lr``,
            ``lr_v``, ``noise``, ``weight_decay`` and ``curriculum``.
        rule: the learning rule of the first layer: ``tsjax.SGD()`` (default),
            ``tsjax.AdaptiveBackprop(beta)``, ``tsjax.FeedbackAlignment(feedback=b)`` or
            ``tsjax.RLPerceptron(...)`` (episodes of T sign decisions; activation "sign")
            (``tsjax._rules``); ignored when ``problem`` is given (it has its own).

    Returns:
        A :class:`~tsjax.Trajectory` (the same type, divergence criterion and ``result`` as
        ``simulate`` and ``solve_ode``). With ``throw=True`` (default) a run that diverges
        or meets an invalid traced input raises :class:`~tsjax.DivergenceError` (or
        ``ValueError``), eagerly and under ``jit``/``vmap``/``grad`` (there as JAX's
        ``JaxRuntimeError`` with the same message); with ``throw=False`` the trajectory is
        returned with ``result``, ``diverged_at`` set and NaN values from the stop on.

    The result has the law of ``order_params`` of ``simulate``'s networks, not their
    sample path: the two use different random variables for the same key.
    """
    if not isinstance(op0, OrderParams):
        raise ValueError(f"op0: expected a tsjax.OrderParams, got {type(op0).__name__}")
    problem = make_problem(
        problem, activation=activation, lr=lr, lr_v=lr_v, noise=noise,
        weight_decay=weight_decay, curriculum=curriculum, rule=rule,
    )  # fmt: skip
    check_flag("throw", throw)
    op0.validate()
    _check_key(key)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise ValueError(f"batch_size: expected an integer >= 1, got {batch_size!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size: expected an integer >= 1, got {batch_size}")
    K, M = op0.K, op0.M
    batch_size = problem.rule.samples_per_step(int(batch_size))
    if isinstance(N, bool) or not float(N).is_integer() or int(N) < K + M + batch_size:
        raise ValueError(
            f"N: expected an integer >= K + M + batch_size = {K + M + batch_size}, got {N!r}"
        )
    N = int(N)
    steps = _save_steps(alphas, N)
    problem.check(op0.P, alphas, K=op0.K)
    unique_steps, inverse = np.unique(steps, return_inverse=True)
    dtype = jnp.result_type(op0.Q, op0.R, op0.T, op0.v, op0.v_star)
    warn_if_float32(jnp.zeros((), dtype))
    Q0, R0, T, v0, vt = (jnp.asarray(x, dtype) for x in (op0.Q, op0.R, op0.T, op0.v, op0.v_star))
    traj, status = _run_op_jit(
        Q0,
        R0,
        T,
        v0,
        vt,
        jnp.ones((K,), dtype),
        jnp.ones((M,), dtype),
        problem.divergence_limits(Q0, T, v0, vt),
        problem,
        key,
        jnp.asarray(N, dtype),  # traced: runs of the same number of steps share a compilation
        jnp.asarray(N - K - M, dtype),
        jnp.asarray(np.asarray(alphas, dtype=np.float64), dtype),
        jnp.asarray(steps, jnp.int32),
        jnp.asarray(unique_steps, jnp.int32),
        jnp.asarray(inverse.reshape(-1), jnp.int32),
        int(steps[-1]),
        int(batch_size),
    )
    if throw:
        traj = raise_if_failed(
            traj,
            status,
            "simulate_order_params",
            lr=problem.lr,
            lr_v=problem.lr_v,
            noise=problem.noise,
            weight_decay=problem.weight_decay,
            rule=problem.rule,
        )
    return traj
