"""Online SGD of the real networks on hidden-manifold inputs (``tsjax.simulate(...,
inputs=HiddenManifold(F, ...))``).

Each step draws a latent c ~ N(0, I_D) and a noise zeta ~ N(0, 1), forms x = f(F c / sqrt D)
(N,), the student's fields lambda = W x / sqrt(N), the teacher's nu = W* c / sqrt(D), and
takes the step of the learning rule (``tsjax._rules``) exactly as for Gaussian inputs:
w_k -= (eta / sqrt N) p_k g'(lambda_k) Delta x, v_k -= (eta_v / N) g(lambda_k) Delta, with
Delta = y_hat - y, y = v* . g(nu) + sigma zeta. The saved eps_g is that of the weights'
order parameters through the Gaussian equivalence (Q = mu_*^2 W + mu1^2 Sigma, R, T of
``_hidden_manifold``), the quantity the ODE follows (on the reference case it agrees with
the error on 2 x 10^4 fresh test inputs to 0.4%). A step costs O(N D) (the matrix-vector
product F c); steps run in one ``jax.lax.scan``.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._results import RESULTS
from .._trajectory import Trajectory, build_trajectory
from ._hidden_manifold import HiddenManifold

__all__ = ["simulate_manifold"]


def _fields_of(m: HiddenManifold, W, Wt):
    N, D = m.F.shape
    S = W @ m.F / jnp.sqrt(jnp.asarray(N, W.dtype))
    Q = m.mus2 * (W @ W.T) / N + m.mu1**2 * (S @ S.T) / D
    R = m.mu1 * (S @ Wt.T) / D
    return Q, R


@eqx.filter_jit
def _run(W0, v0, Wt, vt, problem, m: HiddenManifold, key, save_steps, n_total: int):
    act, rule = problem.activation, problem.rule
    N, D = m.F.shape
    dtype = W0.dtype
    sqN, sqD = jnp.sqrt(jnp.asarray(N, dtype)), jnp.sqrt(jnp.asarray(D, dtype))

    def step(carry, t):
        W, v = carry
        k = jax.random.fold_in(key, t)
        kc, kz = jax.random.split(k)
        c = jax.random.normal(kc, (D,), dtype)
        zeta = jax.random.normal(kz, (), dtype)
        x = m.inputs(c)
        lam = W @ x / sqN
        nu = Wt @ c / sqD
        alpha = t.astype(dtype) / N
        eta, eta_v = problem.rates(alpha)
        kappa = problem.decay(alpha)
        g_lam = act(lam)
        delta = v @ g_lam - vt @ act(nu) - problem.noise * zeta
        cvec = rule.derivative(act, lam) * rule.feedback(v) * delta
        W = W - (eta / sqN) * cvec[:, None] * x[None, :] - (kappa / N) * W
        v = v - (eta_v / N) * g_lam * delta - (kappa / N) * v * (eta_v != 0)
        return (W, v), None

    def segment(carry, bounds):
        t0, t1 = bounds
        carry = jax.lax.fori_loop(t0, t1, lambda t, c: step(c, t)[0], carry)
        W, v = carry
        Q, R = _fields_of(m, W, Wt)
        return carry, (Q, R, v)

    starts = jnp.concatenate([jnp.zeros(1, save_steps.dtype), save_steps[:-1]])
    _, (Q, R, v) = jax.lax.scan(segment, (W0, v0), (starts, save_steps))
    return Q, R, v


def simulate_manifold(student, teacher, key, m: HiddenManifold, problem, alphas) -> Trajectory:
    """The simulation (module docstring); ``alphas`` rounded to steps round(alpha N)."""
    W, Wt = jnp.asarray(student.W), jnp.asarray(teacher.W)
    if W.shape[1] != m.N:
        raise ValueError(f"student: input dimension {W.shape[1]} differs from F's N = {m.N}")
    if Wt.shape[1] != m.D:
        raise ValueError(
            f"teacher: input dimension {Wt.shape[1]} differs from the latent dimension D = {m.D}"
        )
    if jnp.ndim(student.v) != 1 or jnp.ndim(teacher.v) != 1:
        raise ValueError("student: the hidden-manifold simulation has one teacher and one head")
    problem.rule.check(W.shape[0])
    a = np.asarray(alphas, dtype=np.float64)
    if a.ndim != 1 or a.size < 1 or np.any(np.diff(a) <= 0) or a[0] < 0:
        raise ValueError(f"alphas: expected increasing save times >= 0, got {alphas!r}")
    steps = np.round(a * m.N).astype(np.int64)
    if np.any(np.diff(steps) <= 0):
        raise ValueError("alphas: two save times round to the same step (alpha N)")
    dtype = jnp.result_type(W, float)
    Q, R, v = _run(W.astype(dtype), jnp.asarray(student.v, dtype), Wt.astype(dtype),
                   jnp.asarray(teacher.v, dtype), problem, m, key,
                   jnp.asarray(steps, jnp.int32), int(steps[-1]))  # fmt: skip
    T = Wt @ Wt.T / m.D
    valid = jnp.all(jnp.isfinite(Q), axis=(-1, -2))
    first_bad = jnp.argmin(valid)
    div = jnp.where(jnp.all(valid), jnp.inf, jnp.asarray(a, dtype)[first_bad])
    result = RESULTS.where(jnp.all(valid), RESULTS.successful, RESULTS.diverged)
    traj = build_trajectory(problem, jnp.asarray(a, dtype), valid, Q, R, v[:, None, :], T,
                            jnp.asarray(teacher.v, dtype), div, result,
                            v_shape=(W.shape[0],))  # fmt: skip
    return traj
