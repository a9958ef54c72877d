"""A matrix of bad inputs to every public entry point: each gives a ValueError naming the
parameter, before any computation (no compilation: these tests are fast)."""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import tsjax  # noqa: E402

ALPHAS = np.linspace(0.0, 10.0, 3)


def _op():
    return tsjax.OrderParams(np.eye(2) * 0.5, np.zeros((2, 2)), np.eye(2), np.ones(2), np.ones(2))


def _nets(N=50):
    t = tsjax.init_teacher(jax.random.key(0), N=N, M=2)
    s = tsjax.init_student(jax.random.key(1), N=N, K=2)
    return s, t


def _solve(**kw):
    args = dict(lr=0.5, alphas=ALPHAS)
    args.update(kw)
    return tsjax.solve_ode(_op(), **args)


def _simulate(**kw):
    s, t = _nets()
    args = dict(lr=0.5, alphas=ALPHAS)
    args.update(kw)
    return tsjax.simulate(s, t, jax.random.key(2), **args)


def _chain(**kw):
    args = dict(N=50, lr=0.5, alphas=ALPHAS)
    args.update(kw)
    return tsjax.simulate_order_params(_op(), jax.random.key(2), **args)


def _sweep(**kw):
    args = dict(K=1, M=1, lr=0.5, alphas=ALPHAS, N=50)
    args.update(kw)
    return tsjax.sweep(**args)


CASES = [
    # solve_ode
    ("solve_ode", _solve, dict(lr=-0.1), "lr"),
    ("solve_ode", _solve, dict(lr=float("nan")), "lr"),
    ("solve_ode", _solve, dict(lr=[0.5, 1.0]), "lr"),
    ("solve_ode", _solve, dict(lr="0.5"), "lr"),
    ("solve_ode", _solve, dict(lr=None), "lr"),
    ("solve_ode", _solve, dict(lr_v=-1.0), "lr_v"),
    ("solve_ode", _solve, dict(noise=-0.1), "noise"),
    ("solve_ode", _solve, dict(noise=np.ones(2)), "noise"),
    ("solve_ode", _solve, dict(weight_decay=float("inf")), "weight_decay"),
    ("solve_ode", _solve, dict(alphas=[1.0, 0.5]), "alphas"),
    ("solve_ode", _solve, dict(alphas=[[0.0, 1.0]]), "alphas"),
    ("solve_ode", _solve, dict(alphas=[-1.0, 1.0]), "alphas"),
    ("solve_ode", _solve, dict(alphas=[0.0, np.inf]), "alphas"),
    ("solve_ode", _solve, dict(rtol=-1e-8), "rtol"),
    ("solve_ode", _solve, dict(rtol=2.0), "rtol"),
    ("solve_ode", _solve, dict(atol="x"), "atol"),
    ("solve_ode", _solve, dict(max_steps=0), "max_steps"),
    ("solve_ode", _solve, dict(max_steps=2.5), "max_steps"),
    ("solve_ode", _solve, dict(max_norm=-1.0), "max_norm"),
    ("solve_ode", _solve, dict(activation="nope"), "activation"),
    ("solve_ode", _solve, dict(activation=3), "activation"),
    ("solve_ode", _solve, dict(activation=lambda x: jnp.sqrt(x)), "activation"),
    ("solve_ode", _solve, dict(activation=lambda x: jnp.ones(3)), "activation"),
    ("solve_ode", _solve, dict(throw=1), "throw"),
    ("solve_ode", _solve, dict(lr=tsjax.InverseTime(-1.0, 10.0)), "lr"),
    ("solve_ode", _solve, dict(lr=tsjax.InverseTime(1.0, 0.0)), "lr"),
    # simulate
    ("simulate", _simulate, dict(lr=-0.1), "lr"),
    ("simulate", _simulate, dict(lr=[0.5, 1.0]), "lr"),
    ("simulate", _simulate, dict(lr="0.5"), "lr"),
    ("simulate", _simulate, dict(noise=-1.0), "noise"),
    ("simulate", _simulate, dict(batch_size=0), "batch_size"),
    ("simulate", _simulate, dict(batch_size=1.5), "batch_size"),
    ("simulate", _simulate, dict(alphas=[0.0, -1.0]), "alphas"),
    ("simulate", _simulate, dict(throw=None), "throw"),
    # order-parameter chain
    ("simulate_order_params", _chain, dict(N=3), "N"),
    ("simulate_order_params", _chain, dict(lr=-1.0), "lr"),
    ("simulate_order_params", _chain, dict(lr="1"), "lr"),
    ("simulate_order_params", _chain, dict(weight_decay=-1.0), "weight_decay"),
    # sweep
    ("sweep", _sweep, dict(K=0), "K"),
    ("sweep", _sweep, dict(K="a"), "K"),
    ("sweep", _sweep, dict(K=None), "K"),
    ("sweep", _sweep, dict(M=[1, 1]), "M"),
    ("sweep", _sweep, dict(lr=-0.5), "lr"),
    ("sweep", _sweep, dict(lr="0.5"), "lr"),
    ("sweep", _sweep, dict(lr=[]), "lr"),
    ("sweep", _sweep, dict(noise=float("nan")), "noise"),
    ("sweep", _sweep, dict(seed=-1), "seed"),
    ("sweep", _sweep, dict(N=0), "N"),
    ("sweep", _sweep, dict(alphas=[2.0, 1.0]), "alphas"),
    ("sweep", _sweep, dict(activation="nope"), "activation"),
    ("sweep", _sweep, dict(simulate="yes"), "simulate"),
    ("sweep", _sweep, dict(group_by=("lr",)), "group_by"),
    ("sweep", _sweep, dict(chunk_size=0), "chunk_size"),
    ("sweep", _sweep, dict(init_scale=0.0), "init_scale"),
    ("sweep", _sweep, dict(v0="uniform"), "v0"),
]


@pytest.mark.parametrize(
    "fn, kw, name", [c[1:] for c in CASES], ids=[f"{c[0]}-{c[3]}-{i}" for i, c in enumerate(CASES)]
)
def test_bad_input_names_the_parameter(fn, kw, name):
    with pytest.raises(ValueError, match=rf"^{name}\b|\b{name}:"):
        fn(**kw)


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: tsjax.OrderParams(np.eye(2), np.zeros((3, 2)), np.eye(2), np.ones(2), np.ones(2)),
         "R"),
        (lambda: tsjax.OrderParams(np.eye(2), np.zeros((2, 2)), np.eye(2), np.ones(3), np.ones(2)),
         "v"),
        (lambda: tsjax.generalisation_error(
            tsjax.OrderParams([[1.0]], [[2.0]], [[1.0]], [1.0], [1.0]), "erf"), "Q, R, T"),
        (lambda: tsjax.generalisation_error(_op(), "nope"), "activation"),
        (lambda: tsjax.generalisation_error("op", "erf"), "op"),
        (lambda: tsjax.init_student(jax.random.key(0), N=0, K=2), "N"),
        (lambda: tsjax.init_student(jax.random.key(0), N=10, K=0), "K"),
        (lambda: tsjax.init_teacher(jax.random.key(0), N=10, M=-1), "M"),
        (lambda: tsjax.enable_compilation_cache("/proc/forbidden/cache"), "path"),
        (lambda: tsjax.optimise_schedule(_op(), alpha_max=-1.0, eta_max=1.0), "alpha_max"),
        (lambda: tsjax.optimise_schedule(_op(), alpha_max=10.0, eta_max=0.0), "eta_max"),
    ],
)  # fmt: skip
def test_bad_input_to_constructors_and_helpers(call, name):
    with pytest.raises(ValueError, match=name):
        call()
