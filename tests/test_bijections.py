"""Minimal unconstrained coordinates: `model.unconstrain` / `model.constrain` on every ready model,
the simplex log-ratios and the Gaussian covariance coordinates.

Oracles: numpy, independently of jaxem (log-ratios log p_k - log p_K and softmax([u, 0]); the
Cholesky factor and L Lᵀ); each model's own `num_parameters` for the number of coordinates; the
numpy rank of the Jacobian of `constrain` (full column rank: no redundant coordinate); exact zeros
for structural zeros. Shapes are fixed per case so that every jitted function compiles once.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import MIX1D
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.flatten_util import ravel_pytree

import jaxem as em
from jaxem.families import GaussianFamily, logits_to_simplex, simplex_to_logits
from jaxem.models import (
    GaussianHMMParams,
    categorical_hmm,
    gaussian_hmm,
    gaussian_mixture,
    poisson_hmm,
)

KINDS = ("full", "diag", "spherical", "tied")
K, D = 3, 2  # components/states and dimension of every model case
_RNG = np.random.default_rng(5)
GAUSS_X = jnp.asarray(_RNG.normal(size=(24, D)) + 3.0 * (np.arange(24) % K)[:, None])
SYMBOLS = jnp.asarray(_RNG.integers(0, 4, size=24))
COUNTS = jnp.asarray(_RNG.poisson(3.0, size=(24, D)))

CASES = {
    **{f"gmm-{kind}": (gaussian_mixture(K, kind), GAUSS_X) for kind in KINDS},
    **{f"gaussian-hmm-{kind}": (gaussian_hmm(K, kind), GAUSS_X) for kind in KINDS},
    "categorical-hmm": (categorical_hmm(K, 4), SYMBOLS),
    "poisson-hmm": (poisson_hmm(K), COUNTS),
}


def num_parameters(model):
    """The model's own count of free parameters (an independent formula in the code)."""
    if hasattr(model, "num_symbols"):
        return model.num_parameters()
    return model.num_parameters(D)


@functools.cache
def case_params(name, seed=0):
    """Starting parameters from `model.init` (random responsibilities: no k-means to compile)."""
    model, data = CASES[name]
    method = {} if name.startswith("categorical") else {"method": "random"}
    return model.init(jax.random.key(seed), data, **method)


@functools.cache
def compiled_checks(name):
    """One jitted program per model: the coordinates of θ, θ back from them, the round trip the
    other way at θ's coordinates plus `noise`, and the Jacobian of constrain (flattened) there."""
    model, _ = CASES[name]

    def checks(params, noise):
        coords = model.unconstrain(params)
        flat, unravel = ravel_pytree(coords)
        point = flat + noise

        def flat_constrain(v):
            return ravel_pytree(model.constrain(unravel(v)))[0]

        again = ravel_pytree(model.unconstrain(model.constrain(unravel(point))))[0]
        return coords, model.constrain(coords), point, again, jax.jacfwd(flat_constrain)(point)

    return jax.jit(checks)


def assert_tree_close(a, b, rtol=1e-12, atol=1e-12):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        assert x.shape == y.shape and x.dtype == y.dtype
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


# --- every ready model ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CASES)
def test_round_trip_count_and_full_rank(name):
    model, _ = CASES[name]
    params = case_params(name)
    size = num_parameters(model)
    noise = jnp.asarray(np.random.default_rng(1).normal(scale=0.5, size=size))
    coords, back, point, again, jacobian = compiled_checks(name)(params, noise)
    assert type(coords).__name__.endswith("Coordinates")  # a NamedTuple of its own, not the params type
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(coords))
    assert_tree_close(back, params)  # constrain ∘ unconstrain = id

    flat = ravel_pytree(coords)[0]
    assert flat.dtype == jnp.float64
    assert flat.size == size  # exactly the free parameters
    # unconstrain ∘ constrain = id at another, random point
    np.testing.assert_allclose(again, point, rtol=1e-10, atol=1e-11)
    # no redundant coordinate: the Jacobian of constrain has full column rank there
    jacobian = np.asarray(jacobian)
    assert jacobian.shape[1] == size
    assert np.all(np.isfinite(jacobian))
    assert np.linalg.matrix_rank(jacobian) == size


@pytest.mark.parametrize("name", CASES)
def test_under_jit_and_vmap_and_with_batch_axes(name):
    model, _ = CASES[name]
    stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *(case_params(name, s) for s in range(3)))

    @jax.jit
    def batched(params):
        coords = jax.vmap(model.unconstrain)(params)
        return coords, model.unconstrain(params), jax.vmap(model.constrain)(coords), model.constrain(coords)

    coords, with_batch_axes, back, back_with_batch_axes = batched(stacked)
    noise = jnp.zeros(num_parameters(model))
    for i in range(3):
        one = jax.tree_util.tree_map(lambda a, i=i: a[i], coords)
        assert_tree_close(one, compiled_checks(name)(case_params(name, i), noise)[0], rtol=1e-13, atol=1e-13)
    assert_tree_close(with_batch_axes, coords, rtol=1e-13, atol=1e-13)  # leading axes carried through
    assert_tree_close(back, stacked)
    assert_tree_close(back_with_batch_axes, stacked)


def test_float32_parameters_give_float32_coordinates_and_back():
    model, _ = CASES["gmm-full"]
    params = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), case_params("gmm-full"))
    coords = model.unconstrain(params)
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(coords)} == {jnp.dtype(jnp.float32)}
    back = model.constrain(coords)
    assert_tree_close(back, params, rtol=1e-5, atol=1e-6)


def test_structural_zeros_in_a_left_right_hmm_round_trip_to_exact_zeros():
    model = gaussian_hmm(K, "diag")
    transition = jnp.array([[0.7, 0.3, 0.0], [0.0, 0.6, 0.4], [0.0, 0.0, 1.0]])
    params = GaussianHMMParams(jnp.array([1.0, 0.0, 0.0]), transition,
                               jnp.array([[0.0, 0.0], [3.0, 3.0], [6.0, 6.0]]), jnp.ones((K, D)))
    model.check_params(params)
    coords = model.unconstrain(params)
    # zeros are -inf; row 0 and π have last entry 0: their last positive entry is the reference (+inf)
    np.testing.assert_array_equal(coords.initial_logits, [np.inf, -np.inf])
    np.testing.assert_allclose(coords.transition_logits,
                               [[np.log(0.7 / 0.3), np.inf], [-np.inf, np.log(0.6 / 0.4)],
                                [-np.inf, -np.inf]])
    # the finite coordinates are the free parameters of the face: (#positive - 1) per vector
    chain = np.concatenate([np.ravel(coords.initial_logits), np.ravel(coords.transition_logits)])
    positive = np.concatenate([[params.initial > 0], params.transition > 0])
    assert np.sum(np.isfinite(chain)) == np.sum(np.sum(positive, axis=1) - 1)
    for back in (model.constrain(coords), jax.jit(model.constrain)(coords)):
        np.testing.assert_array_equal(np.asarray(back.transition) == 0, np.asarray(transition) == 0)
        np.testing.assert_array_equal(np.asarray(back.initial), [1.0, 0.0, 0.0])
        assert_tree_close(back, params, rtol=1e-14, atol=0.0)
    # the log-likelihood's gradient in these coordinates is finite (no NaN from the infinities)
    grads = jax.jit(jax.grad(lambda c: model.log_likelihood(model.constrain(c), GAUSS_X[:12])))(coords)
    assert all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(grads))
    assert np.all(np.asarray(grads.transition_logits)[~np.isfinite(coords.transition_logits)] == 0)


def test_zero_emission_probabilities_and_rates_round_trip_exactly():
    cat, _ = CASES["categorical-hmm"]
    params = case_params("categorical-hmm")
    emission = params.emission.at[0, 1].set(0.0).at[1, 3].set(0.0)  # one row with its last entry 0
    emission = emission / jnp.sum(emission, axis=1, keepdims=True)
    params = params._replace(emission=emission)
    assert_tree_close(cat.constrain(cat.unconstrain(params)), params, rtol=1e-14, atol=0.0)
    pois, _ = CASES["poisson-hmm"]
    params = case_params("poisson-hmm")
    params = params._replace(rates=params.rates.at[1, 0].set(0.0))
    coords = pois.unconstrain(params)
    assert coords.log_rates[1, 0] == -np.inf
    assert_tree_close(pois.constrain(coords), params, rtol=1e-14, atol=0.0)


def test_user_structures_default_to_the_identity():
    params = {"logits": jnp.zeros(3), "loc": jnp.arange(3.0), "log_scale": jnp.zeros(3)}
    assert MIX1D.unconstrain(params) is params
    assert MIX1D.constrain(params) is params
    chain = em.HMM(lambda p, z: p["a"][z], lambda p, i, j: p["a"][j], lambda p, x, z: x * p["a"][z], 2)
    assert chain.unconstrain(params) is params and chain.constrain(params) is params


# --- probability vectors ----------------------------------------------------------------------------


def numpy_logits(p):
    return np.log(p[..., :-1]) - np.log(p[..., -1:])


def numpy_softmax_with_zero(u):
    logits = np.concatenate([u, np.zeros(u.shape[:-1] + (1,))], axis=-1)
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), size=st.sampled_from([1, 2, 5]))
def test_simplex_map_against_numpy(seed, size):
    rng = np.random.default_rng(seed)
    rows = 3
    p = rng.dirichlet(np.ones(size), size=rows)
    u = simplex_to_logits(jnp.asarray(p))
    assert u.shape == (rows, size - 1)
    np.testing.assert_allclose(u, numpy_logits(p), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(logits_to_simplex(u), p, rtol=1e-12, atol=1e-14)
    v = rng.normal(scale=2.0, size=(rows, size - 1))
    q = logits_to_simplex(jnp.asarray(v))
    np.testing.assert_allclose(q, numpy_softmax_with_zero(v), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(simplex_to_logits(q), v, rtol=1e-11, atol=1e-11)
    # another axis: the same map on the transpose
    np.testing.assert_array_equal(simplex_to_logits(jnp.asarray(p.T), axis=0), np.asarray(u).T)
    np.testing.assert_array_equal(logits_to_simplex(u.T, axis=0), np.asarray(logits_to_simplex(u)).T)


_round_trip = jax.jit(lambda p: logits_to_simplex(simplex_to_logits(p)))


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_simplex_zeros_in_any_position_round_trip_exactly(seed):
    rng = np.random.default_rng(seed)
    mask = rng.random((6, 4)) < 0.5
    mask[np.arange(6), rng.integers(0, 4, size=6)] = True  # at least one positive entry per row
    p = np.where(mask, rng.random((6, 4)) + 0.1, 0.0)
    p /= p.sum(axis=1, keepdims=True)
    u = np.asarray(simplex_to_logits(jnp.asarray(p)))
    assert np.all(np.isfinite(u).sum(axis=1) == mask.sum(axis=1) - 1)  # the face's free parameters
    assert np.all(np.isposinf(u).sum(axis=1) == (p[:, -1] == 0))  # a marker only when p_K = 0
    for back in (np.asarray(logits_to_simplex(jnp.asarray(u))), np.asarray(_round_trip(jnp.asarray(p)))):
        np.testing.assert_array_equal(back == 0, p == 0)
        np.testing.assert_allclose(back, p, rtol=1e-14)


def test_simplex_gradients_are_finite_at_zeros_and_dtype_is_kept():
    p = jnp.array([[0.5, 0.0, 0.5], [0.25, 0.75, 0.0]])
    u = simplex_to_logits(p)
    jacobians = jax.jit(lambda p, u: (jax.jacrev(simplex_to_logits)(p), jax.jacrev(logits_to_simplex)(u)))
    jac_u, jac_p = jacobians(p, u)
    assert np.all(np.isfinite(jac_u)) and np.all(np.isfinite(jac_p))
    assert simplex_to_logits(p.astype(jnp.float32)).dtype == jnp.float32
    assert logits_to_simplex(u.astype(jnp.float32)).dtype == jnp.float32
    np.testing.assert_array_equal(logits_to_simplex(jnp.zeros((2, 0))), np.ones((2, 1)))


# --- covariances -------------------------------------------------------------------------------------


def random_covariances(rng, kind, batch=()):
    if kind == "diag":
        return rng.uniform(0.2, 3.0, size=batch + (K, D + 1))
    if kind == "spherical":
        return rng.uniform(0.2, 3.0, size=batch + (K,))
    shape = batch + ((K,) if kind == "full" else ()) + (D + 1, D + 1)
    a = rng.normal(size=shape)
    return a @ np.swapaxes(a, -1, -2) + 0.5 * np.eye(D + 1)


def numpy_coordinates(kind, cov):
    if kind in ("diag", "spherical"):
        return np.log(cov)
    chol = np.linalg.cholesky(cov)
    rows, cols = np.tril_indices(cov.shape[-1])
    packed = chol[..., rows, cols]
    return np.where(rows == cols, np.log(np.abs(packed)), packed)


def numpy_covariances(kind, u):
    if kind in ("diag", "spherical"):
        return np.exp(u)
    dim = D + 1
    chol = np.zeros(u.shape[:-1] + (dim, dim))
    rows, cols = np.tril_indices(dim)
    chol[..., rows, cols] = np.where(rows == cols, np.exp(u), u)
    return chol @ np.swapaxes(chol, -1, -2)


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_covariance_coordinates_against_numpy(kind, seed):
    family = GaussianFamily(kind)
    rng = np.random.default_rng(seed)
    cov = random_covariances(rng, kind)
    u = family.unconstrain_covariances(jnp.asarray(cov))
    size = family.num_covariance_parameters(K, D + 1)
    assert u.size == size
    np.testing.assert_allclose(u, numpy_coordinates(kind, cov), rtol=1e-11, atol=1e-12)
    back = family.constrain_covariances(u)
    assert back.shape == cov.shape
    np.testing.assert_allclose(back, cov, rtol=1e-12, atol=1e-12)
    if kind in ("full", "tied"):
        np.testing.assert_array_equal(back, np.swapaxes(np.asarray(back), -1, -2))  # exactly symmetric
    v = rng.normal(size=u.shape)
    np.testing.assert_allclose(family.constrain_covariances(jnp.asarray(v)), numpy_covariances(kind, v),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(family.unconstrain_covariances(family.constrain_covariances(jnp.asarray(v))),
                               v, rtol=1e-10, atol=1e-11)


@pytest.mark.parametrize("kind", KINDS)
def test_covariance_coordinates_with_batch_axes_jit_vmap_and_gradients(kind):
    family = GaussianFamily(kind)
    cov = jnp.asarray(random_covariances(np.random.default_rng(3), kind, batch=(2,)))

    @jax.jit
    def compiled(cov):
        u = jax.vmap(family.unconstrain_covariances)(cov)
        jacobians = (jax.jacrev(family.unconstrain_covariances)(cov[0]),
                     jax.jacrev(family.constrain_covariances)(u[0]))
        return u, family.unconstrain_covariances(cov), family.constrain_covariances(u), jacobians

    u, with_batch_axes, back, jacobians = compiled(cov)
    np.testing.assert_allclose(with_batch_axes, u, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(back, cov, rtol=1e-12, atol=1e-12)
    assert all(np.all(np.isfinite(j)) for j in jacobians)
    assert family.constrain_covariances(u.astype(jnp.float32)).dtype == jnp.float32
    assert family.unconstrain_covariances(cov.astype(jnp.float32)).dtype == jnp.float32


def test_covariance_coordinates_of_a_wrong_size_are_refused():
    with pytest.raises(ValueError, match="triangular"):
        GaussianFamily("full").constrain_covariances(jnp.zeros((K, 4)))
