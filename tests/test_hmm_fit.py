"""Fitting HMMs with the shared engine (issue 3): `jaxem.fit`, `fit_restarts`,
`ClosedForm`, `Gradient` and `log_prior` unchanged. Monotone log-likelihood on random
models, hmmlearn's Baum–Welch trajectory, padding that changes nothing, a custom
three-function HMM fitted by gradient and by closed form, Fisher's identity."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hmmlearn import hmm
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxem
from jaxem.distributions import normal_logpdf
from jaxem.models import CategoricalHMMParams, GaussianHMMParams, PoissonHMMParams

K, M = 3, 4
CATEGORICAL = jaxem.models.categorical_hmm(K, M)
POISSON = jaxem.models.poisson_hmm(K)


def _dirichlet_chain(rng):
    return jnp.asarray(rng.dirichlet(np.ones(K))), jnp.asarray(rng.dirichlet(np.ones(K), K))


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_categorical_log_likelihood_never_decreases(seed):
    rng = np.random.default_rng(seed)
    params = CategoricalHMMParams(*_dirichlet_chain(rng), jnp.asarray(rng.dirichlet(np.ones(M), K)))
    x = jnp.asarray(rng.integers(0, M, size=60))
    result = jaxem.fit(CATEGORICAL, x, params, max_iter=25, tol=0.0)
    history = np.asarray(result.history)
    assert result.finite and int(result.num_iters) == 25
    assert np.all(np.diff(history) >= -1e-10 * np.abs(history[1:]))


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_poisson_log_likelihood_never_decreases_on_padded_batches(seed):
    rng = np.random.default_rng(seed)
    params = PoissonHMMParams(*_dirichlet_chain(rng), jnp.asarray(rng.uniform(0.5, 8.0, (K, 2))))
    lengths = rng.integers(1, 21, size=4)
    counts = rng.poisson(rng.uniform(0.5, 8.0, size=(int(lengths.sum()), 1)), size=(int(lengths.sum()), 2))
    data = jaxem.Sequences.from_concatenated(counts, lengths, max_length=20)
    result = jaxem.fit(POISSON, data, params, max_iter=25, tol=0.0)
    history = np.asarray(result.history)
    assert result.finite
    assert np.all(np.diff(history) >= -1e-10 * np.abs(history[1:]))


def test_gaussian_fit_follows_hmmlearn_trajectory():
    """Ten Baum–Welch iterations on several sequences: the same log-likelihood history
    and the same final parameters as hmmlearn's GaussianHMM."""
    rng = np.random.default_rng(5)
    lengths = [30, 12, 25]
    x = rng.normal(size=(sum(lengths), 2)) + 3.0 * rng.integers(0, 3, size=(sum(lengths), 1))
    start, trans = rng.dirichlet(np.ones(K)), rng.dirichlet(np.ones(K), K)
    means = x[rng.choice(len(x), K, replace=False)]
    covariances = np.stack([np.eye(2)] * K)
    ref = hmm.GaussianHMM(K, "full", covars_prior=0.0, covars_weight=1.0, init_params="", n_iter=10,
                          tol=-np.inf)
    ref.startprob_, ref.transmat_, ref.means_, ref.covars_ = start, trans, means, covariances
    ref.fit(x, lengths)
    model = jaxem.models.gaussian_hmm(K, "full", reg_covar=0.0)
    params0 = GaussianHMMParams(*map(jnp.asarray, (start, trans, means, covariances)))
    result = jaxem.fit(model, jaxem.Sequences.from_concatenated(x, lengths), params0, max_iter=10, tol=0.0)
    np.testing.assert_allclose(result.history, ref.monitor_.history, rtol=1e-9)
    for ours, theirs in zip(result.params, (ref.startprob_, ref.transmat_, ref.means_, ref.covars_),
                            strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-9)


# --- padding changes nothing ------------------------------------------------------------------

PIECES = [np.array([0, 1, 1, 3, 2, 0, 0, 1, 3]), np.array([2, 2, 3, 1, 0, 0, 1, 2, 3, 3, 1, 0, 2, 2]),
          np.array([3, 1, 0, 0, 2])]
CAT_PARAMS = CategoricalHMMParams(*_dirichlet_chain(np.random.default_rng(6)),
                                  jnp.asarray(np.random.default_rng(7).dirichlet(np.ones(M), K)))


@functools.partial(jax.jit, static_argnums=0)
def posterior_and_paths(model, params, data):
    return model.e_step(params, data), model.viterbi(params, data)


@functools.partial(jax.jit, static_argnums=0)
def log_likelihoods(model, params, data):
    """Per-sequence log-likelihoods: (B,) for Sequences."""
    return model.sequence_log_likelihoods(params, data)


@functools.partial(jax.jit, static_argnums=0)
def init_many(model, keys, data):
    return jax.vmap(lambda k: model.init(k, data))(keys)


def test_padding_equals_sequences_one_by_one():
    batch = jaxem.Sequences.from_list(PIECES, max_length=16)
    posterior, (paths, log_probs) = jax.device_get(posterior_and_paths(CATEGORICAL, CAT_PARAMS, batch))
    total_ll, initial, transition = 0.0, 0.0, 0.0
    for b, piece in enumerate(PIECES):
        one, (path, log_prob) = jax.device_get(posterior_and_paths(CATEGORICAL, CAT_PARAMS, piece))
        n = len(piece)
        np.testing.assert_allclose(posterior.marginals[b, :n], one.marginals, atol=1e-12)
        assert np.all(posterior.marginals[b, n:] == 0)
        np.testing.assert_array_equal(paths[b, :n], path)
        assert np.all(paths[b, n:] == -1)
        np.testing.assert_allclose(log_probs[b], log_prob, rtol=1e-12)
        total_ll += one.log_likelihood
        initial += one.initial_counts
        transition += one.transition_counts
    np.testing.assert_allclose(posterior.log_likelihood, total_ll, rtol=1e-12)
    np.testing.assert_allclose(posterior.initial_counts, initial, atol=1e-12)
    np.testing.assert_allclose(posterior.transition_counts, transition, atol=1e-12)
    np.testing.assert_allclose(np.sum(log_likelihoods(CATEGORICAL, CAT_PARAMS, batch)), total_ll, rtol=1e-12)


def test_fit_does_not_depend_on_padding_length():
    short = jaxem.Sequences.from_list(PIECES, max_length=14)
    mask = np.arange(20)[None, :] < np.array([len(p) for p in PIECES])[:, None]
    values = np.where(mask, np.asarray(jaxem.Sequences.from_list(PIECES, max_length=20).values), 3)
    long = jaxem.Sequences.from_mask(jnp.asarray(values), mask)  # padding symbols (3) do not matter
    a = jaxem.fit(CATEGORICAL, short, CAT_PARAMS, max_iter=15, tol=0.0)
    b = jaxem.fit(CATEGORICAL, long, CAT_PARAMS, max_iter=15, tol=0.0)
    np.testing.assert_allclose(a.history, b.history, rtol=1e-12)
    for leaf_a, leaf_b in zip(a.params, b.params, strict=True):
        np.testing.assert_allclose(leaf_a, leaf_b, rtol=1e-10, atol=1e-14)
    assert int(CATEGORICAL.num_observations(long)) == sum(len(p) for p in PIECES)


def test_fit_restarts_on_sequences():
    data = jaxem.Sequences.from_list(PIECES, max_length=14)
    starts = init_many(CATEGORICAL, jax.random.split(jax.random.PRNGKey(0), 6), data)
    out = jaxem.fit_restarts(CATEGORICAL, data, starts, max_iter=40, strategy="exhaustive")
    finals = np.asarray(out.restarts.log_likelihood)
    assert np.all(np.isfinite(finals)) and int(out.best_index) == int(np.argmax(finals))
    np.testing.assert_allclose(out.best.log_likelihood,
                               np.sum(log_likelihoods(CATEGORICAL, out.best.params, data)), rtol=1e-12)


# --- a custom HMM written as three functions: autoregressive Gaussian emissions -----------------

def ar_log_initial(params, z):
    """A fixed uniform start: with one sequence the maximum-likelihood initial
    distribution is a point mass that a gradient method only approaches (logits -> ±∞)."""
    del params
    return -jnp.log(2.0) + 0.0 * z


def ar_log_transition(params, z_prev, z):
    return jax.nn.log_softmax(params["transition_logits"][z_prev])[z]


def ar_log_emission(params, x, z):
    """y_t | z_t = k ~ N(c_k + φ_k y_{t-1}, σ_k²); x holds the pair (y_t, y_{t-1})."""
    mean = params["intercept"][z] + params["coef"][z] * x["previous"]
    return normal_logpdf(x["y"], mean, jnp.exp(params["log_scale"][z]))


def ar_closed_form(posterior, data, params):
    """Exact maximiser of Q: normalised expected counts, and per state weighted least
    squares of y_t on (1, y_{t-1}) with the weighted residual variance."""
    del params
    gamma = posterior.marginals  # (T, K)
    design = jnp.stack([jnp.ones_like(data["previous"]), data["previous"]], axis=1)  # (T, 2)
    gram = jnp.einsum("tk,ti,tj->kij", gamma, design, design)
    rhs = jnp.einsum("tk,ti,t->ki", gamma, design, data["y"])
    beta = jnp.linalg.solve(gram, rhs[..., None])[..., 0]  # (K, 2)
    residual = data["y"][:, None] - design @ beta.T
    variance = jnp.sum(gamma * residual**2, axis=0) / jnp.sum(gamma, axis=0)
    return {
        "transition_logits": jnp.log(posterior.transition_counts),
        "intercept": beta[:, 0],
        "coef": beta[:, 1],
        "log_scale": 0.5 * jnp.log(variance),
    }


AR_HMM = jaxem.HMM(ar_log_initial, ar_log_transition, ar_log_emission, num_states=2)


def _simulate_ar(num_steps=400):
    rng = np.random.default_rng(8)
    transition = np.array([[0.95, 0.05], [0.08, 0.92]])
    intercept, coef, scale = np.array([0.0, 2.0]), np.array([0.8, -0.3]), np.array([0.5, 1.0])
    z, y = 0, [0.0]
    for _ in range(num_steps):
        z = rng.choice(2, p=transition[z])
        y.append(intercept[z] + coef[z] * y[-1] + scale[z] * rng.normal())
    y = np.array(y)
    return {"y": jnp.asarray(y[1:]), "previous": jnp.asarray(y[:-1])}


AR_DATA = _simulate_ar()
AR_START = {
    "transition_logits": jnp.asarray([[1.0, 0.0], [0.0, 1.0]]),
    "intercept": jnp.asarray([-0.5, 1.0]),
    "coef": jnp.asarray([0.5, 0.0]),
    "log_scale": jnp.asarray([0.0, 0.0]),
}


@jax.jit
def _probabilities(params):
    return {
        "transition": jax.nn.softmax(params["transition_logits"], axis=-1),
        "intercept": params["intercept"],
        "coef": params["coef"],
        "scale": jnp.exp(params["log_scale"]),
    }


def test_custom_hmm_gradient_and_closed_form_agree():
    closed = jaxem.fit(AR_HMM, AR_DATA, AR_START, m_step=jaxem.ClosedForm(ar_closed_form),
                       max_iter=300, tol=1e-10)
    gradient = jaxem.fit(AR_HMM, AR_DATA, AR_START, m_step=jaxem.Gradient(num_steps=20),
                         max_iter=300, tol=1e-10)
    assert bool(closed.converged) and bool(gradient.converged)
    for result in (closed, gradient):
        history = np.asarray(result.history)[: int(result.num_iters)]
        assert np.all(np.diff(history) >= -1e-8 * np.abs(history[1:]))
    np.testing.assert_allclose(gradient.log_likelihood, closed.log_likelihood, rtol=1e-8)
    a, b = _probabilities(closed.params), _probabilities(gradient.params)
    for name in a:
        np.testing.assert_allclose(b[name], a[name], atol=2e-4, err_msg=name)
    # the fit recovers the simulated regimes
    np.testing.assert_allclose(np.sort(np.asarray(a["coef"])), [-0.3, 0.8], atol=0.1)


def test_fisher_identity_for_custom_hmm():
    """∇_θ Q(θ | θ_n) at θ = θ_n equals ∇_θ log p(y | θ_n): the posterior (an explicit
    backward pass) is the gradient of the forward recursion."""
    def both(params):
        posterior = AR_HMM.e_step(params, AR_DATA)
        q_grad = jax.grad(lambda p: AR_HMM.q(p, posterior, AR_DATA))(params)
        ll_grad = jax.grad(lambda p: AR_HMM.log_likelihood(p, AR_DATA))(params)
        return q_grad, ll_grad

    q_grad, ll_grad = jax.jit(both)(AR_START)
    for name in AR_START:
        np.testing.assert_allclose(q_grad[name], ll_grad[name], rtol=1e-9, atol=1e-9, err_msg=name)
    # and the log-likelihood gradient itself matches central finite differences
    eps = 1e-6
    start = jax.device_get(AR_START)
    direction = {k: np.ones_like(v) / np.sqrt(v.size) for k, v in start.items()}
    ll = jax.jit(AR_HMM.log_likelihood)
    values = [ll({k: start[k] + s * eps * direction[k] for k in start}, AR_DATA) for s in (1, -1)]
    numeric = (values[0] - values[1]) / (2 * eps)
    analytic = sum(np.vdot(ll_grad[k], direction[k]) for k in AR_START)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6)


def test_three_function_hmm_equals_ready_model():
    """`jaxem.HMM` built from the categorical model's per-state functions gives the same
    posterior as the ready model's vectorised tables, with structural zeros."""
    generic = jaxem.HMM(lambda p, z: jnp.log(p.initial[z]),
                        lambda p, i, j: jnp.log(p.transition[i, j]),
                        CATEGORICAL.log_emission, num_states=K)
    transition = np.array(CAT_PARAMS.transition)
    transition[0, 2] = 0.0
    params = CAT_PARAMS._replace(transition=jnp.asarray(transition / transition.sum(1, keepdims=True)))
    data = jaxem.Sequences.from_list(PIECES, max_length=16)
    ours, _ = posterior_and_paths(generic, params, data)
    ready, _ = posterior_and_paths(CATEGORICAL, params, data)
    for a, b in zip(ours, ready, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-12)
    assert float(ours.transition_counts[0, 2]) == 0.0


def test_three_function_hmm_samples_with_its_emission_sampler():
    """`HMM.sample` draws states from the chain and observations from `sample_emission`."""
    means = np.array([-3.0, 4.0])
    model = jaxem.HMM(lambda p, z: jnp.log(p["initial"][z]), lambda p, i, j: jnp.log(p["transition"][i, j]),
                      lambda p, x, z: normal_logpdf(x, p["means"][z], 1.0), num_states=2,
                      sample_emission=lambda key, p, z: p["means"][z] + jax.random.normal(key))
    params = {"initial": np.array([0.0, 1.0]), "transition": np.array([[0.9, 0.1], [0.3, 0.7]]),
              "means": means}
    x, z = jax.device_get(jax.jit(model.sample, static_argnums=2)(jax.random.PRNGKey(3), params, 3000))
    assert z[0] == 1 and x.shape == (3000,)
    for k in range(2):
        np.testing.assert_allclose(x[z == k].mean(), means[k], atol=0.1)
        np.testing.assert_allclose(x[z == k].std(), 1.0, atol=0.06)
    counts = np.zeros((2, 2))
    np.add.at(counts, (z[:-1], z[1:]), 1)
    np.testing.assert_allclose(counts / counts.sum(1, keepdims=True), params["transition"], atol=0.03)


# --- containers and errors ---------------------------------------------------------------------

def test_sequences_constructors_round_trip():
    x = np.arange(20.0).reshape(10, 2)
    seqs = jaxem.Sequences.from_concatenated(x, [3, 7])
    assert seqs.values.shape == (2, 7, 2) and seqs.max_length == 7 and seqs.num_sequences == 2
    np.testing.assert_array_equal(seqs.values[0, 3:], 0.0)
    back = seqs.unpadded()
    np.testing.assert_array_equal(np.concatenate(back), x)
    again = jaxem.Sequences.from_mask(seqs.values, seqs.mask)
    np.testing.assert_array_equal(again.lengths, [3, 7])
    with pytest.raises(ValueError, match="padding must come after"):
        jaxem.Sequences.from_mask(seqs.values, np.array([[True, False, True] + [False] * 4, [True] * 7]))
    with pytest.raises(ValueError, match="summing to the number of rows"):
        jaxem.Sequences.from_concatenated(x, [3, 8])
    with pytest.raises(ValueError, match="max_length"):
        jaxem.Sequences.from_list([x], max_length=5)


def test_bad_input_is_rejected_with_clear_messages():
    data = jaxem.Sequences.from_list(PIECES)
    with pytest.raises(ValueError, match="lengths: every length must be in"):
        CATEGORICAL.check_data(data._replace(lengths=np.array([9, 15, 5])))
    with pytest.raises(ValueError, match="lengths: expected 3 integers"):
        CATEGORICAL.check_data(data._replace(lengths=np.array([9.0, 14.0, 5.0])))
    with pytest.raises(ValueError, match="NaN"):
        AR_HMM.check_data({"y": np.where(np.arange(400) == 3, np.nan, 0.0), "previous": np.zeros(400)})
    with pytest.raises(ValueError, match="algorithm"):
        jaxem.HMM(ar_log_initial, ar_log_transition, ar_log_emission, 2, algorithm="fastest")
    with pytest.raises(TypeError, match="log_emission"):
        jaxem.HMM(ar_log_initial, ar_log_transition, None, 2)
    with pytest.raises(ValueError, match="sample_emission"):
        AR_HMM.sample(jax.random.PRNGKey(0), AR_START, 5)
    with pytest.raises(ValueError, match="num_states"):
        jaxem.HMM(ar_log_initial, ar_log_transition, ar_log_emission, 0)
