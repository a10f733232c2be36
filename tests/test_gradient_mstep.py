"""The gradient (generalized EM) M-step: a monotone objective on random models with L-BFGS and adam,
MAP with a log-prior, Q never lowered by one M-step, and the same optimum as the closed form."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import (
    DIAG_CUSTOM,
    DIAG_D,
    DIAG_K,
    DIAG_N,
    GMM_MAX_ITER,
    assert_monotone,
    clustered_data,
    diag_to_gmm,
    gmm_to_diag,
    jitted,
    random_gmm_params,
)
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxem as em

SEEDS = st.integers(0, 2**32 - 1)
ADAM = em.Gradient(optax.adam(0.05), num_steps=5)
EXACT_DIAG = em.models.gaussian_mixture(DIAG_K, "diag", reg_covar=0.0)


def _random_problem(seed):
    """Random standardised data (DIAG_N, DIAG_D) and random custom-coordinate parameters."""
    rng = np.random.default_rng(seed)
    data = clustered_data(rng, int(rng.integers(1, 5)), DIAG_N, DIAG_D, separation=rng.uniform(0.5, 8))
    data = (data - data.mean(axis=0)) / data.std(axis=0)
    params0 = {
        "logits": jnp.asarray(rng.normal(size=DIAG_K)),
        "loc": jnp.asarray(data[rng.choice(DIAG_N, DIAG_K, replace=False)]
                           + 0.3 * rng.normal(size=(DIAG_K, DIAG_D))),
        "log_scale": jnp.asarray(rng.normal(scale=0.3, size=(DIAG_K, DIAG_D))),
    }
    return jnp.asarray(data), params0


def gaussian_log_prior(params):
    """N(0, 3²) on every location, N(0, 1) on every log-scale and logit (up to constants)."""
    return (-0.5 * jnp.sum((params["loc"] / 3.0) ** 2) - 0.5 * jnp.sum(params["log_scale"] ** 2)
            - 0.5 * jnp.sum(params["logits"] ** 2))


@settings(max_examples=8, deadline=None)
@given(seed=SEEDS)
def test_default_lbfgs_gradient_m_step_is_monotone(seed):
    data, params0 = _random_problem(seed)
    result = em.fit(DIAG_CUSTOM, data, params0, max_iter=GMM_MAX_ITER, tol=0.0)
    assert bool(result.finite)
    assert_monotone(result.history, result.num_iters)
    last = float(result.history[int(result.num_iters) - 1])
    assert float(result.log_likelihood) >= last - 1e-9 * abs(last)
    np.testing.assert_allclose(float(result.log_likelihood),
                               float(jitted(DIAG_CUSTOM).log_likelihood(result.params, data)), rtol=1e-12)


@settings(max_examples=8, deadline=None)
@given(seed=SEEDS)
def test_adam_map_objective_is_monotone_and_includes_the_prior(seed):
    data, params0 = _random_problem(seed)
    result = em.fit(DIAG_CUSTOM, data, params0, m_step=ADAM, log_prior=gaussian_log_prior,
                    max_iter=GMM_MAX_ITER, tol=0.0)
    assert bool(result.finite)
    assert_monotone(result.history, result.num_iters)
    ll = jitted(DIAG_CUSTOM).log_likelihood
    np.testing.assert_allclose(float(result.history[0]),
                               float(ll(params0, data) + gaussian_log_prior(params0)), rtol=1e-12)
    np.testing.assert_allclose(float(result.log_likelihood),
                               float(ll(result.params, data) + gaussian_log_prior(result.params)), rtol=1e-12)
    # The prior matters: the MAP objective differs from the likelihood by the (non-zero) prior.
    assert abs(float(gaussian_log_prior(result.params))) > 1e-3


@jax.jit
def _one_overshooting_m_step(params, data):
    """Q before and after one M-step with an optimizer whose raw steps overshoot (sgd with a huge
    rate), and the Q an unguarded optimizer would reach after the same number of raw steps."""
    posterior = DIAG_CUSTOM.e_step(params, data)
    q = lambda p: DIAG_CUSTOM.q(p, posterior, data)
    sgd = optax.sgd(1e4)
    new = em.Gradient(sgd, num_steps=4).update(DIAG_CUSTOM, params, posterior, data, None)
    raw, state = params, sgd.init(params)
    for _ in range(4):
        updates, state = sgd.update(jax.grad(lambda p: -q(p))(raw), state)
        raw = optax.apply_updates(raw, updates)
    return q(params), q(new), q(raw), new


def test_gradient_m_step_never_lowers_q():
    for seed in range(3):
        data, params0 = _random_problem(seed)
        q0, q_new, q_raw, new = _one_overshooting_m_step(params0, data)
        # Control: the raw steps lower Q (or blow up), so the guard is what keeps Q from dropping.
        assert not float(q_raw) >= float(q0)
        assert float(q_new) >= float(q0)
        assert all(np.all(np.isfinite(np.asarray(leaf))) for leaf in jax.tree_util.tree_leaves(new))


def test_gradient_fit_reaches_the_closed_form_optimum():
    """The custom diagonal mixture climbed by L-BFGS and gaussian_mixture(K, 'diag', reg_covar=0) in
    closed form, from the same start on clustered data: the same optimum (log-likelihood to 1e-10
    relative, parameters to 1e-6; measured: 6e-14 and 5e-8)."""
    rng = np.random.default_rng(12)
    data = jnp.asarray(clustered_data(rng, DIAG_K, DIAG_N, DIAG_D, separation=5.0))
    start = random_gmm_params(rng, "diag", DIAG_K, DIAG_D, np.asarray(data))
    closed = em.fit(EXACT_DIAG, data, start, max_iter=GMM_MAX_ITER, tol=0.0)
    climbed = em.fit(DIAG_CUSTOM, data, gmm_to_diag(start), max_iter=GMM_MAX_ITER, tol=0.0)
    assert bool(closed.finite) and bool(climbed.finite)
    # Control: the optimum is far from the start, so agreement is not trivial.
    assert float(closed.log_likelihood) - float(closed.history[0]) > 1.0
    np.testing.assert_allclose(float(climbed.log_likelihood), float(closed.log_likelihood), rtol=1e-10)
    as_gmm = diag_to_gmm(climbed.params)
    for got, want in zip(as_gmm, closed.params, strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-6)
    # Both have stopped moving: the last iterations changed the log-likelihood by < 1e-9.
    for result in (closed, climbed):
        assert abs(float(result.log_likelihood) - float(result.history[-1])) < 1e-9


def test_named_optimizer_shares_compiled_code_and_matches_the_instance():
    """`Gradient("adam", options={"learning_rate": 0.05})` built afresh for each fit compiles once
    (equal strategies are equal static arguments) and fits exactly as `Gradient(optax.adam(0.05))`;
    a new optax instance per call compiles every call. Bad names and options are named."""
    from jaxem.engine.fit import _fit_compiled

    rng = np.random.default_rng(3)
    data = jnp.asarray(clustered_data(rng, DIAG_K, DIAG_N, DIAG_D, separation=5.0))
    start = gmm_to_diag(random_gmm_params(rng, "diag", DIAG_K, DIAG_D, np.asarray(data)))

    def named():
        return em.Gradient("adam", num_steps=5, options={"learning_rate": 0.05})

    assert named() == named() and hash(named()) == hash(named())
    first = em.fit(DIAG_CUSTOM, data, start, m_step=named(), max_iter=5)
    size = _fit_compiled._cache_size()
    again = em.fit(DIAG_CUSTOM, data, start, m_step=named(), max_iter=5)
    assert _fit_compiled._cache_size() == size
    by_instance = em.fit(DIAG_CUSTOM, data, start, m_step=em.Gradient(optax.adam(0.05), num_steps=5),
                         max_iter=5)
    assert _fit_compiled._cache_size() == size + 1
    np.testing.assert_array_equal(np.asarray(again.history), np.asarray(first.history))
    np.testing.assert_allclose(np.asarray(by_instance.history), np.asarray(first.history), rtol=1e-12)
    with pytest.raises(ValueError, match="optax has no optimizer 'adamx'"):
        em.Gradient("adamx")
    with pytest.raises(TypeError, match="optax.adam rejected"):
        em.Gradient("adam", options={"lr": 0.1})
    with pytest.raises(TypeError, match="only used with an optimizer given by name"):
        em.Gradient(optax.adam(0.1), options={"learning_rate": 0.1})
