"""The RL perceptron (issue #23, first part): the "sign" activation and the ODE of the
episodic reward-modulated rule.

Independent references: the exact integration in ../shared/reference/rlp (scipy DOP853 at
rtol 1e-12, another implementation of the ODE) and its independent simulation (8 seeds,
D = 2000); Hebbian learning (T = 1, penalty = lr) in closed form; the trapping at a large
penalty stated in the issue (T = 4, lr = 1: learning for penalty <= 0.75, error ~0.42 for 1).
"""

from pathlib import Path

import jax
import numpy as np
import pytest

import tsjax

REF = Path(__file__).resolve().parents[2] / "shared" / "reference" / "rlp"
OP0 = tsjax.OrderParams(Q=[[1.0]], R=[[0.0]], T=[[1.0]], v=[1.0], v_star=[1.0])


def test_ode_against_the_exact_reference_integration_and_the_simulation():
    ref = np.loadtxt(REF / "T4_all_penalty0.5_ode.csv", delimiter=",", skiprows=1)
    rule = tsjax.RLPerceptron(episode_length=4, min_correct=None, penalty=0.5)
    tr = tsjax.solve_ode(OP0, activation="sign", rule=rule, lr=1.0, alphas=ref[:, 0],
                         rtol=1e-12, atol=1e-14)  # fmt: skip
    R, Q = np.asarray(tr.R)[:, 0, 0], np.asarray(tr.Q)[:, 0, 0]
    np.testing.assert_allclose(R, ref[:, 1], rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(Q, ref[:, 2], rtol=1e-8)
    err = np.asarray(tsjax.decision_error(tr))
    np.testing.assert_allclose(err, ref[:, 4], atol=1e-8)
    np.testing.assert_allclose(np.asarray(tr.eg), 2 * err, atol=1e-8)  # eps_g of signs
    sim = np.loadtxt(REF / "T4_all_penalty0.5_sim_N2000.csv", delimiter=",", skiprows=1)
    tr_s = tsjax.solve_ode(OP0, activation="sign", rule=rule, lr=1.0, alphas=sim[:, 0])
    err_s = np.asarray(tsjax.decision_error(tr_s))
    # finite-size error: 4 standard errors plus O(1/D) = 1/2000 relative
    assert np.all(np.abs(sim[:, 5] - err_s) <= 4 * sim[:, 6] + 5e-4 * err_s + 1e-12)


def test_hebbian_limit_in_closed_form():
    """T = 1 and penalty = lr: w += (lr / sqrt N) sign(nu) x, so R = R0 + lr sqrt(2/pi) alpha,
    Q = Q0 + 2 lr sqrt(2/pi) (R0 alpha + lr sqrt(2/pi) alpha^2 / 2) + lr^2 alpha."""
    lr, R0, Q0 = 0.7, 0.1, 1.3
    op = tsjax.OrderParams(Q=[[Q0]], R=[[R0]], T=[[1.0]], v=[1.0], v_star=[1.0])
    al = np.array([0.0, 1.0, 5.0, 20.0])
    tr = tsjax.solve_ode(op, activation="sign", rule=tsjax.RLPerceptron(1, penalty=lr), lr=lr,
                         alphas=al, rtol=1e-12, atol=1e-14)  # fmt: skip
    c = lr * np.sqrt(2 / np.pi)
    np.testing.assert_allclose(np.asarray(tr.R)[:, 0, 0], R0 + c * al, rtol=1e-10)
    Q = Q0 + 2 * c * (R0 * al + c * al**2 / 2) + lr**2 * al
    np.testing.assert_allclose(np.asarray(tr.Q)[:, 0, 0], Q, rtol=1e-10)


def test_a_large_penalty_traps_the_student():
    al = np.array([0.0, 100.0, 1000.0])
    errs = {}
    for pen in (0.75, 1.0):
        tr = tsjax.solve_ode(OP0, activation="sign", rule=tsjax.RLPerceptron(4, penalty=pen),
                             lr=1.0, alphas=al)  # fmt: skip
        errs[pen] = np.asarray(tsjax.decision_error(tr))
    assert errs[0.75][-1] < 0.01
    np.testing.assert_allclose(errs[1.0][-2:], 0.4242, atol=2e-3)


def test_bad_input_of_the_rl_perceptron():
    with pytest.raises(ValueError, match="episode_length"):
        tsjax.RLPerceptron(0)
    with pytest.raises(ValueError, match="min_correct"):
        tsjax.RLPerceptron(3, min_correct=4)
    with pytest.raises(ValueError, match="penalty"):
        tsjax.RLPerceptron(3, penalty=-1.0)
    with pytest.raises(ValueError, match="reward: not a parameter"):
        tsjax.RLPerceptron(3, reward=1.0)
    with pytest.raises(ValueError, match="activation: the RL perceptron decides with signs"):
        tsjax.solve_ode(OP0, activation="erf", rule=tsjax.RLPerceptron(2), lr=1.0,
                        alphas=[0.0, 1.0])  # fmt: skip
    op2 = tsjax.OrderParams(np.eye(2), np.ones((2, 1)) * 0.1, [[1.0]], [1.0, 1.0], [1.0])
    with pytest.raises(ValueError, match="rule: the RL perceptron has one unit"):
        tsjax.solve_ode(op2, activation="sign", rule=tsjax.RLPerceptron(2), lr=1.0,
                        alphas=[0.0, 1.0])  # fmt: skip
    with pytest.raises(ValueError, match="'sign' has no derivative"):
        tsjax.solve_ode(OP0, activation="sign", lr=1.0, alphas=[0.0, 1.0])
    st = tsjax.init_student(jax.random.key(0), 50, 1, activation="sign")
    te = tsjax.init_teacher(jax.random.key(1), 50, 1, activation="sign")
    with pytest.raises(ValueError, match="not simulated yet"):
        tsjax.simulate(st, te, jax.random.key(2), rule=tsjax.RLPerceptron(2), lr=1.0,
                       alphas=[0.0, 1.0])  # fmt: skip
