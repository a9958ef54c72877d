"""Command line: ``tsjax run`` (the classic Saad-Solla learning curve, ODE vs simulation) and
``tsjax sweep`` (a grid of settings from a TOML file).

``tsjax run`` with no arguments integrates the order-parameter ODE of an erf soft committee
machine (K = M = 2, eta = 0.5, second layer fixed) and simulates online SGD at N = 1000 for
a few seeds, prints a table and writes a CSV and a PNG into an output folder.

``tsjax sweep CONFIG.toml --out FILE.nc`` runs ``tsjax.sweep`` on the grid described by
CONFIG.toml and writes the Dataset to FILE.nc (netCDF, atomically). The top-level keys of
the TOML file are the keyword arguments of ``tsjax.sweep`` (a list sweeps a parameter, a
value fixes it)::

    K = [1, 2, 4, 8]              # swept: a dimension of the result
    M = 2                         # fixed
    activation = ["erf", "relu"]
    lr = [0.1, 0.5]
    noise = 0.01
    seed = [0, 1, 2]
    N = 1000                      # input dimension of the initial networks / simulation
    simulate = false              # or true / "network", "order_params"
    group_by = ["activation"]     # optional, see tsjax.sweep
    alphas = { start = 0.0, stop = 1000.0, num = 101 }   # or a list of save times
    # alphas = { start = 0.1, stop = 1e3, num = 41, spacing = "log", include_zero = true }
    precision = "float64"         # or "float32"

(examples/sweep.toml is a complete example.) Finished chunks are kept in FILE.partial/ (one
.npz per chunk, in a subfolder named by a hash of the configuration); rerunning the same
command after an interruption skips them and gives the same result as an uninterrupted
run. The folder is removed once FILE is written.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
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
    r.add_argument(
        "--no-cache",
        action="store_true",
        help="do not use the persistent compilation cache ($TSJAX_CACHE_DIR or ~/.cache/tsjax/jax)",
    )
    w = sub.add_parser(
        "sweep",
        help="run tsjax.sweep on a grid described in a TOML file (resumable)",
        description=(
            "Run the order-parameter ODE (and optionally a simulator) over the grid described "
            "in CONFIG (a TOML file whose keys are the arguments of tsjax.sweep, see "
            "examples/sweep.toml) and write an xarray Dataset to --out (netCDF). Rerunning "
            "after an interruption resumes from the finished chunks kept in OUT.partial/."
        ),
    )
    w.add_argument("config", help="TOML file describing the sweep")
    w.add_argument("--out", required=True, help="output file (.nc: netCDF; .zarr: zarr)")
    w.add_argument("--no-progress", action="store_true", help="no progress bar")
    w.add_argument(
        "--restart", action="store_true", help="discard finished chunks of an earlier run"
    )
    w.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    w.add_argument(
        "--no-cache", action="store_true", help="do not use the persistent compilation cache"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "run":
        return run(args)
    if args.command == "sweep":
        return sweep_command(args)
    return 2  # pragma: no cover


def _check_args(a) -> None:
    for name in ("K", "M", "N", "seeds", "n_save"):
        if getattr(a, name) < 1:
            raise SystemExit(f"tsjax run: --{name.replace('_', '-')} must be >= 1")
    for name in ("lr", "lr_v", "noise", "weight_decay", "init_scale"):
        x = getattr(a, name)
        if not (np.isfinite(x) and x >= 0):
            raise SystemExit(f"tsjax run: --{name.replace('_', '-')} must be finite and >= 0")
    if not (np.isfinite(a.alpha_max) and a.alpha_max > 0):
        raise SystemExit("tsjax run: --alpha-max must be finite and > 0")


_RUN_FILES = (
    "learning_curves.csv",
    "ode_seed0_order_params.csv",
    "sim_seed0_order_params.csv",
    "learning_curve.png",
)


def _writable_folder(folder: Path, who: str) -> None:
    """SystemExit unless ``folder`` (or its first existing ancestor) is a writable folder."""
    p = folder.resolve()
    while not p.exists():
        p = p.parent
    if not p.is_dir():
        raise SystemExit(f"{who}: cannot create {folder}: {p} is a file, not a folder")
    if not os.access(p, os.W_OK | os.X_OK):
        raise SystemExit(f"{who}: the folder {p} is not writable")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".tsjax-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise SystemExit(f"{who}: cannot write in {folder}: {e.strerror or e}") from None


def _prepare_folder(out: Path, who: str) -> None:
    if out.exists() and not out.is_dir():
        raise SystemExit(f"{who}: --out {out} is a file; --out names the output folder")
    _writable_folder(out, who)


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
    _prepare_folder(out, "tsjax run")
    existing = [n for n in _RUN_FILES if (out / n).exists()]
    if existing:
        print(f"tsjax run: replacing {', '.join(existing)} in {out}")
    if not a.no_cache:
        tsjax.enable_compilation_cache()
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
        ode = jax.vmap(
            lambda op: tsjax.solve_ode(op, activation=act, alphas=alphas, throw=False, **hyper)
        )(op_batch)
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


# --------------------------------------------------------------------------------------
# tsjax sweep
# --------------------------------------------------------------------------------------

_SWEEP_KEYS = (
    "K",
    "M",
    "lr",
    "lr_v",
    "noise",
    "weight_decay",
    "activation",
    "init_scale",
    "seed",
    "alphas",
    "N",
    "v0",
    "v_star",
    "simulate",
    "ode",
    "batch_size",
    "rtol",
    "atol",
    "max_steps",
    "max_norm",
    "group_by",
    "chunk_size",
    "vmap_size",
)


def _load_toml(path: str) -> dict:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise SystemExit(f"tsjax sweep: config file {path!r} not found") from None
    except tomllib.TOMLDecodeError as e:
        raise SystemExit(f"tsjax sweep: {path}: invalid TOML: {e}") from None


def _alphas_from(spec) -> np.ndarray:
    if isinstance(spec, list):
        try:
            return np.asarray(spec, dtype=np.float64)
        except (TypeError, ValueError):
            raise SystemExit("tsjax sweep: alphas: a list of save times must hold numbers") from (
                None
            )
    if not isinstance(spec, dict):
        raise SystemExit("tsjax sweep: alphas must be a list or a table {start, stop, num}")
    unknown = set(spec) - {"start", "stop", "num", "spacing", "include_zero"}
    if unknown:
        raise SystemExit(f"tsjax sweep: alphas: unknown keys {sorted(unknown)}")
    try:
        start, stop, num = spec["start"], spec["stop"], spec["num"]
    except KeyError as e:
        raise SystemExit(f"tsjax sweep: alphas: missing key {e}") from None
    for name, x in (("start", start), ("stop", stop)):
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not np.isfinite(x):
            raise SystemExit(f"tsjax sweep: alphas: {name} must be a finite number, got {x!r}")
    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        raise SystemExit(f"tsjax sweep: alphas: num must be an integer >= 1, got {num!r}")
    start, stop = float(start), float(stop)
    spacing = spec.get("spacing", "linear")
    if spacing == "linear":
        a = np.linspace(start, stop, num)
    elif spacing == "log":
        if not start > 0:
            raise SystemExit("tsjax sweep: alphas: log spacing needs start > 0")
        a = np.geomspace(start, stop, num)
    else:
        raise SystemExit(f"tsjax sweep: alphas: spacing must be 'linear' or 'log', not {spacing!r}")
    if spec.get("include_zero", False) and a[0] != 0:
        a = np.concatenate([[0.0], a])
    return a


def read_sweep_config(path: str) -> tuple[dict, str]:
    """(keyword arguments of tsjax.sweep, precision) from a TOML file (see the module
    docstring); SystemExit with a message naming the problem otherwise."""
    cfg = _load_toml(path)
    precision = cfg.pop("precision", "float64")
    if precision not in ("float64", "float32"):
        raise SystemExit("tsjax sweep: precision must be 'float64' or 'float32'")
    unknown = sorted(set(cfg) - set(_SWEEP_KEYS))
    if unknown:
        raise SystemExit(
            f"tsjax sweep: {path}: unknown keys {unknown}; allowed: {', '.join(_SWEEP_KEYS)}, "
            "precision"
        )
    for key in ("K", "lr", "alphas"):
        if key not in cfg:
            raise SystemExit(f"tsjax sweep: {path}: missing required key {key!r}")
    cfg["alphas"] = _alphas_from(cfg["alphas"])
    if "group_by" in cfg:
        g = cfg["group_by"]
        g = [g] if isinstance(g, str) else g
        if not isinstance(g, list) or not all(isinstance(x, str) for x in g):
            raise SystemExit(
                f"tsjax sweep: group_by must be a name or a list of names among K, M, "
                f"activation, got {cfg['group_by']!r}"
            )
        cfg["group_by"] = g
    return cfg, precision


def _lock(out: Path):
    """An exclusive lock on ``OUT.lock`` for the duration of a sweep (released when the
    process ends, however it ends): a second ``tsjax sweep`` on the same --out stops at once
    instead of computing everything again."""
    import fcntl

    path = Path(str(out) + ".lock")
    f = open(path, "a+")  # noqa: SIM115 - kept open while the sweep runs
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise SystemExit(
            f"tsjax sweep: another tsjax sweep is writing {out} (it holds {path}); wait for it "
            "to finish or choose another --out"
        ) from None
    return f


def sweep_command(a) -> int:
    import hashlib
    import json
    import shutil

    kwargs, precision = read_sweep_config(a.config)
    out = Path(a.out)
    # Output problems are found before any work.
    zarr = str(out).rstrip("/").endswith(".zarr")
    if out.is_dir() and not zarr:
        raise SystemExit(f"tsjax sweep: --out {out} is a folder; name the output file")
    if out.exists() and not a.overwrite:
        raise SystemExit(
            f"tsjax sweep: {out} exists; pass --overwrite to replace it, or choose another --out"
        )
    _writable_folder(out.parent if str(out.parent) else Path("."), "tsjax sweep")
    import jax

    jax.config.update("jax_enable_x64", precision == "float64")
    from ._sweep import STATUS, save_sweep, sweep

    if not a.no_cache:
        from ._cache import enable_compilation_cache

        enable_compilation_cache()
    key = json.dumps(
        {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in kwargs.items()},
        sort_keys=True,
        default=str,
    )
    h = hashlib.sha256((key + precision).encode()).hexdigest()[:16]
    partial_root = Path(str(out) + ".partial")
    partial = partial_root / h
    lock = _lock(out)
    try:
        if a.restart and partial_root.exists():
            shutil.rmtree(partial_root)
        n_done = len(list(partial.glob("chunk-*.npz"))) if partial.exists() else 0
        if n_done:
            print(f"tsjax sweep: resuming from {n_done} finished chunks in {partial}")
        t0 = time.perf_counter()
        try:
            ds = sweep(**kwargs, resume_dir=partial, progress=not a.no_progress)
        except (ValueError, TypeError) as e:
            print(f"tsjax sweep: {e}", file=sys.stderr)
            return 2
        save_sweep(ds, out)
        shutil.rmtree(partial_root, ignore_errors=True)
    finally:
        Path(lock.name).unlink(missing_ok=True)
        lock.close()
    var = "status" if "status" in ds else "status_sim"
    status = np.asarray(ds[var]).ravel()
    counts = ", ".join(f"{int(np.sum(status == c))} {name}" for c, name in STATUS.items())
    dims = ", ".join(f"{d}={n}" for d, n in ds[var].sizes.items()) or "a single point"
    print(
        f"tsjax sweep: {status.size} points ({dims}): {counts}; "
        f"{time.perf_counter() - t0:.1f} s; wrote {out}"
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
