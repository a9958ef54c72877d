"""Finite training sets: exact gradient-descent curves of linear models and the epoch-wise
double descent of Pezeshki et al. (2022).

Independent references: explicit gradient descent (numpy loop) on sampled datasets; the
matrix exponential (scipy) for gradient flow; the proportional-limit formula of ridge
regression against exact ridge errors averaged over datasets (finite-size error ~d^-1/2).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

import tsjax


def _gd_numpy(X, y, teacher, S, steps, lr, l2=0.0):
    w = np.zeros(X.shape[1])
    out = []
    for k in range(int(steps[-1]) + 1):
        if k in set(steps.tolist()):
            e = w - teacher
            out.append(e @ S @ e)
        w = w - lr * (X.T @ (X @ w - y) + l2 * w)
    return np.array(out)


@pytest.mark.parametrize(
    "n, d, l2, sigma", [(130, 100, 0.0, 0.0), (60, 100, 0.0, 0.3), (80, 50, 0.05, 0.5)]
)
def test_exact_curve_equals_explicit_gradient_descent(n, d, l2, sigma):
    F = tsjax.two_scale_modulation(d, d // 2, 10.0)
    task = tsjax.sample_linear_task(jax.random.key(n + d), n, F, sigma=sigma)
    X, y = np.asarray(task.X), np.asarray(task.y)
    S, ws = np.asarray(task.input_cov), np.asarray(task.teacher)
    lr = 1.0 / np.linalg.eigvalsh(X.T @ X + l2 * np.eye(d)).max()
    steps = np.array([0, 1, 7, 50, 400, 2000])
    E = tsjax.linear_gd_error(X, y, teacher=ws, input_cov=S, times=steps, lr=lr, l2=l2)
    np.testing.assert_allclose(E, _gd_numpy(X, y, ws, S, steps, lr, l2), rtol=1e-10)
    # gradient flow against the matrix exponential
    t = np.array([0.0, 0.3, 5.0, 400.0])
    E = tsjax.linear_gd_error(X, y, teacher=ws, input_cov=S, times=t, l2=l2)
    A = X.T @ X + l2 * np.eye(d)
    ref = []
    for ti in t:
        # w(t) = int_0^t exp(-A s) ds X^T y, from the augmented exponential
        M = np.zeros((d + 1, d + 1))
        M[:d, :d] = -A
        M[:d, d] = X.T @ y
        w = scipy.linalg.expm(M * ti)[:d, d]
        ref.append((w - ws) @ S @ (w - ws))
    np.testing.assert_allclose(E, ref, rtol=1e-8, atol=1e-13)


def test_batched_over_datasets_with_vmap():
    F = tsjax.two_scale_modulation(30, 10, 5.0)
    tasks = [tsjax.sample_linear_task(jax.random.key(i), 40, F, sigma=0.1) for i in range(3)]
    X = jnp.stack([t.X for t in tasks])
    y = jnp.stack([t.y for t in tasks])
    ws = jnp.stack([t.teacher for t in tasks])
    times = np.geomspace(0.1, 1e4, 7)
    E = jax.vmap(
        lambda X_, y_, w_: tsjax.linear_gd_error(
            X_, y_, teacher=w_, input_cov=tasks[0].input_cov, times=times
        )
    )(X, y, ws)
    for i, t in enumerate(tasks):
        one = tsjax.linear_gd_error(t.X, t.y, teacher=t.teacher, input_cov=t.input_cov,
                                    times=times)  # fmt: skip
        np.testing.assert_allclose(E[i], one, rtol=1e-12)


def _extrema(m):
    """Indices of the first interior local minimum and the following maximum."""
    i = next(k for k in range(1, len(m) - 1) if m[k] < m[k - 1] and m[k] <= m[k + 1])
    j = i + int(np.argmax(m[i:]))
    return i, j


def test_paper_figure_1_epoch_wise_double_descent():
    """n = 130, d = 100, p = 70, kappa = 100, sigma = 0, averaged over 200 datasets: a first
    minimum, then a maximum, then a second descent below the first minimum."""
    F = tsjax.two_scale_modulation(100, 70, 100.0)
    t = np.concatenate([[0.0], np.geomspace(0.05, 1e7, 60)])
    m, se = (np.asarray(x) for x in tsjax.linear_gd_average(jax.random.key(0), 130, F,
                                                             times=t, n_datasets=200))  # fmt: skip
    i, j = _extrema(m)
    assert m[j] - m[i] > 10 * np.hypot(se[i], se[j]), (m[i], m[j])
    assert m[-1] < 0.1 * m[i]
    # the order parameters of one dataset add up to E, and split into fast + slow parts
    task = tsjax.sample_linear_task(jax.random.key(1), 130, F)
    op = tsjax.linear_gd_order_params(task, times=t[:10], fast=70)
    E = tsjax.linear_gd_error(task.X, task.y, teacher=task.teacher, input_cov=task.input_cov,
                              times=t[:10])  # fmt: skip
    np.testing.assert_allclose(op["E"], E, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(op["R_fast"] + op["R_slow"], op["R"], rtol=1e-12)


def test_kappa_one_monotone_without_noise_and_u_shaped_with_noise():
    F = tsjax.two_scale_modulation(100, 70, 1.0)
    t = np.concatenate([[0.0], np.geomspace(0.05, 1e5, 40)])
    m, se = (np.asarray(x) for x in tsjax.linear_gd_average(jax.random.key(2), 130, F,
                                                             times=t, n_datasets=100))  # fmt: skip
    assert np.all(np.diff(m) <= 1e-12), np.diff(m).max()
    m, se = (np.asarray(x) for x in tsjax.linear_gd_average(jax.random.key(3), 130, F,
                                                             times=t, sigma=0.5,
                                                             n_datasets=100))  # fmt: skip
    k = int(np.argmin(m))
    assert 0 < k < len(m) - 1
    assert np.all(np.diff(m[: k + 1]) < 0) and np.all(np.diff(m[k:]) >= -1e-12)
    assert m[-1] - m[k] > 10 * np.hypot(se[k], se[-1])


@pytest.mark.parametrize("d", [200, pytest.param(800, marks=pytest.mark.slow)])
def test_ridge_limit_formula_against_sampled_ridge(d):
    """At t -> infinity with l2 = mu gradient flow is ridge regression, for which the
    proportional-limit formula is exact as n, d -> infinity: sampled averages agree within
    their finite-size error."""
    n, p, kappa = int(1.3 * d), int(0.7 * d), 10.0
    F = tsjax.two_scale_modulation(d, p, kappa)
    f = np.diag(np.asarray(F))
    for mu, sigma in ((0.05, 0.0), (0.5, 0.3)):
        m, se = tsjax.linear_gd_average(jax.random.key(4), n, F, times=[1e12], l2=mu,
                                        sigma=sigma, n_datasets=20)  # fmt: skip
        lim = tsjax.linear_gd_error_limit([1e300], n=n, eigenvalues=f**2 / d,
                                          teacher_energy=np.full(d, 1.0 / d), l2=mu,
                                          sigma=sigma)  # fmt: skip
        # mean over datasets: statistical error se; finite-size bias O(1/d)
        assert abs(float(m[0]) - float(lim[0])) < 4 * float(se[0]) + 2.0 / d * float(lim[0])


def test_bad_input_of_finite_training_sets():
    with pytest.raises(ValueError, match="kappa"):
        tsjax.two_scale_modulation(10, 5, 0.0)
    with pytest.raises(ValueError, match="d: expected an integer >= 1"):
        tsjax.two_scale_modulation(0, 0, 2.0)
    with pytest.raises(ValueError, match="p: expected"):
        tsjax.two_scale_modulation(10, 11, 2.0)
    F = tsjax.two_scale_modulation(10, 5, 2.0)
    with pytest.raises(ValueError, match="n: expected an integer >= 1"):
        tsjax.sample_linear_task(jax.random.key(0), 0, F)
    task = tsjax.sample_linear_task(jax.random.key(0), 8, F)
    kw = dict(teacher=task.teacher, input_cov=task.input_cov)
    with pytest.raises(ValueError, match="y: expected shape"):
        tsjax.linear_gd_error(task.X, task.y[:3], times=[1.0], **kw)
    with pytest.raises(ValueError, match="teacher: expected shape"):
        tsjax.linear_gd_error(task.X, task.y, teacher=task.teacher[:3],
                              input_cov=task.input_cov, times=[1.0])  # fmt: skip
    with pytest.raises(ValueError, match="l2"):
        tsjax.linear_gd_error(task.X, task.y, times=[1.0], l2=-1.0, **kw)
    with pytest.raises(ValueError, match="lr"):
        tsjax.linear_gd_error(task.X, task.y, times=[1.0], lr=0.0, **kw)
    with pytest.raises(ValueError, match="times"):
        tsjax.linear_gd_error(task.X, task.y, times=[1.5], lr=0.1, **kw)
    with pytest.raises(ValueError, match="times"):
        tsjax.linear_gd_error(task.X, task.y, times=[-1.0], **kw)
