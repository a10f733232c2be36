"""Chain inference (issue 3): the forward recursion, its gradient (the posterior),
Viterbi and sampling, checked against brute-force enumeration of all state paths,
against each other (scaled / log / parallel, explicit backward / autodiff), and
against closed forms that hold for any length."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxem
from jaxem.structures.chain import ChainTables, chain_log_partition
from jaxem.structures.chain_batched import log_partitions_scaled_batch
from jaxem.structures.chain_decoding import sample_chain, sample_posterior, viterbi
from jaxem.structures.chain_sequential import log_partition_scaled, scaled_forward

K, T = 3, 6
ALGORITHMS = ("scaled", "log", "parallel")


def random_tables(seed, time_varying=False, structural_zeros=True, num_steps=T, num_states=K):
    rng = np.random.default_rng(seed)
    initial = rng.normal(size=num_states)
    shape = (num_steps - 1, num_states, num_states) if time_varying else (num_states, num_states)
    transition = rng.normal(size=shape)
    emission = 2.0 * rng.normal(size=(num_steps, num_states))
    if structural_zeros:
        # forbid some transitions (never a whole row), as in a left-right model
        forbid = rng.random(shape) < 0.3
        forbid[..., 0] = False
        transition = np.where(forbid, -np.inf, transition)
    return ChainTables(jnp.asarray(initial), jnp.asarray(transition), jnp.asarray(emission))


def enumerate_paths(tables, length):
    """log Z, γ (T, K), Σξ (shape of the transition table), best path and its score by
    summing over all K^length state paths."""
    initial, transition, emission = (np.asarray(t) for t in tables)
    num_states = initial.shape[0]
    paths = list(itertools.product(range(num_states), repeat=length))
    scores = []
    for z in paths:
        s = initial[z[0]] + sum(emission[t, z[t]] for t in range(length))
        for t in range(1, length):
            s += transition[z[t - 1], z[t]] if transition.ndim == 2 else transition[t - 1, z[t - 1], z[t]]
        scores.append(s)
    scores = np.array(scores)
    log_z = np.logaddexp.reduce(scores)
    probs = np.exp(scores - log_z)
    gamma = np.zeros(emission.shape)
    xi = np.zeros(transition.shape)
    for p, z in zip(probs, paths, strict=True):
        for t in range(length):
            gamma[t, z[t]] += p
        for t in range(1, length):
            if transition.ndim == 2:
                xi[z[t - 1], z[t]] += p
            else:
                xi[t - 1, z[t - 1], z[t]] += p
    best = int(np.argmax(scores))
    return log_z, gamma, xi, np.array(paths[best]), scores[best], dict(zip(paths, probs, strict=True))


def _posterior(algorithm, padded):
    """Jitted (A, ∇A). `padded`: the length is a traced argument (masking code);
    otherwise the length is the static T (the unpadded code path)."""
    def fn(tables, length):
        length = length if padded else T
        return jax.value_and_grad(lambda t: chain_log_partition(t, length, False, algorithm))(tables)

    return jax.jit(fn)


# The scaled algorithm has separate code for unpadded chains (a static length); the others
# share their code paths, so a traced length serves every case.
POSTERIORS = {("scaled", False): _posterior("scaled", False),
              **{(a, True): _posterior(a, True) for a in ALGORITHMS}}
VITERBI = {True: jax.jit(viterbi), False: jax.jit(lambda i, t, e, length: viterbi(i, t, e, T))}


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("time_varying", [False, True])
@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), length=st.integers(1, T))
def test_posterior_equals_enumeration(algorithm, time_varying, seed, length):
    tables = random_tables(seed, time_varying)
    log_z, gamma, xi, _, _, _ = enumerate_paths(tables, length)
    value, grads = POSTERIORS[algorithm, length < T or algorithm != "scaled"](tables, length)
    np.testing.assert_allclose(value, log_z, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(grads.emission, gamma, atol=1e-10)
    np.testing.assert_allclose(grads.initial, gamma[0], atol=1e-10)
    np.testing.assert_allclose(grads.transition, xi, atol=1e-10)
    # structural zeros: exactly zero expected counts, never NaN
    assert np.all(np.asarray(grads.transition)[np.isinf(np.asarray(tables.transition))] == 0)


@pytest.mark.parametrize("time_varying", [False, True])
@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), length=st.integers(1, T))
def test_viterbi_equals_enumeration(time_varying, seed, length):
    tables = random_tables(seed, time_varying)
    _, _, _, best_path, best_score, _ = enumerate_paths(tables, length)
    path, score = VITERBI[length < T](*tables, length)
    np.testing.assert_array_equal(np.asarray(path)[:length], best_path)
    assert np.all(np.asarray(path)[length:] == -1)
    np.testing.assert_allclose(score, best_score, rtol=1e-12)


def test_explicit_backward_equals_autodiff():
    """The custom VJPs of the scaled recursion (one chain under vmap, and the time-major
    batch) equal JAX's derivative of the same forward pass and of the log-space
    recursion, for per-sequence cotangents != 1, with padding."""
    rng = np.random.default_rng(0)
    num_states, num_steps = 4, 40
    tables = ChainTables(
        jnp.asarray(rng.normal(size=num_states)),
        jnp.asarray(rng.normal(size=(num_states, num_states))),
        jnp.asarray(3.0 * rng.normal(size=(5, num_steps, num_states))),
    )
    lengths = np.array([40, 1, 17, 39, 2])
    weights = np.linspace(0.5, 2.5, 5)

    def total(fn):
        def f(t):
            per = jax.vmap(lambda e, n: fn(t.initial, t.transition, e, n))(t.emission, lengths)
            return jnp.sum(weights * per)
        return f

    def batch(t):
        return jnp.sum(weights * log_partitions_scaled_batch(*t, lengths))

    explicit, batched, autodiff, logspace = jax.jit(lambda t: (
        jax.grad(total(log_partition_scaled))(t),
        jax.grad(batch)(t),
        jax.grad(total(lambda *a: scaled_forward(*a)[0]))(t),
        jax.grad(total(jaxem.structures.chain_sequential.log_partition_log))(t),
    ))(tables)
    for a, b, c, d in zip(explicit, batched, autodiff, logspace, strict=True):
        np.testing.assert_allclose(a, d, atol=1e-10)
        np.testing.assert_allclose(b, d, atol=1e-10)
        np.testing.assert_allclose(c, d, atol=1e-10)


def test_parallel_equals_sequential_with_padding():
    rng = np.random.default_rng(1)
    num_states, num_steps = 4, 13
    initial = jnp.asarray(rng.normal(size=num_states))
    transition = jnp.asarray(np.where(rng.random((num_states, num_states)) < 0.2, -np.inf,
                                      rng.normal(size=(num_states, num_states))))
    emission = jnp.asarray(2.0 * rng.normal(size=(3, num_steps, num_states)))
    tables = ChainTables(initial, transition, emission)
    lengths = jnp.array([13, 6, 1])
    results = jax.jit(lambda t: {
        a: jax.value_and_grad(lambda u, a=a: chain_log_partition(u, lengths, True, a))(t) for a in ALGORITHMS
    })(tables)
    value, grads = results["scaled"]
    for algorithm in ("log", "parallel"):
        other_value, other_grads = results[algorithm]
        np.testing.assert_allclose(other_value, value, rtol=1e-12)
        for a, b in zip(other_grads, grads, strict=True):
            np.testing.assert_allclose(a, b, atol=1e-10)
    assert np.all(np.asarray(grads.emission)[1, 6:] == 0) and np.all(np.asarray(grads.emission)[2, 1:] == 0)


def test_batch_with_per_sequence_tables_equals_enumeration():
    """Batched tables may differ per sequence: initial (B, K) and time-varying
    transitions (B, T-1, K, K); counts are then per sequence and equal enumeration."""
    pieces = [random_tables(100 + b, time_varying=True, num_steps=5) for b in range(3)]
    tables = ChainTables(*(np.stack([getattr(p, f) for p in pieces]) for f in ChainTables._fields))
    lengths = np.array([5, 2, 4])

    def all_algorithms(t, n):  # "parallel" shares the vmapped batch code with "log"
        return {a: jax.value_and_grad(lambda u, a=a: chain_log_partition(u, n, True, a))(t)
                for a in ("scaled", "log")}

    results = jax.jit(all_algorithms)(tables, lengths)
    expected = [enumerate_paths(p, n) for p, n in zip(pieces, lengths, strict=True)]
    for value, grads in results.values():
        np.testing.assert_allclose(value, sum(e[0] for e in expected), rtol=1e-12)
        for b, (_, gamma, xi, *_rest) in enumerate(expected):
            np.testing.assert_allclose(grads.emission[b], gamma, atol=1e-10)
            np.testing.assert_allclose(grads.initial[b], gamma[0], atol=1e-10)
            np.testing.assert_allclose(grads.transition[b], xi, atol=1e-10)


def _iid_chain(rng, num_steps, num_states, scale):
    """Tables of a chain whose every transition row is the initial distribution π (so it
    is a mixture), with the closed forms log Z = Σ_t logsumexp_k(log π_k + ε_tk) and
    γ_t = softmax(log π + ε_t), computed in float64 numpy."""
    log_pi = np.log(rng.dirichlet(np.ones(num_states)))
    emission = scale * rng.normal(size=(num_steps, num_states))
    joint = log_pi + emission
    per_step = np.logaddexp.reduce(joint, axis=1)
    tables = ChainTables(log_pi, np.broadcast_to(log_pi, (num_states, num_states)).copy(), emission)
    return tables, per_step.sum(), np.exp(joint - per_step[:, None])


def test_long_chain_is_finite_and_exact():
    """T = 100,000 steps, K = 100 states: the scaled recursion is finite and exact."""
    num_steps, num_states = 100_000, 100
    tables, exact, gamma = _iid_chain(np.random.default_rng(2), num_steps, num_states, 5.0)
    value, grads = jax.jit(jax.value_and_grad(lambda t: chain_log_partition(t, num_steps, False)))(
        jax.tree_util.tree_map(jnp.asarray, tables))
    assert np.isfinite(value) and abs(value) > 1e4
    np.testing.assert_allclose(value, exact, rtol=1e-12)
    np.testing.assert_allclose(grads.emission, gamma, atol=1e-9)


def test_one_million_steps_stay_finite():
    """T = 1,000,000 in float32 with K = 4: the log-likelihood is finite and matches the
    float64 closed form to float32 accuracy."""
    num_steps = 1_000_000
    tables, exact, _ = _iid_chain(np.random.default_rng(3), num_steps, 4, 4.0)
    tables = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), tables)
    value = jax.jit(lambda t: chain_log_partition(t, num_steps, False))(tables)
    assert value.dtype == jnp.float32 and np.isfinite(value)
    np.testing.assert_allclose(value, exact, rtol=1e-4)


def test_sample_posterior_matches_enumeration():
    tables = random_tables(7, num_steps=4, num_states=2, structural_zeros=False)
    length = 3  # the last step is padding
    *_, path_probs = enumerate_paths(tables, length)
    keys = jax.random.split(jax.random.PRNGKey(0), 10_000)
    draws = np.asarray(jax.jit(jax.vmap(sample_posterior, in_axes=(0, None, None, None, None)))(
        keys, *tables, length))
    assert np.all(draws[:, 3] == -1)
    codes = draws[:, 0] * 4 + draws[:, 1] * 2 + draws[:, 2]
    freq = np.bincount(codes, minlength=8) / len(codes)
    expected = np.array([path_probs[tuple(int(b) for b in np.binary_repr(c, 3))] for c in range(8)])
    np.testing.assert_allclose(freq, expected, atol=0.02)  # 4 standard errors


def test_sample_chain_frequencies():
    transition = np.array([[0.9, 0.1, 0.0], [0.2, 0.5, 0.3], [0.3, 0.3, 0.4]])
    with np.errstate(divide="ignore"):
        log_a, log_initial = np.log(transition), np.log([1.0, 0.0, 0.0])
    path = np.asarray(jax.jit(sample_chain, static_argnums=3)(jax.random.PRNGKey(1), log_initial, log_a,
                                                              10_000))
    assert path[0] == 0
    counts = np.zeros((3, 3))
    np.add.at(counts, (path[:-1], path[1:]), 1)
    np.testing.assert_allclose(counts / counts.sum(1, keepdims=True), transition, atol=0.03)
    assert counts[0, 2] == 0


def test_scaled_forward_filtered_probabilities():
    """α̂_t are the filtered p(z_t | x_0..t): compare with enumeration of the prefix."""
    tables = random_tables(11)
    _, alphas, _, _, _ = jax.jit(scaled_forward)(*tables, T)
    for t in range(T):
        prefix = ChainTables(tables.initial, tables.transition, tables.emission)
        _, gamma, *_ = enumerate_paths(prefix, t + 1)
        np.testing.assert_allclose(alphas[t], gamma[t], atol=1e-12)
