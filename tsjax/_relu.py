"""ReLU, g(x) = max(0, x), g'(x) = Theta(x): closed forms for I2, J2, I3 and a numerical
I4 (no closed form is known).

With rho = C_ab / sqrt(C_aa C_bb) (Cho & Saul 2009 arc-cosine kernels):

    I2 = (sqrt(C_aa C_bb - C_ab^2) + C_ab (pi - arccos rho)) / (2 pi)
    J2 = (pi - arccos rho) / (2 pi)

I3 follows from Stein's lemma applied to u_b:
    I3 = C_ab E[delta(u_a) relu(u_c)] + C_bc E[Theta(u_a) Theta(u_c)]
       = C_ab sqrt(C_aa C_cc - C_ac^2) / (2 pi C_aa) + C_bc J2(a, c).
"""

from __future__ import annotations

import jax.numpy as jnp

from ._activations import Activation


def _safe_sqrt(x):
    # sqrt with a finite derivative at 0 (singular blocks have determinant exactly 0).
    pos = x > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, x, 1.0)), 0.0)


def _arccos_corr(caa, cab, cbb):
    return jnp.arccos(jnp.clip(cab / jnp.sqrt(caa * cbb), -1.0, 1.0))


class ReLU(Activation):
    """g(x) = max(0, x). I2, J2, I3 in closed form; I4 numerically (see ``i4``)."""

    @property
    def name(self) -> str:
        return "relu"

    def __call__(self, x):
        return jnp.maximum(jnp.asarray(x), 0.0)

    def derivative(self, x):
        x = jnp.asarray(x)
        return (x > 0).astype(x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else float)

    def i2(self, caa, cab, cbb):
        return (_safe_sqrt(caa * cbb - cab * cab) + cab * (jnp.pi - _arccos_corr(caa, cab, cbb))) / (
            2 * jnp.pi
        )

    def j2(self, caa, cab, cbb):
        return (jnp.pi - _arccos_corr(caa, cab, cbb)) / (2 * jnp.pi) * jnp.ones_like(cab)

    def i3(self, c):
        caa, cab, cac = c[..., 0, 0], c[..., 0, 1], c[..., 0, 2]
        cbc, ccc = c[..., 1, 2], c[..., 2, 2]
        return cab * _safe_sqrt(caa * ccc - cac * cac) / (2 * jnp.pi * caa) + cbc * self.j2(
            caa, cac, ccc
        )

    def i4(self, c):
        raise NotImplementedError("ReLU I4: numerical method under construction")
