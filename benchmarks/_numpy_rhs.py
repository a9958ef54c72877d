"""A plain numpy implementation of the erf order-parameter ODE right-hand side.

It is the baseline for the benchmarks (run through scipy's ``solve_ivp``): vectorised
numpy on the full index tensors, the same equations as ``tsjax._ode`` (Goldt et al. 2019).
"""

import numpy as np


def erf_integrals(C, K):
    """I2 (L,L), I3[i,p,j] (K,L,L), I4[i,k,j,l] (K,K,L,L), J2 (K,K) for g = erf(x/sqrt2)."""
    d = np.diag(C)
    i2 = 2 / np.pi * np.arcsin(C / np.sqrt(np.outer(1 + d, 1 + d)))
    j2 = 2 / np.pi / np.sqrt(np.outer(1 + d[:K], 1 + d[:K]) - C[:K, :K] ** 2)
    # I3(a=i, b=p, c=j)
    caa = d[:K, None, None]
    cab = C[:K, :, None]
    cac = C[:K, None, :]
    cbc = C[None, :, :]
    ccc = d[None, None, :]
    l3 = (1 + caa) * (1 + ccc) - cac**2
    i3 = 2 / np.pi / np.sqrt(l3) * (cbc * (1 + caa) - cab * cac) / (1 + caa)
    # I4(a=i, b=k, c=j, d=l)
    caa = d[:K, None, None, None]
    cbb = d[None, :K, None, None]
    cab = C[:K, :K, None, None]
    cac = C[:K, None, :, None]
    cad = C[:K, None, None, :]
    cbc = C[None, :K, :, None]
    cbd = C[None, :K, None, :]
    ccc = d[None, None, :, None]
    cdd = d[None, None, None, :]
    ccd = C[None, None, :, :]
    l4 = (1 + caa) * (1 + cbb) - cab**2
    l0 = (
        l4 * ccd - cbc * cbd * (1 + caa) - cac * cad * (1 + cbb) + cab * cac * cbd + cab * cad * cbc
    )
    l1 = l4 * (1 + ccc) - cbc**2 * (1 + caa) - cac**2 * (1 + cbb) + 2 * cab * cac * cbc
    l2 = l4 * (1 + cdd) - cbd**2 * (1 + caa) - cad**2 * (1 + cbb) + 2 * cab * cad * cbd
    i4 = 4 / np.pi**2 / np.sqrt(l4) * np.arcsin(l0 / np.sqrt(l1 * l2))
    return i2, i3, i4, j2


def make_rhs(K, M, T, v_star, lr, lr_v, noise, weight_decay=0.0):
    """f(t, y) for scipy, y = concat(Q.ravel(), R.ravel(), v)."""
    nq, nr = K * K, K * M

    def rhs(t, y):
        Q = y[:nq].reshape(K, K)
        R = y[nq : nq + nr].reshape(K, M)
        v = y[nq + nr :]
        C = np.block([[Q, R], [R.T, T]])
        u = np.concatenate([v, -v_star])
        i2, i3, i4, j2 = erf_integrals(C, K)
        A = i3 @ u
        B = np.einsum("ikjl,j,l->ik", i4, u, u)
        vA = v[:, None] * A[:, :K]
        dQ = -lr * (vA + vA.T) + lr**2 * np.outer(v, v) * (B + noise**2 * j2)
        dQ -= 2 * weight_decay * Q
        dR = -lr * v[:, None] * A[:, K:] - weight_decay * R
        dv = -lr_v * (i2[:K] @ u) - weight_decay * v * (lr_v != 0)
        return np.concatenate([dQ.ravel(), dR.ravel(), dv])

    return rhs


def eg(C, v, v_star):
    d = np.diag(C)
    i2 = 2 / np.pi * np.arcsin(C / np.sqrt(np.outer(1 + d, 1 + d)))
    u = np.concatenate([v, -v_star])
    return 0.5 * u @ i2 @ u
