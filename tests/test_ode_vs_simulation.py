"""The N -> infinity ODE against online SGD of the real networks at finite N.

For each seed the ODE starts from that seed's exact initial order parameters, so that the
difference sim - ODE measures only the finite-N effects: fluctuations of order N^(-1/2) per
seed (estimated by the standard error over seeds of the per-seed differences) and a
systematic bias of order 1/N (the O(eta^2/N) terms dropped in the ODE). We require

    |mean_seeds(eg_sim - eg_ODE)| <= 4 s.e. + (C/N) eg_ODE,   C = 10,

at every save time, i.e. a 4-sigma test of the fluctuations plus a generous 1/N bias budget.
"""

import jax
import numpy as np
import pytest

import tsjax

N = 1000
SEEDS = 8


def run_pair(activation, K, M, alphas, seed=0, **hyper):
    k_teacher, k_students, k_sgd = jax.random.split(jax.random.key(seed), 3)
    teacher = tsjax.init_teacher(k_teacher, N, M, activation=activation)
    eg_sim, eg_ode = [], []
    for ks, kg in zip(jax.random.split(k_students, SEEDS), jax.random.split(k_sgd, SEEDS)):
        student = tsjax.init_student(ks, N, K, activation=activation)
        op0 = tsjax.order_params(student, teacher)
        eg_ode.append(
            np.asarray(tsjax.solve_ode(op0, activation=activation, alphas=alphas, **hyper).eg)
        )
        eg_sim.append(np.asarray(tsjax.simulate(student, teacher, kg, alphas=alphas, **hyper).eg))
    return np.stack(eg_sim), np.stack(eg_ode)


def assert_within_finite_size_error(eg_sim, eg_ode, C=10.0):
    diff = eg_sim - eg_ode
    mean = diff.mean(0)
    se = diff.std(0, ddof=1) / np.sqrt(diff.shape[0])
    tol = 4 * se + C / N * eg_ode.mean(0)
    assert np.all(np.abs(mean) <= tol), (mean, tol)


def test_erf_plateau_soft_committee_machine():
    """Saad-Solla: erf, K = M = 2, eta = 0.5, v = v* = 1 fixed, through the plateau."""
    alphas = np.linspace(0, 250, 26)
    eg_sim, eg_ode = run_pair("erf", 2, 2, alphas, lr=0.5)
    assert_within_finite_size_error(eg_sim, eg_ode)
    plateau = (alphas >= 40) & (alphas <= 100)
    h_sim, h_ode = eg_sim[:, plateau].mean(), eg_ode[:, plateau].mean()
    assert abs(h_sim / h_ode - 1) < 0.02  # the plateau height within 2%
    assert 0.012 < h_ode < 0.02


def test_erf_both_layers_with_noise_overparameterised():
    """Goldt et al. 2019: erf, K = 4 > M = 2, both layers trained, output noise 0.1."""
    alphas = np.linspace(0, 40, 11)
    eg_sim, eg_ode = run_pair("erf", 4, 2, alphas, lr=0.5, lr_v=0.5, noise=0.1)
    assert_within_finite_size_error(eg_sim, eg_ode)


@pytest.mark.slow
def test_relu():
    alphas = np.linspace(0, 40, 11)
    eg_sim, eg_ode = run_pair("relu", 2, 2, alphas, lr=0.3)
    assert_within_finite_size_error(eg_sim, eg_ode)


def test_linear():
    alphas = np.linspace(0, 15, 16)
    eg_sim, eg_ode = run_pair("linear", 2, 2, alphas, lr=0.3, lr_v=0.3)
    assert_within_finite_size_error(eg_sim, eg_ode)


@pytest.mark.slow
def test_erf_plateau_long_many_seeds():
    """The full escape and convergence (alpha up to 500) with the default 8 seeds."""
    alphas = np.linspace(0, 500, 51)
    eg_sim, eg_ode = run_pair("erf", 2, 2, alphas, seed=1, lr=0.5)
    assert_within_finite_size_error(eg_sim, eg_ode)
