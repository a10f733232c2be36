"""Log-densities of one observation, written to be safe under `jax.grad`.

Each function takes one observation and the parameters of one component and
returns a scalar; jaxem vmaps them over observations and latent states.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.scipy.special import gammaln

__all__ = [
    "categorical_logpmf",
    "mvn_logpdf",
    "normal_logpdf",
    "poisson_logpmf",
]

_LOG_2PI = math.log(2.0 * math.pi)


def normal_logpdf(x: jax.Array, loc: jax.Array, scale: jax.Array) -> jax.Array:
    """log N(x | loc, scale²) = -½((x - loc)/scale)² - log scale - ½ log 2π, elementwise."""
    z = (x - loc) / scale
    return -0.5 * z * z - jnp.log(scale) - 0.5 * _LOG_2PI


def mvn_logpdf(x: jax.Array, mean: jax.Array, cov: jax.Array) -> jax.Array:
    """log N(x | mean, cov) for x, mean of shape (D,) and cov (D, D), via Cholesky:
    -½‖L⁻¹(x - mean)‖² - Σ log diag L - (D/2) log 2π with cov = L Lᵀ."""
    chol = jnp.linalg.cholesky(cov)
    y = jax.scipy.linalg.solve_triangular(chol, x - mean, lower=True)
    half_logdet = jnp.sum(jnp.log(jnp.diagonal(chol)))
    return -0.5 * jnp.dot(y, y) - half_logdet - 0.5 * x.shape[-1] * _LOG_2PI


def poisson_logpmf(k: jax.Array, rate: jax.Array) -> jax.Array:
    """log Poisson(k | rate) = k log rate - rate - log k!, with 0 · log 0 = 0.

    Differentiable in both arguments, k included (k may be a relaxed count): at
    k = 0 and rate > 0 the k-derivative is log rate - ψ(1), not 0. Only the point
    k = rate = 0 is guarded (value 0, rate-derivative -1)."""
    k = jnp.asarray(k, jnp.result_type(rate))
    safe_rate = jnp.where((k == 0) & (rate == 0), 1.0, rate)
    return k * jnp.log(safe_rate) - rate - gammaln(k + 1.0)


def categorical_logpmf(k: jax.Array, log_probs: jax.Array) -> jax.Array:
    """log p(k) = log_probs[k] for an integer category k and normalised log-probabilities."""
    return log_probs[k]
