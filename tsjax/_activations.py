"""The activation abstraction: g, g' and the Gaussian integrals I2, I3, I4, J2.

For a zero-mean Gaussian vector ``u`` with covariance ``C`` (docs/conventions.md)

    I2(a, b)       = E[g(u_a) g(u_b)]
    I3(a, b, c)    = E[g'(u_a) u_b g(u_c)]
    I4(a, b, c, d) = E[g'(u_a) g'(u_b) g(u_c) g(u_d)]
    J2(a, b)       = E[g'(u_a) g'(u_b)].

Every activation implements the integrals on *blocks* of the covariance: ``i2`` and
``j2`` take the three entries ``(C_aa, C_ab, C_bb)``; ``i3`` takes the ``(..., 3, 3)``
covariance of ``(u_a, u_b, u_c)`` and ``i4`` the ``(..., 4, 4)`` covariance of
``(u_a, u_b, u_c, u_d)``. Indices may coincide (then the block is singular), and all
leading dimensions broadcast. The order-parameter code (``_integrals.py``) gathers the
blocks it needs from the full ``(K+M, K+M)`` covariance, so a new activation only has to
provide these four block functions (closed forms, or quadrature).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import erf as _erf
from jaxtyping import Array, ArrayLike, Float

from ._quadrature import (
    RULES,
    Factor,
    contract_b_joint,
    expect2,
    expect2_weighted,
    expect4,
)
from ._special import asin

__all__ = [
    "Activation",
    "Erf",
    "Linear",
    "ReLU",
    "Tanh",
    "Sigmoid",
    "GELU",
    "Softplus",
    "SiLU",
    "Quadratic",
    "Sin",
    "get_activation",
    "ACTIVATIONS",
    "DEFAULT_NODES",
    "DEFAULT_NODES_I4",
    "DEFAULT_NODES_JOINT",
    "JOINT_MAX_DIM",
]

#: Default nodes per dimension of the 2-d integrals (I2, J2, I3) of quadrature activations.
DEFAULT_NODES = 40
#: Default nodes of the 4-d integral I4 of quadrature activations, per direction z_1..z_4
#: of the Cholesky factor (z_1 enters all four arguments, z_4 only the last).
DEFAULT_NODES_I4 = (32, 16, 12, 10)
#: Default nodes per direction of the joint L-dimensional rule for the contracted I4 sums
#: B_ik of the ODEs (``tsjax._quadrature.contract_b_joint``; L = K + M).
DEFAULT_NODES_JOINT = (20, 20, 14, 14)
#: Largest L = K + M for which B is computed by the joint rule (cost ~nodes_joint^L).
JOINT_MAX_DIM = 5

_PARITY = {None: 0, "even": 1, "odd": -1}


@functools.lru_cache(maxsize=64)
def _student_pairs(K: int):
    """Static (i, k) index pairs i <= k, shape (K(K+1)/2, 2)."""
    return np.array([(i, k) for i in range(K) for k in range(i, K)], dtype=np.int32)


def _symmetric_from_pairs(b, K: int):
    """The symmetric (K, K) matrix with entries ``b`` (K(K+1)/2,) on the pairs of
    :func:`_student_pairs`."""
    ik = _student_pairs(K)
    B = jnp.zeros((K, K), b.dtype).at[ik[:, 0], ik[:, 1]].set(b)
    return B.at[ik[:, 1], ik[:, 0]].set(b)


def _check_nodes(name: str, value, expected: str, *, length=None, allow_none=False):
    """``value`` (a positive int or a non-empty tuple/list of them, of ``length`` if given;
    None if ``allow_none``) as an int or tuple; otherwise a ValueError naming ``name``."""
    if value is None and allow_none:
        return None
    if isinstance(value, (tuple, list)):
        value = tuple(value)
        ok = (
            bool(value)
            and (length is None or len(value) == length)
            and all(_positive_int(m) for m in value)
        )
    else:
        ok = _positive_int(value)
    if not ok:
        raise ValueError(f"{name}: expected {expected}, got {value!r}")
    return value


def _clip_corr(x):
    # arcsin/arccos arguments: round-off can push |rho| a hair above 1 for singular blocks.
    return jnp.clip(x, -1.0, 1.0)


class _Method(NamedTuple):
    # act.<which> as a hashable, value-comparable callable (bound methods of distinct but
    # equal modules compare unequal, which would defeat caches).
    act: Activation
    which: str

    def __call__(self, x):
        return getattr(self.act, self.which)(x)


def _positive_int(n) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and n >= 1


def _jvp_derivative(fn, x):
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(float)
    return jax.jvp(fn, (x,), (jnp.ones_like(x),))[1]


class Activation(eqx.Module):
    r"""An activation g with its Gaussian integrals I2, I3, I4, J2 (module docstring).

    ``tsjax.Activation(fn, name=None, derivative=None, *, nodes=40,
    nodes_i4=(32, 16, 12, 10), rule="trapezoid", parity=None, nodes_joint=(20, 20, 14, 14))``
    builds an activation from any elementwise JAX function ``fn``; its integrals are
    computed by Gaussian quadrature (``tsjax._quadrature``):

    * I2, J2: 2-d expectations; I3 is reduced exactly to two 2-d expectations (below);
      ``nodes`` per dimension (cost ~nodes^2 per block).
    * I4: a 4-d expectation, nested tensor-product rule with ``nodes_i4`` per dimension
      (cost ~nodes_i4^4 per block).
    * In the ODEs (``contract_i3``, ``contract_i4``): A_ip = sum_j u_j I3(i, p, j) from the
      K x L pair integrals, and B_ik = sum_jl u_j u_l I4(i, k, j, l) = E[g'(x_i) g'(x_k)
      Delta^2] by one joint L-dimensional rule with ``nodes_joint`` per direction (L = K + M
      <= 5; None: block by block with ``nodes_i4``).
    * ``derivative``: g'; by default ``jax.jvp`` of ``fn``. Higher derivatives (needed for
      gradients with respect to the covariance, by Price's theorem) always come from
      ``jax.jvp``.
    * ``parity``: ``"odd"`` or ``"even"`` if g has that symmetry (halves the cost), else None.
    * ``rule``: ``"trapezoid"`` (default; best for activations with poles near the real
      axis such as tanh and the logistic sigmoid) or ``"gauss-hermite"``.

    ``fn`` may also be another Activation (e.g. ``Activation(tsjax.Erf(), nodes=48)``), which
    gives the quadrature version of a closed-form activation. The subclasses :class:`Erf`,
    :class:`Linear`, :class:`ReLU`, :class:`Quadratic`, :class:`Sin` override the integrals
    with closed forms; :class:`Sigmoid` reduces exactly to the quadrature of tanh.

    I3 without g'': with z_1 = u_a / sqrt(C_aa) and Stein's lemma on the direction of u_c
    orthogonal to u_a,

        I3(a, b, c) = (C_ab / C_aa) E[u_a g'(u_a) g(u_c)] + (C_bc - C_ab C_ac / C_aa) J2(a, c),

    exact also for singular blocks (no division by a determinant) and for g with kinks.

    Accuracy and cost (float64, defaults nodes=40, nodes_i4=(32, 16, 12, 10), block
    variances <= ~1.5; tests/test_quadrature.py): tanh I2/J2/I3 ~1e-9..1e-8 relative, I4
    ~1e-5 absolute, ~7e-5 relative to the largest |I4| (the first direction carries the
    rank-1 blocks I4(a, a, a, a): with nodes_i4=(20, 16, 12, 10) they are off by 5e-4;
    (32, 20, 16, 12): ~1e-5 relative at 2x the cost). In the ODEs B dominates the cost:
    block by block prod(nodes_i4) / 2 evaluations for each of the K(K+1)/2 x L(L+1)/2
    distinct I4 blocks (921600 for K = M = 2), by the joint rule prod(nodes_joint) / 2
    (39200 for K = M = 2, at the accuracy of the blocks; :meth:`contract_i4`): a quadrature
    ODE costs ~1e2 x the closed-form erf ODE with the joint rule (K = M = 2), ~1e3 x block
    by block (K = 4, M = 2) (benchmarks/activations.py). For erf-like functions the wider
    ``rule="trapezoid"`` with nodes=64, nodes_i4=(48, 40, 36, 32) reaches 1e-10 (the joint
    rule: nodes_joint=44..48). Errors grow with the variances (the
    rule has a fixed resolution in the whitened variables): raise the nodes for large
    weights. Kinks (ReLU, hard tanh) converge algebraically (ReLU: ~1e-3 on I2, a few % on
    I4 at nodes=256, nodes_i4=48); use the closed forms there.
    """

    _fn: Callable | None = eqx.field(static=True)
    _name: str | None = eqx.field(static=True)
    _dfn: Callable | None = eqx.field(static=True)
    nodes: int = eqx.field(static=True)
    nodes_i4: int | tuple[int, int, int, int] = eqx.field(static=True)
    nodes_joint: int | tuple[int, ...] | None = eqx.field(static=True)
    rule: str = eqx.field(static=True)
    parity: str | None = eqx.field(static=True)

    @property
    def closed_form(self) -> bool:
        """True when none of I2, I3, I4, J2 uses the generic quadrature."""
        return all(
            getattr(type(self), m) is not getattr(Activation, m) for m in ("i2", "j2", "i3", "i4")
        )

    def __init__(
        self,
        fn: Callable | Activation | None = None,
        name: str | None = None,
        derivative: Callable | None = None,
        *,
        nodes: int = DEFAULT_NODES,
        nodes_i4: int | tuple[int, int, int, int] = DEFAULT_NODES_I4,
        rule: str = "trapezoid",
        parity: str | None = None,
        nodes_joint: int | tuple[int, ...] | None = DEFAULT_NODES_JOINT,
    ):
        if isinstance(fn, Activation):
            base = fn
            name = name if name is not None else base.name
            derivative = derivative if derivative is not None else _Method(base, "derivative")
            parity = parity if parity is not None else base.parity
            fn = _Method(base, "__call__")
        if fn is None and type(self) is Activation:
            raise ValueError("activation: tsjax.Activation needs a function fn (g)")
        if fn is not None and not callable(fn):
            raise ValueError(f"activation: fn must be callable, got {type(fn).__name__}")
        if derivative is not None and not callable(derivative):
            raise ValueError(
                f"activation: derivative must be callable, got {type(derivative).__name__}"
            )
        if not _positive_int(nodes):
            raise ValueError(f"nodes: expected a positive integer, got {nodes!r}")
        nodes_i4 = _check_nodes("nodes_i4", nodes_i4, "a positive integer or 4 of them", length=4)
        nodes_joint = _check_nodes(
            "nodes_joint",
            nodes_joint,
            "None, a positive integer or a tuple of them",
            allow_none=True,
        )
        if rule not in RULES:
            raise ValueError(f"rule: expected one of {RULES}, got {rule!r}")
        if parity not in _PARITY:
            raise ValueError(f"parity: expected 'odd', 'even' or None, got {parity!r}")
        self._fn = fn
        self._name = name
        self._dfn = derivative
        self.nodes = nodes
        self.nodes_i4 = nodes_i4
        self.nodes_joint = nodes_joint
        self.rule = rule
        self.parity = parity

    @property
    def name(self) -> str:
        """Short name, e.g. ``"erf"`` (for a user function: ``name`` or ``fn.__name__``)."""
        if self._name is not None:
            return self._name
        return getattr(self._fn, "__name__", "custom")

    def __call__(self, x: ArrayLike) -> Array:
        """g(x), elementwise."""
        if self._fn is None:
            raise NotImplementedError(f"{type(self).__name__} does not define g")
        return self._fn(jnp.asarray(x))

    def derivative(self, x: ArrayLike) -> Array:
        """g'(x), elementwise (``derivative`` if given, else ``jax.jvp`` of g)."""
        if self._dfn is not None:
            return self._dfn(jnp.asarray(x))
        return _jvp_derivative(self.__call__, x)

    # -- quadrature path ------------------------------------------------------------------

    def _factors(self):
        p = _PARITY[self.parity]
        g = Factor(_Method(self, "__call__"), p)
        dg = Factor(_Method(self, "derivative"), -p)
        return g, dg

    def i2(self, caa: Array, cab: Array, cbb: Array) -> Array:
        """I2 = E[g(u_a) g(u_b)] from the entries of the 2x2 covariance."""
        g, _ = self._factors()
        return expect2(g, g, caa, cab, cbb, nodes=self.nodes, rule=self.rule)

    def j2(self, caa: Array, cab: Array, cbb: Array) -> Array:
        """J2 = E[g'(u_a) g'(u_b)] from the entries of the 2x2 covariance."""
        _, dg = self._factors()
        return expect2(dg, dg, caa, cab, cbb, nodes=self.nodes, rule=self.rule)

    def i3(self, c: Float[Array, "*batch 3 3"]) -> Float[Array, "*batch"]:
        """I3 = E[g'(u_a) u_b g(u_c)] for the covariance ``c`` of (u_a, u_b, u_c)."""
        g, dg = self._factors()
        c = jnp.asarray(c)
        c = c if jnp.issubdtype(c.dtype, jnp.floating) else c.astype(float)
        caa, cab, cac = c[..., 0, 0], c[..., 0, 1], c[..., 0, 2]
        cbc, ccc = c[..., 1, 2], c[..., 2, 2]
        ac = jnp.stack([jnp.stack([caa, cac], -1), jnp.stack([cac, ccc], -1)], -2)
        kw = dict(nodes=self.nodes, rule=self.rule)
        t1 = expect2_weighted(dg, g, ac, (1, 0), **kw)  # E[z_1 g'(u_a) g(u_c)]
        t2 = expect2_weighted(dg, dg, ac, (0, 0), **kw)  # J2(a, c)
        ok = caa > 0
        inv = jnp.where(ok, 1.0 / jnp.where(ok, caa, 1.0), 0.0)
        return cab * jnp.sqrt(inv) * t1 + (cbc - cab * cac * inv) * t2

    def i4(self, c: Float[Array, "*batch 4 4"]) -> Float[Array, "*batch"]:
        """I4 = E[g'(u_a) g'(u_b) g(u_c) g(u_d)] for the covariance of (u_a..u_d)."""
        g, dg = self._factors()
        return expect4((dg, dg, g, g), c, nodes=self.nodes_i4, rule=self.rule)

    def d4(self, c: Float[Array, "*batch 4 4"]) -> Float[Array, "*batch"]:
        """D4 = E[g'(u_a) g'(u_b) g'(u_c) g'(u_d)] for the covariance of (u_a..u_d): the
        derivative of B_ik = E[g'(x_i) g'(x_k) Delta^2] where Delta = 0 almost surely
        (perfect learning; ``tsjax.jacobian``). Quadrature with ``nodes_i4``."""
        _, dg = self._factors()
        return expect4((dg, dg, dg, dg), c, nodes=self.nodes_i4, rule=self.rule)

    # -- the contracted sums of the ODEs (hooks of tsjax._integrals) --------------------------

    def contract_i3(self, C: Float[Array, "L L"], u: Float[Array, " L"], K: int):
        r"""A_ip = sum_j u_j I3(i, p, j), shape (K, L), from the K x L pairs (i, j) only.

        With the reduction of I3 (class docstring), t_ij = E[z_1 g'(u_i) g(u_j)] and J2(i, j)
        (2-d rules on the (i, j) blocks, ``nodes`` per dimension):

            A_ip = C_ip a_i / sqrt(C_ii) + sum_j W_ij C_jp - C_ip b_i / C_ii,
            a_i = sum_j u_j t_ij,  W_ij = u_j J2(i, j),  b_i = sum_j W_ij C_ij,

        the same numbers as the K L^2 blocks (i, p, j), at 2 K L instead of 2 K L^2 2-d
        integrals. A subclass with its own ``i3`` (closed form) is contracted block by block.
        """
        if type(self).i3 is not Activation.i3:
            from ._integrals import i3_contracted_blocks

            return i3_contracted_blocks(self, C, u, K)
        g, dg = self._factors()
        C = jnp.asarray(C)
        C = C if jnp.issubdtype(C.dtype, jnp.floating) else C.astype(float)
        L = C.shape[-1]
        d = jnp.diagonal(C)
        CK = C[:K]
        ac = jnp.stack(
            [
                jnp.stack([jnp.broadcast_to(d[:K, None], (K, L)), CK], -1),
                jnp.stack([CK, jnp.broadcast_to(d[None, :], (K, L))], -1),
            ],
            -2,
        )  # (K, L, 2, 2): the blocks of (u_i, u_j)
        kw = dict(nodes=self.nodes, rule=self.rule)
        t1 = expect2_weighted(dg, g, ac, (1, 0), **kw)
        j2 = expect2_weighted(dg, dg, ac, (0, 0), **kw)
        ok = d[:K] > 0
        inv = jnp.where(ok, 1.0 / jnp.where(ok, d[:K], 1.0), 0.0)
        W = j2 * u
        a = t1 @ u
        b = jnp.sum(W * CK, -1)
        return CK * (jnp.sqrt(inv) * a - inv * b)[:, None] + W @ C

    def _uses_joint_rule(self, L: int) -> bool:
        """B by the joint rule: 2 <= L <= JOINT_MAX_DIM and nodes_joint given."""
        return self.nodes_joint is not None and 2 <= L <= JOINT_MAX_DIM

    def contract_i4(self, C: Float[Array, "L L"], u: Float[Array, " L"], K: int):
        r"""B_ik = sum_{jl} u_j u_l I4(i, k, j, l) = E[g'(x_i) g'(x_k) Delta^2], shape (K, K).

        By the joint L-dimensional rule (``tsjax._quadrature.contract_b_joint``,
        ``nodes_joint`` per direction) for L = K + M <= ``JOINT_MAX_DIM`` (5), else block by
        block (``nodes_i4``); also block by block for ``nodes_joint=None`` or a subclass
        with its own ``i4``. The joint rule costs ~nodes_joint^L / 2 evaluations, the
        blocks ~K(K+1)/2 x L(L+1)/2 x prod(nodes_i4) / 2: with the defaults 39200 against
        921600 for K = M = 2, 5.5e5 against 1.4e6..4.6e6 for L = 5 (K >= 2), but 7.7e6
        against 6.5e6 for K = 4, M = 2 (L = 6), hence the limit.

        Accuracy and cost (tanh, K = M = 2, 14 ODE-like covariances from the start to a
        learned teacher, against 36 nodes per direction; tests/test_quadrature.py): the
        default (20, 20, 14, 14) (39200 points) errs by <= 1.5e-5 absolute, <= 2.1e-4 of
        max |B|, the 30 blocks at (32, 16, 12, 10) (921600 points) by 5.5e-5 and 2.2e-4;
        (16,)*4 (32768 points) is better early (1e-5 absolute) but 1.3e-3 of max |B| near
        a learned teacher, where the first (student) directions carry g'^4-like factors;
        20 per direction: 5e-6 and 2e-4. ODE trajectory (benchmarks/activations.py, alpha
        <= 100) against 28 per direction: eg within 5e-5 relative (blocks: 2.6e-4).
        """
        C = jnp.asarray(C)
        L = C.shape[-1]
        if type(self).i4 is not Activation.i4 or not self._uses_joint_rule(L):
            from ._integrals import i4_contracted_blocks

            return i4_contracted_blocks(self, C, u, K)
        g, dg = self._factors()
        return contract_b_joint(g, dg, C, u, K, nodes=self.nodes_joint, rule=self.rule)

    def __repr__(self):
        if self.closed_form:
            return f"{type(self).__name__}()"
        opts = (
            f"nodes={self.nodes}, nodes_i4={self.nodes_i4}, nodes_joint={self.nodes_joint}, "
            f"rule={self.rule!r}"
        )
        if type(self) is Activation:
            return f"Activation(name={self.name!r}, {opts})"
        return f"{type(self).__name__}({opts})"


class Erf(Activation):
    r"""g(x) = erf(x / sqrt 2), with the closed forms of Saad & Solla (1995), Biehl &
    Schwarze (1995):

    I2 = (2/pi) arcsin(C_ab / sqrt((1+C_aa)(1+C_bb))),
    J2 = (2/pi) / sqrt((1+C_aa)(1+C_bb) - C_ab^2),
    I3 = (2/pi) (C_bc (1+C_aa) - C_ab C_ac) / ((1+C_aa) sqrt((1+C_aa)(1+C_cc) - C_ac^2)),
    I4 = 4/(pi^2 sqrt(L4)) arcsin(L0 / sqrt(L1 L2)), with
      L4 = (1+C_aa)(1+C_bb) - C_ab^2,
      L0 = L4 C_cd - C_bc C_bd (1+C_aa) - C_ac C_ad (1+C_bb) + C_ab C_ac C_bd + C_ab C_ad C_bc,
      L1 = L4 (1+C_cc) - C_bc^2 (1+C_aa) - C_ac^2 (1+C_bb) + 2 C_ab C_ac C_bc,
      L2 = L4 (1+C_dd) - C_bd^2 (1+C_aa) - C_ad^2 (1+C_bb) + 2 C_ab C_ad C_bd.
    The "1 +" terms keep every formula regular for singular covariances.
    """

    def __init__(self):
        super().__init__(parity="odd")

    @property
    def name(self) -> str:
        return "erf"

    def __call__(self, x):
        return _erf(jnp.asarray(x) / math.sqrt(2.0))

    def derivative(self, x):
        x = jnp.asarray(x)
        return math.sqrt(2.0 / math.pi) * jnp.exp(-0.5 * x * x)

    def i2(self, caa, cab, cbb):
        return (2.0 / jnp.pi) * asin(_clip_corr(cab / jnp.sqrt((1.0 + caa) * (1.0 + cbb))))

    def j2(self, caa, cab, cbb):
        return (2.0 / jnp.pi) / jnp.sqrt((1.0 + caa) * (1.0 + cbb) - cab * cab)

    def i3(self, c):
        caa, cab, cac = c[..., 0, 0], c[..., 0, 1], c[..., 0, 2]
        cbc, ccc = c[..., 1, 2], c[..., 2, 2]
        l3 = (1.0 + caa) * (1.0 + ccc) - cac * cac
        return (2.0 / jnp.pi) * (cbc * (1.0 + caa) - cab * cac) / ((1.0 + caa) * jnp.sqrt(l3))

    def d4(self, c):
        """D4 = E[prod_a g'(u_a)] = (2/pi)^2 det(I + c)^(-1/2) (g' = sqrt(2/pi) e^(-x^2/2))."""
        c = jnp.asarray(c)
        return (2.0 / jnp.pi) ** 2 / jnp.sqrt(jnp.linalg.det(jnp.eye(4, dtype=c.dtype) + c))

    def i4(self, c):
        caa, cab, cac, cad = c[..., 0, 0], c[..., 0, 1], c[..., 0, 2], c[..., 0, 3]
        cbb, cbc, cbd = c[..., 1, 1], c[..., 1, 2], c[..., 1, 3]
        ccc, ccd, cdd = c[..., 2, 2], c[..., 2, 3], c[..., 3, 3]
        l4 = (1.0 + caa) * (1.0 + cbb) - cab * cab
        l0 = (
            l4 * ccd
            - cbc * cbd * (1.0 + caa)
            - cac * cad * (1.0 + cbb)
            + cab * cac * cbd
            + cab * cad * cbc
        )
        l1 = (
            l4 * (1.0 + ccc)
            - cbc * cbc * (1.0 + caa)
            - cac * cac * (1.0 + cbb)
            + 2 * cab * cac * cbc
        )
        l2 = (
            l4 * (1.0 + cdd)
            - cbd * cbd * (1.0 + caa)
            - cad * cad * (1.0 + cbb)
            + 2 * cab * cad * cbd
        )
        return 4.0 / (jnp.pi**2 * jnp.sqrt(l4)) * asin(_clip_corr(l0 / jnp.sqrt(l1 * l2)))

    def contract_i3(self, C, u, K: int):
        r"""A_ip = sum_j u_j I3(i, p, j) without gathering blocks: with a_i = 1 + C_ii and
        w_ij = u_j / sqrt(a_i (1 + C_jj) - C_ij^2),
        A_ip = (2/pi) [sum_j C_pj w_ij - (C_ip / a_i) sum_j C_ij w_ij]. Shape (K, L)."""
        d = jnp.diagonal(C)
        CK = C[:K]
        a = 1.0 + d[:K]
        w = u / jnp.sqrt(a[:, None] * (1.0 + d) - CK * CK)
        return (2.0 / jnp.pi) * (w @ C - (CK / a[:, None]) * jnp.sum(CK * w, -1)[:, None])

    def contract_i4(self, C, u, K: int):
        r"""B_ik = sum_jl u_j u_l I4(i, k, j, l), sharing factors between tuples: for a
        student pair (i <= k) the normalisations L1 (of (i, k, j)) and L2 (of (i, k, l)) in
        the closed form are the same function S_ik(.) of one index, computed once per (i, k,
        j); only L0 and the arcsin are evaluated per tuple (K(K+1)/2 x L^2 of them).
        Shape (K, K), symmetric."""
        ik = _student_pairs(K)
        d = jnp.diagonal(C)
        pa, pb = 1.0 + d[ik[:, 0]], 1.0 + d[ik[:, 1]]  # (P,)
        cab = C[ik[:, 0], ik[:, 1]]
        cA, cB = C[ik[:, 0]], C[ik[:, 1]]  # (P, L): C_ij, C_kj
        l4 = pa * pb - cab * cab
        s = (
            l4[:, None] * (1.0 + d)
            - cB * cB * pa[:, None]
            - cA * cA * pb[:, None]
            + 2.0 * cab[:, None] * cA * cB
        )
        r = 1.0 / jnp.sqrt(s)  # (P, L)
        l0 = (
            l4[:, None, None] * C
            - cB[:, :, None] * cB[:, None, :] * pa[:, None, None]
            - cA[:, :, None] * cA[:, None, :] * pb[:, None, None]
            + cab[:, None, None]
            * (cA[:, :, None] * cB[:, None, :] + cB[:, :, None] * cA[:, None, :])
        )
        x = _clip_corr(l0 * r[:, :, None] * r[:, None, :])
        b = 4.0 / (jnp.pi**2 * jnp.sqrt(l4)) * jnp.einsum("pjl,j,l->p", asin(x), u, u)
        return _symmetric_from_pairs(b, K)


class Linear(Activation):
    """g(x) = x: I2 = C_ab, I3 = C_bc, I4 = C_cd, J2 = 1."""

    def __init__(self):
        super().__init__(parity="odd")

    @property
    def name(self) -> str:
        return "linear"

    def __call__(self, x):
        return jnp.asarray(x)

    def derivative(self, x):
        return jnp.ones_like(jnp.asarray(x))

    def i2(self, caa, cab, cbb):
        return cab * jnp.ones_like(caa)

    def j2(self, caa, cab, cbb):
        return jnp.ones_like(cab)

    def i3(self, c):
        return c[..., 1, 2]

    def i4(self, c):
        return c[..., 2, 3]

    def d4(self, c):
        return jnp.ones_like(c[..., 0, 0])


class Sign(Activation):
    """g(x) = sign(x): decisions of a perceptron policy (the RL perceptron, ``tsjax._rules``).
    I2 = (2/pi) arcsin(C_ab / sqrt(C_aa C_bb)) (so eps_g = 2 P(disagree) for one unit). It has
    no derivative: J2, I3, I4 and ``derivative`` raise a ValueError (gradient-based rules
    need g'); use ``rule=tsjax.RLPerceptron(...)``."""

    def __init__(self):
        super().__init__(parity="odd")

    @property
    def name(self) -> str:
        return "sign"

    def __call__(self, x):
        return jnp.sign(jnp.asarray(x))

    def _no_derivative(self, *args):
        raise ValueError(
            "activation: 'sign' has no derivative, so gradient-based rules (SGD, adaptive "
            "back-propagation, feedback alignment) cannot train it; use "
            "rule=tsjax.RLPerceptron(...)"
        )

    def derivative(self, x):
        self._no_derivative()

    def i2(self, caa, cab, cbb):
        # a field with itself (|r| = 1 for every C) gives +-1 with a zero derivative, not
        # arcsin's infinite one times 0
        r = _clip_corr(cab / jnp.sqrt(caa * cbb))
        inside = jnp.abs(r) < 1.0
        val = asin(jnp.where(inside, r, 0.0))
        return (2.0 / jnp.pi) * jnp.where(inside, val, jnp.sign(r) * (jnp.pi / 2))

    def j2(self, caa, cab, cbb):
        self._no_derivative()

    def i3(self, c):
        self._no_derivative()

    def i4(self, c):
        self._no_derivative()


def _broadcast(*xs):
    return jnp.broadcast_arrays(*(jnp.asarray(x) for x in xs))


class Quadratic(Activation):
    r"""g(x) = x^2, g'(x) = 2x, closed forms by Isserlis' theorem:

    I2 = C_aa C_bb + 2 C_ab^2,   J2 = 4 C_ab,   I3 = 2 (C_ab C_cc + 2 C_ac C_bc),
    I4 = 4 [C_ab (C_cc C_dd + 2 C_cd^2) + 2 C_ac (C_bc C_dd + 2 C_bd C_cd)
            + 2 C_ad (C_bd C_cc + 2 C_bc C_cd)].
    """

    def __init__(self):
        super().__init__(parity="even")

    @property
    def name(self) -> str:
        return "quadratic"

    def __call__(self, x):
        x = jnp.asarray(x)
        return x * x

    def derivative(self, x):
        return 2.0 * jnp.asarray(x)

    def i2(self, caa, cab, cbb):
        caa, cab, cbb = _broadcast(caa, cab, cbb)
        return caa * cbb + 2.0 * cab * cab

    def j2(self, caa, cab, cbb):
        caa, cab, cbb = _broadcast(caa, cab, cbb)
        return 4.0 * cab

    def i3(self, c):
        cab, cac, cbc, ccc = c[..., 0, 1], c[..., 0, 2], c[..., 1, 2], c[..., 2, 2]
        return 2.0 * (cab * ccc + 2.0 * cac * cbc)

    def i4(self, c):
        cab, cac, cad = c[..., 0, 1], c[..., 0, 2], c[..., 0, 3]
        cbc, cbd = c[..., 1, 2], c[..., 1, 3]
        ccc, ccd, cdd = c[..., 2, 2], c[..., 2, 3], c[..., 3, 3]
        return 4.0 * (
            cab * (ccc * cdd + 2.0 * ccd * ccd)
            + 2.0 * cac * (cbc * cdd + 2.0 * cbd * ccd)
            + 2.0 * cad * (cbd * ccc + 2.0 * cbc * ccd)
        )


class Sin(Activation):
    r"""g(x) = sin x, g'(x) = cos x, closed forms from E[cos(s.u)] = exp(-s^T C s / 2):

    I2 = e^{-(C_aa+C_bb)/2} sinh C_ab,   J2 = e^{-(C_aa+C_bb)/2} cosh C_ab,
    I3 = e^{-(C_aa+C_cc)/2} (C_bc cosh C_ac - C_ab sinh C_ac)   (Stein's lemma on u_b),
    I4 = (1/8) sum_{e_b, e_c, e_d = +-1} (-e_d) exp(-s^T C s / 2),  s = (1, e_b, e_c, e_c e_d).
    """

    def __init__(self):
        super().__init__(parity="odd")

    @property
    def name(self) -> str:
        return "sin"

    def __call__(self, x):
        return jnp.sin(jnp.asarray(x))

    def derivative(self, x):
        return jnp.cos(jnp.asarray(x))

    def i2(self, caa, cab, cbb):
        caa, cab, cbb = _broadcast(caa, cab, cbb)
        return jnp.exp(-0.5 * (caa + cbb)) * jnp.sinh(cab)

    def j2(self, caa, cab, cbb):
        caa, cab, cbb = _broadcast(caa, cab, cbb)
        return jnp.exp(-0.5 * (caa + cbb)) * jnp.cosh(cab)

    def i3(self, c):
        caa, cab, cac = c[..., 0, 0], c[..., 0, 1], c[..., 0, 2]
        cbc, ccc = c[..., 1, 2], c[..., 2, 2]
        return jnp.exp(-0.5 * (caa + ccc)) * (cbc * jnp.cosh(cac) - cab * jnp.sinh(cac))

    def i4(self, c):
        c = jnp.asarray(c)
        c = 0.5 * (c + jnp.swapaxes(c, -1, -2))
        out = 0.0
        for eb in (1.0, -1.0):
            for ec in (1.0, -1.0):
                for ed in (1.0, -1.0):
                    sv = jnp.asarray([1.0, eb, ec, ec * ed], c.dtype)
                    q = jnp.einsum("...ij,i,j->...", c, sv, sv)
                    out = out - ed * jnp.exp(-0.5 * q)
        return out / 8.0


def _tanh_prime(x):
    t = jnp.tanh(jnp.asarray(x))
    return 1.0 - t * t


class Tanh(Activation):
    """g(x) = tanh x (odd), integrals by quadrature (see :class:`Activation`)."""

    def __init__(
        self,
        *,
        nodes: int = DEFAULT_NODES,
        nodes_i4: int | tuple[int, int, int, int] = DEFAULT_NODES_I4,
        rule: str = "trapezoid-narrow",
        nodes_joint: int | tuple[int, ...] | None = DEFAULT_NODES_JOINT,
    ):
        super().__init__(
            jnp.tanh,
            "tanh",
            _tanh_prime,
            nodes=nodes,
            nodes_i4=nodes_i4,
            nodes_joint=nodes_joint,
            rule=rule,
            parity="odd",
        )


def _sigmoid_prime(x):
    s = jax.nn.sigmoid(jnp.asarray(x))
    return s * (1.0 - s)


class Sigmoid(Activation):
    r"""The logistic sigmoid g(x) = 1 / (1 + e^{-x}) = (1 + tanh(x/2)) / 2.

    Its integrals reduce exactly to those of tanh at the covariance C/4 (the terms odd in
    tanh vanish): I2 = 1/4 + I2_tanh/4, J2 = J2_tanh/16, I3 = I3_tanh/4,
    I4 = (J2_tanh(a, b) + I4_tanh)/64, so they use the (parity-halved) tanh quadrature, at
    smaller variances, hence more accurately than a direct quadrature.
    """

    def __init__(
        self,
        *,
        nodes: int = DEFAULT_NODES,
        nodes_i4: int | tuple[int, int, int, int] = DEFAULT_NODES_I4,
        rule: str = "trapezoid-narrow",
        nodes_joint: int | tuple[int, ...] | None = DEFAULT_NODES_JOINT,
    ):
        super().__init__(
            jax.nn.sigmoid,
            "sigmoid",
            _sigmoid_prime,
            nodes=nodes,
            nodes_i4=nodes_i4,
            nodes_joint=nodes_joint,
            rule=rule,
        )

    @property
    def closed_form(self) -> bool:
        return False

    def _tanh(self):
        return Tanh(
            nodes=self.nodes, nodes_i4=self.nodes_i4, nodes_joint=self.nodes_joint, rule=self.rule
        )

    def i2(self, caa, cab, cbb):
        return 0.25 + 0.25 * self._tanh().i2(caa / 4.0, cab / 4.0, cbb / 4.0)

    def j2(self, caa, cab, cbb):
        return self._tanh().j2(caa / 4.0, cab / 4.0, cbb / 4.0) / 16.0

    def i3(self, c):
        return 0.25 * self._tanh().i3(jnp.asarray(c) / 4.0)

    def i4(self, c):
        c = jnp.asarray(c) / 4.0
        t = self._tanh()
        return (t.j2(c[..., 0, 0], c[..., 0, 1], c[..., 1, 1]) + t.i4(c)) / 64.0

    def contract_i3(self, C, u, K: int):
        """A_ip = A_ip^tanh(C/4) / 4 (the reduction above, contracted)."""
        return 0.25 * self._tanh().contract_i3(jnp.asarray(C) / 4.0, u, K)

    def contract_i4(self, C, u, K: int):
        """B_ik = ((sum_j u_j)^2 J2_tanh(i, k) + B_ik^tanh) / 64 at C/4."""
        C = jnp.asarray(C) / 4.0
        t = self._tanh()
        d = jnp.diagonal(C)[:K]
        j2 = t.j2(d[:, None], C[:K, :K], d[None, :])
        return (jnp.sum(u) ** 2 * j2 + t.contract_i4(C, u, K)) / 64.0


def _gelu(x):
    x = jnp.asarray(x)
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def _gelu_prime(x):
    x = jnp.asarray(x)
    return 0.5 * (1.0 + _erf(x / math.sqrt(2.0))) + x * jnp.exp(-0.5 * x * x) / math.sqrt(
        2.0 * math.pi
    )


class GELU(Activation):
    """g(x) = x Phi(x) (the exact, erf form of GELU), integrals by quadrature."""

    def __init__(
        self,
        *,
        nodes: int = DEFAULT_NODES,
        nodes_i4: int | tuple[int, int, int, int] = DEFAULT_NODES_I4,
        rule: str = "trapezoid",
        nodes_joint: int | tuple[int, ...] | None = DEFAULT_NODES_JOINT,
    ):
        super().__init__(
            _gelu,
            "gelu",
            _gelu_prime,
            nodes=nodes,
            nodes_i4=nodes_i4,
            nodes_joint=nodes_joint,
            rule=rule,
        )


class Softplus(Activation):
    """g(x) = log(1 + e^x), g' = logistic sigmoid, integrals by quadrature."""

    def __init__(
        self,
        *,
        nodes: int = DEFAULT_NODES,
        nodes_i4: int | tuple[int, int, int, int] = DEFAULT_NODES_I4,
        rule: str = "trapezoid",
        nodes_joint: int | tuple[int, ...] | None = DEFAULT_NODES_JOINT,
    ):
        super().__init__(
            jax.nn.softplus,
            "softplus",
            jax.nn.sigmoid,
            nodes=nodes,
            nodes_i4=nodes_i4,
            nodes_joint=nodes_joint,
            rule=rule,
        )


def _silu(x):
    x = jnp.asarray(x)
    return x * jax.nn.sigmoid(x)


def _silu_prime(x):
    x = jnp.asarray(x)
    s = jax.nn.sigmoid(x)
    return s * (1.0 + x * (1.0 - s))


class SiLU(Activation):
    """g(x) = x sigmoid(x) (SiLU / swish), integrals by quadrature."""

    def __init__(
        self,
        *,
        nodes: int = DEFAULT_NODES,
        nodes_i4: int | tuple[int, int, int, int] = DEFAULT_NODES_I4,
        rule: str = "trapezoid",
        nodes_joint: int | tuple[int, ...] | None = DEFAULT_NODES_JOINT,
    ):
        super().__init__(
            _silu,
            "silu",
            _silu_prime,
            nodes=nodes,
            nodes_i4=nodes_i4,
            nodes_joint=nodes_joint,
            rule=rule,
        )


from ._relu import ReLU  # noqa: E402  (ReLU's integrals live in their own module)

#: Built-in activations by name (closed forms: erf, linear, quadratic, sin; ReLU: closed
#: forms and a 1-d integral for I4; the others by quadrature).
ACTIVATIONS: dict[str, type[Activation]] = {
    "erf": Erf,
    "linear": Linear,
    "relu": ReLU,
    "sign": Sign,
    "tanh": Tanh,
    "sigmoid": Sigmoid,
    "gelu": GELU,
    "softplus": Softplus,
    "silu": SiLU,
    "quadratic": Quadratic,
    "sin": Sin,
}
_ALIASES = {"logistic": "sigmoid", "swish": "silu"}


def get_activation(activation: str | Activation | Callable) -> Activation:
    """The :class:`Activation` for ``activation``:

    * a name: one of :data:`ACTIVATIONS` (case-insensitive; aliases "logistic" = "sigmoid",
      "swish" = "silu");
    * an :class:`Activation` instance (returned as is) or subclass (instantiated);
    * any other callable g: wrapped as ``Activation(g)`` (quadrature, derivative by
      ``jax.jvp``, name ``g.__name__``).

    Raises ``ValueError`` (naming ``activation`` and the allowed names) otherwise."""
    if isinstance(activation, Activation):
        return activation
    if isinstance(activation, type) and issubclass(activation, Activation):
        return activation()
    if isinstance(activation, str):
        key = activation.lower()
        key = _ALIASES.get(key, key)
        if key in ACTIVATIONS:
            return ACTIVATIONS[key]()
        raise ValueError(
            f"activation: unknown activation {activation!r}; allowed names are "
            f"{sorted(ACTIVATIONS)} (or pass a tsjax.Activation or a JAX function)"
        )
    if callable(activation):
        return Activation(activation)
    raise ValueError(
        f"activation: expected a name {sorted(ACTIVATIONS)}, a tsjax.Activation or a "
        f"callable, got {type(activation).__name__}"
    )
