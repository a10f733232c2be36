"""The EM step as a kernel (`jaxem.em_step`): a loop of steps is `fit`, the step is pure and
jittable, and its Jacobian at the optimum is Dempster, Laird & Rubin's rate of convergence.

Oracles: `fit` itself (ten steps vs `fit(max_iter=10, tol=0)`), the log-likelihood evaluated
independently at each θ_i, and the rate 1 - I_obs/I_oc of the genetic-linkage model in closed
form (DLR 1977, section 3), with the four phenotype counts as sample weights.
"""


import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import GMM_K, LINKAGE, LINKAGE_COUNTS, LINKAGE_THETA_HAT, clustered_data

import jaxem as em
from jaxem.engine.kernel import EMState
from jaxem.models import gaussian_mixture

X = jnp.asarray(clustered_data(np.random.default_rng(3), GMM_K, 60, 2))
MODEL = gaussian_mixture(GMM_K, "full")
START = MODEL.init(jax.random.key(0), X)


def run_steps(kernel, state, data, num, weights=None):
    step = jax.jit(kernel.step)
    objectives = []
    for _ in range(num):
        state, info = step(state, data, weights)
        objectives.append(float(info.objective))
    return state, objectives


def test_ten_steps_equal_fit_with_ten_iterations():
    kernel = em.em_step(MODEL)
    state, objectives = run_steps(kernel, kernel.init(START, X), X, 10)
    result = em.fit(MODEL, X, START, max_iter=10, tol=0.0)
    assert int(result.num_iters) == 10
    for a, b in zip(jax.tree_util.tree_leaves(state.params), jax.tree_util.tree_leaves(result.params),
                    strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(objectives, result.history, rtol=1e-12)


def test_info_objective_is_the_log_likelihood_of_the_incoming_parameters():
    kernel = em.em_step(MODEL)
    state = kernel.init(START, X)
    for _ in range(3):
        before = state.params
        state, info = jax.jit(kernel.step)(state, X)
        assert float(info.objective) == pytest.approx(float(MODEL.log_likelihood(before, X)), rel=1e-12)
        assert bool(info.finite)


def test_kernel_with_a_gradient_m_step_equals_fit():
    def log_joint(params, x, z):
        return jax.nn.log_softmax(params["logits"])[z] + em.families.normal_logpdf(
            x, params["loc"][z], 1.0)

    model = em.Mixture(log_joint, 2)
    x = jnp.asarray(np.r_[np.full(5, -2.0), np.full(5, 2.0)])
    kernel = em.em_step(model)
    start = {"logits": jnp.zeros(2), "loc": jnp.array([-1.0, 1.0])}
    state = kernel.init(start, x)
    assert isinstance(state, EMState)
    state, objectives = run_steps(kernel, state, x, 6)
    result = em.fit(model, x, start, max_iter=6, tol=0.0)
    np.testing.assert_allclose(state.params["loc"], result.params["loc"], rtol=1e-10)
    np.testing.assert_allclose(objectives, result.history, rtol=1e-10)
    assert np.all(np.diff(objectives) >= -1e-10)


# --- DLR's genetic linkage model: the Jacobian of one step is the rate of convergence -----------

COUNTS, THETA_HAT = LINKAGE_COUNTS, LINKAGE_THETA_HAT


def test_jacobian_of_one_step_is_dlr_rate_of_convergence():
    classes = jnp.arange(4)
    kernel = em.em_step(LINKAGE)
    theta = jnp.asarray(THETA_HAT)
    state = kernel.init({"theta": theta}, classes, COUNTS)

    def em_map(t):
        return kernel.step(EMState({"theta": t}, state.m_step_state), classes, COUNTS)[0].params["theta"]

    assert float(em_map(theta)) == pytest.approx(THETA_HAT, abs=1e-12)  # θ̂ is a fixed point
    rate = float(jax.jacobian(em_map)(theta))
    # Closed form: I_obs = -d²ℓ/dθ², I_oc = E[-d² log p(x, z | θ)/dθ²] at θ̂.
    t = THETA_HAT
    i_obs = COUNTS[0] / (2 + t) ** 2 + (COUNTS[1] + COUNTS[2]) / (1 - t) ** 2 + COUNTS[3] / t ** 2
    hidden = COUNTS[0] * t / (2 + t)
    i_oc = (hidden + COUNTS[3]) / t ** 2 + (COUNTS[1] + COUNTS[2]) / (1 - t) ** 2
    assert rate == pytest.approx(1 - i_obs / i_oc, rel=1e-10)
    assert rate == pytest.approx(0.1328, abs=1e-4)   # the value DLR report


def test_weighted_classes_fit_the_published_mle():
    result = em.fit(LINKAGE, jnp.arange(4), {"theta": jnp.asarray(0.5)}, weights=COUNTS, tol=0.0,
                    max_iter=40)
    assert float(result.params["theta"]) == pytest.approx(THETA_HAT, abs=1e-9)
