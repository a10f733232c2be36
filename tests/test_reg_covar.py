"""What `reg_covar` does to the monotone-objective guarantee (documented in `gaussian_mixture`).

The M-step Σ_k = S_k + reg·I exactly maximises Q(θ) - ½·reg·Σ_k n_k tr(Σ_k⁻¹) with n_k the current
expected counts, so EM with reg_covar > 0 may lower ℓ, but by at most
½·reg·Σ_k n_k(θ_t) tr(Σ_k(θ_t)⁻¹) per iteration; with reg_covar ≪ the data's variances that is
negligible and ℓ never drops beyond rounding. Reference log-likelihoods: float64 NumPy.
"""

import jax
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import logsumexp

import jaxem as em
from jaxem.models import gaussian_mixture

N, D, K = 60, 2, 3
SMALL = gaussian_mixture(K, "full")  # reg_covar = 1e-6, the default
LARGE = gaussian_mixture(K, "full", reg_covar=0.05)  # comparable to the data's variances (0.01)


def log_likelihood_and_drop_bound(params, x, reg):
    w, mu, cov = (np.asarray(a, np.float64) for a in params)
    table = []
    for k in range(K):
        chol = np.linalg.cholesky(cov[k])
        y = np.linalg.solve(chol, (x - mu[k]).T)
        half_logdet = np.sum(np.log(np.diag(chol)))
        table.append(np.log(w[k]) - 0.5 * np.sum(y * y, 0) - half_logdet - np.log(2 * np.pi))
    table = np.stack(table, 1)
    counts = np.exp(table - logsumexp(table, 1, keepdims=True)).sum(0)
    bound = 0.5 * reg * sum(counts[k] * np.trace(np.linalg.inv(cov[k])) for k in range(K))
    return float(logsumexp(table, 1).sum()), bound


def trajectory(model, x, seed, steps=12):
    """(ℓ_t, bound_t) for t = 0..steps, one M-step per `fit(max_iter=1)` call."""
    params = model.init(jax.random.key(seed), x)
    out = [log_likelihood_and_drop_bound(params, x, model.reg_covar)]
    for _ in range(steps):
        params = em.fit(model, x, params, max_iter=1).params
        out.append(log_likelihood_and_drop_bound(params, x, model.reg_covar))
    return np.array(out)


def clustered(seed, scale):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(N, D)) * scale + rng.integers(0, 3, size=(N, 1)) * 3 * scale


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_small_reg_covar_is_monotone(seed):
    values = trajectory(SMALL, clustered(seed, 1.0), seed % 1000)[:, 0]
    assert np.all(np.diff(values) >= -1e-9 * np.abs(values[1:])), np.diff(values).min()


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_large_reg_covar_drops_stay_within_the_documented_bound(seed):
    values = trajectory(LARGE, clustered(seed, 0.1), seed % 1000)
    drops = values[:-1, 0] - values[1:, 0]
    assert np.all(drops <= values[:-1, 1] + 1e-9), (drops, values[:-1, 1])


def test_large_reg_covar_does_lower_the_log_likelihood():
    """The documented exception is real: with reg_covar = 5·variance ℓ falls (so the bound is needed)."""
    values = trajectory(LARGE, clustered(0, 0.1), 0)
    assert np.any(np.diff(values[:, 0]) < -0.1)
