"""The activation abstraction: g, g' and the Gaussian integrals I2, I3, I4, J2.

For a zero-mean Gaussian vector ``u`` with covariance ``C`` (CONVENTIONS.md)

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

import abc
import math

import equinox as eqx
import jax.numpy as jnp
from jax.scipy.special import erf as _erf
from jaxtyping import Array, ArrayLike, Float

__all__ = ["Activation", "Erf", "Linear", "ReLU", "get_activation", "ACTIVATIONS"]


def _clip_corr(x):
    # arcsin/arccos arguments: round-off can push |rho| a hair above 1 for singular blocks.
    return jnp.clip(x, -1.0, 1.0)


class Activation(eqx.Module):
    """Base class of activations g. Subclasses implement ``__call__`` (g), ``derivative``
    (g') and the block integrals ``i2``, ``i3``, ``i4``, ``j2`` (see the module docstring).
    """

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """Short name, e.g. ``"erf"``."""

    @abc.abstractmethod
    def __call__(self, x: ArrayLike) -> Array:
        """g(x), elementwise."""

    @abc.abstractmethod
    def derivative(self, x: ArrayLike) -> Array:
        """g'(x), elementwise."""

    @abc.abstractmethod
    def i2(self, caa: Array, cab: Array, cbb: Array) -> Array:
        """I2 = E[g(u_a) g(u_b)] from the entries of the 2x2 covariance."""

    @abc.abstractmethod
    def j2(self, caa: Array, cab: Array, cbb: Array) -> Array:
        """J2 = E[g'(u_a) g'(u_b)] from the entries of the 2x2 covariance."""

    @abc.abstractmethod
    def i3(self, c: Float[Array, "*batch 3 3"]) -> Float[Array, "*batch"]:
        """I3 = E[g'(u_a) u_b g(u_c)] for the covariance ``c`` of (u_a, u_b, u_c)."""

    @abc.abstractmethod
    def i4(self, c: Float[Array, "*batch 4 4"]) -> Float[Array, "*batch"]:
        """I4 = E[g'(u_a) g'(u_b) g(u_c) g(u_d)] for the covariance of (u_a..u_d)."""

    def __repr__(self):
        return f"{type(self).__name__}()"


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

    @property
    def name(self) -> str:
        return "erf"

    def __call__(self, x):
        return _erf(jnp.asarray(x) / math.sqrt(2.0))

    def derivative(self, x):
        x = jnp.asarray(x)
        return math.sqrt(2.0 / math.pi) * jnp.exp(-0.5 * x * x)

    def i2(self, caa, cab, cbb):
        return (2.0 / jnp.pi) * jnp.arcsin(_clip_corr(cab / jnp.sqrt((1.0 + caa) * (1.0 + cbb))))

    def j2(self, caa, cab, cbb):
        return (2.0 / jnp.pi) / jnp.sqrt((1.0 + caa) * (1.0 + cbb) - cab * cab)

    def i3(self, c):
        caa, cab, cac = c[..., 0, 0], c[..., 0, 1], c[..., 0, 2]
        cbc, ccc = c[..., 1, 2], c[..., 2, 2]
        l3 = (1.0 + caa) * (1.0 + ccc) - cac * cac
        return (2.0 / jnp.pi) * (cbc * (1.0 + caa) - cab * cac) / ((1.0 + caa) * jnp.sqrt(l3))

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
        l1 = l4 * (1.0 + ccc) - cbc * cbc * (1.0 + caa) - cac * cac * (1.0 + cbb) + 2 * cab * cac * cbc
        l2 = l4 * (1.0 + cdd) - cbd * cbd * (1.0 + caa) - cad * cad * (1.0 + cbb) + 2 * cab * cad * cbd
        return 4.0 / (jnp.pi**2 * jnp.sqrt(l4)) * jnp.arcsin(_clip_corr(l0 / jnp.sqrt(l1 * l2)))


class Linear(Activation):
    """g(x) = x: I2 = C_ab, I3 = C_bc, I4 = C_cd, J2 = 1."""

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


from ._relu import ReLU  # noqa: E402  (ReLU's integrals live in their own module)

ACTIVATIONS: dict[str, type[Activation]] = {"erf": Erf, "linear": Linear, "relu": ReLU}


def get_activation(activation: str | Activation) -> Activation:
    """Return the :class:`Activation` for a name (``"erf"``, ``"relu"``, ``"linear"``) or
    pass an :class:`Activation` instance through. Raises ``ValueError`` for unknown names."""
    if isinstance(activation, Activation):
        return activation
    if isinstance(activation, str):
        key = activation.lower()
        if key in ACTIVATIONS:
            return ACTIVATIONS[key]()
        raise ValueError(
            f"activation: unknown activation {activation!r}; allowed names are "
            f"{sorted(ACTIVATIONS)} (or pass a tsjax.Activation instance)"
        )
    raise ValueError(
        f"activation: expected a name {sorted(ACTIVATIONS)} or a tsjax.Activation, "
        f"got {type(activation).__name__}"
    )
