"""The Gaussian as an exponential family, for fast closed-form EM.

With u = x - c for a fixed shift c (the data mean, which keeps float32 sums
well conditioned), the Gaussian log-density is linear in features of u:

    log N(x | μ, Σ) = ⟨Φ(u), η(μ, Σ)⟩,   Φ(u) = [second-order terms of u, u, 1]

so the (N, K) table of log-densities of N points under K Gaussians is ONE
matrix product Φ (N, F) @ η (F, K), and the expected sufficient statistics of
the M-step are another, Rᵀ Φ for responsibilities R (N, K).

Second-order features by covariance type (P columns):
  "full", "tied":  u_i u_j for i <= j           P = D(D+1)/2
  "diag":          u_i²                          P = D
  "spherical":     Σ_i u_i²                      P = 1

Covariance shapes: full (K, D, D), diag (K, D), spherical (K,), tied (D, D).
The M-step is scikit-learn's GaussianMixture estimator: counts n_k = Σ_n r_nk
(+ 10 eps), means Σ_n r_nk x_n / n_k, covariances the weighted scatter about
the means plus `reg_covar` on the diagonal (tied: pooled over components).
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxem.distributions.scalar import mvn_logpdf, normal_logpdf

__all__ = ["COVARIANCE_TYPES", "GaussianFamily", "GaussianFeatures", "GaussianStats"]

COVARIANCE_TYPES = ("full", "diag", "spherical", "tied")
_LOG_2PI = math.log(2.0 * math.pi)


class GaussianFeatures(NamedTuple):
    """Φ(x - shift) for N observations: `values` (N, F) and the shift (D,)."""

    values: jax.Array
    shift: jax.Array


class GaussianStats(NamedTuple):
    """Expected sufficient statistics about the shift; additive across data chunks.

    counts (K,) = Σ_n r_nk; first (K, D) = Σ_n r_nk u_n; second (K, P) = Σ_n r_nk Φ₂(u_n).
    """

    counts: jax.Array
    first: jax.Array
    second: jax.Array


@dataclasses.dataclass(frozen=True)
class GaussianFamily:
    """Features, natural parameters and weighted MLE for one covariance type."""

    covariance_type: str = "full"
    reg_covar: float = 1e-6

    def __post_init__(self):
        if self.covariance_type not in COVARIANCE_TYPES:
            raise ValueError(
                f"covariance_type: expected one of {COVARIANCE_TYPES}, got {self.covariance_type!r}."
            )
        if not (isinstance(self.reg_covar, (int, float)) and self.reg_covar >= 0):
            raise ValueError(f"reg_covar: must be a number >= 0, got {self.reg_covar!r}.")

    # --- features -------------------------------------------------------------------------

    def features(self, x: jax.Array, shift: jax.Array | None = None) -> GaussianFeatures:
        """Φ(x - shift) of shape (N, P + D + 1); shift defaults to the mean of x."""
        if shift is None:
            shift = jnp.mean(x, axis=0)
        u = x - shift
        ones = jnp.ones(u.shape[:1] + (1,), u.dtype)
        return GaussianFeatures(jnp.concatenate([self._second_order(u), u, ones], axis=1), shift)

    def _second_order(self, u: jax.Array) -> jax.Array:
        if self.covariance_type in ("full", "tied"):
            rows, cols = np.triu_indices(u.shape[-1])
            return u[:, rows] * u[:, cols]
        if self.covariance_type == "diag":
            return u * u
        return jnp.sum(u * u, axis=1, keepdims=True)

    # --- log-densities --------------------------------------------------------------------

    def natural_parameters(self, means: jax.Array, covariances: jax.Array,
                           shift: jax.Array) -> jax.Array:
        """η (F, K) with Φ(x - shift) @ η = [log N(x | means[k], Σ_k)]_k."""
        m = means - shift  # (K, D)
        dim = means.shape[-1]
        kind = self.covariance_type
        if kind in ("full", "tied"):
            precision, half_logdet = _precision_and_half_logdet(covariances)
            if kind == "tied":
                precision = jnp.broadcast_to(precision, (m.shape[0], dim, dim))
                half_logdet = jnp.broadcast_to(half_logdet, (m.shape[0],))
            rows, cols = np.triu_indices(dim)
            pair_weight = jnp.asarray(np.where(rows == cols, -0.5, -1.0), precision.dtype)
            second = precision[:, rows, cols] * pair_weight  # (K, P)
            linear = jnp.einsum("kij,kj->ki", precision, m)  # Λ m
            quad_m = jnp.einsum("ki,ki->k", linear, m)
        else:
            variances = covariances if kind == "diag" else covariances[:, None]
            precision = 1.0 / variances  # (K, D) or (K, 1)
            second = -0.5 * precision
            linear = precision * m
            quad_m = jnp.sum(linear * m, axis=1)
            logdet = jnp.log(variances)
            half_logdet = 0.5 * (jnp.sum(logdet, axis=1) if kind == "diag" else dim * logdet[:, 0])
        constant = -0.5 * quad_m - half_logdet - 0.5 * dim * _LOG_2PI
        return jnp.concatenate([second, linear, constant[:, None]], axis=1).T

    def log_density(self, x: jax.Array, mean: jax.Array, covariance: jax.Array) -> jax.Array:
        """log N(x | mean, Σ) for ONE observation x (D,) and ONE component, where
        `covariance` has the per-component shape of this type ((D, D), (D,), ())."""
        if self.covariance_type in ("full", "tied"):
            return mvn_logpdf(x, mean, covariance)
        scale = jnp.sqrt(jnp.broadcast_to(covariance, x.shape))
        return jnp.sum(normal_logpdf(x, mean, scale))

    # --- M-step ---------------------------------------------------------------------------

    def expected_stats(self, responsibilities: jax.Array, features: GaussianFeatures) -> GaussianStats:
        """Rᵀ Φ split into counts, first and second moments (one matrix product)."""
        moments = responsibilities.T @ features.values  # (K, F)
        dim = features.shift.shape[-1]
        return GaussianStats(
            counts=moments[:, -1],
            first=moments[:, -1 - dim:-1],
            second=moments[:, :-1 - dim],
        )

    def maximize(self, stats: GaussianStats, shift: jax.Array):
        """Weighted MLE (means (K, D), covariances) from expected statistics."""
        dtype = stats.counts.dtype
        counts = stats.counts + 10 * jnp.finfo(dtype).eps
        m = stats.first / counts[:, None]
        means = shift + m
        dim = m.shape[-1]
        kind = self.covariance_type
        if kind == "full":
            scatter = _unpack_symmetric(stats.second, dim) / counts[:, None, None]
            cov = scatter - m[:, :, None] * m[:, None, :]
            covariances = cov + self.reg_covar * jnp.eye(dim, dtype=dtype)
        elif kind == "tied":
            total = _unpack_symmetric(jnp.sum(stats.second, axis=0), dim)
            between = jnp.einsum("k,ki,kj->ij", counts, m, m)
            cov = (total - between) / jnp.sum(counts)
            covariances = cov + self.reg_covar * jnp.eye(dim, dtype=dtype)
        elif kind == "diag":
            covariances = stats.second / counts[:, None] - m * m + self.reg_covar
        else:
            mean_sq = stats.second[:, 0] / counts
            covariances = (mean_sq - jnp.sum(m * m, axis=1)) / dim + self.reg_covar
        return means, covariances

    # --- shapes ---------------------------------------------------------------------------

    def component_covariance(self, covariances: jax.Array, k) -> jax.Array:
        """Σ_k in this type's per-component shape."""
        return covariances if self.covariance_type == "tied" else covariances[k]

    def num_covariance_parameters(self, num_components: int, dim: int) -> int:
        """Free parameters in the covariances (scikit-learn's `_n_parameters`)."""
        per = {"full": num_components * dim * (dim + 1) // 2, "diag": num_components * dim,
               "spherical": num_components, "tied": dim * (dim + 1) // 2}
        return per[self.covariance_type]

    def full_covariances(self, covariances: jax.Array, num_components: int, dim: int) -> jax.Array:
        """Covariances of this type as (K, D, D) matrices (e.g. for sampling)."""
        eye = jnp.eye(dim, dtype=covariances.dtype)
        kind = self.covariance_type
        if kind == "full":
            return covariances
        if kind == "tied":
            return jnp.broadcast_to(covariances, (num_components, dim, dim))
        if kind == "diag":
            return covariances[:, :, None] * eye
        return covariances[:, None, None] * eye

    def covariance_shape(self, num_components: int, dim: int) -> tuple:
        return {"full": (num_components, dim, dim), "diag": (num_components, dim),
                "spherical": (num_components,), "tied": (dim, dim)}[self.covariance_type]


def _precision_and_half_logdet(covariances: jax.Array):
    """Λ = Σ⁻¹ and ½ log|Σ| through the Cholesky factor, for (..., D, D) covariances."""
    chol = jnp.linalg.cholesky(covariances)
    eye = jnp.broadcast_to(jnp.eye(covariances.shape[-1], dtype=covariances.dtype), covariances.shape)
    inv_chol = jax.scipy.linalg.solve_triangular(chol, eye, lower=True)
    precision = jnp.swapaxes(inv_chol, -1, -2) @ inv_chol
    half_logdet = jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
    return precision, half_logdet


def _unpack_symmetric(packed: jax.Array, dim: int) -> jax.Array:
    """(..., D(D+1)/2) upper-triangle entries -> (..., D, D) symmetric matrices."""
    rows, cols = np.triu_indices(dim)
    full = jnp.zeros(packed.shape[:-1] + (dim, dim), packed.dtype)
    full = full.at[..., rows, cols].set(packed)
    return full.at[..., cols, rows].set(packed)
