"""Learning rules beyond plain SGD: adaptive back-propagation and feedback alignment.

Independent references: SGD itself (adaptive back-propagation at beta = 1, and for ReLU at
any beta since Theta(beta x) = Theta(x)); the exact finite-N order-parameter chain and the
network simulator against the ODE (>= 8 seeds, N >= 1000, within the finite-size error of
tests/test_ode_vs_simulation.py); central finite differences for the gradients.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tsjax

from .test_ode_vs_simulation import assert_within_finite_size_error

N = 1000
SEEDS = 8


def _start(K=2, M=2, seed=0, scale=1.0, N=N):
    st, te, key = tsjax.sweep_point(K=K, M=M, N=N, seed=seed, init_scale=scale)
    return st, te, key


def test_adaptive_backprop_at_beta_one_is_sgd():
    st, te, key = _start(scale=1e-2)
    op = tsjax.order_params(st, te)
    al = np.linspace(0.0, 30.0, 7)
    # the vector field to round-off (block-by-block integrals instead of contracted ones)
    field = jax.jit(lambda op_, pb_: tsjax.vector_field(op_, problem=pb_))
    f_a = field(op, tsjax.Problem("erf", lr=0.5, lr_v=0.3))
    f_b = field(op, tsjax.Problem("erf", lr=0.5, lr_v=0.3, rule=tsjax.AdaptiveBackprop(1.0)))
    for x, y in ((f_b.Q, f_a.Q), (f_b.R, f_a.R), (f_b.v, f_a.v)):
        np.testing.assert_allclose(x, y, rtol=1e-13, atol=1e-16)
    # the simulators: g'(1.0 x) is g'(x) bit for bit
    s_a = tsjax.simulate(st, te, key, lr=0.5, alphas=al[:3])
    s_b = tsjax.simulate(st, te, key, lr=0.5, alphas=al[:3], rule=tsjax.AdaptiveBackprop(1.0))
    np.testing.assert_array_equal(s_b.eg, s_a.eg)
    # ReLU: Theta(beta x) = Theta(x), adaptive back-propagation is SGD at every beta
    st_r, te_r, _ = tsjax.sweep_point(K=2, M=1, N=200, activation="relu")
    op_r = tsjax.order_params(st_r, te_r)
    r_a = field(op_r, tsjax.Problem("relu", lr=0.5))
    r_b = field(op_r, tsjax.Problem("relu", lr=0.5, rule=tsjax.AdaptiveBackprop(2.5)))
    np.testing.assert_allclose(r_b.Q, r_a.Q, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(r_b.R, r_a.R, rtol=1e-10, atol=1e-14)


@pytest.mark.slow
def test_rules_ode_against_the_exact_order_parameter_chain():
    """ODE against the exact finite-N chain (8 seeds, N = 1000) for both rules."""
    al = np.linspace(0.0, 10.0, 6)
    rules = {
        "adaptive": (tsjax.AdaptiveBackprop(2.0), dict(lr=0.8)),
        "feedback": (tsjax.FeedbackAlignment(feedback=[1.0, -0.5]), dict(lr=0.8, lr_v=0.5)),
    }
    for rule, hyper in rules.values():
        sims, odes = [], []
        for seed in range(SEEDS):
            st, te, key = _start(seed=seed)
            op = tsjax.order_params(st, te)
            odes.append(np.asarray(tsjax.solve_ode(op, alphas=al, rule=rule, **hyper).eg))
            sims.append(np.asarray(tsjax.simulate_order_params(op, key, N=N, alphas=al,
                                                               rule=rule, **hyper).eg))  # fmt: skip
        assert_within_finite_size_error(np.stack(sims), np.stack(odes))


@pytest.mark.slow
@pytest.mark.parametrize(
    "rule, hyper",
    [
        (tsjax.AdaptiveBackprop(2.0), dict(lr=0.8)),
        (tsjax.AdaptiveBackprop(0.5), dict(lr=0.8, lr_v=0.3, noise=0.1)),
        (tsjax.FeedbackAlignment(feedback=[1.0, -0.5, 0.8]), dict(lr=0.8, lr_v=0.5)),
    ],
)
def test_rules_ode_against_the_network_simulator(rule, hyper):
    """ODE against online SGD of the real networks, 8 seeds, N = 1000."""
    K = np.shape(getattr(rule, "feedback_vector", np.zeros(2)))[0]
    al = np.linspace(0.0, 20.0, 6)
    sims, odes = [], []
    for seed in range(SEEDS):
        st, te, key = _start(K=K, seed=seed)
        op = tsjax.order_params(st, te)
        odes.append(np.asarray(tsjax.solve_ode(op, alphas=al, rule=rule, **hyper).eg))
        sims.append(np.asarray(tsjax.simulate(st, te, key, alphas=al, rule=rule, **hyper).eg))
    assert_within_finite_size_error(np.stack(sims), np.stack(odes))


@pytest.mark.slow
@pytest.mark.parametrize("full", [False, True])
def test_gradients_with_respect_to_the_rule_parameters(full):
    """d eps_g / d beta (and, -m slow, d eps_g / d b) against central differences."""
    st, te, _ = _start(scale=1e-2, N=100)
    op = tsjax.order_params(st, te)
    al = np.array([0.0, 10.0])
    kw = dict(alphas=al, rtol=1e-12, atol=1e-14)

    def f_beta(beta):
        return tsjax.solve_ode(op, lr=0.5, rule=tsjax.AdaptiveBackprop(beta), **kw).eg[-1]

    def f_b(b):
        rule = tsjax.FeedbackAlignment(feedback=b)
        return tsjax.solve_ode(op, lr=0.5, lr_v=0.3, rule=rule, **kw).eg[-1]

    h = 1e-5
    g = float(jax.grad(f_beta)(1.5))
    fd = float((f_beta(1.5 + h) - f_beta(1.5 - h)) / (2 * h))
    np.testing.assert_allclose(g, fd, rtol=1e-5)
    if not full:
        return
    b = jnp.array([1.0, 0.5])
    g = np.asarray(jax.grad(f_b)(b))
    fd = [float((f_b(b.at[i].add(h)) - f_b(b.at[i].add(-h))) / (2 * h)) for i in range(2)]
    np.testing.assert_allclose(g, fd, rtol=1e-5)


@pytest.mark.slow  # suite time; sweeps over rules stay default in notebook 10 and test_sweep
def test_sweep_over_the_gain_equals_single_runs():
    al = np.linspace(0.0, 20.0, 5)
    rules = [tsjax.AdaptiveBackprop(b) for b in (0.5, 2.0)]
    ds = tsjax.sweep(K=2, M=2, lr=0.5, alphas=al, N=100, init_scale=1e-2, rule=rules)
    assert ds.eg.dims == ("rule", "alpha")
    np.testing.assert_array_equal(ds.beta.values, [0.5, 2.0])
    st, te, _ = tsjax.sweep_point(K=2, M=2, N=100, init_scale=1e-2)
    op = tsjax.order_params(st, te)
    for i, r in enumerate(rules):
        np.testing.assert_allclose(
            ds.eg.values[i], tsjax.solve_ode(op, lr=0.5, alphas=al, rule=r).eg, rtol=1e-10
        )
    # the default (no rule) leaves the Dataset as before: no rule coordinate
    assert "rule" not in tsjax.sweep(K=2, M=2, lr=0.5, alphas=al[:2], N=100).coords


def test_adaptive_backprop_shortens_the_plateau():
    """K = M = 2 from a small symmetric-ish start: the plateau ends sooner for beta > 1
    and later for beta < 1 (West & Saad), measured with find_plateaus."""
    st, te, _ = _start(scale=1e-3, N=1000)
    op = tsjax.order_params(st, te)
    al = np.linspace(0.0, 600.0, 1201)
    ends = {}
    for beta in (0.7, 1.0, 1.5, 2.0):
        tr = tsjax.solve_ode(op, lr=0.5, alphas=al, rule=tsjax.AdaptiveBackprop(beta))
        ps = tsjax.find_plateaus(tr)
        assert len(ps) >= 1, beta
        ends[beta] = ps[0].end
    assert ends[0.7] > ends[1.0] > ends[1.5] > ends[2.0], ends


def test_feedback_alignment_aligns_then_memorises():
    """The readout first turns towards the feedback vector (cosine near 1), then the error
    falls: align, then memorise (Refinetti et al. 2021)."""
    st, te, _ = _start(K=2, M=1, scale=1e-2)
    b = np.array([1.0, 0.6])
    st = tsjax.TwoLayerNet(st.W, 0.01 * jnp.array([0.6, -1.0]))  # orthogonal to b
    op = tsjax.order_params(st, te)
    al = np.linspace(0.0, 100.0, 401)
    tr = tsjax.solve_ode(op, lr=0.5, lr_v=0.5, alphas=al, rule=tsjax.FeedbackAlignment(b))
    v = np.asarray(tr.v)
    cos = v @ b / (np.linalg.norm(v, axis=1) * np.linalg.norm(b))
    eg = np.asarray(tr.eg)
    assert abs(cos[0]) < 0.2
    i_align = int(np.argmax(cos > 0.9))
    assert i_align > 0 and cos[i_align:].min() > 0.8
    assert eg[-1] < 0.05 * eg[i_align]  # memorisation after the alignment


def test_bad_rules():
    st, te, key = _start(N=100)
    op = tsjax.order_params(st, te)
    al = np.array([0.0, 1.0])
    for beta in (-1.0, 0.0, np.nan, [1.0, 2.0]):
        with pytest.raises(ValueError, match="beta"):
            tsjax.AdaptiveBackprop(beta)
    with pytest.raises(ValueError, match="feedback"):
        tsjax.FeedbackAlignment(feedback=np.ones((2, 2)))
    with pytest.raises(ValueError, match="gain: not a parameter of tsjax.AdaptiveBackprop"):
        tsjax.AdaptiveBackprop(gain=2.0)
    with pytest.raises(ValueError, match="b: not a parameter"):
        tsjax.FeedbackAlignment(b=[1.0, 2.0])
    with pytest.raises(ValueError, match="feedback: required"):
        tsjax.FeedbackAlignment()
    with pytest.raises(ValueError, match="feedback: expected shape \\(2,\\)"):
        tsjax.solve_ode(op, lr=0.5, alphas=al, rule=tsjax.FeedbackAlignment([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="feedback: expected shape"):
        tsjax.simulate(st, te, key, lr=0.5, alphas=al, rule=tsjax.FeedbackAlignment([1.0]))
    with pytest.raises(ValueError, match="rule"):
        tsjax.solve_ode(op, lr=0.5, alphas=al, rule="adaptive")
    with pytest.raises(ValueError, match="rule"):
        tsjax.sweep(K=2, lr=0.5, alphas=al, N=100, rule=[tsjax.SGD(), "adaptive"])
    # traced: the run stops with invalid_input, the error names the rule
    bad = jax.jit(
        lambda b: (
            tsjax.solve_ode(
                op, lr=0.5, alphas=al, rule=tsjax.AdaptiveBackprop(b), throw=False
            ).result
        )  # fmt: skip
    )(-1.0)
    assert bad == tsjax.RESULTS.invalid_input
    with pytest.raises(Exception, match="invalid rule"):
        jax.jit(lambda b: tsjax.solve_ode(op, lr=0.5, alphas=al,
                                          rule=tsjax.AdaptiveBackprop(b)).eg)(-1.0)  # fmt: skip
