"""Quadrature activations inside the ODE, the simulator, sweeps and gradients (float64).

* tanh (and, marked slow, the logistic sigmoid): the ODE against the full network
  simulator at N = 1000 over 8 seeds, each ODE started from its seed's exact initial order
  parameters (the pattern and tolerance of tests/test_ode_vs_simulation.py);
* a user function given as a Python lambda, erf(x / sqrt 2) written by hand, reproduces
  the closed-form "erf" trajectory through the plateau;
* jax.grad through solve_ode with tanh (with respect to the learning rate) against a
  central finite difference;
* tanh and erf in one tsjax.sweep call equal the single solve_ode calls.
"""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import tsjax  # noqa: E402
from tests.test_ode_vs_simulation import (  # noqa: E402
    assert_within_finite_size_error,
    run_pair,
)


@pytest.mark.slow  # suite time; tanh's ODE against the chain and quadrature stay default
def test_tanh_ode_against_simulation():
    """tanh, K = M = 2, eta = 0.5, second layer fixed: the quadrature ODE (default nodes)
    follows the finite-N networks."""
    alphas = np.linspace(0, 20, 11)
    eg_sim, eg_ode = run_pair("tanh", 2, 2, alphas, lr=0.5)
    assert_within_finite_size_error(eg_sim, eg_ode)
    assert eg_ode[:, -1].mean() < 0.9 * eg_ode[:, 0].mean()  # it did learn


@pytest.mark.slow
def test_sigmoid_ode_against_simulation_both_layers():
    """Logistic sigmoid, K = 3 > M = 2, both layers trained, output noise 0.1."""
    alphas = np.linspace(0, 20, 11)
    eg_sim, eg_ode = run_pair("sigmoid", 3, 2, alphas, lr=0.5, lr_v=0.5, noise=0.1)
    assert_within_finite_size_error(eg_sim, eg_ode)


def _initial_state(K, M, seed=0, n=500):
    rng = np.random.default_rng(seed)
    W, Ws = rng.standard_normal((K, n)), rng.standard_normal((M, n))
    return tsjax.OrderParams(W @ W.T / n, W @ Ws.T / n, Ws @ Ws.T / n, np.ones(K), np.ones(M))


#: erf(x / sqrt 2) by hand: with the wide trapezoidal rule and these nodes the integrals
#: of erf are exact to ~4e-11 (I4 blocks, absolute) on ODE-like covariances, the joint rule
#: of the contracted I4 sums to ~1e-10 relative (tests/test_quadrature.py); parity halves
#: the cost.
MYERF_OPTIONS = dict(
    rule="trapezoid", nodes=48, nodes_i4=(32, 28, 24, 20), nodes_joint=40, parity="odd"
)


@pytest.mark.slow
def test_lambda_activation_reproduces_erf_through_the_plateau():
    """A user lambda (quadrature) = the closed-form erf trajectory to 1e-8 relative in eg,
    K = M = 2, eta = 0.5, through the plateau (alpha up to 100)."""
    myerf = tsjax.Activation(
        lambda x: jax.scipy.special.erf(x / jnp.sqrt(2.0)), name="myerf", **MYERF_OPTIONS
    )
    assert myerf.name == "myerf" and not myerf.closed_form
    op0 = _initial_state(2, 2)
    alphas = np.linspace(0, 100, 21)
    ref = tsjax.solve_ode(op0, activation="erf", lr=0.5, alphas=alphas)
    got = tsjax.solve_ode(op0, activation=myerf, lr=0.5, alphas=alphas)
    eg_ref, eg = np.asarray(ref.eg), np.asarray(got.eg)
    assert eg_ref[-1] < 0.8 * eg_ref[0]  # the run is long enough to matter
    np.testing.assert_allclose(eg, eg_ref, rtol=1e-8, atol=0)


@pytest.mark.slow  # suite time
def test_lambda_activation_reproduces_erf_short():
    """The same, fast: K = M = 1 (3 I4 blocks instead of 30), alpha up to 10."""
    myerf = tsjax.Activation(
        lambda x: jax.scipy.special.erf(x / jnp.sqrt(2.0)), name="myerf", **MYERF_OPTIONS
    )
    op0 = _initial_state(1, 1)
    alphas = np.linspace(0, 10, 6)
    ref = tsjax.solve_ode(op0, activation="erf", lr=0.5, alphas=alphas)
    got = tsjax.solve_ode(op0, activation=myerf, lr=0.5, alphas=alphas)
    np.testing.assert_allclose(np.asarray(got.eg), np.asarray(ref.eg), rtol=1e-8, atol=0)


def _check_lr_gradient(solver, rtol, atol):
    op0 = _initial_state(2, 2, seed=3)
    alphas = np.linspace(0, 2, 3)
    # coarse nodes (cost): the derivative is that of the computed quadrature sum, so the
    # check does not depend on the accuracy of the integrals
    tanh = tsjax.Tanh(nodes=20, nodes_i4=8)

    def final_eg(lr):
        traj = tsjax.solve_ode(op0, activation=tanh, lr=lr, alphas=alphas, rtol=rtol,
                               atol=atol, solver=solver)  # fmt: skip
        return traj.eg[-1]

    lr = 0.5
    g = float(jax.jit(jax.grad(final_eg))(lr))
    h = 1e-4
    f = jax.jit(final_eg)
    fd = (float(f(lr + h)) - float(f(lr - h))) / (2 * h)
    assert g != 0.0
    assert abs(g - fd) <= 1e-5 * abs(fd), (g, fd)


@pytest.mark.slow
def test_gradient_with_respect_to_lr_through_tanh():
    """jax.grad of the final eg (tanh, quadrature) with respect to lr = a central finite
    difference to 1e-5 relative. An explicit solver (Tsit5): reverse mode then needs the
    first derivatives of the integrals only (cheap to compile)."""
    import diffrax

    _check_lr_gradient(diffrax.Tsit5(), 1e-11, 1e-13)


@pytest.mark.slow
def test_gradient_with_respect_to_lr_through_tanh_default_solver():
    """The same with the default Rosenbrock solver, whose Jacobian makes reverse mode
    differentiate the integrals twice (minutes of compilation)."""
    _check_lr_gradient(None, 1e-11, 1e-13)


@pytest.mark.slow  # switching (erf/linear) and padding are covered in tests/test_sweep.py
def test_sweep_with_tanh_and_erf_equals_single_calls():
    """One sweep call over a closed-form and a quadrature activation (switched in one
    compiled program) = the single solve_ode calls to 1e-10."""
    alphas = np.linspace(0.0, 5.0, 3)
    tanh = tsjax.Tanh(nodes=24, nodes_i4=10)  # coarse nodes (cost): the check is exactness
    ds = tsjax.sweep(K=[2], M=2, activation=["erf", tanh], lr=0.5, alphas=alphas, N=200,
                     seed=[0])  # fmt: skip
    assert (ds.status.values == 0).all()
    assert list(ds.activation.values) == ["erf", "tanh"]
    for act in ("erf", tanh):
        pt = ds.sel(K=2, activation=tsjax.get_activation(act).name, seed=0)
        s, t, _ = tsjax.sweep_point(K=2, M=2, seed=0, N=200, activation=act)
        op0 = tsjax.order_params(s, t)
        tr = tsjax.solve_ode(op0, activation=act, lr=0.5, alphas=alphas)
        np.testing.assert_allclose(np.asarray(pt.eg), np.asarray(tr.eg), rtol=1e-10, atol=1e-15)
        np.testing.assert_allclose(np.asarray(pt.Q), np.asarray(tr.Q[-1]), rtol=1e-10,
                                   atol=1e-15)  # fmt: skip
        np.testing.assert_allclose(np.asarray(pt.R), np.asarray(tr.R[-1]), rtol=1e-10,
                                   atol=1e-15)  # fmt: skip
