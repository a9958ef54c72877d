r"""Fixed points of the order-parameter ODE and their linear stability.

The free variables of the ODE (the state of :func:`tsjax.solve_ode`) are, in this order
(:func:`free_variables` names them):

1. Q's upper triangle, row by row: Q[0,0], Q[0,1], ..., Q[0,K-1], Q[1,1], ..., Q[K-1,K-1]
   (K (K + 1) / 2 entries; Q is symmetric);
2. R row-major: R[0,0], ..., R[0,M-1], R[1,0], ... (K M entries);
3. if the second layer is trained (``lr_v`` != 0): v row-major (K entries, or H K for H
   heads).

T and v* are constants. The vector field F(x) is that of :func:`tsjax.vector_field` at
time ``alpha`` (the rates must be constant for a fixed point to exist; schedules are
evaluated at ``alpha``).

A *subspace* ties free variables together (``subspace="symmetric"``: all Q_ii equal, all
Q_ik (i != k) equal, all R_in equal, all v_k equal; ``"diagonal"`` for K = M: R_ii equal and
R_in (i != n) equal instead; or an integer label per free variable, equal labels tied).
With the tying matrix B (n_free, n_groups) of zeros and ones, x = B y and the field in the
subspace is B^+ F(B y), B^+ = (B^T B)^{-1} B^T (the mean over each group). A subspace is
*invariant* when F(B y) lies in the range of B; :func:`fixed_point` checks that the full
field vanishes at the root it finds, so a subspace that is not invariant is reported.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import optimistix as optx
from jaxtyping import Array, Float

from .._activations import Activation, Erf, Linear, Quadratic, ReLU, Sin
from .._ode import vector_field
from .._order_params import OrderParams, covariance_from, generalisation_error
from .._problem import Problem, make_problem
from .._schedules import Constant, Schedule

__all__ = [
    "ConvergenceError",
    "free_variables",
    "fixed_point",
    "jacobian",
    "stability",
    "Stability",
    "critical_learning_rate",
]


class ConvergenceError(RuntimeError):
    """A root or critical-point search did not converge (the message says what failed)."""


def _trained_v(problem: Problem, alpha) -> bool:
    """Whether v is a free variable: the second-layer rate is not the constant 0."""
    lr_v = problem.lr_v
    val = lr_v(jnp.asarray(alpha, float)) if isinstance(lr_v, Schedule) else lr_v
    try:
        return bool(np.asarray(val) != 0)
    except jax.errors.ConcretizationTypeError:
        return True


def free_variables(op: OrderParams, train_v: bool = False) -> list[str]:
    """Names of the free variables in the order used by :func:`jacobian` and
    :func:`fixed_point` (see the module docstring)."""
    K, M = op.K, op.M
    names = [f"Q[{i},{j}]" for i in range(K) for j in range(i, K)]
    names += [f"R[{k},{m}]" for k in range(K) for m in range(M)]
    if train_v:
        v = np.asarray(op.v)
        if v.ndim == 1:
            names += [f"v[{k}]" for k in range(K)]
        else:
            names += [f"v[{h},{k}]" for h in range(v.shape[0]) for k in range(K)]
    return names


def _pack(op: OrderParams, train_v: bool):
    K = op.K
    iu = np.triu_indices(K)
    parts = [op.Q[iu], jnp.ravel(op.R)]
    if train_v:
        parts.append(jnp.ravel(op.v))
    return jnp.concatenate([jnp.asarray(p) for p in parts])


def _unpack(x, op: OrderParams, train_v: bool) -> OrderParams:
    K, M = op.K, op.M
    iu = np.triu_indices(K)
    nq = len(iu[0])
    Q = jnp.zeros((K, K), x.dtype).at[iu].set(x[:nq])
    Q = Q + jnp.triu(Q, 1).T
    R = x[nq : nq + K * M].reshape(K, M)
    v = x[nq + K * M :].reshape(jnp.shape(op.v)) if train_v else jnp.asarray(op.v, x.dtype)
    return OrderParams(Q, R, jnp.asarray(op.T, x.dtype), v, jnp.asarray(op.v_star, x.dtype))


def _field(x, op: OrderParams, problem: Problem, train_v: bool, alpha):
    """F(x): the vector field over the free variables."""
    d = vector_field(_unpack(x, op, train_v), problem=problem, alpha=jnp.asarray(alpha, x.dtype))
    return _pack(d, train_v)


def _labels(subspace, op: OrderParams, train_v: bool) -> np.ndarray | None:
    """The group label of each free variable (None: no tying)."""
    if subspace is None:
        return None
    K, M = op.K, op.M
    n = len(free_variables(op, train_v))
    if isinstance(subspace, str):
        if subspace not in ("symmetric", "diagonal"):
            raise ValueError(
                f"subspace: expected None, 'symmetric', 'diagonal' or an integer label per "
                f"free variable, got {subspace!r}"
            )
        if subspace == "diagonal" and K != M:
            raise ValueError(f"subspace: 'diagonal' needs K = M, got K = {K}, M = {M}")
        lab = []
        for i in range(K):
            for j in range(i, K):
                lab.append(0 if i == j else 1)
        for k in range(K):
            for m in range(M):
                lab.append(2 if subspace == "symmetric" or k == m else 3)
        if train_v:
            lab += [4] * (n - len(lab))
        lab = np.asarray(lab)
    else:
        lab = np.asarray(subspace)
        if lab.shape != (n,) or not np.issubdtype(lab.dtype, np.integer):
            raise ValueError(
                f"subspace: expected an integer label per free variable, shape ({n},) "
                f"(tsjax.free_variables), got {subspace!r}"
            )
    _, lab = np.unique(lab, return_inverse=True)  # groups 0 .. G - 1
    return lab


def _tying(lab: np.ndarray | None, n: int):
    """(B, B^+) as arrays (identity when not tied)."""
    if lab is None:
        eye = np.eye(n)
        return eye, eye
    G = int(lab.max()) + 1
    B = np.zeros((n, G))
    B[np.arange(n), lab] = 1.0
    Bp = B.T / B.sum(0)[:, None]
    return B, Bp


#: activations whose Gaussian integrals are analytic up to the boundary of the PSD cone
#: (closed forms): their derivatives at a singular covariance are exact
_ANALYTIC = (Erf, Linear, Quadratic, Sin)


class _AtRest(Activation):
    r"""``base``'s integrals, with B_ik = E[g'(x_i) g'(x_k) Delta^2] replaced by its
    linearisation at a covariance C0 where Delta = sum_j u_j g(x_j) = 0 almost surely
    (perfect learning, also with coinciding students):

        B_ik(C0 + dC) = sum_jl u_j u_l D4(i, k, j, l) dC_jl + o(|dC|),

    D4 = E[g'g'g'g'] at C0 (:meth:`Activation.d4`). Derivation: at C0 the gradient of Delta,
    (u_j g'(x_j))_j, is orthogonal to the support of x, so a perturbation of the fields
    enters B through the independent part eta of covariance P dC P (P the projector on
    ker C0), Delta ~ sum_j u_j g'(x_j) eta_j, and sum_jl u_j u_l g'_j g'_l (P dC P)_jl =
    sum_jl u_j u_l g'_j g'_l dC_jl. The corrections are O(|dC|^(3/2)) for kinks (g' jumps on
    a set of probability O(|dC|^(1/2)) where Delta^2 = O(|dC|)), O(|dC|^2) for smooth g. The
    closed forms and ReLU's quadrature of I4 are not differentiable there (their terms carry
    sqrt(1 - r) singularities that cancel only in the sum); the value at C0 (B = 0) is
    unchanged, so only derivatives see the difference."""

    base: Activation

    def __init__(self, base: Activation):
        for f in ("_fn", "_name", "_dfn", "nodes", "nodes_i4", "nodes_joint", "rule", "parity"):
            setattr(self, f, getattr(base, f))
        self.base = base

    @property
    def name(self) -> str:
        return self.base.name

    def __call__(self, x):
        return self.base(x)

    def derivative(self, x):
        return self.base.derivative(x)

    def i2(self, caa, cab, cbb):
        return self.base.i2(caa, cab, cbb)

    def j2(self, caa, cab, cbb):
        return self.base.j2(caa, cab, cbb)

    def i3(self, c):
        return self.base.i3(c)

    def i4(self, c):
        return self.base.i4(c)

    def d4(self, c):
        return self.base.d4(c)

    def contract_i3(self, C, u, K: int):
        return self.base.contract_i3(C, u, K)

    def contract_i4(self, C, u, K: int):
        C0, u0 = jax.lax.stop_gradient(C), jax.lax.stop_gradient(u)
        L = C.shape[-1]
        idx = np.stack(np.meshgrid(np.arange(K), np.arange(K), np.arange(L), np.arange(L),
                                   indexing="ij"), -1)  # fmt: skip
        blocks = C0[idx[..., :, None], idx[..., None, :]]  # (K, K, L, L, 4, 4)
        D4 = self.base.d4(blocks)
        B0 = self.base.contract_i4(C0, u0, K)
        return B0 + jnp.einsum("ikjl,j,l,jl->ik", D4, u0, u0, C - C0)


#: Richardson weights and shifts (in units of the scale of Q) of the one-sided
#: extrapolation J(C0) = (8 J(s) - 6 J(2 s) + J(4 s)) / 3 + O(s^3), J(s) the Jacobian at
#: Q + s I (inside the PSD cone)
_INSIDE = ((8.0 / 3.0, 1e-4), (-2.0, 2e-4), (1.0 / 3.0, 4e-4))


def _derivable(op: OrderParams, problem: Problem, who: str):
    """How to obtain the exact Jacobian at ``op``: ``(problem', rule)``, the Jacobian being
    sum_k w_k J'(x + s_k d) over ``rule = ((w_k, s_k), ...)`` with J' that of
    ``problem'`` and d the Q_ii directions.

    * Closed-form analytic activations, or a positive-definite covariance: autodiff,
      ``(problem, ((1, 0),))``.
    * ReLU at a singular covariance (the closed forms of I2, I3, J2 are differentiable
      along the boundary, I4 is not): at perfect learning (eps_g = 0 on every teacher,
      Delta = 0 a.s.) B is linearised exactly (:class:`_AtRest`); elsewhere on the
      boundary the field is not differentiable and a ValueError says so.
    * Quadrature activations at a singular covariance: their integrals are smooth up to
      the boundary (smooth g) but the quadrature's derivative, through a factor of C, is
      not available on it: the Jacobian is extrapolated from inside the cone, Q + s I with
      s = 1e-4, 2e-4, 4e-4 times the scale of Q (error O(s^3) plus the quadrature's own).
    """
    act = problem.activation
    plain = (problem, ((1.0, 0.0),))
    if isinstance(act, _ANALYTIC):
        return plain
    C = np.asarray(covariance_from(op.Q, op.R, op.T), dtype=np.float64)
    w = np.linalg.eigvalsh(C)
    scale = max(1.0, float(w[-1]))
    if w[0] > 1e-10 * scale:
        return plain
    if not isinstance(act, ReLU):
        qs = max(float(np.max(np.abs(np.diag(np.atleast_2d(np.asarray(op.Q)))))), 1e-3)
        return problem, tuple((c, s * qs) for c, s in _INSIDE)
    eg = np.atleast_1d(np.asarray(generalisation_error(op, act), dtype=np.float64))
    vs = np.atleast_2d(np.asarray(op.v_star, dtype=np.float64))
    tol = 1e-12 * max(1.0, float(np.max(np.sum(vs**2, -1))) * float(np.max(np.diag(op.T))))
    if np.all(np.abs(eg) <= tol):
        return eqx.tree_at(lambda p: p.activation, problem, _AtRest(act)), ((1.0, 0.0),)
    raise ValueError(
        f"activation: {who} at a singular covariance [[Q, R], [R^T, T]] (smallest "
        f"eigenvalue {w[0]:.1e}) with eps_g = {np.max(np.abs(eg)):.1e} > 0: for ReLU the "
        "vector field is not differentiable there (its Gaussian integrals have sqrt "
        "singularities on the boundary of the PSD cone that cancel only at perfect learning, "
        "eps_g = 0)"
    )


def _q_diagonal(op: OrderParams, train_v: bool) -> np.ndarray:
    """The direction d of the Q_ii among the free variables."""
    names = free_variables(op, train_v)
    d = np.zeros(len(names))
    for n, name in enumerate(names):
        if name.startswith("Q["):
            i, j = name[2:-1].split(",")
            d[n] = float(i == j)
    return d


def _jac_rule(x, op, problem, train_v, alpha, B, Bp, rule):
    """sum_k w_k _jac(x + s_k d) (``_derivable``)."""
    if len(rule) == 1 and rule[0][1] == 0.0:
        return _jac(x, op, problem, train_v, alpha, B, Bp)
    d = jnp.asarray(_q_diagonal(op, train_v), x.dtype)
    return sum(w * _jac(x + s * d, op, problem, train_v, alpha, B, Bp) for w, s in rule)


def _setup(op, problem, subspace, alpha):
    if not isinstance(op, OrderParams):
        raise ValueError(f"op: expected a tsjax.OrderParams, got {type(op).__name__}")
    problem.check(op.P)
    train_v = _trained_v(problem, alpha)
    lab = _labels(subspace, op, train_v)
    n = len(free_variables(op, train_v))
    B, Bp = _tying(lab, n)
    return train_v, B, Bp


def _prepared(op, problem, subspace, alpha, who):
    """The shared set-up of jacobian, stability and critical_learning_rate: (x, train_v,
    B, Bp, problem', rule) with x the packed free variables, (B, B^+) the subspace's tying
    as arrays of x's dtype and (problem', rule) from :func:`_derivable`."""
    train_v, B, Bp = _setup(op, problem, subspace, alpha)
    problem, rule = _derivable(op, problem, who)
    x = jnp.asarray(_pack(op, train_v))
    return x, train_v, jnp.asarray(B, x.dtype), jnp.asarray(Bp, x.dtype), problem, rule


@eqx.filter_jit
def _jac(x, op, problem, train_v, alpha, B, Bp):
    return Bp @ jax.jacfwd(_field)(x, op, problem, train_v, alpha) @ B


def jacobian(
    op: OrderParams,
    *,
    activation="erf",
    lr=0.5,
    lr_v=0.0,
    noise=0.0,
    weight_decay=0.0,
    curriculum=None,
    problem: Problem | None = None,
    alpha=0.0,
    subspace=None,
) -> Float[Array, "n n"]:
    """The Jacobian dF/dx of the vector field over the free variables at ``op`` (order:
    :func:`free_variables`; in a ``subspace``: B^+ (dF/dx) B over its groups). Shape
    (n, n). The learning problem as in :func:`tsjax.solve_ode` (keywords or ``problem=``;
    the second layer's entries are free variables when ``lr_v`` != 0)."""
    problem = make_problem(problem, activation=activation, lr=lr, lr_v=lr_v, noise=noise,
                           weight_decay=weight_decay, curriculum=curriculum)  # fmt: skip
    x, train_v, B, Bp, problem, rule = _prepared(op, problem, subspace, alpha, "jacobian")
    return _jac_rule(x, op, problem, train_v, alpha, B, Bp, rule)


class Stability(eqx.Module):
    """Eigen-decomposition of the Jacobian at a state: ``eigenvalues`` (n,) sorted by
    decreasing real part, ``eigenvectors`` (n, n) (column i belongs to eigenvalue i, over
    ``variables``), ``variables`` (the free variables' names, or the subspace's groups as
    ``"group g"``). ``max_real`` is the largest real part; the state is linearly stable
    when it is < 0 (a zero eigenvalue, e.g. from a symmetry, is marginal)."""

    eigenvalues: Array
    eigenvectors: Array
    variables: tuple = eqx.field(static=True)

    @property
    def max_real(self) -> float:
        return float(jnp.max(jnp.real(self.eigenvalues)))


def stability(
    op: OrderParams,
    *,
    activation="erf",
    lr=0.5,
    lr_v=0.0,
    noise=0.0,
    weight_decay=0.0,
    curriculum=None,
    problem: Problem | None = None,
    alpha=0.0,
    subspace=None,
) -> Stability:
    """Eigenvalues and eigenvectors of :func:`jacobian` (same arguments), sorted by
    decreasing real part. At a fixed point, an eigenvalue with positive real part is an
    unstable direction (e.g. the escape from a plateau: perturbations grow like
    exp(lambda alpha))."""
    problem = make_problem(problem, activation=activation, lr=lr, lr_v=lr_v, noise=noise,
                           weight_decay=weight_decay, curriculum=curriculum)  # fmt: skip
    x, train_v, B, Bp, problem, rule = _prepared(op, problem, subspace, alpha, "stability")
    J = np.asarray(_jac_rule(x, op, problem, train_v, alpha, B, Bp, rule))
    w, V = np.linalg.eig(J)
    order = np.argsort(-w.real, kind="stable")
    if subspace is None:
        names = free_variables(op, train_v)
    else:
        names = [f"group {g}" for g in range(J.shape[0])]
    return Stability(jnp.asarray(w[order]), jnp.asarray(V[:, order]), tuple(names))


def fixed_point(
    op_guess: OrderParams,
    *,
    activation="erf",
    lr=0.5,
    lr_v=0.0,
    noise=0.0,
    weight_decay=0.0,
    curriculum=None,
    problem: Problem | None = None,
    alpha=0.0,
    subspace=None,
    tol: float | None = None,
    max_steps: int = 200,
) -> OrderParams:
    r"""A fixed point of the order-parameter ODE near ``op_guess``: a root of the vector
    field F over the free variables (Q symmetric, R, and v when ``lr_v`` != 0), by Newton's
    method with the exact Jacobian (optimistix), polished to machine precision.

    Args:
        op_guess: the starting point (T and v* are taken from it, and v when the second
            layer is not trained).
        activation, lr, lr_v, noise, weight_decay, curriculum, problem, alpha: the learning
            problem, as in :func:`tsjax.solve_ode` (rates evaluated at ``alpha``).
        subspace: ``None`` (all free variables), ``"symmetric"`` (all Q_ii equal, all Q_ik
            equal, all R equal, all v equal: e.g. the symmetric plateau, a saddle that
            unconstrained Newton may leave), ``"diagonal"`` (K = M; R_ii and R_in (i != n)
            as two groups: the specialised state), or integer labels per free variable
            (:func:`free_variables`). The guess is projected onto the subspace (group
            means).
        tol: convergence tolerance on max |F| (default 100 machine epsilons times the
            scale of the state).
        max_steps: Newton steps at most.

    Returns:
        The fixed point as :class:`OrderParams`.

    Raises:
        ConvergenceError: Newton's method did not converge (with the residual reached), the
            Jacobian is singular there, or the root of the projected field is not a root
            of the full field (the subspace is not invariant).
    """
    problem = make_problem(problem, activation=activation, lr=lr, lr_v=lr_v, noise=noise,
                           weight_decay=weight_decay, curriculum=curriculum)  # fmt: skip
    train_v, B, Bp = _setup(op_guess, problem, subspace, alpha)
    x0 = jnp.asarray(_pack(op_guess, train_v))
    dtype = x0.dtype
    B, Bp = jnp.asarray(B, dtype), jnp.asarray(Bp, dtype)
    eps = float(jnp.finfo(dtype).eps)
    scale = max(1.0, float(jnp.max(jnp.abs(x0))), float(jnp.max(jnp.abs(op_guess.T))))
    tol = 100 * eps * scale if tol is None else float(tol)
    y, res, info = _newton(Bp @ x0, op_guess, problem, train_v, alpha, B, Bp, tol, max_steps)
    y, res = np.asarray(y), float(res)
    if info == "singular":
        raise ConvergenceError(
            "fixed_point: the Jacobian of the vector field is singular at the Newton iterate "
            f"(residual max |F| = {res:.3e}); try another guess or a subspace"
        )
    if not np.isfinite(res) or res > tol:
        raise ConvergenceError(
            f"fixed_point: Newton's method did not converge in {max_steps} steps: residual "
            f"max |F| = {res:.3e} > tol = {tol:.1e}; try another guess, a subspace, or "
            "max_steps"
        )
    x = B @ jnp.asarray(y, dtype)
    full = float(jnp.max(jnp.abs(_field(x, op_guess, problem, train_v, alpha))))
    if full > max(tol, 1e3 * eps * scale):
        raise ConvergenceError(
            f"fixed_point: the field vanishes in the subspace but not outside it (max |F| = "
            f"{full:.3e}): the subspace {subspace!r} is not invariant for this problem"
        )
    return _unpack(x, op_guess, train_v)


def _projected(y, op, problem, train_v, alpha, B, Bp):
    """The field in the subspace, B^+ F(B y)."""
    return Bp @ _field(B @ y, op, problem, train_v, alpha)


_projected_jit = eqx.filter_jit(_projected)


@eqx.filter_jit
def _newton_core(y0, op, problem, train_v, alpha, B, Bp, max_steps):
    def fn(y, _):
        return _projected(y, op, problem, train_v, alpha, B, Bp)

    solver = optx.Newton(rtol=1e-14, atol=1e-15, linear_solver=lx.LU())
    sol = optx.root_find(fn, solver, y0, max_steps=max_steps, throw=False)
    return sol.value, fn(sol.value, None)


def _newton(y0, op, problem, train_v, alpha, B, Bp, tol, max_steps):
    """optimistix Newton, then up to 5 plain Newton steps keeping the best residual."""

    def fn(y):
        return _projected_jit(y, op, problem, train_v, alpha, B, Bp)

    def jac(y):  # d/dy B^+ F(B y) = B^+ (dF/dx) B: the compiled _jac
        return _jac(B @ y, op, problem, train_v, alpha, B, Bp)

    y, f = _newton_core(y0, op, problem, train_v, alpha, B, Bp, max_steps)
    best_y, best = y, float(jnp.max(jnp.abs(f)))
    if not np.isfinite(best):  # the optimistix iterate left the domain: restart plainly
        best_y, best = y0, float(jnp.max(jnp.abs(fn(y0))))
    y = best_y
    if not best <= tol:  # failed: say whether the Jacobian is singular there
        J = np.asarray(jac(y))
        if not np.all(np.isfinite(J)) or np.linalg.cond(J) > 1e-3 / np.finfo(J.dtype).eps:
            return best_y, best, "singular"
    # polish a converged iterate (never a far one: max_steps bounds the search)
    for _ in range(5 if np.isfinite(best) and 0 < best < 1e-6 * max(1.0, tol / 1e-14) else 0):
        J = np.asarray(jac(y))
        if not np.all(np.isfinite(J)) or np.linalg.cond(J) > 1e15:
            if best > tol:
                return best_y, best, "singular"
            break
        y = y - jnp.asarray(np.linalg.solve(J, np.asarray(fn(y))), y.dtype)
        r = float(jnp.max(jnp.abs(fn(y))))
        if not np.isfinite(r) or r >= best:
            break
        best_y, best = y, r
    return best_y, best, "ok"


def critical_learning_rate(
    op_star: OrderParams,
    *,
    activation="erf",
    lr_v=0.0,
    noise=0.0,
    weight_decay=0.0,
    lr_max: float = 100.0,
    n_grid: int = 200,
    rtol: float = 1e-13,
) -> float:
    r"""The largest learning rate for which the fixed point ``op_star`` (for example
    perfect learning, Q = R = T, v = v*) stays linearly stable: the first lr at which the
    largest real part of the Jacobian's eigenvalues crosses zero, found on a geometric grid
    of ``n_grid`` rates in [lr_max / 1e4, lr_max] and refined by bisection to ``rtol``.

    ``op_star`` must be a fixed point at every rate (true for perfect learning without
    noise or weight decay; the field's residual is checked). Eigenvalues with real part
    within 1e-9 of zero relative to the largest |eigenvalue| (symmetries) count as stable.

    Raises:
        ValueError: ``op_star`` is not a fixed point, is not stable at small rates, or is
            stable up to ``lr_max`` (naming ``lr_max``).
    """
    if not (np.isscalar(lr_max) and np.isfinite(lr_max) and lr_max > 0):
        raise ValueError(f"lr_max: expected a positive number, got {lr_max!r}")
    problem0 = make_problem(None, activation=activation, lr=1.0, lr_v=lr_v, noise=noise,
                            weight_decay=weight_decay, curriculum=None)  # fmt: skip
    x, train_v, B, Bp, problem0, rule = _prepared(
        op_star, problem0, None, 0.0, "critical_learning_rate"
    )

    @jax.jit
    def growth(lr):
        pb = eqx.tree_at(lambda p: p.lr, problem0, Constant(lr))
        J = _jac_rule(x, op_star, pb, train_v, 0.0, B, Bp, rule)
        F = _field(x, op_star, pb, train_v, 0.0)
        return J, jnp.max(jnp.abs(F))

    def max_real(lr):
        J, res = growth(jnp.asarray(lr, x.dtype))
        J = np.asarray(J)
        w = np.linalg.eigvals(J)
        scale = max(float(np.max(np.abs(w))), 1e-300)
        m = float(np.max(w.real))
        return (0.0 if abs(m) <= 1e-9 * scale else m), float(res), scale

    def jac_at(lr):
        return np.asarray(growth(jnp.asarray(lr, x.dtype))[0])

    grid = np.geomspace(lr_max * 1e-4, lr_max, int(n_grid))
    prev = None
    for lr in grid:
        m, res, scale = max_real(lr)
        if res > 1e-8 * max(1.0, float(jnp.max(jnp.abs(x)))):
            raise ValueError(
                f"op_star: not a fixed point of the vector field at lr = {lr:g} (max |F| = "
                f"{res:.2e}); the critical learning rate is defined for a fixed point"
            )
        if m > 0:
            if prev is None:
                raise ValueError(
                    f"op_star: unstable already at lr = {lr:g} (largest real part {m:.3e})"
                )
            return _refine(prev, lr, max_real, jac_at, rtol)
        prev = lr
    raise ValueError(f"lr_max: op_star is stable for every lr up to lr_max = {lr_max:g}")


def _refine(lo, hi, max_real, jac_at, rtol):
    """Bisection of the stability boundary in [lo (stable), hi (unstable)]. A real
    eigenvalue crossing zero changes the sign of det J, which is bisected to ``rtol``
    (exact, no tolerance on the eigenvalue); a complex pair (Hopf) is followed by the
    largest real part among the eigenvalues with an imaginary part; otherwise the
    tolerance-based test of the scan is bisected."""
    J_lo, J_hi = jac_at(lo), jac_at(hi)
    w = np.linalg.eigvals(J_hi)
    scale = max(float(np.max(np.abs(w))), 1e-300)
    c = w[np.argmax(w.real)]
    d_lo, d_hi = np.linalg.slogdet(J_lo)[0], np.linalg.slogdet(J_hi)[0]
    if abs(c.imag) <= 1e-9 * scale and d_lo * d_hi < 0:

        def unstable(r):
            return np.linalg.slogdet(jac_at(r))[0] == d_hi
    elif abs(c.imag) > 1e-9 * scale:

        def unstable(r):
            e = np.linalg.eigvals(jac_at(r))
            e = e[np.abs(e.imag) > 1e-9 * scale]
            return e.size > 0 and float(np.max(e.real)) > 0
    else:

        def unstable(r):
            return max_real(r)[0] > 0

    while hi - lo > rtol * hi:
        mid = 0.5 * (lo + hi)
        if unstable(mid):
            hi = mid
        else:
            lo = mid
    return 0.5 * (lo + hi)
