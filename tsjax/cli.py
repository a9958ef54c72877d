"""Command line: ``tsjax run`` (the classic Saad-Solla learning curve, ODE vs simulation).

``tsjax run`` with no arguments integrates the order-parameter ODE of an erf soft committee
machine (K = M = 2, eta = 0.5, second layer fixed) and simulates online SGD at N = 1000 for
a few seeds, prints a table and writes a CSV and a PNG into an output folder.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tsjax", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser(
        "run",
        help="ODE vs simulation learning curve (Saad-Solla plateau by default)",
        description=(
            "Integrate the order-parameter ODEs and simulate online SGD of the networks "
            "from the same initial conditions; print a table, write a CSV and a PNG."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    r.add_argument("--K", type=int, default=2, help="student hidden units")
    r.add_argument("--M", type=int, default=2, help="teacher hidden units")
    r.add_argument("--activation", default="erf", help="erf, relu or linear")
    r.add_argument("--lr", type=float, default=0.5, help="first-layer learning rate eta")
    r.add_argument("--lr-v", type=float, default=0.0, help="second-layer learning rate (0: fixed)")
    r.add_argument("--noise", type=float, default=0.0, help="output-noise std sigma")
    r.add_argument("--weight-decay", type=float, default=0.0, help="weight decay kappa")
    r.add_argument("--N", type=int, default=1000, help="input dimension of the simulation")
    r.add_argument("--seeds", type=int, default=4, help="number of simulated seeds")
    r.add_argument("--alpha-max", type=float, default=400.0, help="training time alpha = steps/N")
    r.add_argument(
        "--init-scale",
        type=float,
        default=1.0,
        help="std of the student's initial weights (Q_kk ~ scale^2)",
    )
    r.add_argument("--n-save", type=int, default=81, help="number of save times")
    r.add_argument("--out", default="tsjax-output", help="output folder")
    r.add_argument("--seed", type=int, default=0, help="base random seed")
    r.add_argument("--float32", action="store_true", help="run in float32 (default float64)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "run":
        return run(args)
    return 2  # pragma: no cover


def _check_args(a) -> None:
    for name in ("K", "M", "N", "seeds", "n_save"):
        if getattr(a, name) < 1:
            raise SystemExit(f"tsjax run: --{name.replace('_', '-')} must be >= 1")
    for name in ("lr", "lr_v", "noise", "weight_decay"):
        if getattr(a, name) < 0:
            raise SystemExit(f"tsjax run: --{name.replace('_', '-')} must be >= 0")
    if not a.alpha_max > 0:
        raise SystemExit("tsjax run: --alpha-max must be > 0")


def run(a) -> int:
    _check_args(a)
    import jax

    if not a.float32:
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from tqdm.auto import tqdm

    import tsjax

    t_start = time.perf_counter()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    alphas = np.linspace(0.0, a.alpha_max, a.n_save)
    try:
        act = tsjax.get_activation(a.activation)
    except ValueError as e:
        raise SystemExit(f"tsjax run: {e}") from None

    key = jax.random.key(a.seed)
    k_teacher, k_students, k_sgd = jax.random.split(key, 3)
    teacher = tsjax.init_teacher(k_teacher, a.N, a.M, activation=act)
    students = [
        tsjax.init_student(k, a.N, a.K, activation=act, scale=a.init_scale)
        for k in jax.random.split(k_students, a.seeds)
    ]
    sgd_keys = jax.random.split(k_sgd, a.seeds)
    hyper = dict(lr=a.lr, lr_v=a.lr_v, noise=a.noise, weight_decay=a.weight_decay)

    print(
        f"tsjax run: {act.name}, K={a.K}, M={a.M}, lr={a.lr}, lr_v={a.lr_v}, noise={a.noise}, "
        f"weight_decay={a.weight_decay}, N={a.N}, {a.seeds} seeds, alpha_max={a.alpha_max:g}"
    )
    # The ODE from each seed's exact initial order parameters (one vmapped solve).
    ops = [tsjax.order_params(s, teacher) for s in students]
    op_batch = jax.tree.map(lambda *x: jnp.stack(x), *ops)
    try:
        ode = jax.vmap(lambda op: tsjax.solve_ode(op, activation=act, alphas=alphas, **hyper))(
            op_batch
        )
        if bool(jnp.any(ode.diverged)):
            raise tsjax.DivergenceError(
                f"the ODE diverged at alpha = {float(jnp.min(ode.diverged_at)):.6g}; "
                "try a smaller --lr"
            )
        sims = []
        for s, k in tqdm(list(zip(students, sgd_keys)), desc="simulating seeds", unit="seed"):
            sims.append(tsjax.simulate(s, teacher, k, alphas=alphas, **hyper))
    except tsjax.DivergenceError as e:
        print(f"tsjax run: {e}", file=sys.stderr)
        return 1

    eg_ode = np.asarray(ode.eg)  # (seeds, T)
    eg_sim = np.stack([np.asarray(t.eg) for t in sims])
    ode_mean = eg_ode.mean(0)
    sim_mean = eg_sim.mean(0)
    sim_se = eg_sim.std(0, ddof=1) / np.sqrt(a.seeds) if a.seeds > 1 else np.zeros_like(sim_mean)

    _print_table(alphas, ode_mean, sim_mean, sim_se)
    cols = {"alpha": alphas, "eg_ode_mean": ode_mean, "eg_sim_mean": sim_mean, "eg_sim_se": sim_se}
    for i in range(a.seeds):
        cols[f"eg_ode_seed{i}"] = eg_ode[i]
        cols[f"eg_sim_seed{i}"] = eg_sim[i]
    from ._trajectory import write_csv_atomic

    csv = out / "learning_curves.csv"
    write_csv_atomic(csv, cols)
    jax.tree.map(lambda x: x[0], ode).to_csv(out / "ode_seed0_order_params.csv")
    sims[0].to_csv(out / "sim_seed0_order_params.csv")
    png = out / "learning_curve.png"
    _plot(png, alphas, eg_ode, ode_mean, sim_mean, sim_se, a, act.name)
    print(f"\nwrote {csv}, {png} (and per-seed order parameters) in {out.resolve()}")
    print(f"total time {time.perf_counter() - t_start:.1f} s")
    return 0


def _print_table(alphas, ode_mean, sim_mean, sim_se, rows: int = 12) -> None:
    idx = np.unique(np.linspace(0, len(alphas) - 1, rows).round().astype(int))
    print(f"\n{'alpha':>10}  {'eps_g ODE':>12}  {'eps_g simulation (mean +- s.e.)':>34}")
    for i in idx:
        print(f"{alphas[i]:10.4g}  {ode_mean[i]:12.5e}  {sim_mean[i]:16.5e} +- {sim_se[i]:.2e}")


def _plot(path, alphas, eg_ode, ode_mean, sim_mean, sim_se, a, act_name) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=150)
    for i, e in enumerate(eg_ode):
        ax.plot(
            alphas,
            e,
            color="C0",
            lw=0.6,
            alpha=0.35,
            label="ODE (each seed's initial state)" if i == 0 else None,
        )
    ax.plot(alphas, ode_mean, color="C0", lw=2, label="ODE, mean over seeds")
    ax.errorbar(
        alphas,
        sim_mean,
        yerr=sim_se,
        fmt="o",
        ms=3,
        color="C3",
        capsize=2,
        label=f"simulation N={a.N}, {a.seeds} seeds (mean ± s.e.)",
    )
    ax.set_yscale("log")
    ax.set_xlabel(r"$\alpha$ = steps / N")
    ax.set_ylabel(r"$\epsilon_g$")
    ax.set_title(
        f"{act_name}, K={a.K}, M={a.M}, $\\eta$={a.lr}, $\\eta_v$={a.lr_v}, $\\sigma$={a.noise}"
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = Path(path).with_name("." + Path(path).name + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
