"""Benchmark: a 256-point sweep of the RL perceptron's ODE against plain numpy explicit Euler.

Grid: episode length T in (2, 4, 6, 8) x threshold n in (T/2, T) x penalty in (0, 0.25, 0.5,
1) x lr in 8 values from 0.25 to 2 (256 points), alpha 0 -> 20, 41 save times, from the
sweep's initial networks (K = M = 1, activation "sign", N = 1000, seed 0).

* tsjax: ``tsjax.sweep(..., rule=[tsjax.RLPerceptron(T, n, penalty) ...])`` (one compiled
  group per T, the default solver and tolerances), timed in full (compilation included)
  and again (the compiled groups reused);
* baseline: what the public code does, explicit Euler at step 1/N = 1e-3 (20 000 steps),
  written here in plain numpy and vectorised over all 256 points at once (one numpy
  array operation per term and step, the fastest way to run it in numpy);
* accuracy of both against a tight integration of every point (``solve_ode`` at
  rtol 1e-12): the largest error of the decision error over the grid and the save times.

    python benchmarks/rlp.py [--tiny]
"""

from __future__ import annotations

import argparse
import math
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

import tsjax  # noqa: E402


def tail(m, k, p):
    """P(Binomial(m, p) >= k), numpy, k an integer array."""
    out = np.zeros_like(p)
    for j in range(m + 1):
        out = out + np.where(j >= k, math.comb(m, j) * p**j * (1 - p) ** (m - j), 0.0)
    return out


def euler(Q0, R0, T, n, lr, pen, alphas, h):
    """Explicit Euler of the RL perceptron's ODE (threshold reward, teacher norm 1) for
    arrays of points (T may differ between points: one pass per distinct T)."""
    Q = np.full(lr.shape, Q0)
    R = np.full(lr.shape, R0)
    saves = np.rint(np.asarray(alphas) / h).astype(int)
    out = np.empty((len(alphas),) + lr.shape)
    s2pi = math.sqrt(2 * math.pi)
    groups = [(t, T == t) for t in np.unique(T)]
    i = 0
    for step in range(saves[-1] + 1):
        while i < len(saves) and saves[i] == step:
            out[i] = np.arccos(np.clip(R / np.sqrt(Q), -1, 1)) / np.pi
            i += 1
        if step == saves[-1]:
            break
        rho = np.clip(R / np.sqrt(Q), -1, 1)
        P = 1 - np.arccos(rho) / np.pi
        dQ = np.empty_like(Q)
        dR = np.empty_like(R)
        for t, m in groups:
            p, nn, e, c = P[m], n[m], lr[m], pen[m]
            A1, A0, PR = tail(t - 1, nn - 1, p), tail(t - 1, nn, p), tail(t, nn, p)
            m1 = e * A1 - c * (1 - A1)
            m0 = e * A0 - c * (1 - A0)
            r = rho[m]
            dR[m] = (m1 * (1 + r) - m0 * (1 - r)) / s2pi
            dQ[m] = 2 * np.sqrt(Q[m]) * (m1 * (1 + r) + m0 * (1 - r)) / s2pi
            dQ[m] += (e**2 * PR + c**2 * (1 - PR)) / t
        Q = Q + h * dQ
        R = R + h * dR
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true", help="a seconds-long check (32 points)")
    args = ap.parse_args()
    Ts = (2, 4) if args.tiny else (2, 4, 6, 8)
    pens = (0.0, 0.5) if args.tiny else (0.0, 0.25, 0.5, 1.0)
    lrs = np.linspace(0.25, 2.0, 4 if args.tiny else 8)
    amax = 5.0 if args.tiny else 20.0
    alphas = np.linspace(0.0, amax, 11 if args.tiny else 41)
    N = 1000
    rules = [tsjax.RLPerceptron(episode_length=T, min_correct=n, penalty=p)
             for T in Ts for n in (T // 2, T) for p in pens]  # fmt: skip
    n_points = len(rules) * len(lrs)
    print(f"RL perceptron: {n_points} points (T in {Ts}, n in (T/2, T), penalty in {pens}, "
          f"{len(lrs)} lr), alpha 0 -> {amax:g}, {len(alphas)} save times", flush=True)

    kw = dict(K=1, M=1, activation="sign", lr=list(lrs), rule=rules, alphas=alphas, N=N)
    t0 = time.perf_counter()
    ds = tsjax.sweep(**kw)
    t_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    ds = tsjax.sweep(**kw)
    t_warm = time.perf_counter() - t0
    print(f"  tsjax sweep: {t_first:6.2f} s with compilation ({ds.attrs['n_groups']} groups), "
          f"{t_warm:6.2f} s compiled ({n_points / t_warm:7.1f} points/s)", flush=True)

    st, te, _ = tsjax.sweep_point(K=1, M=1, activation="sign", N=N)
    op0 = tsjax.order_params(st, te)
    Q0, R0 = float(op0.Q[0, 0]), float(op0.R[0, 0])
    grid = np.array([(r.episode_length, r.min_correct, float(r.penalty), lr)
                     for lr in lrs for r in rules])  # fmt: skip  (order: lr, rule)
    T_, n_, pen_, lr_ = grid.T
    h = 1.0 / N
    t0 = time.perf_counter()
    e_euler = euler(Q0, R0, T_.astype(int), n_.astype(int), lr_, pen_, alphas, h)
    t_euler = time.perf_counter() - t0
    print(f"  numpy Euler (step 1/N = {h:g}, {int(round(amax / h))} steps, vectorised over the "
          f"points): {t_euler:6.2f} s ({n_points / t_euler:7.1f} points/s)", flush=True)

    # the tight reference, point by point (one compilation per T, reused)
    ref = np.empty_like(e_euler)
    for j, (lr, r) in enumerate((lr, r) for lr in lrs for r in rules):
        tr = tsjax.solve_ode(op0, activation="sign", rule=r, lr=float(lr), alphas=alphas,
                             rtol=1e-12, atol=1e-14)  # fmt: skip
        ref[:, j] = np.asarray(tsjax.decision_error(tr))
    e_sweep = (ds.eg.transpose("alpha", "lr", "rule").values / 2).reshape(len(alphas), -1)
    print(f"  accuracy against solve_ode at rtol 1e-12, max over points and times of "
          f"|decision error|: tsjax sweep {np.max(np.abs(e_sweep - ref)):.1e}, "
          f"numpy Euler {np.max(np.abs(e_euler - ref)):.1e}")
    print(f"  speed-up: tsjax sweep (compiled) {t_euler / t_warm:5.1f}x numpy Euler, "
          f"with compilation {t_euler / t_first:5.1f}x")


if __name__ == "__main__":
    main()
