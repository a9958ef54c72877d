"""Bad input gets a ValueError naming the parameter; a diverging run says where."""

import numpy as np
import pytest

import tsjax


def scm_state(K=2, M=2):
    return tsjax.OrderParams(
        0.5 * np.eye(K), 1e-3 * np.ones((K, M)), np.eye(M), np.ones(K), np.ones(M)
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(Q=np.zeros((0, 0)), R=np.zeros((0, 2)), v=np.zeros(0)), "K"),
        (dict(T=np.zeros((0, 0)), R=np.zeros((2, 0)), v_star=np.zeros(0)), "M"),
        (dict(R=np.zeros((2, 3))), "R"),
        (dict(v=np.ones(3)), "v"),
        (dict(v_star=np.ones(3)), "v_star"),
        (dict(Q=np.ones((2, 3))), "Q"),
        (dict(T=np.ones(2)), "T"),
    ],
)
def test_order_params_shapes(kwargs, match):
    base = dict(Q=np.eye(2), R=np.zeros((2, 2)), T=np.eye(2), v=np.ones(2), v_star=np.ones(2))
    base.update(kwargs)
    with pytest.raises(ValueError, match=match):
        tsjax.OrderParams(**base)


def test_not_positive_definite_is_rejected():
    # |R| > sqrt(Q T): not a Gram matrix
    op = tsjax.OrderParams(np.eye(2), 2.0 * np.eye(2), np.eye(2), np.ones(2), np.ones(2))
    with pytest.raises(ValueError, match="positive semi-definite"):
        op.validate()
    with pytest.raises(ValueError, match="positive semi-definite"):
        tsjax.solve_ode(op, lr=0.5, alphas=[0.0, 1.0])


def test_asymmetric_and_nonpositive_diagonal():
    with pytest.raises(ValueError, match="Q"):
        tsjax.OrderParams(
            [[1.0, 0.5], [0.0, 1.0]], np.zeros((2, 2)), np.eye(2), np.ones(2), np.ones(2)
        ).validate()
    with pytest.raises(ValueError, match="T"):
        tsjax.OrderParams(
            np.eye(2), np.zeros((2, 2)), -np.eye(2), np.ones(2), np.ones(2)
        ).validate()


def test_unknown_activation():
    with pytest.raises(ValueError, match="activation.*'sigmoidal'"):
        tsjax.get_activation("sigmoidal")
    with pytest.raises(ValueError, match="activation"):
        tsjax.solve_ode(scm_state(), activation="sigmoidal", lr=0.5, alphas=[0, 1])
    with pytest.raises(ValueError, match="activation"):
        tsjax.generalisation_error(scm_state(), activation=3)


@pytest.mark.parametrize("name", ["lr", "lr_v", "noise", "weight_decay"])
def test_negative_hyperparameters(name):
    kwargs = dict(lr=0.5)
    kwargs[name] = -0.1
    with pytest.raises(ValueError, match=name):
        tsjax.solve_ode(scm_state(), alphas=[0.0, 1.0], **kwargs)


@pytest.mark.parametrize("alphas", [[1.0, 0.5], [[0.0, 1.0]], [], [-1.0, 1.0], [0.0, np.nan]])
def test_bad_alphas(alphas):
    with pytest.raises(ValueError, match="alphas"):
        tsjax.solve_ode(scm_state(), lr=0.5, alphas=alphas)


def test_ode_divergence_reports_alpha():
    """erf with lr=5: the student norms grow without bound (the units saturate)."""
    with pytest.raises(tsjax.DivergenceError, match=r"diverged at alpha = [0-9.]+"):
        tsjax.solve_ode(scm_state(), lr=5.0, alphas=np.linspace(0, 100, 11))


def test_ode_divergence_under_vmap_is_flagged_not_nan_silently():
    import jax

    op = scm_state()
    alphas = np.linspace(0, 100, 11)
    traj = jax.vmap(lambda lr: tsjax.solve_ode(op, lr=lr, alphas=alphas, throw=False))(
        np.array([0.5, 5.0])
    )
    assert not bool(traj.diverged[0]) and bool(traj.diverged[1])
    assert np.all(np.isfinite(np.asarray(traj.eg[0])))
    div = float(traj.diverged_at[1])
    assert 0 < div < 100
    eg1 = np.asarray(traj.eg[1])
    assert np.all(np.isnan(eg1[alphas > div])) and np.all(np.isfinite(eg1[alphas < div]))
