"""Mixture(log_joint, K): the derived E-step, log-likelihood and Q against brute-force enumeration,
impossible (x, z) pairs, pytree data, Fisher's identity and finite differences (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
from helpers import (
    MASKED,
    MASKED_K,
    MASKED_N,
    MIX1D,
    MIX1D_K,
    MIX1D_N,
    brute_em_quantities,
    brute_table,
    masked_brute_log_joint,
    mix1d_brute_log_joint,
    random_masked,
    random_mix1d,
)
from hypothesis import given, settings
from hypothesis import strategies as st

SEEDS = st.integers(0, 2**32 - 1)


def _derived(model):
    """Every derived quantity of `model` at one (params, data), in one jitted function (one compile
    per model; hypothesis calls it many times)."""

    def all_quantities(params, data):
        posterior = model.e_step(params, data)
        return {
            "table": model.log_potentials(params, data),
            "posterior": posterior,
            "log_likelihood": model.log_likelihood(params, data),
            "q": model.q(params, posterior, data),
            # posterior held fixed: Q's gradient does not flow into it
            "grad_q": jax.grad(model.q)(params, jax.lax.stop_gradient(posterior), data),
            "grad_log_likelihood": jax.grad(model.log_likelihood)(params, data),
        }

    return jax.jit(all_quantities)


DERIVED = {MIX1D: _derived(MIX1D), MASKED: _derived(MASKED)}


@jax.jit
def _mix1d_cross_q(params, posterior_params, data):
    """Q(params | posterior_params) and its gradient in params, for MIX1D."""
    posterior = MIX1D.e_step(posterior_params, data)
    return jax.value_and_grad(MIX1D.q)(params, posterior, data)


def _check_against_brute_force(model, params, data, brute_log_joint, num_obs, k):
    table = brute_table(brute_log_joint, params, data, num_obs, k)
    ll, resp, q = brute_em_quantities(table)

    got = DERIVED[model](params, data)
    np.testing.assert_allclose(np.asarray(got["table"]), table, rtol=1e-12, atol=1e-12)
    marginals = np.asarray(got["posterior"].marginals)
    assert marginals.shape == (num_obs, k)
    np.testing.assert_allclose(marginals, resp, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(marginals.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(float(got["posterior"].log_likelihood), ll, rtol=1e-12)
    np.testing.assert_allclose(float(got["log_likelihood"]), ll, rtol=1e-12)
    np.testing.assert_allclose(float(got["q"]), q, rtol=1e-12)
    return table, marginals


@settings(max_examples=15, deadline=None)
@given(seed=SEEDS)
def test_array_data_matches_brute_force(seed):
    params, data = random_mix1d(np.random.default_rng(seed))
    _check_against_brute_force(MIX1D, params, data, mix1d_brute_log_joint, MIX1D_N, MIX1D_K)


def test_q_at_other_parameters_matches_brute_force():
    """Q(θ' | θ) = Σ r(θ) log p(x, z | θ') with the posterior of θ and the table of θ' ≠ θ."""
    rng = np.random.default_rng(1)
    params, data = random_mix1d(rng)
    other, _ = random_mix1d(rng)
    _, resp, _ = brute_em_quantities(brute_table(mix1d_brute_log_joint, params, data, MIX1D_N, MIX1D_K))
    other_table = brute_table(mix1d_brute_log_joint, other, data, MIX1D_N, MIX1D_K)
    expected = float(np.sum(resp * other_table))
    got, _ = _mix1d_cross_q(other, params, data)
    np.testing.assert_allclose(float(got), expected, rtol=1e-12)


@settings(max_examples=15, deadline=None)
@given(seed=SEEDS)
def test_pytree_data_with_impossible_pairs_matches_brute_force(seed):
    params, data = random_masked(np.random.default_rng(seed))
    table, marginals = _check_against_brute_force(
        MASKED, params, data, masked_brute_log_joint, MASKED_N, MASKED_K)
    impossible = ~np.asarray(data["allowed"])
    assert np.isneginf(table[impossible]).all() and impossible.any()
    # Marginals of impossible pairs are exactly zero, not just small.
    assert np.all(marginals[impossible] == 0.0)
    # Observations with a single allowed state put all their mass on it.
    np.testing.assert_array_equal(marginals[:3][~impossible[:3]], 1.0)


def test_q_and_its_gradient_are_finite_with_impossible_pairs():
    params, data = random_masked(np.random.default_rng(7))
    got = DERIVED[MASKED](params, data)
    assert np.isneginf(np.asarray(got["table"])).any()
    assert np.isfinite(float(got["q"]))
    for leaf in jax.tree_util.tree_leaves((got["grad_q"], got["grad_log_likelihood"])):
        assert np.all(np.isfinite(np.asarray(leaf)))


def test_pytree_leaves_must_share_the_leading_axis():
    params, data = random_masked(np.random.default_rng(0))
    import jaxem as em

    bad = {"x": data["x"], "allowed": data["allowed"][:-1]}
    try:
        em.fit(MASKED, bad, params, max_iter=1)
    except ValueError as error:
        assert "leading" in str(error) and "data" in str(error)
    else:
        raise AssertionError("mismatched leading axes were accepted")


# --- Fisher's identity and finite differences ----------------------------------------------------

def _fisher_gap(model, params, data):
    """∇_θ Q(θ; posterior at θ₀)|θ₀ and ∇_θ log p(x | θ)|θ₀, both by jax.grad."""
    got = DERIVED[model](params, data)
    return got["grad_q"], got["grad_log_likelihood"]


@settings(max_examples=10, deadline=None)
@given(seed=SEEDS)
def test_fisher_identity_on_random_models(seed):
    rng = np.random.default_rng(seed)
    for model, (params, data) in ((MIX1D, random_mix1d(rng)), (MASKED, random_masked(rng))):
        grad_q, grad_ll = _fisher_gap(model, params, data)
        for gq, gl in zip(jax.tree_util.tree_leaves(grad_q), jax.tree_util.tree_leaves(grad_ll), strict=True):
            gq, gl = np.asarray(gq), np.asarray(gl)
            assert np.all(np.isfinite(gq))
            np.testing.assert_allclose(gq, gl, rtol=1e-9, atol=1e-9 * max(1.0, np.abs(gl).max()))


def test_fisher_identity_fails_away_from_the_posterior_parameters():
    """Control: with the posterior of different parameters the two gradients differ, so the
    identity test above is not vacuous."""
    rng = np.random.default_rng(3)
    params, data = random_mix1d(rng)
    other, _ = random_mix1d(rng)
    _, grad_q = _mix1d_cross_q(params, other, data)
    grad_ll = DERIVED[MIX1D](params, data)["grad_log_likelihood"]
    gap = max(float(jnp.max(jnp.abs(a - b))) for a, b in
              zip(jax.tree_util.tree_leaves(grad_q), jax.tree_util.tree_leaves(grad_ll), strict=True))
    assert gap > 1e-2


def _brute_log_likelihood(brute_log_joint, params, data, num_obs, k):
    return brute_em_quantities(brute_table(brute_log_joint, params, data, num_obs, k))[0]


def _central_differences(fn, params, step=1e-6):
    """∂fn/∂θ_i by (fn(θ + h e_i) - fn(θ - h e_i)) / 2h for every entry of every leaf (numpy)."""
    flat = {name: np.array(value, dtype=float) for name, value in params.items()}
    grads = {}
    for name, value in flat.items():
        g = np.zeros_like(value)
        for index in np.ndindex(value.shape):
            plus = {n: v.copy() for n, v in flat.items()}
            minus = {n: v.copy() for n, v in flat.items()}
            plus[name][index] += step
            minus[name][index] -= step
            g[index] = (fn(plus) - fn(minus)) / (2 * step)
        grads[name] = g
    return grads


def test_log_likelihood_gradient_matches_central_differences_float64():
    """jax.grad of the derived log-likelihood vs central differences of the brute-force one."""
    rng = np.random.default_rng(11)
    cases = [
        (MIX1D, mix1d_brute_log_joint, random_mix1d(rng), MIX1D_N, MIX1D_K),
        (MASKED, masked_brute_log_joint, random_masked(rng), MASKED_N, MASKED_K),
    ]
    for model, brute, (params, data), num_obs, k in cases:
        data_np = jax.tree_util.tree_map(np.asarray, data)
        numeric = _central_differences(
            lambda p, brute=brute, data_np=data_np, num_obs=num_obs, k=k:
                _brute_log_likelihood(brute, p, data_np, num_obs, k), params)
        exact = DERIVED[model](params, data)["grad_log_likelihood"]
        for name in params:
            np.testing.assert_allclose(np.asarray(exact[name]), numeric[name], rtol=1e-6, atol=1e-6)
