"""One result vocabulary (tsjax.RESULTS) and errors that work eagerly and under jit, vmap and
grad (throw=True), or flagged trajectories (throw=False); bad inputs named clearly."""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import tsjax  # noqa: E402
from tsjax._results import RESULT_NAMES, result_index  # noqa: E402

ALPHAS = np.linspace(0.0, 40.0, 9)
#: erf K = M = 2 with lr = 5 diverges (the student norms pass 10x their scale) near alpha 20.
DIVERGING_LR = 5.0


def _op():
    return tsjax.OrderParams(
        Q=[[0.5, 0.01], [0.01, 0.5]], R=[[1e-3, 0.0], [0.0, 1e-3]], T=np.eye(2),
        v=[1.0, 1.0], v_star=[1.0, 1.0],
    )  # fmt: skip


def _solve_eg(lr, **kw):
    return tsjax.solve_ode(_op(), lr=lr, alphas=ALPHAS, **kw).eg[-1]


def _traced_all(lr, noise, wd, alphas, throw=True):
    return tsjax.solve_ode(_op(), lr=lr, noise=noise, weight_decay=wd, alphas=alphas, throw=throw)


# one compiled program for every traced-input case (lr, noise, weight decay, save times)
_jit_all = jax.jit(lambda lr, n, wd, a: _traced_all(lr, n, wd, a).eg[-1])
_jit_all_flagged = jax.jit(lambda lr, n, wd, a: _traced_all(lr, n, wd, a, throw=False))


def _jit_eg(lr):
    return _jit_all(lr, 0.0, 0.0, jnp.asarray(ALPHAS))


def test_results_enumeration_and_sweep_status_codes():
    assert RESULT_NAMES[0] == "successful" and RESULT_NAMES[1] == "diverged"
    assert len(RESULT_NAMES) == 5
    for i, name in enumerate(RESULT_NAMES):
        assert int(result_index(getattr(tsjax.RESULTS, name))) == i
    tr = tsjax.solve_ode(_op(), lr=0.5, alphas=ALPHAS)
    assert tr.result == tsjax.RESULTS.successful and np.isinf(float(tr.diverged_at))


def test_eager_divergence_names_alpha():
    with pytest.raises(tsjax.DivergenceError, match=r"solve_ode diverged at alpha = [0-9.]+"):
        _solve_eg(DIVERGING_LR)


def test_jit_divergence_raises_and_throw_false_flags():
    with pytest.raises(RuntimeError, match=r"solve_ode diverged at alpha = [0-9.]+"):
        float(_jit_eg(DIVERGING_LR))
    # the compiled function is reused for a valid value, which does not raise
    assert np.isfinite(float(_jit_eg(0.5)))
    tr = _jit_all_flagged(DIVERGING_LR, 0.0, 0.0, jnp.asarray(ALPHAS))
    assert tr.result == tsjax.RESULTS.diverged
    d = float(tr.diverged_at)
    assert 0 < d < ALPHAS[-1]
    assert np.all(np.isnan(np.asarray(tr.eg)[ALPHAS > d]))
    assert np.all(np.isfinite(np.asarray(tr.eg)[ALPHAS < d]))


def test_vmap_raises_for_any_element_or_flags_each():
    lrs = jnp.array([0.5, DIVERGING_LR])
    with pytest.raises(RuntimeError, match=r"batch element 1; 1 of 2 runs failed"):
        np.asarray(jax.vmap(_solve_eg)(lrs))
    tr = jax.vmap(lambda lr: tsjax.solve_ode(_op(), lr=lr, alphas=ALPHAS, throw=False))(lrs)
    assert int(result_index(tr.result)[0]) == 0 and int(result_index(tr.result)[1]) == 1


@pytest.mark.slow
def test_grad_raises_through_divergence_and_passes_through_otherwise():
    g = jax.grad(_solve_eg)(0.5)
    g_nothrow = jax.grad(lambda lr: _solve_eg(lr, throw=False))(0.5)
    assert np.isfinite(float(g)) and float(g) == float(g_nothrow)  # the check adds nothing
    with pytest.raises((tsjax.DivergenceError, RuntimeError), match="diverged"):
        float(jax.grad(_solve_eg)(DIVERGING_LR))


@pytest.mark.parametrize("lr", [-0.5, float("nan"), float("inf")])
def test_traced_bad_rate_is_named_under_jit(lr):
    with pytest.raises(RuntimeError, match=r"invalid lr"):
        float(_jit_eg(lr))


def test_traced_bad_noise_decay_and_alphas_under_jit():
    a = jnp.asarray(ALPHAS)
    with pytest.raises(RuntimeError, match=r"invalid noise"):
        float(_jit_all(0.5, -0.1, 0.0, a))
    with pytest.raises(RuntimeError, match=r"invalid weight_decay"):
        float(_jit_all(0.5, 0.0, -1.0, a))
    with pytest.raises(RuntimeError, match=r"invalid alphas"):
        float(_jit_all(0.5, 0.0, 0.0, a[::-1]))
    tr = _jit_all_flagged(0.5, 0.0, 0.0, a[::-1])
    assert tr.result == tsjax.RESULTS.invalid_input and np.all(np.isnan(np.asarray(tr.eg)))


def test_callable_schedule_checked_on_its_values_eagerly():
    with pytest.raises(ValueError, match=r"invalid lr"):
        tsjax.solve_ode(_op(), lr=lambda a: 0.5 - 0.05 * a, alphas=ALPHAS)  # < 0 from alpha 10
    tr = tsjax.solve_ode(_op(), lr=lambda a: 0.5 - 0.05 * a, alphas=ALPHAS, throw=False)
    assert tr.result == tsjax.RESULTS.invalid_input
    assert 9.0 < float(tr.diverged_at) <= 15.0  # stopped at the first step past alpha = 10


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(lr=[0.5, 1.0]), "lr: expected one number"),
        (dict(lr="0.5"), "lr: expected a number"),
        (dict(lr=0.5, lr_v=None), "lr_v: expected a number"),
        (dict(lr=0.5, noise=[0.1]), "noise: expected one number"),
        (dict(lr=0.5, rtol=-1e-8), "rtol"),
        (dict(lr=0.5, atol=0.0), "atol"),
        (dict(lr=0.5, max_steps=0), "max_steps"),
        (dict(lr=0.5, max_norm=0.5), "max_norm"),
        (dict(lr=0.5, throw="yes"), "throw"),
    ],
)
def test_bad_arguments_named(kw, match):
    with pytest.raises(ValueError, match=match):
        tsjax.solve_ode(_op(), alphas=ALPHAS, **kw)


def test_non_finite_activation_is_an_error_within_seconds():
    def mine(x):
        return jnp.log(x)  # NaN for x < 0

    with pytest.raises(ValueError, match=r"activation: 'mine' returns non-finite values"):
        tsjax.solve_ode(_op(), activation=mine, lr=0.5, alphas=ALPHAS)
    with pytest.raises(ValueError, match=r"activation: 'mine'"):
        tsjax.generalisation_error(_op(), activation=mine)


def test_generalisation_error_of_invalid_state():
    bad = tsjax.OrderParams(Q=[[1.0]], R=[[2.0]], T=[[1.0]], v=[1.0], v_star=[1.0])
    with pytest.raises(ValueError, match="positive semi-definite"):
        tsjax.generalisation_error(bad, activation="relu")


def test_simulators_throw_under_jit_and_flag_with_throw_false():
    N = 200
    alphas = np.linspace(0, 2, 5)
    teacher = tsjax.init_teacher(jax.random.key(0), N=N, M=1)
    student = tsjax.init_student(jax.random.key(1), N=N, K=1)

    def run(lr, throw=True):
        return tsjax.simulate(student, teacher, jax.random.key(2), lr=lr, alphas=alphas,
                              throw=throw)  # fmt: skip

    with pytest.raises(RuntimeError, match=r"simulate: invalid lr"):
        float(jax.jit(lambda lr: run(lr).eg[-1])(-0.5))
    tr = jax.jit(lambda lr: run(lr, throw=False))(-0.5)
    assert tr.result == tsjax.RESULTS.invalid_input and float(tr.diverged_at) == 0.0
    assert np.all(np.isnan(np.asarray(tr.eg)))
    op0 = tsjax.order_params(student, teacher)
    with pytest.raises(RuntimeError, match=r"simulate_order_params: invalid noise"):
        f = jax.jit(lambda s: tsjax.simulate_order_params(
            op0, jax.random.key(3), N=N, lr=0.5, noise=s, alphas=alphas).eg[-1])  # fmt: skip
        float(f(-1.0))
