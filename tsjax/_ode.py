r"""The order-parameter ODEs (Saad & Solla 1995; Goldt et al. 2019, eqs. (8)-(10)) and their
integration with Diffrax.

With u = (v, -v*), C = [[Q, R], [R^T, T]] and the contractions of ``_integrals.py``
(A_ip = sum_j u_j I3(i,p,j), B_ik = sum_jl u_j u_l I4(i,k,j,l)), for students i, k and
teachers n:

    dR_in/dalpha = -eta v_i A_{i,n}                                   - kappa R_in
    dQ_ik/dalpha = -eta (v_i A_ik + v_k A_ki)
                   + eta^2 v_i v_k (B_ik + sigma^2 J2(i,k))            - 2 kappa Q_ik
    dv_i/dalpha  = -eta_v sum_j u_j I2(i,j)                          - kappa v_i [eta_v != 0]

eta = lr(alpha), eta_v = lr_v(alpha) (numbers or schedules), sigma the output-noise
standard deviation, kappa the weight decay (w <- w - (kappa/N) w at every SGD step; it acts
on v only when the second layer is trained). T and v* are constant. With another learning
rule of the first layer (``Problem.rule``: adaptive back-propagation, feedback alignment),
v_i becomes the rule's p_i in the first two lines and A, B, J2 take the rule's derivative
(``tsjax._rules``).
"""

from __future__ import annotations

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import optimistix as optx

from ._activations import Activation
from ._checks import (
    DEFAULT_MAX_NORM,
    bad_constants,
    bad_rates,
    check_alphas,
    check_flag,
    check_solver_options,
    is_diverged,
    warn_if_float32,
)
from ._curricula import AbstractCurriculum, SingleTask, head_of
from ._order_params import OrderParams, covariance_from, eg_on_task
from ._problem import Problem, make_problem
from ._results import RESULTS, raise_if_failed, result_index
from ._rosenbrock import Rodas5P
from ._rules import SGD, AbstractRule
from ._trajectory import Trajectory, build_trajectory

__all__ = ["vector_field", "solve_ode", "OdeState"]


class OdeState(eqx.Module):
    """The integrated variables (T and v* are constant and travel in the arguments); ``v``
    has one row per head, (H, K)."""

    Q: jax.Array
    R: jax.Array
    v: jax.Array


class _Args(eqx.Module):
    problem: Problem
    T: jax.Array
    v_star: jax.Array  # (P, M)


def vector_field(
    op: OrderParams,
    *,
    activation: str | Activation = "erf",
    lr=0.5,
    lr_v=0.0,
    noise=0.0,
    weight_decay=0.0,
    alpha=0.0,
    curriculum=None,
    problem: Problem | None = None,
) -> OrderParams:
    """d(op)/dalpha at time ``alpha``: an :class:`OrderParams` holding dQ/dalpha,
    dR/dalpha, dT/dalpha = 0, dv/dalpha and dv*/dalpha = 0 (see the module docstring;
    with several teachers, the ``curriculum``-weighted sum of the per-task fields).
    ``problem``: a :class:`~tsjax.Problem` instead of the keywords ``activation`` ...
    ``curriculum`` (which are then ignored)."""
    if problem is None:
        problem = Problem(activation, lr, lr_v, noise, weight_decay, curriculum)
    elif not isinstance(problem, Problem):
        raise ValueError(f"problem: expected a tsjax.Problem, got {type(problem).__name__}")
    args = _Args(problem, op.T, jnp.atleast_2d(op.v_star))
    d = _rhs(jnp.asarray(alpha), OdeState(op.Q, op.R, jnp.atleast_2d(op.v)), args)
    dv = d.v.reshape(op.v.shape)
    return OrderParams(d.Q, d.R, jnp.zeros_like(op.T), dv, jnp.zeros_like(op.v_star))


def sgd_drift(
    act: Activation, Q, R, T, v, v_star, eta, eta_v, noise, kappa, rule: AbstractRule | None = None
):
    """The drift (dQ, dR, dv) of online learning on one teacher (v (K,), v_star (M,)) by
    the learning ``rule`` (default SGD): the module docstring's equations for the rules that
    back-propagate the error (``tsjax._rules``), written once for every task, head and
    curriculum."""
    rule = SGD() if rule is None else rule
    return rule.drift(act, Q, R, T, v, v_star, eta, eta_v, noise, kappa)


def _rhs(alpha, y: OdeState, args: _Args) -> OdeState:
    pb = args.problem
    eta, eta_v = pb.rates(alpha)
    n_tasks, n_heads = args.v_star.shape[0], y.v.shape[0]

    def drift(h, p):
        return sgd_drift(
            pb.activation, y.Q, y.R, args.T, y.v[h], args.v_star[p],
            eta, eta_v, pb.noise, pb.decay(alpha), pb.rule.at(alpha),
        )  # fmt: skip

    cur = pb.curriculum
    if cur.one_hot:  # one teacher at a time: only its field is computed
        p = jnp.argmax(cur.weights(alpha, n_tasks)) if n_tasks > 1 else 0
        h = head_of(jnp.asarray(p), n_heads) if n_heads > 1 else 0
        dQ, dR, dvh = drift(h, p)
        dv = jnp.zeros_like(y.v).at[h].set(dvh) if n_heads > 1 else dvh[None]
        return OdeState(dQ, dR, dv)
    # a mixture: the probability-weighted sum of the per-task fields (exact, see
    # tsjax._curricula)
    w = cur.weights(alpha, n_tasks)
    tasks = jnp.arange(n_tasks)
    heads = head_of(tasks, n_heads)
    dQs, dRs, dvs = jax.vmap(drift)(heads, tasks)
    dQ = jnp.tensordot(w, dQs, axes=1)
    dR = jnp.tensordot(w, dRs, axes=1)
    dv = jnp.zeros_like(y.v).at[heads].add(w[:, None] * dvs)
    return OdeState(dQ, dR, dv)


# --------------------------------------------------------------------------------------
# Integration
# --------------------------------------------------------------------------------------


def _bad_rates(args: _Args, alpha):
    """``bad_rates`` of the schedules (rates and decay) at ``alpha``, or of the rule's
    time-dependent parameters there (e.g. a penalty schedule)."""
    pb = args.problem
    return bad_rates(*pb.rates(alpha)) | bad_rates(pb.decay(alpha), 0.0) | pb.rule.at(alpha).bad()


class _DivergedEvent(eqx.Module):
    """Stops the integration once the state diverges (``is_diverged``) or the learning rate
    at the current time is invalid (``args``: the run's unmasked ``_Args``)."""

    limits: tuple
    args: _Args

    def __call__(self, t, y, args, **kwargs):
        diverged = ~jnp.all(jnp.isfinite(y.R)) | is_diverged(y.Q, y.v, self.limits)
        return diverged | _bad_rates(self.args, t)


def default_solver() -> diffrax.AbstractSolver:
    """The solver ``solve_ode`` uses unless told otherwise: :class:`~tsjax.Rodas5P`."""
    return Rodas5P()


def solve_ode(
    op0: OrderParams,
    *,
    activation: str | Activation = "erf",
    lr=None,
    lr_v=0.0,
    noise=0.0,
    weight_decay=0.0,
    alphas,
    rtol: float | None = None,
    atol: float | None = None,
    solver: diffrax.AbstractSolver | None = None,
    max_steps: int = 200_000,
    max_norm: float = DEFAULT_MAX_NORM,
    throw: bool = True,
    curriculum: AbstractCurriculum | None = None,
    problem: Problem | None = None,
    rule: AbstractRule | None = None,
    inputs=None,
) -> Trajectory:
    r"""Integrate the order-parameter ODEs from ``op0`` at ``alphas[0]``.

    Args:
        op0: initial :class:`OrderParams` (Q, R, T, v, v*).
        activation: name (``"erf"``, ``"relu"``, ``"linear"``) or :class:`Activation`.
        lr: first-layer learning rate eta >= 0, a number or a schedule eta(alpha).
        lr_v: second-layer learning rate eta_v >= 0 (0: second layer fixed), number or
            schedule.
        noise: output-noise standard deviation sigma >= 0.
        weight_decay: kappa >= 0 (w <- w - (kappa/N) w per step).
        alphas: 1-D increasing save times; integration starts at ``alphas[0]``.
        rtol, atol: tolerances of the adaptive step-size controller (default 1e-8 and
            1e-11 in float64, 1e-5 and 1e-8 in float32).
        solver: a Diffrax solver; default :class:`~tsjax.Rodas5P` (see below).
        max_steps: maximum number of solver steps.
        max_norm: the run counts as diverged once a value becomes non-finite or a student
            norm grows without bound: max_k Q_kk > max_norm * max(1, max_k Q_kk(0),
            sum_nm |T_nm|), or likewise for v_k^2 (see ``tsjax._checks.divergence_limits``).
        throw: if True (default), a run that does not succeed raises, eagerly and under
            ``jit``/``vmap``/``grad`` alike (see ``tsjax.RESULTS``); if False, the
            trajectory is returned with ``result``, ``diverged_at`` set and NaN values from
            the stop on.
        curriculum: with several teachers (``op0.v_star`` of shape (P, M)), which teacher
            labels the samples when (``tsjax.TaskSwitch``, ``tsjax.Mixture``; default
            teacher 0); see ``tsjax._curricula``.
        problem: a :class:`~tsjax.Problem` instead of the keywords ``activation``, ``lr``,
            ``lr_v``, ``noise``, ``weight_decay`` and ``curriculum`` (which are then
            ignored).
        rule: the learning rule of the first layer: ``tsjax.SGD()`` (default),
            ``tsjax.AdaptiveBackprop(beta)``, ``tsjax.FeedbackAlignment(feedback=b)`` or
            ``tsjax.RLPerceptron(...)`` (episodes of T sign decisions; activation "sign")
            (``tsjax._rules``); ignored when ``problem`` is given (it has its own).
        inputs: the input model: None (Gaussian inputs), or ``tsjax.HiddenManifold(F,
            feature_map)`` / ``tsjax.HiddenManifold.limit(delta, ...)`` with ``op0`` from
            ``tsjax.order_params(student, teacher, inputs=...)`` (``tsjax._inputs``; the
            default solver is then Tsit5).

    Returns:
        A :class:`Trajectory` at ``alphas`` with ``result`` (a :class:`~tsjax.RESULTS` item)
        and ``diverged_at`` (inf when successful).

    Raises:
        ValueError: an invalid input, naming the parameter. Inputs that are traced (under
            ``jit``/``vmap``) and schedules are checked on their values during the run: a
            negative or non-finite rate, noise or weight decay, or save times that do not
            increase, give ``RESULTS.invalid_input`` (with ``throw=True``, an error naming
            it).
        DivergenceError: with ``throw=True``, when the run diverged, the solver reached
            ``max_steps`` or its step size collapsed (a non-finite vector field), naming the
            alpha. Under ``jit``/``vmap``/``grad`` the same message is raised when the
            compiled program runs, as JAX's ``JaxRuntimeError`` (a ``RuntimeError``).

    Solver: the dynamics is stiff after the transient (the fixed point has eigenvalues
    spanning several decades), so an explicit Runge-Kutta method is stability-limited to
    O(1e4) steps per 1e5 units of alpha. The default is the L-stable, stiffly accurate
    Rosenbrock method Rodas5P (order 5(4); one JAX Jacobian and one LU factorisation per
    step, no Newton iterations), whose step grows with alpha once the transient is over.
    Implicit ESDIRK methods such as ``diffrax.Kvaerno5()`` also work but cost ~7x more here.
    For short runs (alpha up to ~1e3, i.e. ~1e3 / eta units of the fastest relaxation) the
    explicit ``solver=diffrax.Tsit5()`` is faster: it needs no Jacobian (for ReLU each
    Jacobian costs ~n_state quadratures of I4) and its stability limit is not yet reached.
    Measured (benchmarks/sweep.py, M = 2, sigma = 0.1, alpha 0 -> 1e3, one CPU core): erf
    K = 4 ~2-3x faster than Rodas5P, ReLU K = 2 ~3-13x; for alpha -> 1e5 Rodas5P is the
    faster by far (benchmarks/ode.py).

    Gradients: ``solve_ode`` is differentiable (``jax.grad``, ``jax.value_and_grad``,
    ``eqx.filter_grad``) with respect to every numeric input: the schedules' parameters
    (``lr``, ``lr_v``), ``noise``, ``weight_decay`` and ``op0``. Reverse mode differentiates
    the solver's own steps ("discretise-then-optimise", exact gradients of the computed
    solution) with Diffrax's recursive-checkpoint adjoint: the backward pass stores the solver
    state at up to ``GRAD_CHECKPOINTS`` = 2048 steps and recomputes the steps in between, so
    the memory of a gradient does not grow with alpha_max (K = 4, M = 2 up to alpha = 1e5:
    2.2 MiB of temporaries; benchmarks/grad.py). Each Rodas step has a hand-written adjoint
    (exact: see ``tsjax._rosenbrock``) that needs the second derivatives of the Gaussian
    integrals only along the s stage directions, not through all n + 1 Jacobian columns
    (the stages run in a loop, so the vector field is traced once per step, not once per
    stage). A gradient costs about 4.4 forward solves on a CPU (K = 4, alpha = 1e4;
    benchmarks/grad.py): the forward pass, one recomputation of every step, and the reverse
    pass of each step. The continuous adjoint
    (``diffrax.BacksolveAdjoint``) was not chosen: it integrates the stiff dynamics backwards
    in time, which is unstable, and its gradient is only accurate to the solver tolerance.
    The step-size controller carries no derivative through the step lengths, so the
    gradients match central finite differences of the solution to 1e-5 relative at rtol =
    1e-12 (tests/test_gradients.py). Only reverse mode is supported (``jax.grad``,
    ``jax.jacrev``): the checkpointed adjoint is a custom VJP, so ``jax.jvp``/``jax.jacfwd``
    of ``solve_ode`` raise a TypeError. ``jax.grad`` through a run that diverges raises
    (``throw=True``) or, with ``throw=False``, gives NaN values and NaN gradients.
    """
    if inputs is not None:
        return _solve_with_inputs(
            op0, inputs, alphas, rtol, atol, solver, max_steps, throw,
            make_problem(problem, activation=activation, lr=lr, lr_v=lr_v, noise=noise,
                         weight_decay=weight_decay, curriculum=curriculum, rule=rule),
        )  # fmt: skip
    if not isinstance(op0, OrderParams):
        raise ValueError(f"op0: expected a tsjax.OrderParams, got {type(op0).__name__}")
    problem = make_problem(
        problem, activation=activation, lr=lr, lr_v=lr_v, noise=noise,
        weight_decay=weight_decay, curriculum=curriculum, rule=rule,
    )  # fmt: skip
    op0.validate()
    alphas = check_alphas(alphas)
    problem.check(op0.P, alphas, K=op0.K)
    warn_if_float32(op0.Q)
    f64 = jnp.asarray(op0.Q).dtype == jnp.float64
    rtol = (1e-8 if f64 else 1e-5) if rtol is None else rtol
    atol = (1e-11 if f64 else 1e-8) if atol is None else atol
    check_solver_options(rtol=rtol, atol=atol, max_steps=max_steps, max_norm=max_norm)
    check_flag("throw", throw)
    traj, info = _solve(
        op0,
        problem,
        alphas,
        rtol,
        atol,
        solver if solver is not None else default_solver(),
        max_steps,
        problem.divergence_limits(op0.Q, op0.T, op0.v, op0.v_star, max_norm),
    )
    if throw:
        traj = raise_if_failed(
            traj, info["status"], "solve_ode", lr=problem.lr, lr_v=problem.lr_v,
            noise=problem.noise, weight_decay=problem.weight_decay, alphas=alphas,
            rule=problem.rule,
        )  # fmt: skip
    return traj


def _solve_with_inputs(op0, inputs, alphas, rtol, atol, solver, max_steps, throw, problem):
    """solve_ode for an input model other than Gaussian (``tsjax._inputs``)."""
    from ._inputs._hidden_manifold import AbstractInputs, ManifoldOrderParams
    from ._inputs._manifold_ode import solve_manifold_ode

    if not isinstance(inputs, AbstractInputs):
        raise ValueError(f"inputs: expected a tsjax.HiddenManifold, got {type(inputs).__name__}")
    if not isinstance(op0, ManifoldOrderParams):
        raise ValueError(
            "op0: with inputs=, the state from tsjax.order_params(student, teacher, "
            f"inputs=...), got {type(op0).__name__}"
        )
    op0 = eqx.tree_at(lambda o: o.inputs, op0, inputs)
    alphas = check_alphas(alphas)
    problem.check(1, alphas, K=op0.K)
    f64 = jnp.asarray(op0.W).dtype == jnp.float64
    rtol = (1e-8 if f64 else 1e-5) if rtol is None else rtol
    atol = (1e-11 if f64 else 1e-8) if atol is None else atol
    check_solver_options(rtol=rtol, atol=atol, max_steps=max_steps, max_norm=DEFAULT_MAX_NORM)
    check_flag("throw", throw)
    solver = diffrax.Tsit5() if solver is None else solver
    return solve_manifold_ode(op0, problem, alphas, rtol, atol, solver, max_steps, throw)


class _MaskedArgs(eqx.Module):
    args: _Args
    mask: OdeState


def _masked_rhs(alpha, y: OdeState, margs: _MaskedArgs) -> OdeState:
    """_rhs with the derivatives of masked-out (padded) components set to 0. The padded
    inputs enter through ``stop_gradient``, so the Jacobian has no entries coupling real
    and padded components (the LU of the Rosenbrock step then never pivots across them)."""
    where = jax.tree_util.tree_map
    y = where(lambda x, m: jnp.where(m != 0, x, jax.lax.stop_gradient(x)), y, margs.mask)
    d = _rhs(alpha, y, margs.args)
    return where(lambda x, m: jnp.where(m != 0, x, 0), d, margs.mask)


class _MaskedRMSNorm(eqx.Module):
    """The RMS norm of the step-size controller over the components where ``mask`` != 0
    only: padded units of a sweep leave the error norm, hence the accepted steps, unchanged
    (the default norm, ``optimistix.rms_norm``, divides by the total number of components)."""

    mask: OdeState

    def __call__(self, x):
        # optimistix.two_norm, so that with a mask of ones the arithmetic is that of rms_norm
        x = jax.tree_util.tree_map(lambda xi, mi: jnp.where(mi != 0, xi, 0), x, self.mask)
        cnt = sum(jnp.sum(mi != 0) for mi in jax.tree_util.tree_leaves(self.mask))
        return optx.two_norm(x) / jnp.sqrt(cnt.astype(jnp.result_type(float)))


@eqx.filter_jit
def _solve(
    op0,
    problem,
    alphas,
    rtol,
    atol,
    solver,
    max_steps,
    limits,
    mask=None,
):
    """The compiled integration behind solve_ode (see there). ``mask`` (used by tsjax.sweep for
    padded units): an OdeState of 0/1 arrays; components where it is 0 are frozen (their
    derivative is 0) and left out of the error norm of the step-size controller; its ``v``
    has the shape of ``op0.v``."""
    noise, weight_decay = problem.noise, problem.decay(alphas[0])
    v_star = jnp.atleast_2d(op0.v_star)
    args = _Args(problem, op0.T, v_star)
    y0 = OdeState(op0.Q, op0.R, jnp.atleast_2d(op0.v))
    if mask is not None:
        mask = OdeState(mask.Q, mask.R, jnp.broadcast_to(mask.v, y0.v.shape))
    # Inputs that can only be checked on their values (traced, or schedules): an invalid
    # one stops the run at alphas[0] with RESULTS.invalid_input (save times that do not
    # increase are replaced by valid ones so that the solver itself stays well defined).
    bad_input = (
        bad_constants(noise, weight_decay, alphas)
        | _bad_rates(args, alphas[0])
        | problem.rule.bad()
    )
    n = alphas.shape[0]
    alphas_in = alphas
    alphas = jnp.where(bad_input, alphas[0] + jnp.arange(n, dtype=alphas.dtype), alphas)
    alphas = jnp.where(jnp.isfinite(alphas), alphas, jnp.arange(n, dtype=alphas.dtype))
    jump_ts = _jump_ts(problem, alphas)
    if mask is None:
        term = diffrax.ODETerm(_rhs)
        controller = _pid_controller(rtol=rtol, atol=atol, jump_ts=jump_ts)
    else:
        term = diffrax.ODETerm(_masked_rhs)
        controller = _pid_controller(
            rtol=rtol, atol=atol, jump_ts=jump_ts, norm=_MaskedRMSNorm(mask)
        )

    def integrate(pb, y_init, t_start, ts, extra_event=None):
        cond = _DivergedEvent(limits, args)
        if extra_event is None:
            event = diffrax.Event(cond)
        else:
            event = diffrax.Event([cond, extra_event], root_finder=optx.Newton(rtol, atol))
        a = _Args(pb, op0.T, v_star)
        a = a if mask is None else _MaskedArgs(a, mask)
        return diffrax.diffeqsolve(
            term,
            solver,
            t0=t_start,
            t1=alphas[-1],
            dt0=None,
            y0=y_init,
            args=a,
            saveat=diffrax.SaveAt(ts=ts, t1=True),
            stepsize_controller=controller,
            max_steps=max_steps,
            adjoint=_adjoint(max_steps),
            event=event,
            throw=False,
        )

    phases = problem.curriculum.error_thresholds()
    switched_at = None
    if phases is None:
        sol = integrate(problem, y0, alphas[0], alphas)
        ys = sol.ys
        Q, R, v = ys.Q[:n], ys.R[:n], ys.v[:n]
        _, t_end = _stop(sol, alphas[0])
        result = _result_of(sol.result)
        num_steps = sol.stats["num_steps"]
        dres = sol.result
    else:
        (Q, R, v, t_end, result, num_steps, dres, switched_at) = _solve_phases(
            integrate, problem, phases, y0, alphas, op0.T, v_star
        )
    # A run stopped by an invalid rate (at its stop time) is an input error, not divergence.
    stopped = result != RESULTS.successful
    result = RESULTS.where(
        stopped & _bad_rates(args, t_end),
        RESULTS.invalid_input,
        result,
    )
    result = RESULTS.where(bad_input, RESULTS.invalid_input, result)
    t_end = jnp.where(bad_input, alphas[0], t_end)
    alphas = alphas_in
    diverged_at = jnp.where(result == RESULTS.successful, jnp.inf, t_end)
    valid = (alphas < diverged_at) & ~bad_input
    traj = build_trajectory(
        problem, alphas, valid, Q, R, v, op0.T, op0.v_star, diverged_at, result, op0.v.shape,
        switched_at,
    )  # fmt: skip
    info = dict(num_steps=num_steps, result=dres, status=result_index(result))
    return traj, info


def _stop(sol, t_start):
    """(index, time) of the state where a solve stopped: on early termination the save
    times reached are followed by the state at the stop time (``t_start`` if none)."""
    reached = jnp.where(jnp.isfinite(sol.ts), sol.ts, -jnp.inf)
    i_end = jnp.argmax(reached)
    return i_end, jnp.where(jnp.isfinite(reached[i_end]), reached[i_end], t_start)


def _result_of(dres):
    """tsjax's RESULTS item of a Diffrax result (an event is divergence)."""
    return RESULTS.where(
        dres == diffrax.RESULTS.successful,
        RESULTS.successful,
        RESULTS.where(
            dres == diffrax.RESULTS.event_occurred,
            RESULTS.diverged,
            RESULTS.where(
                dres == diffrax.RESULTS.max_steps_reached,
                RESULTS.max_steps_reached,
                RESULTS.solver_failure,
            ),
        ),
    )


class _ThresholdEvent(eqx.Module):
    """Real-valued event: eps_g on the active task minus the threshold (a root is the
    switch time of a ``ThresholdSwitch``)."""

    task: int = eqx.field(static=True)
    threshold: jax.Array
    T: jax.Array
    v_star: jax.Array
    act: Activation

    def __call__(self, t, y, args, **kwargs):
        C = covariance_from(y.Q, y.R, self.T)
        return eg_on_task(self.act, C, y.v, self.v_star, self.task) - self.threshold


def _solve_phases(integrate, problem, phases, y0, alphas, T, v_star):
    """A ``ThresholdSwitch``: one integration per phase (task), each from the end of the
    previous one, ending when the active task's error crosses its threshold (root-found
    event) or at the final time. Returns the combined saves, the stop time and result of the
    run, the number of steps and the switch times (inf where no switch happened)."""
    tasks, thr = phases
    n = alphas.shape[0]
    t_start = alphas[0]
    y = y0
    started = jnp.asarray(True)
    result = RESULTS.successful
    t_stop = alphas[-1]
    num_steps = 0
    dres = diffrax.RESULTS.successful
    switched = []
    Q = R = v = None
    for i, task in enumerate(tasks):
        pb = eqx.tree_at(lambda p: p.curriculum, problem, SingleTask(task))
        last = i == len(tasks) - 1
        extra = None if last else _ThresholdEvent(task, thr[i], T, v_star, problem.activation)
        sol = integrate(pb, y, t_start, jnp.clip(alphas, t_start, alphas[-1]), extra)
        ys = sol.ys
        i_end, t_end = _stop(sol, t_start)
        hit = jnp.asarray(False)
        if not last:
            hit = (sol.result == diffrax.RESULTS.event_occurred) & sol.event_mask[1]
        res_i = RESULTS.where(hit, RESULTS.successful, _result_of(sol.result))
        take = started & (alphas >= t_start)
        if Q is None:
            Q, R, v = ys.Q[:n], ys.R[:n], ys.v[:n]
        else:
            Q = jnp.where(take[:, None, None], ys.Q[:n], Q)
            R = jnp.where(take[:, None, None], ys.R[:n], R)
            v = jnp.where(take[:, None, None], ys.v[:n], v)
        fail = started & (result == RESULTS.successful) & (res_i != RESULTS.successful)
        t_stop = jnp.where(fail, t_end, t_stop)
        dres = diffrax.RESULTS.where(fail, sol.result, dres)
        result = RESULTS.where(fail, res_i, result)
        num_steps = num_steps + jnp.where(started, sol.stats["num_steps"], 0)
        if not last:
            switched.append(jnp.where(started & hit, t_end, jnp.inf))
        started = started & hit
        y = jax.tree_util.tree_map(lambda a, i=i_end: a[i], ys)
        t_start = jnp.where(started, t_end, alphas[-1])
    return Q, R, v, t_stop, result, num_steps, dres, jnp.stack(switched)


# --------------------------------------------------------------------------------------
# Differentiation (reverse mode through the solver: "discretise-then-optimise")
# --------------------------------------------------------------------------------------

#: Checkpoints of the recursive-checkpoint adjoint: the reverse pass stores the solver state
#: (~4 kB for K = 4) at up to this many steps and recomputes the steps in between, so the
#: memory of a gradient is O(checkpoints), independent of alpha_max (benchmarks/grad.py).
#: Every step is recomputed once for runs of up to this many steps (K = 4, alpha = 1e5 at
#: rtol 1e-8: ~650); longer runs use Diffrax's online binomial scheme.
GRAD_CHECKPOINTS = 2048


def _adjoint(max_steps: int) -> diffrax.AbstractAdjoint:
    return diffrax.RecursiveCheckpointAdjoint(checkpoints=min(max_steps, GRAD_CHECKPOINTS))


class _PIDController(diffrax.PIDController):
    """``diffrax.PIDController`` whose proposed step *length* carries no derivative.

    Diffrax stops the gradient through the step-size factor but not through the previous
    step length, so when a step ends on a breakpoint that depends on a parameter (the jump
    of a piecewise-constant schedule), every later step length inherits a derivative that
    grows like the product of the step-size factors (up to 10 per step): a spurious
    discretisation term that made d(eps_g)/d(jump position) wrong by up to 1e-2 (relative)
    on a plateau, whatever the tolerance. Here later grid points move rigidly with the
    breakpoint, so the derivative of the solution is that of the ODE to the tolerance."""

    def adapt_step_size(self, t0, t1, y0, y1_candidate, args, y_error, error_order, state):
        keep, next_t0, next_t1, made_jump, state, result = super().adapt_step_size(
            t0, t1, y0, y1_candidate, args, y_error, error_order, state
        )
        dt = jax.lax.stop_gradient(next_t1 - next_t0)
        next_t1 = next_t0 + dt
        # A step size that collapses to round-off (or becomes NaN) after a rejection means
        # the vector field is not finite there: report a failure at once instead of
        # retrying until max_steps (which could take hours with a quadrature activation).
        scale = jnp.maximum(jnp.maximum(jnp.abs(t0), jnp.abs(t1)), 1.0)
        tiny = 64 * jnp.finfo(jnp.result_type(dt)).eps * scale
        collapsed = ~jnp.isfinite(dt) | (~keep & (dt < tiny))
        # (the PID controller itself only fails with a dtmin, which is not set here)
        result = diffrax.RESULTS.where(collapsed, diffrax.RESULTS.dt_min_reached, result)
        next_t1 = jnp.where(jnp.isfinite(next_t1), next_t1, next_t0)
        return keep, next_t0, next_t1, made_jump, state, result


def _pid_controller(*, jump_ts=None, **kwargs) -> diffrax.AbstractStepSizeController:
    """PID step-size control; the solver steps onto ``jump_ts`` (schedule breakpoints)."""
    pid = _PIDController(**kwargs)
    return pid if jump_ts is None else diffrax.ClipStepSizeController(pid, jump_ts=jump_ts)


def _jump_ts(problem: Problem, alphas):
    """Breakpoints of the rates and decay (kinks and jumps) and of the curriculum (task
    switches), to be stepped onto by the solver; those at or after the final time are
    dropped."""
    pts = problem.breakpoints()
    if pts is None:
        return None
    ts = jnp.asarray(pts, alphas.dtype)
    # Breakpoints at (within 1e-12 relative) or after the final time are dropped (moved to
    # +inf): Diffrax ends on prevbefore(t1) when a jump sits at t1, and the derivative with
    # respect to that breakpoint was then off by ~1e-2 (e.g. the last knot of
    # LogGridSchedule.fit).
    t1 = alphas[-1]
    return jnp.where(ts < t1 - 1e-12 * jnp.abs(t1), ts, jnp.inf)
