"""The ODE of online learning on the hidden manifold (equations: ``_hidden_manifold``)."""

from __future__ import annotations

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._checks import _is_concrete
from .._curricula import SingleTask
from .._integrals import i2_rows
from .._ode import _result_of
from .._order_params import covariance_from
from .._rules import AbstractGradientRule, AdaptiveBackprop
from .._trajectory import Trajectory, build_trajectory
from ._hidden_manifold import ManifoldOrderParams, manifold_fields

__all__ = ["manifold_drift", "solve_manifold_ode"]


class _State(eqx.Module):
    W: jax.Array
    sigma: jax.Array
    r: jax.Array
    v: jax.Array


def manifold_drift(problem, y: _State, t, T, v_star, inputs, alpha):
    """d(W, sigma, r, v)/dalpha (module docstring of ``_hidden_manifold``)."""
    act, rule = problem.activation, problem.rule
    eta, eta_v = problem.rates(alpha)
    kappa, noise = problem.decay(alpha), problem.noise
    rho = inputs.spectrum[0]
    K = y.W.shape[0]
    Q, R = manifold_fields(inputs, y.W, y.sigma, y.r)
    C = covariance_from(Q, R, T)
    u = jnp.concatenate([y.v, -v_star])
    A, B, J = rule.integrals(act, C, u, K)  # (K, L), (K, K), (K, K)
    p = rule.feedback(y.v)
    d = jnp.diagonal(C)
    J2 = act.j2(d[:K, None], C[:K], d[None, :])  # (K, L): E[g'(z_k) g'(z_j)]
    Ck = d[:K]
    g2 = (jnp.diagonal(A[:, :K]) - jnp.sum(u * C[:K] * J2, axis=1)) / Ck  # E[g''_k Delta]
    At = jnp.diag(g2) @ jnp.eye(K, C.shape[0]) + u[None, :] * J2  # (K, L): Atil
    AS, AT = At[:, :K], At[:, K:]
    a = inputs.mu1**2 * rho / inputs.delta + inputs.mus2  # (n,)
    b = inputs.mu1 * rho / inputs.delta
    c2 = inputs.mu1**2 * rho**2 / inputs.delta + inputs.mus2 * rho
    G = jnp.outer(p, p) * (B + noise**2 * J)
    # ds_k = -eta p_k (a AS s + b AT omega*)_k; ds_k s_l summed on the densities
    ds_sig = a[:, None, None] * jnp.einsum("kj,tjl->tkl", AS, y.sigma)
    ds_sig = ds_sig + b[:, None, None] * jnp.einsum("km,tlm->tkl", AT, y.r)
    ds_sig = -eta * p[None, :, None] * ds_sig
    dsigma = ds_sig + jnp.swapaxes(ds_sig, 1, 2) + eta**2 * c2[:, None, None] * G[None]
    dsigma = dsigma - 2 * kappa * y.sigma
    dr = a[:, None, None] * jnp.einsum("kl,tlm->tkm", AS, y.r)
    dr = dr + b[:, None, None] * jnp.einsum("kn,tnm->tkm", AT, t)
    dr = -eta * p[None, :, None] * dr - kappa * y.r
    pA = p[:, None] * A[:, :K]
    dW = -eta * (pA + pA.T) + eta**2 * inputs.ef2 * G - 2 * kappa * y.W
    dv = -eta_v * (i2_rows(act, C, K) @ u) - kappa * y.v * (eta_v != 0)
    return _State(dW, dsigma, dr, dv)


class _Term(eqx.Module):
    problem: object
    t: jax.Array
    T: jax.Array
    v_star: jax.Array
    inputs: object

    def __call__(self, alpha, y, args):
        return manifold_drift(self.problem, y, self.t, self.T, self.v_star, self.inputs, alpha)


@eqx.filter_jit
def _integrate(y0, term, alphas, rtol, atol, solver, max_steps):
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(lambda a, y, args: term(a, y, args)),
        solver,
        t0=alphas[0],
        t1=alphas[-1],
        dt0=None,
        y0=y0,
        saveat=diffrax.SaveAt(ts=alphas),
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        max_steps=max_steps,
        throw=False,
    )
    return sol.ys, sol.result, sol.stats["num_steps"]


def solve_manifold_ode(
    op0: ManifoldOrderParams,
    problem,
    alphas,
    rtol,
    atol,
    solver,
    max_steps,
    throw,
    with_steps: bool = False,
) -> Trajectory:
    """Integrate the hidden-manifold ODE from ``op0`` (called by ``tsjax.solve_ode`` with
    ``inputs=``). Default solver: Tsit5 (the state has n (K^2 + K M) entries, too many for
    a Rosenbrock method's dense Jacobian; the dynamics over alpha <~ 1e3 is not stiff)."""
    if isinstance(problem.rule, AdaptiveBackprop) or not isinstance(
        problem.rule, AbstractGradientRule
    ):
        raise ValueError(
            f"rule: {problem.rule!r} on the hidden manifold is not supported (SGD and feedback "
            "alignment are; adaptive back-propagation's Stein derivatives need g'(beta x) terms "
            "this ODE does not carry yet)"
        )
    if not isinstance(problem.curriculum, SingleTask):
        raise ValueError("curriculum: the hidden-manifold ODE has one teacher")
    inputs = op0.inputs
    v_star = jnp.asarray(op0.v_star)
    if v_star.ndim != 1 or jnp.ndim(op0.v) != 1:
        raise ValueError("op0: the hidden-manifold ODE has one teacher and one head")
    y0 = _State(op0.W, op0.sigma, op0.r, op0.v)
    term = _Term(problem, op0.t, op0.T, v_star, inputs)
    ys, result, nsteps = _integrate(y0, term, alphas, rtol, atol, solver, max_steps)
    Q, R = jax.vmap(lambda W, s, r: manifold_fields(inputs, W, s, r))(ys.W, ys.sigma, ys.r)
    ok = result == diffrax.RESULTS.successful
    if throw and _is_concrete(ok) and not bool(ok):
        raise RuntimeError(f"solve_ode (hidden manifold): the solver failed ({result})")
    valid = jnp.all(jnp.isfinite(Q), axis=(-1, -2))
    div = jnp.where(ok, jnp.inf, alphas[jnp.argmin(valid)] if valid.shape[0] else jnp.inf)
    traj = build_trajectory(
        problem, alphas, valid, Q, R, ys.v[:, None, :], op0.T, v_star, div,
        _result_of(result), v_shape=(np.shape(op0.v)[-1],),
    )  # fmt: skip
    return (traj, nsteps) if with_steps else traj
