"""The EM loop `jaxem.fit`: a monotone objective on random models (closed form, MAP), the
FitResult bookkeeping, the trajectory against a hand-written loop, and jit / vmap / compile-once."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    GMM_D,
    GMM_K,
    GMM_MAX_ITER,
    GMM_N,
    MIX1D_CLOSED_FORM,
    MIX1D_K,
    MIX1D_N,
    assert_monotone,
    brute_em_quantities,
    brute_table,
    clustered_data,
    full_covariances,
    jitted,
    mix1d_brute_log_joint,
    mix1d_log_joint,
    mix1d_maximize,
    random_gmm_params,
    random_mix1d,
)
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import jaxem as em
from jaxem.engine.fit import _fit_compiled

SEEDS = st.integers(0, 2**32 - 1)
COVARIANCE_TYPES = ("full", "diag", "spherical", "tied")
# reg_covar = 0: the M-step is then the exact maximiser of Q, which is what guarantees monotonicity
# (adding reg_covar to the covariances is not the maximiser of any fixed objective).
EXACT_GMM = {kind: em.models.gaussian_mixture(GMM_K, kind, reg_covar=0.0) for kind in COVARIANCE_TYPES}
MIX1D_ITERS = 25


def _random_gmm_problem(seed, kind):
    """Random standardised data (clustered or heavy-tailed) of shape (GMM_N, GMM_D) and a random
    starting point with K = GMM_K."""
    rng = np.random.default_rng(seed)
    if rng.random() < 0.5:
        data = clustered_data(rng, int(rng.integers(1, 5)), GMM_N, GMM_D, separation=rng.uniform(0.5, 8))
    else:
        data = rng.standard_t(df=3, size=(GMM_N, GMM_D))
    data = (data - data.mean(axis=0)) / data.std(axis=0)
    params0 = random_gmm_params(rng, kind, GMM_K, GMM_D, data if rng.random() < 0.5 else None)
    return jnp.asarray(data), params0


def _collapsed(kind, result):
    """True when the fit went non-finite or a covariance has an eigenvalue below 1e-8 (the data are
    standardised): a component collapsed onto too few points. The likelihood is unbounded there and
    its computed value is rounding noise (measured: drops of up to 3% of ℓ in such runs), so exact
    (reg_covar = 0) EM's monotonicity says nothing about it and such examples are discarded (about
    one in six for full covariances, none for tied)."""
    if not bool(result.finite):
        return True
    cov = full_covariances(kind, np.asarray(result.params.covariances), GMM_K, GMM_D)
    return float(np.linalg.eigvalsh(cov).min()) < 1e-8


# --- monotone objective ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind", COVARIANCE_TYPES)
@settings(max_examples=12, deadline=None)
@given(seed=SEEDS)
def test_closed_form_gaussian_mixture_is_monotone(kind, seed):
    model = EXACT_GMM[kind]
    data, params0 = _random_gmm_problem(seed, kind)
    result = em.fit(model, data, params0, max_iter=GMM_MAX_ITER, tol=0.0)
    assume(not _collapsed(kind, result))
    assert int(result.num_iters) == GMM_MAX_ITER
    assert_monotone(result.history, result.num_iters)
    # The last recorded value is the objective before the last M-step, which cannot lower it.
    last = float(result.history[-1])
    assert float(result.log_likelihood) >= last - 1e-9 * abs(last)


def dirichlet_log_prior(params):
    """log Dirichlet(w | α = 3), up to its constant: Σ_k 2 log w_k."""
    return 2.0 * jnp.sum(jnp.log(params.weights))


def diag_map_update(posterior, data, params):
    """MAP M-step of EXACT_GMM['diag'] under `dirichlet_log_prior`: w_k = (n_k + 2) / (N + 2K)."""
    new = EXACT_GMM["diag"].maximize(EXACT_GMM["diag"].statistics(posterior, data, params), params)
    counts = jnp.sum(posterior.marginals, axis=0)
    return new._replace(weights=(counts + 2.0) / (data.shape[0] + 2.0 * GMM_K))


DIAG_MAP = em.ClosedForm(diag_map_update)


@settings(max_examples=12, deadline=None)
@given(seed=SEEDS)
def test_closed_form_map_objective_is_monotone_and_includes_the_prior(seed):
    model = EXACT_GMM["diag"]
    data, params0 = _random_gmm_problem(seed, "diag")
    result = em.fit(model, data, params0, m_step=DIAG_MAP, log_prior=dirichlet_log_prior,
                    max_iter=GMM_MAX_ITER, tol=0.0)
    assume(not _collapsed("diag", result))
    assert_monotone(result.history, result.num_iters)
    expected = jitted(model).log_likelihood(result.params, data) + dirichlet_log_prior(result.params)
    np.testing.assert_allclose(float(result.log_likelihood), float(expected), rtol=1e-12)
    first = jitted(model).log_likelihood(params0, data) + dirichlet_log_prior(params0)
    np.testing.assert_allclose(float(result.history[0]), float(first), rtol=1e-12)


# --- bookkeeping -----------------------------------------------------------------------------------

DATA = jnp.asarray(clustered_data(np.random.default_rng(0), 3, GMM_N, GMM_D))
PARAMS0 = random_gmm_params(np.random.default_rng(1), "diag", GMM_K, GMM_D, np.asarray(DATA))
DIAG = EXACT_GMM["diag"]


def _leaves_equal(a, b, rtol=0.0, atol=0.0):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def test_history_matches_a_hand_written_em_loop():
    """history[i] = ℓ(θ_i) with θ_{i+1} = maximize(E-step(θ_i)), computed here step by step."""
    result = em.fit(DIAG, DATA, PARAMS0, max_iter=GMM_MAX_ITER, tol=0.0)
    params = PARAMS0
    step = jax.jit(lambda p: DIAG.maximize(DIAG.expected_stats(p, DATA), p))
    expected = []
    for _ in range(GMM_MAX_ITER):
        expected.append(float(jitted(DIAG).log_likelihood(params, DATA)))
        params = step(params)
    np.testing.assert_allclose(np.asarray(result.history), expected, rtol=1e-10)
    _leaves_equal(result.params, params, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(float(result.log_likelihood), float(jitted(DIAG).log_likelihood(params, DATA)),
                               rtol=1e-10)


def test_bookkeeping_when_max_iter_is_hit():
    result = em.fit(DIAG, DATA, PARAMS0, max_iter=GMM_MAX_ITER, tol=0.0)
    assert result.history.shape == (GMM_MAX_ITER,)
    assert int(result.num_iters) == GMM_MAX_ITER
    assert not bool(result.converged)
    assert bool(result.finite)
    np.testing.assert_allclose(float(result.history[0]), float(jitted(DIAG).log_likelihood(PARAMS0, DATA)),
                               rtol=1e-12)
    np.testing.assert_allclose(float(result.log_likelihood),
                               float(jitted(DIAG).log_likelihood(result.params, DATA)), rtol=1e-12)


def test_bookkeeping_when_converged():
    """scikit-learn's absolute rule, checked against the history (the relative rule:
    tests/test_stop_rule.py)."""
    result = em.fit(DIAG, DATA, PARAMS0, max_iter=GMM_MAX_ITER, tol=1e-3, convergence="absolute")
    t = int(result.num_iters)
    assert bool(result.converged) and 1 <= t < GMM_MAX_ITER
    history = np.asarray(result.history)
    assert np.all(np.isfinite(history[:t])) and np.all(np.isnan(history[t:]))
    # Converged: the last change is below tol·N, the one before is not.
    assert abs(float(result.log_likelihood) - history[t - 1]) < 1e-3 * GMM_N
    if t >= 2:
        assert abs(history[t - 1] - history[t - 2]) >= 1e-3 * GMM_N
    np.testing.assert_allclose(float(result.log_likelihood),
                               float(jitted(DIAG).log_likelihood(result.params, DATA)), rtol=1e-12)
    # The same trajectory as the tol = 0 run, cut where it converged.
    full = em.fit(DIAG, DATA, PARAMS0, max_iter=GMM_MAX_ITER, tol=0.0)
    np.testing.assert_allclose(history[:t], np.asarray(full.history[:t]), rtol=1e-12)
    np.testing.assert_allclose(float(result.log_likelihood), float(full.history[t]), rtol=1e-12)


def test_max_iter_zero_returns_params0():
    result = em.fit(DIAG, DATA, PARAMS0, max_iter=0)
    _leaves_equal(result.params, PARAMS0)
    assert result.history.shape == (0,)
    assert int(result.num_iters) == 0 and not bool(result.converged) and bool(result.finite)
    expected = jitted(DIAG).log_likelihood(PARAMS0, DATA)
    np.testing.assert_allclose(float(result.log_likelihood), float(expected), rtol=1e-12)


# --- jit, vmap, compile once ------------------------------------------------------------------

JITTED_FIT = jax.jit(em.fit, static_argnums=0, static_argnames=("m_step", "log_prior", "max_iter"))


def _mix1d_batch(seed, batch):
    rng = np.random.default_rng(seed)
    params = [random_mix1d(rng)[0] for _ in range(batch)]
    _, data = random_mix1d(rng)
    return jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *params), params, data


MIX1D_CF_MODEL = em.Mixture(mix1d_log_joint, MIX1D_K, m_step=MIX1D_CLOSED_FORM)


def test_jitted_fit_equals_plain_fit():
    """jit with the model, the M-step, the prior and max_iter static; tol and the arrays traced."""
    plain = em.fit(DIAG, DATA, PARAMS0, m_step=DIAG_MAP, log_prior=dirichlet_log_prior,
                   max_iter=GMM_MAX_ITER, tol=1e-6)
    jitted_result = JITTED_FIT(DIAG, DATA, PARAMS0, m_step=DIAG_MAP, log_prior=dirichlet_log_prior,
                               max_iter=GMM_MAX_ITER, tol=1e-6)
    assert bool(plain.converged) and int(plain.num_iters) > 2
    _leaves_equal(jitted_result, plain, rtol=1e-12, atol=1e-12)


def test_non_finite_start_under_jit_is_reported_not_iterated():
    """Under jit the value checks of params0 cannot run; the loop itself must then refuse to
    iterate from a NaN start and say so with finite=False."""
    bad = PARAMS0._replace(means=PARAMS0.means.at[0, 0].set(jnp.nan))
    result = JITTED_FIT(DIAG, DATA, bad, m_step=DIAG_MAP, log_prior=dirichlet_log_prior,
                        max_iter=GMM_MAX_ITER, tol=1e-6)
    assert not bool(result.finite) and int(result.num_iters) == 0 and not bool(result.converged)
    assert np.all(np.isnan(np.asarray(result.history)))


VMAPPED_FIT = jax.jit(jax.vmap(lambda p, x: em.fit(MIX1D_CF_MODEL, x, p, max_iter=MIX1D_ITERS, tol=1e-4),
                               in_axes=(0, None)))


@settings(max_examples=8, deadline=None)
@given(seed=SEEDS)
def test_vmap_over_params0_equals_a_loop(seed):
    batched, singles, data = _mix1d_batch(seed, 4)
    together = VMAPPED_FIT(batched, data)
    for i, params0 in enumerate(singles):
        alone = em.fit(MIX1D_CF_MODEL, data, params0, max_iter=MIX1D_ITERS, tol=1e-4)
        row = jax.tree_util.tree_map(lambda leaf, i=i: np.asarray(leaf)[i], together)
        if not (bool(alone.finite) and bool(row.finite)):
            # A restart that breaks down (a component collapsing onto one point) stops at a
            # rounding-dependent iterate; both programs must flag it, and nothing else is compared.
            assert not bool(alone.finite) and not bool(row.finite)
            continue
        # NaN-padded histories compare equal where both are NaN.
        _leaves_equal(row._replace(params=None), alone._replace(params=None), rtol=1e-9, atol=1e-12)
        # Parameters on a well-conditioned scale: the weights, and the location and scale of every
        # component that has not died out (a dying component's logit, location and scale are driven
        # by sums of underflowing responsibilities, so rounding-level differences between the
        # batched and the single program are amplified there without changing the likelihood).
        weights = np.asarray(jax.nn.softmax(alone.params["logits"]))
        np.testing.assert_allclose(np.asarray(jax.nn.softmax(row.params["logits"])), weights,
                                   rtol=1e-9, atol=1e-12)
        alive = weights > 1e-6
        for name in ("loc", "log_scale"):
            np.testing.assert_allclose(row.params[name][alive], np.asarray(alone.params[name])[alive],
                                       rtol=1e-9, atol=1e-12)


TRACES = {"count": 0}


def _counting_log_joint(params, x, z):
    TRACES["count"] += 1  # runs only while jax traces the function
    return mix1d_log_joint(params, x, z)


COUNTING_MODEL = em.Mixture(_counting_log_joint, MIX1D_K, m_step=MIX1D_CLOSED_FORM)


def _cache_size():
    """Entries in the internal jit cache of the EM loop, where this jax exposes it (else None)."""
    size = getattr(_fit_compiled, "_cache_size", None)
    return size() if size is not None else None


def test_second_call_with_the_same_shapes_does_not_recompile():
    """Counted two ways: traces of the model's log_joint (a Python side effect that runs only while
    jax traces), and the size of the compiled loop's cache when jax exposes it."""
    rng = np.random.default_rng(9)
    params_a, data_a = random_mix1d(rng)
    params_b, data_b = random_mix1d(rng)
    cache_before = _cache_size()

    em.fit(COUNTING_MODEL, data_a, params_a, max_iter=MIX1D_ITERS)
    traced = TRACES["count"]
    assert traced > 0
    cache_after_first = _cache_size()
    if cache_before is not None:
        assert cache_after_first == cache_before + 1

    # New values, a new tolerance (a traced argument): no new trace, no new compiled entry.
    em.fit(COUNTING_MODEL, data_b, params_b, max_iter=MIX1D_ITERS)
    em.fit(COUNTING_MODEL, data_a, params_b, max_iter=MIX1D_ITERS, tol=1e-6)
    assert TRACES["count"] == traced
    assert _cache_size() == cache_after_first

    # Control: a new shape does retrace, so the counter can see a recompilation.
    em.fit(COUNTING_MODEL, data_a[:-1], params_a, max_iter=MIX1D_ITERS)
    assert TRACES["count"] > traced


def test_closed_form_custom_mixture_matches_its_own_maximize():
    """A custom Mixture with a ClosedForm default M-step runs that M-step: history[1] is the
    brute-force log-likelihood after one hand-made M-step from brute-force responsibilities."""
    params0, data = random_mix1d(np.random.default_rng(4))
    result = em.fit(MIX1D_CF_MODEL, data, params0, max_iter=MIX1D_ITERS, tol=0.0)
    brute = lambda params: brute_em_quantities(
        brute_table(mix1d_brute_log_joint, params, data, MIX1D_N, MIX1D_K))
    ll0, resp, _ = brute(params0)
    by_hand = mix1d_maximize(em.MixturePosterior(jnp.asarray(resp), None), data, params0)
    ll_by_hand, _, _ = brute(by_hand)
    np.testing.assert_allclose(float(result.history[0]), ll0, rtol=1e-12)
    np.testing.assert_allclose(float(result.history[1]), ll_by_hand, rtol=1e-12)
    assert_monotone(result.history, result.num_iters)
