"""SQUAREM (`acceleration="squarem"`) and `FitResult.num_e_steps`.

- The Hasselblad (1969) deaths data, the anchor of the SQUAREM and turboEM documentation:
  plain EM creeps for over a thousand iterations; SQUAREM reaches the same maximum (to 1e-8
  in ℓ) with at least 10× fewer E-steps.
- An independent NumPy implementation of the same algorithm (SqS3 step, stabilising step,
  monotone safeguard, adaptive step bound) on that Poisson mixture: the same iterates, the
  same number of iterations and of E-steps.
- The same optimum as plain EM on Gaussian mixtures (four covariance types) and a Gaussian
  HMM; the objective never decreases (hypothesis, random Poisson mixtures); extrapolated
  points of a ready model are valid parameters whatever the step; vmapped SQUAREM equals a
  loop of fits; `num_e_steps` of plain EM is num_iters + 1.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_monotone, clustered_data, random_gmm_params
from hypothesis import example, given, settings
from hypothesis import strategies as st

import jaxem as em
from jaxem.distributions import poisson_logpmf
from jaxem.engine.squarem import extrapolate

DEATHS = np.arange(10.0)
DAYS = np.array([162.0, 267, 271, 185, 111, 61, 27, 8, 3, 1])
MAX_ITER = 3000


def poisson_log_joint(params, x, z):
    return jax.nn.log_softmax(params["logits"])[z] + poisson_logpmf(x, jnp.exp(params["log_rates"][z]))


def poisson_maximize(posterior, data, params):
    del params
    counts = jnp.sum(posterior.marginals, axis=0)
    rates = posterior.marginals.T @ data / counts
    return {"logits": jnp.log(counts / jnp.sum(counts)), "log_rates": jnp.log(rates)}


POISSON = em.Mixture(poisson_log_joint, 2, m_step=em.ClosedForm(poisson_maximize))


def poisson_start(weight, rate0, rate1):
    return {"logits": jnp.log(jnp.array([weight, 1 - weight])),
            "log_rates": jnp.log(jnp.array([rate0, rate1]))}


def fit_poisson(params0, acceleration, tol=1e-12, weights=DAYS, data=DEATHS, convergence="relative"):
    return em.fit(POISSON, jnp.asarray(data), params0, weights=jnp.asarray(weights), max_iter=MAX_ITER,
                  tol=tol, acceleration=acceleration, convergence=convergence)


# --- an independent SQUAREM in NumPy ------------------------------------------------------------

def np_e_step(theta, x, w):
    """(ℓ(θ), responsibilities) of the Poisson mixture, θ = (logit0, logit1, log λ0, log λ1)."""
    logits, rates = theta[:2], np.exp(theta[2:])
    log_w = logits - np.logaddexp.reduce(logits)
    log_fact = np.array([np.sum(np.log(np.arange(1, int(v) + 1))) for v in x])
    table = log_w + x[:, None] * np.log(rates) - rates - log_fact[:, None]
    norm = np.logaddexp.reduce(table, axis=1)
    return float(np.sum(w * norm)), np.exp(table - norm[:, None])


def np_m_step(resp, x, w):
    counts = (w[:, None] * resp).sum(0)
    rates = (w[:, None] * resp * x[:, None]).sum(0) / counts
    return np.concatenate([np.log(counts / counts.sum()), np.log(rates)])


def np_stops(rule, value, previous, theta, previous_theta, tol, n):
    """`jaxem.fit`'s rule as its docstring states it, θ's leaves being the logits θ[:2] and the
    log-rates θ[2:]."""
    if rule == "absolute":
        return abs(value - previous) < tol * n
    scale = max(abs(value), n)
    param_tol = np.sqrt(tol)
    settled = all(np.max(np.abs(new - old)) <= param_tol * (np.max(np.abs(new)) + param_tol)
                  for new, old in ((theta[:2], previous_theta[:2]), (theta[2:], previous_theta[2:])))
    rounding = 4 * np.finfo(np.float64).eps
    unchanged = abs(value - previous) <= rounding * scale and 100 * rounding <= tol
    return abs(value - previous) < tol * scale and (settled or unchanged)


def np_squarem(theta, x, w, tol, max_iter, rule="absolute"):
    """SQUAREM as `jaxem.engine.squarem` documents it, stopped by `rule`; returns (θ_T, ℓ_T, T,
    E-steps)."""
    e_steps, step_max, previous, previous_theta = 0, 1.0, None, None
    for i in range(max_iter + 1):
        value, resp = np_e_step(theta, x, w)
        e_steps += 1
        if previous is not None and np_stops(rule, value, previous, theta, previous_theta, tol, w.sum()):
            return theta, value, i, e_steps
        if i == max_iter:
            return theta, value, i, e_steps
        previous, previous_theta = value, theta
        theta1 = np_m_step(resp, x, w)
        _, resp1 = np_e_step(theta1, x, w)
        e_steps += 1
        theta2 = np_m_step(resp1, x, w)
        r, v = theta1 - theta, theta2 - 2 * theta1 + theta
        step = min(max(np.linalg.norm(r) / np.linalg.norm(v), 1.0), step_max) if np.any(v) else 1.0
        moved = theta + 2 * step * r + step ** 2 * v
        moved_value, moved_resp = np_e_step(moved, x, w)
        e_steps += 1
        kept = np.isfinite(moved_value) and moved_value >= value
        if step >= step_max:
            step_max = step_max * 4 if kept else max(1.0, step_max / 4)
        theta = np_m_step(moved_resp, x, w) if kept else theta2
    raise AssertionError("unreachable")


# --- tests ----------------------------------------------------------------------------------------

def test_hasselblad_squarem_reaches_the_em_maximum_with_ten_times_fewer_e_steps():
    """From π = 0.3, λ = (1, 2.5): plain EM is still more than 1e-8 below the maximum after
    1,500 iterations; SQUAREM (default rule, tol 1e-12) reaches it with ≥ 10× fewer
    E-steps than EM needs to come within 1e-8 of it, and 3,000 EM iterations agree."""
    start = poisson_start(0.3, 1.0, 2.5)
    plain = fit_poisson(start, None, tol=0.0)  # all MAX_ITER iterations
    fast = fit_poisson(start, "squarem")
    assert bool(fast.converged) and int(plain.num_iters) == MAX_ITER
    assert int(plain.num_e_steps) == MAX_ITER + 1
    assert abs(float(fast.log_likelihood) - float(plain.log_likelihood)) < 1e-8
    close = np.flatnonzero(np.asarray(plain.history) >= float(fast.log_likelihood) - 1e-8)
    em_e_steps = int(close[0]) + 1  # E-steps plain EM spends to come within 1e-8
    assert em_e_steps > 1500
    assert em_e_steps >= 10 * int(fast.num_e_steps), (em_e_steps, fast.num_e_steps)
    # The published maximum (Hasselblad 1969): π̂ = 0.3599, λ̂ = (1.2561, 2.6634).
    weights = np.asarray(jax.nn.softmax(fast.params["logits"]))
    np.testing.assert_allclose(np.exp(fast.params["log_rates"]), [1.2561, 2.6634], atol=2e-4)
    np.testing.assert_allclose(weights[0], 0.3599, atol=2e-4)
    assert_monotone(fast.history, fast.num_iters, rel=1e-12)


@pytest.mark.parametrize("rule", ["absolute", "relative"])
@settings(max_examples=6, deadline=None)
@given(st.floats(0.1, 0.9), st.floats(0.3, 2.0), st.floats(2.2, 6.0), st.floats(1e-9, 1e-5))
def test_squarem_equals_an_independent_numpy_squarem(rule, weight, rate0, rate1, tol):
    """The same iterates, stopped at the same one by scikit-learn's rule and by the default."""
    start = poisson_start(weight, rate0, rate1)
    got = fit_poisson(start, "squarem", tol=tol, convergence=rule)
    theta0 = np.concatenate([np.asarray(start["logits"]), np.asarray(start["log_rates"])])
    theta, value, num_iters, e_steps = np_squarem(theta0, DEATHS, DAYS, tol, MAX_ITER, rule)
    assert int(got.num_iters) == num_iters and int(got.num_e_steps) == e_steps
    assert got.stop_reason_name in ({rule, "unchanged"} if rule == "relative" else {rule})
    np.testing.assert_allclose(float(got.log_likelihood), value, rtol=1e-12)
    np.testing.assert_allclose(np.concatenate([got.params["logits"], got.params["log_rates"]]), theta,
                               rtol=1e-7, atol=1e-9)


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 2**31 - 1))
@example(658469)
def test_squarem_objective_never_decreases_on_random_poisson_mixtures(seed):
    rng = np.random.default_rng(seed)
    rates = np.sort(rng.uniform(0.5, 8.0, 2))
    z = rng.random(200) < rng.uniform(0.2, 0.8)
    x = rng.poisson(np.where(z, rates[0], rates[1])).astype(float)
    start = poisson_start(rng.uniform(0.2, 0.8), *np.sort(rng.uniform(0.5, 8.0, 2)))
    fast = fit_poisson(start, "squarem", tol=1e-10, weights=np.ones(200), data=x)
    plain = fit_poisson(start, None, tol=1e-10, weights=np.ones(200), data=x)
    assert bool(fast.finite)
    assert_monotone(fast.history, fast.num_iters, rel=1e-12)
    assert float(fast.log_likelihood) >= float(fast.history[0])
    # The E-step count is comparable only where both reach the same optimum: from seed 658469's
    # start plain EM creeps along a saddle (rates 3.05 and 3.43, ℓ -397.68; scikit-learn's rule
    # stopped it there after 234 iterations, the default runs to max_iter as its parameters still
    # move), while SQUAREM moves on to a better optimum (one rate at 0, ℓ -396.49) in 5,134
    # E-steps, stopped as "unchanged": the dying rate's log heads for -inf (-29 here) without
    # changing ℓ any more (the parameter test alone would have carried it to -inf, non-finite).
    if seed == 658469:
        assert fast.stop_reason_name == "unchanged" and plain.stop_reason_name == "max_iter"
    reference = float(plain.log_likelihood)
    if abs(float(fast.log_likelihood) - reference) <= 1e-8 * abs(reference):
        assert int(fast.num_e_steps) <= int(plain.num_e_steps) + 4


GMM_N, GMM_D, GMM_K = 300, 2, 3


@pytest.mark.parametrize("covariance_type", ["full", "diag", "spherical", "tied"])
def test_squarem_reaches_plain_em_optimum_on_gaussian_mixtures(covariance_type):
    rng = np.random.default_rng(3)
    x = jnp.asarray(clustered_data(rng, GMM_K, GMM_N, GMM_D, separation=2.0))
    model = em.models.gaussian_mixture(GMM_K, covariance_type)
    start = random_gmm_params(rng, covariance_type, GMM_K, GMM_D, data=np.asarray(x))
    plain = em.fit(model, x, start, max_iter=2000, tol=1e-11)
    fast = em.fit(model, x, start, max_iter=2000, tol=1e-11, acceleration="squarem")
    assert bool(plain.converged) and bool(fast.converged)
    np.testing.assert_allclose(float(fast.log_likelihood), float(plain.log_likelihood), rtol=1e-8)
    assert_monotone(fast.history, fast.num_iters, rel=1e-12)
    model.check_params(fast.params)
    assert int(fast.num_e_steps) <= int(plain.num_e_steps)


def test_squarem_reaches_plain_em_optimum_on_a_gaussian_hmm():
    rng = np.random.default_rng(5)
    model = em.models.gaussian_hmm(2, "full")
    states = np.cumsum(rng.random(400) < 0.1) % 2
    x = jnp.asarray(rng.normal(size=(400, 2)) + 1.5 * states[:, None])
    start = model.init(jax.random.PRNGKey(0), x)
    plain = em.fit(model, x, start, max_iter=3000, tol=1e-11)
    fast = em.fit(model, x, start, max_iter=3000, tol=1e-11, acceleration="squarem")
    np.testing.assert_allclose(float(fast.log_likelihood), float(plain.log_likelihood), rtol=1e-8)
    assert_monotone(fast.history, fast.num_iters, rel=1e-12)
    assert int(fast.num_e_steps) < int(plain.num_e_steps)


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from(["full", "diag", "spherical", "tied"]),
       st.floats(1.0, 1e3))
def test_extrapolated_points_of_a_ready_model_are_valid_parameters(seed, covariance_type, step_max):
    """Whatever three points and step bound: constrain(u') has weights on the simplex and
    positive-definite covariances (or is non-finite, which the safeguard rejects)."""
    rng = np.random.default_rng(seed)
    model = em.models.gaussian_mixture(GMM_K, covariance_type)
    points = [model.unconstrain(random_gmm_params(rng, covariance_type, GMM_K, GMM_D)) for _ in range(3)]
    moved, step = extrapolate(*points, jnp.asarray(step_max))
    # SqS3 computed here in NumPy on the flattened coordinates (all finite): the same α and u'.
    u0, u1, u2 = (np.concatenate([np.ravel(leaf) for leaf in jax.tree_util.tree_leaves(u)])
                  for u in points)
    r, v = u1 - u0, u2 - 2 * u1 + u0
    alpha = np.clip(np.linalg.norm(r) / np.linalg.norm(v), 1.0, step_max)
    assert float(step) == pytest.approx(alpha, rel=1e-12)
    flat = np.concatenate([np.ravel(leaf) for leaf in jax.tree_util.tree_leaves(moved)])
    np.testing.assert_allclose(flat, u0 + 2 * alpha * r + alpha**2 * v, rtol=1e-10, atol=1e-10)
    params = model.constrain(moved)
    if all(np.all(np.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(params)):
        model.check_params(params)


def test_vmapped_squarem_equals_a_loop_of_fits():
    starts = [poisson_start(w, a, b) for w, a, b in [(0.3, 1.0, 2.5), (0.7, 0.5, 4.0), (0.5, 2.0, 3.0)]]
    batch = jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *starts)
    run = jax.vmap(lambda p: fit_poisson(p, "squarem", tol=1e-10))
    together = run(batch)
    for i, start in enumerate(starts):
        alone = fit_poisson(start, "squarem", tol=1e-10)
        assert int(together.num_iters[i]) == int(alone.num_iters)
        assert int(together.num_e_steps[i]) == int(alone.num_e_steps)
        np.testing.assert_allclose(float(together.log_likelihood[i]), float(alone.log_likelihood), rtol=1e-12)


def test_squarem_restarts_equal_a_loop_of_fits_and_the_keyword_is_checked():
    starts = [poisson_start(w, a, b) for w, a, b in [(0.3, 1.0, 2.5), (0.7, 0.5, 4.0), (0.5, 2.0, 3.0)]]
    batch = jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *starts)
    result = em.fit_restarts(POISSON, jnp.asarray(DEATHS), batch, weights=jnp.asarray(DAYS),
                             max_iter=MAX_ITER, tol=1e-10, acceleration="squarem")
    for i, start in enumerate(starts):
        alone = fit_poisson(start, "squarem", tol=1e-10)
        assert int(result.restarts.num_e_steps[i]) == int(alone.num_e_steps)
    with pytest.raises(ValueError, match="acceleration"):
        em.fit(POISSON, jnp.asarray(DEATHS), starts[0], acceleration="anderson")


def test_squarem_under_jit_and_grad_matches_plain_em():
    """The same fixed point, so the same implicit derivative of ℓ* in the sample weights; and an
    outer jit changes nothing."""
    start = poisson_start(0.4, 1.0, 3.0)

    def value(weights, acceleration):
        return fit_poisson(start, acceleration, tol=1e-12, weights=weights).log_likelihood

    weights = jnp.asarray(DAYS)
    fast = jax.grad(lambda w: value(w, "squarem"))(weights)
    plain = jax.grad(lambda w: value(w, None))(weights)
    np.testing.assert_allclose(fast, plain, rtol=1e-6, atol=1e-8)
    jitted = jax.jit(lambda w: fit_poisson(start, "squarem", tol=1e-10, weights=w))(weights)
    eager = fit_poisson(start, "squarem", tol=1e-10)
    assert int(jitted.num_e_steps) == int(eager.num_e_steps)
    np.testing.assert_allclose(float(jitted.log_likelihood), float(eager.log_likelihood), rtol=1e-12)
