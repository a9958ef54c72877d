r"""The population loss in weight space (finite N, infinite data): Hessians, gradient flow
and critical points.

The population loss of a student (W (K, N), v (K,)) and a teacher (W* (M, N), v* (M,)) is
the generalisation error of their order parameters, L(W, v) = eps_g(Q, R, T, v, v*) with
Q = W W^T / N, R = W W*^T / N, T = W* W*^T / N (docs/conventions.md; noise-free, exact: the
closed forms, ReLU's I2 or quadrature, whatever the activation provides).

Parametrisation of the flow and of critical points: theta = (W / sqrt(N), v), the weights in
which L is of order one for every N. The gradient flow is

    d(W / sqrt(N))/dt = -grad_{W / sqrt(N)} L,   i.e.  dW/dt = -N grad_W L,
    dv/dt = -grad_v L  (only with ``train_v``),

so that online SGD's order-parameter ODE with its eta^2 terms dropped is this flow with
t = eta alpha (and eta_v = eta when v is trained). Gradient norms are those of
grad_theta L, Hessian spectra in :func:`find_minimum` those of d^2 L / d theta^2.
:func:`hessian` itself (a contract) is with respect to the raw W (and v): d^2 L / dW^2 =
(1/N) d^2 L / d(W/sqrt N)^2.
"""

from __future__ import annotations

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import optimistix as optx
from jaxtyping import Array

from .._activations import get_activation
from .._networks import TwoLayerNet, check_pair
from .._order_params import covariance_from, eg_from
from .._problem import Problem
from .._results import RESULTS
from .._rosenbrock import Rodas5P
from .._trajectory import Trajectory, build_trajectory
from ._fixed_points import ConvergenceError

__all__ = [
    "population_loss",
    "hessian",
    "hessian_spectrum",
    "gradient_flow",
    "find_minimum",
    "CriticalPoint",
]


def _check(student, teacher, activation):
    if not isinstance(student, TwoLayerNet) or not isinstance(teacher, TwoLayerNet):
        raise ValueError("student, teacher: expected tsjax.TwoLayerNet networks")
    check_pair(student, teacher)
    if jnp.ndim(student.v) != 1 or jnp.ndim(teacher.v) != 1:
        raise ValueError(
            "student, teacher: the weight-space analysis takes one teacher and a one-head "
            f"student (v of shape (K,) and (M,)), got {jnp.shape(student.v)} and "
            f"{jnp.shape(teacher.v)}"
        )
    return get_activation(activation)


def _loss(W, v, Wt, vt, act):
    N = W.shape[-1]
    C = covariance_from(W @ W.T / N, W @ Wt.T / N, Wt @ Wt.T / N)
    return eg_from(act, C, v, vt)


def population_loss(student: TwoLayerNet, teacher: TwoLayerNet, *, activation="erf") -> Array:
    """L(W, v) = eps_g of the networks' order parameters (exact population loss)."""
    act = _check(student, teacher, activation)
    return _loss(student.W, student.v, teacher.W, teacher.v, act)


def _phi(S, v, T, vt, act, K):
    """eps_g as a function of S = [Q, R] (K, K + M) taken as a general matrix."""
    return eg_from(act, covariance_from(S[:, :K], S[:, K:], T), v, vt)


@eqx.filter_jit
def _hessian(W, v, Wt, vt, act, with_v: bool):
    r"""The exact Hessian from the structure L(W) = phi(S), S = [Q, R] = W U^T / N with
    U = [W; W*] ((K + M, N)): grad_W L = G U / N with G = [g_Q + g_Q^T, g_R], and

        d^2 L / dW_lj dW_ki = (1/N^2) sum_ab U_aj E_lakb U_bi + (1/N) G_lk delta_ij,

    E_lakb = dG_la/dS_kb + [b < K] dG_la/dS_bk; only the small derivatives of G (size
    (K (K + M))^2) come from automatic differentiation, the rest is two contractions of
    O(K^2 (K + M) N^2) (the same matrix as jax.hessian, which is the reference in the
    tests, several times faster)."""
    K, N = W.shape
    U = jnp.concatenate([W, Wt], axis=0)
    T = Wt @ Wt.T / N
    S = W @ U.T / N

    def G_of(S_, v_):
        g = jax.grad(_phi)(S_, v_, T, vt, act, K)
        return jnp.concatenate([g[:, :K] + g[:, :K].T, g[:, K:]], axis=1)

    G = G_of(S, v)
    D = jax.jacfwd(G_of)(S, v)  # (K, K+M, K, K+M): dG_la / dS_cb
    E = _transpose_term(D, K)
    F = jnp.einsum("lakb,bi->laki", E, U)
    H = jnp.einsum("aj,laki->ljki", U, F) / N**2
    H = H + jnp.einsum("lk,ji->ljki", G[:, :K], jnp.eye(N, dtype=W.dtype)) / N
    H = H.reshape(K * N, K * N)
    if not with_v:
        return H
    dG_dv = jax.jacfwd(G_of, argnums=1)(S, v)  # (K, K+M, K): dG_la / dv_p
    d2v = jax.hessian(_phi, argnums=1)(S, v, T, vt, act, K)  # d^2 L / dv^2
    # d^2 L / dW_lj dv_p = (1/N) sum_a dG_la/dv_p U_aj
    cross = (jnp.einsum("lap,aj->ljp", dG_dv, U) / N).reshape(K * N, K)
    return jnp.block([[H, cross], [cross.T, d2v]])


def _transpose_term(D, K):
    """D_lakb + [b < K] D_labk (b < K), as E of _hessian (shape of D)."""
    extra = jnp.zeros_like(D).at[:, :, :, :K].set(jnp.swapaxes(D[:, :, :K, :K], 2, 3))
    return D + extra


def hessian(
    student: TwoLayerNet, teacher: TwoLayerNet, *, activation="erf", wrt: str = "W"
) -> Array:
    """The Hessian of the population loss with respect to the student's first-layer
    weights flattened row-major (W[k, i] at index k N + i), shape (K N, K N); with
    ``wrt="Wv"`` the second-layer weights v follow them (shape (K N + K, K N + K)).

    Exact: the structured formula of ``_hessian`` (L depends on W only through
    [Q, R] = W [W; W*]^T / N; the small derivatives with respect to [Q, R] by automatic
    differentiation of the closed forms or the quadrature), compiled once per shape.
    Memory: the (K N)^2 matrix itself (8 (K N)^2 bytes in float64: 2 MB at K N = 500,
    800 MB at K N = 10^4) plus temporaries of the same order and (K (K + M))^2 for the
    derivatives of G; cost: O(K^2 (K + M) N^2). :func:`hessian_spectrum` gives its
    eigenvalues and rank."""
    act = _check(student, teacher, activation)
    if wrt not in ("W", "Wv"):
        raise ValueError(f"wrt: expected 'W' or 'Wv', got {wrt!r}")
    return _hessian(student.W, student.v, teacher.W, teacher.v, act, wrt == "Wv")


def hessian_spectrum(H, rtol: float = 1e-9) -> tuple[np.ndarray, int]:
    """(eigenvalues ascending, rank) of a symmetric matrix; the rank counts eigenvalues
    with |lambda| > rtol * max |lambda| (state the tolerance with the result)."""
    H = np.asarray(H, dtype=np.float64)
    if H.ndim != 2 or H.shape[0] != H.shape[1]:
        raise ValueError(f"H: expected a square matrix, got shape {H.shape}")
    w = np.linalg.eigvalsh(0.5 * (H + H.T))
    top = float(np.max(np.abs(w))) if w.size else 0.0
    return w, int(np.sum(np.abs(w) > rtol * top))


# --------------------------------------------------------------------------------------
# theta = (W / sqrt(N), v): flow and critical points
# --------------------------------------------------------------------------------------


def _theta_loss(theta, v_fixed, Wt, vt, act, K, N, train_v):
    W = theta[: K * N].reshape(K, N) * jnp.sqrt(jnp.asarray(N, theta.dtype))
    v = theta[K * N :] if train_v else v_fixed
    return _loss(W, v, Wt, vt, act)


def _theta(student, train_v):
    K, N = student.W.shape
    parts = [student.W.ravel() / jnp.sqrt(jnp.asarray(N, student.W.dtype))]
    if train_v:
        parts.append(student.v)
    return jnp.concatenate(parts)


def _net(theta, student, train_v):
    K, N = student.W.shape
    W = theta[: K * N].reshape(K, N) * jnp.sqrt(jnp.asarray(N, theta.dtype))
    v = theta[K * N :] if train_v else student.v
    return TwoLayerNet(W, v, student.activation)


def _flow_field(t, theta, args):
    v_fixed, Wt, vt, act, K, N, train_v = args
    return -jax.grad(_theta_loss)(theta, v_fixed, Wt, vt, act, K, N, train_v)


@eqx.filter_jit
def _flow(theta0, args, ts, solver, rtol, atol, max_steps):
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(_flow_field),
        solver,
        t0=ts[0],
        t1=ts[-1],
        dt0=None,
        y0=theta0,
        args=args,
        saveat=diffrax.SaveAt(ts=ts),
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        max_steps=max_steps,
        throw=False,
    )
    return sol.ys, sol.result


def gradient_flow(
    student: TwoLayerNet,
    teacher: TwoLayerNet,
    *,
    activation="erf",
    times,
    train_v: bool = False,
    solver: diffrax.AbstractSolver | None = None,
    rtol: float = 1e-10,
    atol: float = 1e-12,
    max_steps: int = 100_000,
) -> tuple[TwoLayerNet, Trajectory]:
    """Integrate the gradient flow of the population loss in weight space (module
    docstring: theta = (W / sqrt(N), v), dtheta/dt = -grad L) from ``student`` over
    ``times`` (1-D increasing; starts at ``times[0]``).

    The flow is stiff near minima and saddles (Hessian eigenvalues over many decades), so
    the default solver is the L-stable Rosenbrock method :class:`~tsjax.Rodas5P` (its
    Jacobian is minus the Hessian, K N (+ K) square).

    Returns:
        ``(student_end, traj)``: the network at ``times[-1]`` and a
        :class:`~tsjax.Trajectory` of its order parameters and loss at ``times`` (``alpha``
        holds the flow times t; t = eta alpha for online SGD without its eta^2 terms).

    Raises:
        ConvergenceError: the solver failed (with Diffrax's reason).
    """
    act = _check(student, teacher, activation)
    ts = jnp.asarray(times, dtype=student.W.dtype)
    tn = np.asarray(ts)
    if tn.ndim != 1 or tn.size < 2 or np.any(np.diff(tn) <= 0) or not np.all(np.isfinite(tn)):
        raise ValueError(f"times: expected a 1-D increasing array of >= 2 times, got {times!r}")
    K, N = student.W.shape
    args = (student.v, teacher.W, teacher.v, act, K, N, bool(train_v))
    ys, result = _flow(
        _theta(student, train_v), args, ts, Rodas5P() if solver is None else solver,
        rtol, atol, max_steps,
    )  # fmt: skip
    if result != diffrax.RESULTS.successful:
        raise ConvergenceError(f"gradient_flow: the solver stopped: {result}")
    nets = jax.vmap(lambda th: _net(th, student, train_v))(ys)
    Q = jnp.einsum("ski,sli->skl", nets.W, nets.W) / N
    R = jnp.einsum("ski,mi->skm", nets.W, teacher.W) / N
    v = jnp.broadcast_to(nets.v if train_v else student.v, (ts.shape[0], K))[:, None, :]
    T = teacher.W @ teacher.W.T / N
    traj = build_trajectory(
        Problem(act, 0.0), ts, jnp.ones(ts.shape, bool), Q, R, v, T, teacher.v,
        jnp.asarray(jnp.inf, ts.dtype), RESULTS.successful, student.v.shape,
    )  # fmt: skip
    return _net(ys[-1], student, train_v), traj


class CriticalPoint(eqx.Module):
    """A critical point of the population loss found by :func:`find_minimum`.

    Fields: ``loss``; ``grad_norm`` (|grad_theta L|, theta = (W / sqrt N, v)); ``eigenvalues``
    of the Hessian d^2 L / d theta^2 (ascending); ``kind`` (``"minimum"``, ``"saddle"``
    or ``"maximum"``), ``index`` (number of negative eigenvalues), ``n_flat`` (eigenvalues
    with |lambda| <= flat_tol * max |lambda|, e.g. the rotations of W in the directions
    orthogonal to the teacher's span, which leave Q and R unchanged), ``flat_tol`` and
    ``steps`` (Newton steps taken)."""

    loss: float
    grad_norm: float
    eigenvalues: np.ndarray
    kind: str = eqx.field(static=True)
    index: int = eqx.field(static=True)
    n_flat: int = eqx.field(static=True)
    flat_tol: float = eqx.field(static=True)
    steps: int = eqx.field(static=True)


@eqx.filter_jit
def _grad_hess(theta, args):
    v_fixed, Wt, vt, act, K, N, train_v = args
    f = lambda th: _theta_loss(th, v_fixed, Wt, vt, act, K, N, train_v)  # noqa: E731
    return f(theta), jax.grad(f)(theta), jax.hessian(f)(theta)


@eqx.filter_jit
def _optx_newton(theta, args, max_steps):
    v_fixed, Wt, vt, act, K, N, train_v = args

    def g(th, _):
        return jax.grad(_theta_loss)(th, v_fixed, Wt, vt, act, K, N, train_v)

    solver = optx.Newton(rtol=1e-14, atol=1e-16, linear_solver=lx.SVD())
    return optx.root_find(g, solver, theta, max_steps=max_steps, throw=False).value


def find_minimum(
    student: TwoLayerNet,
    teacher: TwoLayerNet,
    *,
    activation="erf",
    train_v: bool = False,
    gtol: float = 1e-12,
    max_steps: int = 100,
    flat_tol: float = 1e-8,
) -> tuple[TwoLayerNet, CriticalPoint]:
    r"""Refine ``student`` to a critical point of the population loss (grad_theta L = 0,
    theta = (W / sqrt N, v)) by Newton's method on the gradient with the exact Hessian
    (optimistix, with lineax's SVD solver: the Hessian is singular along the loss's
    symmetries, and the pseudo-inverse step ignores those directions), then plain
    pseudo-inverse Newton steps until |grad| <= ``gtol``. Start from a point near the
    critical point wanted (for example the end of :func:`gradient_flow`): Newton converges
    to the nearest critical point, which may be a saddle; the classification says which.

    Returns:
        ``(student_at_point, CriticalPoint)``; the classification counts eigenvalues of
        the Hessian in theta with |lambda| <= ``flat_tol`` * max |lambda| as flat, then
        negative ones give the saddle's index.

    Raises:
        ConvergenceError: |grad| > ``gtol`` after ``max_steps`` Newton steps (naming the
            gradient norm reached).
    """
    act = _check(student, teacher, activation)
    K, N = student.W.shape
    args = (student.v, teacher.W, teacher.v, act, K, N, bool(train_v))
    theta = _optx_newton(_theta(student, train_v), args, max_steps)
    steps = 0
    loss, g, H = _grad_hess(theta, args)
    gn = float(jnp.linalg.norm(g))
    if not np.isfinite(gn):  # optimistix left the domain: restart from the student
        theta = _theta(student, train_v)
        loss, g, H = _grad_hess(theta, args)
        gn = float(jnp.linalg.norm(g))
    while gn > gtol and steps < max_steps:
        w, U = np.linalg.eigh(np.asarray(H))
        keep = np.abs(w) > 1e-12 * np.max(np.abs(w))
        step = U[:, keep] @ ((U[:, keep].T @ np.asarray(g)) / w[keep])
        new = theta - jnp.asarray(step, theta.dtype)
        nl, ng, nH = _grad_hess(new, args)
        nn = float(jnp.linalg.norm(ng))
        steps += 1
        if not np.isfinite(nn) or nn >= gn:
            break
        theta, loss, g, H, gn = new, nl, ng, nH, nn
    if not gn <= gtol:
        raise ConvergenceError(
            f"find_minimum: the gradient norm reached {gn:.3e} > gtol = {gtol:.0e} "
            f"(Newton stalled after {steps} polishing steps); start closer to a critical "
            "point (e.g. from tsjax.gradient_flow) or loosen gtol"
        )
    w = np.linalg.eigvalsh(np.asarray(H))
    scale = float(np.max(np.abs(w)))
    flat = np.abs(w) <= flat_tol * scale
    n_neg = int(np.sum((w < 0) & ~flat))
    n_pos = int(np.sum((w > 0) & ~flat))
    kind = "minimum" if n_neg == 0 else ("maximum" if n_pos == 0 else "saddle")
    cp = CriticalPoint(float(loss), gn, w, kind, n_neg, int(np.sum(flat)), float(flat_tol), steps)
    return _net(theta, student, train_v), cp
