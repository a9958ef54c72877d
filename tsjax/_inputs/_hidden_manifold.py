r"""The hidden manifold model (Goldt, Mézard, Krzakala & Zdeborová, PRX 10, 041044, 2020).

Inputs lie on a D-dimensional manifold of the N-dimensional input space: each SGD step draws
a latent c ~ N(0, I_D) and the input x = f(F c / sqrt(D)), F (N, D), f an elementwise
feature map; the teacher acts on the latent, y = sum_m v*_m g(w*_m . c / sqrt(D)) (w* (M, D));
the student on the input, y_hat = sum_k v_k g(w_k . x / sqrt(N)). Online SGD and time
alpha = steps / N as for Gaussian inputs (docs/conventions.md). delta = D / N.

**Gaussian equivalence.** With u = F c / sqrt(D) (unit variance per coordinate) and
mu0 = E f(u), mu1 = E u f(u), E f^2 for u ~ N(0, 1), the input acts on the fields like
x = mu0 + mu1 u + mu_* xi, mu_*^2 = E f^2 - mu0^2 - mu1^2, xi ~ N(0, I_N) independent. For
mu0 = 0 the fields (lambda, nu) are jointly Gaussian with

    Q = mu_*^2 W + mu1^2 Sigma,   R = mu1 S w*^T / D,   T = w* w*^T / D,
    W = w w^T / N,  S = w F / sqrt(N) (K, D),  Sigma = S S^T / D,

and eps_g is the usual function of (Q, R, T, v, v*). (mu0 != 0 adds mu0 sum_i w_ki / sqrt(N)
to every student field: a further order parameter this model does not carry, so a feature
map with |E f| > 1e-6 sqrt(E f^2) is refused; centre it, f - E f.)

**The ODE.** Project S and w* on the eigenvectors psi_tau of Omega = F^T F / N (eigenvalues
rho_tau): s_{k tau} = S psi_tau, omega*_{m tau} = w*_m . psi_tau, and carry the densities
sigma_tau = s_tau s_tau^T (K, K), r_tau = s_tau omega*_tau^T (K, M) and the constant
t_tau = omega*_tau omega*_tau^T, so that Sigma = sum_tau w_tau sigma_tau, R = mu1 sum_tau
w_tau r_tau (w_tau = 1 / D for the finite spectrum). With x . F psi_tau = mu1 N rho_tau c_tau
/ sqrt(D) + mu_* sqrt(N rho_tau) xi_tau (c_tau, xi_tau standard normal) and Stein's lemma,
one SGD step w_k -= (eta / sqrt N) p_k g'(lambda_k) Delta x (p = v for SGD, the feedback b
for feedback alignment; Delta = y_hat - y = sum_j u_j g(z_j), u = (v, -v*), z = (lambda, nu))
gives, per unit of alpha,

    d s_tau / d alpha = -eta p * (a_tau Atil_S s_tau + b_tau Atil_T omega*_tau),
    a_tau = mu1^2 rho_tau / delta + mu_*^2,   b_tau = mu1 rho_tau / delta,
    Atil_kj = E[d(g'(lambda_k) Delta) / d z_j] = delta_kj E[g''(lambda_k) Delta] + u_j J2(k, j)

(Atil_S its student columns, Atil_T its teacher columns; E[g''(z_k) g(z_j)] =
(I3(k, k, j) - C_kj J2(k, j)) / C_kk by Stein, for every activation). Hence

    d sigma_tau = -eta [p * (a_tau Atil_S sigma_tau + b_tau Atil_T r_tau^T)] + transpose
                  + eta^2 (p p^T) * (B + sigma^2 J) (mu1^2 rho_tau^2 / delta + mu_*^2 rho_tau)
                  - 2 kappa sigma_tau,
    d r_tau     = -eta p * (a_tau Atil_S r_tau + b_tau Atil_T t_tau) - kappa r_tau,
    d W         = -eta (p * A_S + transpose) + eta^2 E f^2 (p p^T) * (B + sigma^2 J) - 2 kappa W,

with A, B, J the SGD integrals of ``tsjax._ode`` (A_S: A's student columns), |x|^2 / N =
E f^2, and v as for Gaussian inputs. (For f linear, F = sqrt(N) O with O orthogonal and
D = N: rho = 1, a = b = 1, mu_* = 0, and the equations are those of Gaussian inputs.)

**Spectra.** The finite-N spectrum of a given F (D eigenvalues, weights 1/D: what a
simulation at that N follows), or the large-dimension limit (``HiddenManifold.limit``): the
eigenvalues of Omega follow the Marchenko-Pastur law of ratio delta on
[(1 - sqrt delta)^2, (1 + sqrt delta)^2] (plus a point mass 1 - 1/delta at 0 when delta > 1,
which carries no s: it starts and stays at 0), discretised by Gauss-Jacobi quadrature.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._checks import _is_concrete

__all__ = ["AbstractInputs", "HiddenManifold", "HiddenManifoldLimit", "ManifoldOrderParams"]


def _sign(u):
    return jnp.sign(u)


def _erf(u):
    return jax.scipy.special.erf(u / math.sqrt(2.0))


#: closed-form constants (mu0, mu1, E f^2) of the named feature maps
_FEATURES = {
    "sign": (_sign, (0.0, math.sqrt(2.0 / math.pi), 1.0)),
    "erf": (_erf, (0.0, 1.0 / math.sqrt(math.pi), 1.0 / 3.0)),
    "linear": (lambda u: u, (0.0, 1.0, 1.0)),
    "tanh": (jnp.tanh, None),
}


def _feature_constants(fn: Callable) -> tuple[float, float, float]:
    """(E f, E u f, E f^2) for u ~ N(0, 1) by adaptive quadrature (scipy.integrate.quad)."""
    import scipy.integrate

    def f(u):
        return float(fn(jnp.asarray(u, dtype=jnp.float64 if jax.config.x64_enabled else float)))

    phi = lambda u: math.exp(-0.5 * u * u) / math.sqrt(2.0 * math.pi)  # noqa: E731
    out = []
    for h in (lambda u: f(u), lambda u: u * f(u), lambda u: f(u) ** 2):
        val = sum(
            scipy.integrate.quad(lambda u, h=h: h(u) * phi(u), lo, hi, limit=200, epsabs=1e-13)[0]
            for lo, hi in ((-np.inf, 0.0), (0.0, np.inf))
        )
        out.append(val)
    return tuple(out)


@functools.cache
def _named_constants(name: str) -> tuple[float, float, float]:
    """The constants of a named feature map: closed form, or its quadrature once."""
    fn, consts = _FEATURES[name]
    return consts if consts is not None else _feature_constants(fn)


def _resolve_feature(feature_map) -> tuple[str, Callable, tuple[float, float, float]]:
    if isinstance(feature_map, str):
        if feature_map not in _FEATURES:
            raise ValueError(
                f"feature_map: expected one of {sorted(_FEATURES)} or a JAX function, got "
                f"{feature_map!r}"
            )
        return feature_map, _FEATURES[feature_map][0], _named_constants(feature_map)
    if not callable(feature_map):
        raise ValueError(f"feature_map: expected a name or a function, got {feature_map!r}")
    name = getattr(feature_map, "__name__", "custom")
    return name, feature_map, _feature_constants(feature_map)


def _check_constants(name, consts):
    mu0, mu1, ef2 = consts
    if not all(np.isfinite(consts)) or ef2 <= 0:
        raise ValueError(f"feature_map: {name} has no finite second moment E f(u)^2 > 0")
    if abs(mu0) > 1e-6 * math.sqrt(ef2):
        raise ValueError(
            f"feature_map: E f(u) = {mu0:.3g} for u ~ N(0, 1), must be 0 (a mean adds an "
            f"order parameter this model does not carry); use f(u) - {mu0:.6g}"
        )
    if ef2 - mu1 * mu1 < -1e-12 * ef2:
        raise ValueError(f"feature_map: E f^2 < (E u f)^2 for {name} (quadrature failed?)")


class AbstractInputs(eqx.Module):
    """An input model of online learning (Gaussian inputs are the default, ``inputs=None``)."""


class HiddenManifoldLimit(AbstractInputs):
    """The hidden manifold model without a matrix: the Marchenko-Pastur spectrum of ratio
    ``delta`` = D / N, discretised by ``nodes`` Gauss-Jacobi points (module docstring).
    Build it with :meth:`HiddenManifold.limit`."""

    delta: Array
    rho: Array  # (n,) nodes of the continuous part
    weights: Array  # (n,) their masses (summing to min(1, 1 / delta))
    mu1: Array
    mus2: Array
    ef2: Array
    feature_name: str = eqx.field(static=True)
    feature_fn: Callable = eqx.field(static=True)

    @property
    def spectrum(self):
        return self.rho, self.weights


def _mp_nodes(delta, nodes: int):
    """Gauss-Jacobi nodes and masses of the Marchenko-Pastur law of ratio delta (continuous
    part; density sqrt((b - r)(r - a)) / (2 pi delta r) on [a, b])."""
    from scipy.special import roots_jacobi

    x, wx = roots_jacobi(int(nodes), 0.5, 0.5)  # weight sqrt(1 - x^2) on [-1, 1]
    x, wx = jnp.asarray(x), jnp.asarray(wx)
    sd = jnp.sqrt(delta)
    a, b = (1.0 - sd) ** 2, (1.0 + sd) ** 2
    r = 0.5 * (a + b) + 0.5 * (b - a) * x
    # sqrt((b - r)(r - a)) = (b - a)/2 sqrt(1 - x^2); dr = (b - a)/2 dx
    w = wx * (0.5 * (b - a)) ** 2 / (2.0 * jnp.pi * delta * r)
    return r, w


class HiddenManifold(AbstractInputs):
    """The hidden manifold model with a given feature matrix F (N, D) (module docstring).

    ``feature_map``: ``"sign"``, ``"erf"`` (erf(u / sqrt 2), tsjax's activation of that
    name), ``"linear"``, ``"tanh"`` or any elementwise JAX function (its constants E f,
    E u f, E f^2 by adaptive quadrature; E f must be 0). The spectrum of Omega = F^T F / N
    is computed once (``rho`` (D,), eigenvectors ``psi`` (D, D))."""

    F: Array
    rho: Array
    psi: Array
    mu1: Array
    mus2: Array
    ef2: Array
    feature_name: str = eqx.field(static=True)
    feature_fn: Callable = eqx.field(static=True)

    def __init__(self, F, feature_map="sign"):
        F = jnp.asarray(F)
        if not jnp.issubdtype(F.dtype, jnp.floating):
            F = F.astype(float)
        if F.ndim != 2 or F.shape[0] < 1 or F.shape[1] < 1:
            raise ValueError(f"F: expected a matrix of shape (N, D), got shape {F.shape}")
        if not bool(jnp.all(jnp.isfinite(F))):
            raise ValueError("F: has non-finite entries")
        name, fn, consts = _resolve_feature(feature_map)
        _check_constants(name, consts)
        N = F.shape[0]
        rho, psi = jnp.linalg.eigh(F.T @ F / N)
        self.F = F
        self.rho = jnp.maximum(rho, 0.0)
        self.psi = psi
        mu0, mu1, ef2 = consts
        self.mu1 = jnp.asarray(mu1, F.dtype)
        self.ef2 = jnp.asarray(ef2, F.dtype)
        self.mus2 = jnp.asarray(max(ef2 - mu1 * mu1, 0.0), F.dtype)
        self.feature_name = name
        self.feature_fn = fn

    @property
    def N(self) -> int:
        return self.F.shape[0]

    @property
    def D(self) -> int:
        return self.F.shape[1]

    @property
    def delta(self):
        return jnp.asarray(self.D / self.N, self.F.dtype)

    @property
    def spectrum(self):
        return self.rho, jnp.full(self.rho.shape, 1.0 / self.D, self.rho.dtype)

    def inputs(self, c):
        """x = f(F c / sqrt(D)) for latents c (..., D)."""
        return self.feature_fn(c @ self.F.T / jnp.sqrt(jnp.asarray(self.D, self.F.dtype)))

    @staticmethod
    def limit(delta, feature_map="sign", nodes: int = 64) -> HiddenManifoldLimit:
        """The large-dimension limit at ratio ``delta`` = D / N > 0: the Marchenko-Pastur
        spectrum discretised by ``nodes`` Gauss-Jacobi points (the error falls quickly with
        ``nodes`` away from delta = 1, where the density's 1/rho edge slows it).
        ``delta`` may be traced (gradients, sweeps)."""
        if _is_concrete(delta):
            d = np.asarray(delta, dtype=float)
            if d.ndim != 0 or not (np.isfinite(d) and d > 0):
                raise ValueError(f"delta: expected a number > 0 (D / N), got {delta!r}")
        if isinstance(nodes, bool) or not isinstance(nodes, (int, np.integer)) or nodes < 2:
            raise ValueError(f"nodes: expected an integer >= 2, got {nodes!r}")
        name, fn, consts = _resolve_feature(feature_map)
        _check_constants(name, consts)
        delta = jnp.asarray(delta, dtype=float)
        rho, w = _mp_nodes(delta, nodes)
        mu0, mu1, ef2 = consts
        return HiddenManifoldLimit(
            delta, rho, w, jnp.asarray(mu1), jnp.asarray(max(ef2 - mu1 * mu1, 0.0)),
            jnp.asarray(ef2), name, fn,
        )  # fmt: skip


def manifold_fields(m, W, sigma, r):
    """(Q, R) of the fields from the state (Gaussian equivalence, module docstring):
    Q = mu_*^2 W + mu1^2 sum_tau w_tau sigma_tau, R = mu1 sum_tau w_tau r_tau."""
    wts = m.spectrum[1]
    Q = m.mus2 * W + m.mu1**2 * jnp.einsum("n,nkl->kl", wts, sigma)
    R = m.mu1 * jnp.einsum("n,nkm->km", wts, r)
    return Q, R


class ManifoldOrderParams(eqx.Module):
    """The state of the hidden-manifold ODE (module docstring): ``W`` (K, K), the densities
    ``sigma`` (n, K, K) and ``r`` (n, K, M) over the spectrum's n points, the constant
    ``t`` (n, M, M), ``v`` (K,), ``v_star`` (M,), the teachers' ``T`` (M, M), and the input
    model ``inputs``. ``Q``, ``R`` are those of the fields (Gaussian equivalence)."""

    W: Float[Array, "K K"]
    sigma: Float[Array, "n K K"]
    r: Float[Array, "n K M"]
    t: Float[Array, "n M M"]
    T: Float[Array, "M M"]
    v: Float[Array, " K"]
    v_star: Float[Array, " M"]
    inputs: AbstractInputs

    @property
    def Sigma(self):
        return jnp.einsum("n,nkl->kl", self.inputs.spectrum[1], self.sigma)

    @property
    def Q(self):
        return manifold_fields(self.inputs, self.W, self.sigma, self.r)[0]

    @property
    def R(self):
        return manifold_fields(self.inputs, self.W, self.sigma, self.r)[1]

    @property
    def K(self) -> int:
        return self.W.shape[0]

    @property
    def M(self) -> int:
        return self.T.shape[0]


def typical_state(inputs: AbstractInputs, W, T, v, v_star) -> ManifoldOrderParams:
    """The typical densities of independent random networks with overlaps W (K, K) and T
    (M, M) on the spectrum of ``inputs``: sigma(rho) = rho W, r(rho) = 0, t(rho) = T."""
    W, T = jnp.asarray(W), jnp.asarray(T)
    rho = inputs.spectrum[0]
    n, K, M = rho.shape[0], W.shape[0], T.shape[0]
    return ManifoldOrderParams(
        W, rho[:, None, None] * W[None], jnp.zeros((n, K, M), W.dtype),
        jnp.broadcast_to(T, (n, M, M)), T, jnp.asarray(v, W.dtype),
        jnp.asarray(v_star, W.dtype), inputs,
    )  # fmt: skip


def manifold_order_params(student, teacher, inputs: AbstractInputs) -> ManifoldOrderParams:
    """The initial state of the hidden-manifold ODE for networks ``student`` (W (K, N)) and
    ``teacher`` (W* (M, D)). With a :class:`HiddenManifold`, exact for its F; with a
    :class:`HiddenManifoldLimit`, the typical densities of independent random networks:
    sigma(rho) = rho W, r(rho) = 0, t(rho) = T (module docstring)."""
    W, Wt = jnp.asarray(student.W), jnp.asarray(teacher.W)
    K, N = W.shape
    M, D = Wt.shape
    dtype = jnp.result_type(W, float)
    if isinstance(inputs, HiddenManifold):
        if N != inputs.N:
            raise ValueError(f"student: input dimension {N} differs from F's N = {inputs.N}")
        if D != inputs.D:
            raise ValueError(
                f"teacher: input dimension {D} differs from the latent dimension D = {inputs.D}"
            )
        S = W @ inputs.F / jnp.sqrt(jnp.asarray(N, dtype))  # (K, D)
        s = S @ inputs.psi  # (K, D): projections on the eigenvectors
        om = Wt @ inputs.psi  # (M, D)
        sigma = jnp.einsum("kt,lt->tkl", s, s)
        r = jnp.einsum("kt,mt->tkm", s, om)
        t = jnp.einsum("mt,nt->tmn", om, om)
    elif isinstance(inputs, HiddenManifoldLimit):
        return typical_state(inputs, W @ W.T / N, Wt @ Wt.T / D, student.v, teacher.v)
    else:
        raise ValueError(f"inputs: expected a tsjax.HiddenManifold, got {type(inputs).__name__}")
    return ManifoldOrderParams(
        W @ W.T / N, sigma, r, t, Wt @ Wt.T / D, jnp.asarray(student.v, dtype),
        jnp.asarray(teacher.v, dtype), inputs,
    )  # fmt: skip
