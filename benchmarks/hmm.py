"""Benchmark: the hidden-manifold ODE (erf, sign features) against baselines in the same run.

1. The reference case of ../shared/reference/hmm (N = 1000, D = 500, K = 2, M = 1,
   lr = 0.5), alpha 0 -> 100: ``tsjax.solve_ode(..., inputs=HiddenManifold(F))`` warm (best
   of 3) at the default tolerances and at rtol 1e-10, its error against a reference solve at
   rtol 1e-12 (target 1e-6 relative), against a plain numpy explicit-Euler integration of the
   same equations at dt = 0.01 and dt = 0.001 (what the authors' C++ code does: their figures
   on this kind of machine, quoted: 2.6 s and 28 s on one core; their code is not in this
   repository) and the Euler runs' own errors.
2. The large-dimension limit: cost and eps_g(100) against the number of Marchenko-Pastur
   quadrature nodes, and a 64-point ``tsjax.sweep`` over delta (compilation included).

    python benchmarks/hmm.py [--tiny]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

import tsjax  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _numpy_rhs import eg as np_eg  # noqa: E402
from _numpy_rhs import erf_integrals  # noqa: E402

REF = Path(__file__).resolve().parents[2] / "shared" / "reference" / "hmm" / "case_A_seed0.npz"


def numpy_euler(op, lr, alpha_max, dt, save):
    """Explicit Euler of the hidden-manifold equations (tsjax._inputs._hidden_manifold),
    vectorised numpy, erf activation, one teacher, v fixed."""
    m = op.inputs
    rho, wts = (np.asarray(x) for x in m.spectrum)
    mu1, mus2, ef2, delta = (float(x) for x in (m.mu1, m.mus2, m.ef2, m.delta))
    W, sig, r = (np.array(x) for x in (op.W, op.sigma, op.r))
    t, T = np.asarray(op.t), np.asarray(op.T)
    v, vs = np.asarray(op.v), np.asarray(op.v_star)
    K = W.shape[0]
    u = np.concatenate([v, -vs])
    a = mu1**2 * rho / delta + mus2
    b = mu1 * rho / delta
    c2 = mu1**2 * rho**2 / delta + mus2 * rho
    out, n = [], int(round(alpha_max / dt))
    save_steps = set(int(round(s / dt)) for s in save)
    for step in range(n + 1):
        Sig = np.einsum("n,nkl->kl", wts, sig)
        Q = mus2 * W + mu1**2 * Sig
        R = mu1 * np.einsum("n,nkm->km", wts, r)
        C = np.block([[Q, R], [R.T, T]])
        if step in save_steps:
            out.append(np_eg(C, v, vs))
        if step == n:
            break
        _, i3, i4, j2kk = erf_integrals(C, K)
        A = np.einsum("ipj,j->ip", i3, u)
        B = np.einsum("ikjl,j,l->ik", i4, u, u)
        d = np.diag(C)
        J2 = 2 / np.pi / np.sqrt(np.outer(1 + d[:K], 1 + d) - C[:K] ** 2)
        g2 = (np.diag(A[:, :K]) - np.sum(u * C[:K] * J2, 1)) / d[:K]
        At = np.eye(K, C.shape[0]) * g2[:, None] + u[None] * J2
        AS, AT = At[:, :K], At[:, K:]
        G = np.outer(v, v) * B
        ds = a[:, None, None] * np.einsum("kj,tjl->tkl", AS, sig)
        ds += b[:, None, None] * np.einsum("km,tlm->tkl", AT, r)
        ds = -lr * v[None, :, None] * ds
        dsig = ds + ds.transpose(0, 2, 1) + lr**2 * c2[:, None, None] * G[None]
        dr = a[:, None, None] * np.einsum("kl,tlm->tkm", AS, r)
        dr += b[:, None, None] * np.einsum("kn,tnm->tkm", AT, t)
        dr = -lr * v[None, :, None] * dr
        pA = v[:, None] * A[:, :K]
        dW = -lr * (pA + pA.T) + lr**2 * ef2 * G
        W, sig, r = W + dt * dW, sig + dt * dsig, r + dt * dr
    return np.asarray(out)


def _best(f, repeat=3):
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = f()
        ts.append(time.perf_counter() - t0)
    return min(ts), out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="a small version (test suite)")
    args = p.parse_args()
    print(f"device: {jax.devices()[0]}; jax {jax.__version__}; float64")
    z = np.load(REF)
    F = z["F"][:200, :100] if args.tiny else z["F"]
    hmm = tsjax.HiddenManifold(F, feature_map="sign")
    st = tsjax.TwoLayerNet(z["student_W"][:, : F.shape[0]], z["student_v"])
    te = tsjax.TwoLayerNet(z["teacher_W"][:, : F.shape[1]], z["teacher_v"])
    op = tsjax.order_params(st, te, inputs=hmm)
    a_max = 10.0 if args.tiny else 100.0
    al = np.linspace(0.0, a_max, 21)

    def solve(**kw):
        return np.asarray(tsjax.solve_ode(op, inputs=hmm, lr=0.5, alphas=al, **kw).eg)

    ref = solve(rtol=1e-12, atol=1e-14)
    for label, kw in (("default rtol 1e-8", {}), ("rtol 1e-10", dict(rtol=1e-10, atol=1e-13))):
        t0 = time.perf_counter()
        solve(**kw)
        first = time.perf_counter() - t0
        t, e = _best(lambda kw=kw: solve(**kw))
        err = np.max(np.abs(e - ref) / ref)
        print(f"tsjax ODE N={F.shape[0]} D={F.shape[1]} alpha 0->{a_max:g} ({label}): "
              f"{t:.3f} s warm (first call {first:.1f} s), max rel. error {err:.1e}",
              flush=True)  # fmt: skip
    for dt in (0.01, 0.001) if not args.tiny else (0.01,):
        t0 = time.perf_counter()
        e = numpy_euler(op, 0.5, a_max, dt, al)
        t = time.perf_counter() - t0
        err = np.max(np.abs(e - ref) / ref)
        print(f"numpy explicit Euler dt={dt:g}: {t:.2f} s, max rel. error {err:.1e} (authors' "
              f"C++ at this dt, quoted: {'2.6' if dt == 0.01 else '28'} s on one core)",
              flush=True)  # fmt: skip
    # the large-dimension limit
    for nodes in (8, 16, 32, 64) if not args.tiny else (8,):
        lim = tsjax.HiddenManifold.limit(0.5, "sign", nodes=nodes)
        op_l = tsjax.order_params(st, te, inputs=lim)

        def run(op_l=op_l, lim=lim):
            return float(tsjax.solve_ode(op_l, inputs=lim, lr=0.5, alphas=al).eg[-1])

        run()
        t, e = _best(run)
        print(f"limit delta=0.5, {nodes:3d} nodes: {1e3 * t:.1f} ms warm, eps_g({a_max:g}) "
              f"= {e:.10f}", flush=True)  # fmt: skip
    n_d = 8 if args.tiny else 64
    deltas = list(np.geomspace(0.2, 5.0, n_d))
    t0 = time.perf_counter()
    ds = tsjax.sweep(K=2, M=1, lr=0.5, alphas=al, N=1000, init_scale=0.1, delta=deltas,
                     feature_map="sign", hmm_nodes=32)  # fmt: skip
    e = ds.eg.values[:, -1]
    print(f"tsjax.sweep over {n_d} values of delta in the limit (32 nodes, compilation "
          f"included): {time.perf_counter() - t0:.1f} s; eps_g({a_max:g}) from {e.min():.4f} to "
          f"{e.max():.4f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
