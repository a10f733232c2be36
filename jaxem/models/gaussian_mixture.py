"""The Gaussian mixture model, p(x) = Σ_k w_k N(x | μ_k, Σ_k), in the fast exponential-family form.

The log-potential table is one matrix product of the data's Gaussian features
with the components' natural parameters (`jaxem.distributions.GaussianFamily`),
and the closed-form M-step is another; every other EM quantity (E-step,
Q-function, log-likelihood) is derived by `MixtureStructure`. The M-step is
scikit-learn's `GaussianMixture` estimator, so fits started from the same
parameters follow the same trajectory.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxem.distributions.gaussian import GaussianFamily
from jaxem.init import INIT_METHODS, initial_responsibilities
from jaxem.mstep import ClosedForm
from jaxem.structures.mixture import MixturePosterior, MixtureStructure
from jaxem.validation import check_data, check_num_states

__all__ = ["GaussianMixtureModel", "GaussianMixtureParams", "gaussian_mixture"]


class GaussianMixtureParams(NamedTuple):
    """weights (K,) on the simplex; means (K, D); covariances of the model's
    covariance type: full (K, D, D), diag (K, D), spherical (K,), tied (D, D)."""

    weights: jax.Array
    means: jax.Array
    covariances: jax.Array


@dataclasses.dataclass(frozen=True)
class GaussianMixtureModel(MixtureStructure):
    """A K-component Gaussian mixture on data of shape (N, D).

    Build it with `gaussian_mixture(...)`. Equal configurations compare equal,
    so they share compiled code.
    """

    num_components: int
    covariance_type: str = "full"
    reg_covar: float = 1e-6

    def __post_init__(self):
        check_num_states(self.num_components, "num_components")
        GaussianFamily(self.covariance_type, self.reg_covar)  # validates both

    @property
    def family(self) -> GaussianFamily:
        return GaussianFamily(self.covariance_type, self.reg_covar)

    @property
    def num_states(self) -> int:
        return self.num_components

    @property
    def default_m_step(self) -> ClosedForm:
        return ClosedForm(self.maximize)

    # --- the model --------------------------------------------------------------------------

    def log_joint(self, params: GaussianMixtureParams, x: jax.Array, z: jax.Array) -> jax.Array:
        """log w_z + log N(x | μ_z, Σ_z) for one observation x (D,) and one state z."""
        cov = self.family.component_covariance(params.covariances, z)
        return jnp.log(params.weights[z]) + self.family.log_density(x, params.means[z], cov)

    def log_potentials(self, params: GaussianMixtureParams, data: jax.Array) -> jax.Array:
        """φ = Φ(x) @ η(θ) + log w: (N, K), one matrix product."""
        features = self.family.features(data)
        eta = self.family.natural_parameters(params.means, params.covariances, features.shift)
        return features.values @ eta + jnp.log(params.weights)

    def maximize(self, posterior: MixturePosterior, data: jax.Array,
                 params: GaussianMixtureParams | None = None) -> GaussianMixtureParams:
        """The closed-form M-step: weighted MLE from responsibilities (N, K)."""
        del params
        return self.from_responsibilities(posterior.marginals, data)

    def from_responsibilities(self, responsibilities: jax.Array, data: jax.Array) -> GaussianMixtureParams:
        """Parameters maximising Q for the given responsibilities (N, K)."""
        features = self.family.features(data)
        stats = self.family.expected_stats(responsibilities, features)
        means, covariances = self.family.maximize(stats, features.shift)
        counts = stats.counts + 10 * jnp.finfo(stats.counts.dtype).eps
        return GaussianMixtureParams(counts / jnp.sum(counts), means, covariances)

    # --- initialisation ---------------------------------------------------------------------

    def init(self, key: jax.Array, data: jax.Array, method: str = "kmeans++") -> GaussianMixtureParams:
        """Starting parameters: an M-step from initial responsibilities.

        method: "kmeans++" (k-means++ seeding, points assigned to the nearest
        seed), "kmeans" (the same followed by Lloyd iterations),
        "random_from_data" (K distinct data points as seeds) or "random"
        (uniformly random responsibilities). Pure and vmappable over `key`.
        """
        if method not in INIT_METHODS:
            raise ValueError(f"method: expected one of {INIT_METHODS}, got {method!r}.")
        self.check_data(data)
        resp = initial_responsibilities(key, data, self.num_components, method)
        return self.from_responsibilities(resp.astype(jnp.result_type(data)), data)

    # --- checks and criteria ----------------------------------------------------------------

    def check_data(self, data) -> None:
        """Data must be a finite float array of shape (N, D) with N >= num_components."""
        check_data(data)
        if not hasattr(data, "ndim") or data.ndim != 2:
            raise ValueError(
                f"data: expected a 2-D array of shape (N, D), got shape {jnp.shape(data)}; "
                "reshape a 1-D array with x[:, None]."
            )
        if data.shape[0] < self.num_components:
            raise ValueError(
                f"data: has {data.shape[0]} observations but num_components is "
                f"{self.num_components}; use fewer components or more data."
            )

    def num_parameters(self, dim: int) -> int:
        """Free parameters: K-1 weights, K·D means and the covariances."""
        k = self.num_components
        return (k - 1) + k * dim + self.family.num_covariance_parameters(k, dim)

    def bic(self, log_likelihood, num_observations: int, dim: int):
        """Bayesian information criterion -2ℓ + p log N (lower is better)."""
        return -2.0 * log_likelihood + self.num_parameters(dim) * math.log(num_observations)

    def aic(self, log_likelihood, dim: int):
        """Akaike information criterion -2ℓ + 2p (lower is better)."""
        return -2.0 * log_likelihood + 2 * self.num_parameters(dim)

    def sample(self, key: jax.Array, params: GaussianMixtureParams, num_samples: int):
        """Draw (x (num_samples, D), z (num_samples,)) from the mixture."""
        key_z, key_x = jax.random.split(key)
        z = jax.random.categorical(key_z, jnp.log(params.weights), shape=(num_samples,))
        dim = params.means.shape[-1]
        cov = _full_covariances(self.covariance_type, params.covariances, self.num_components, dim)
        chol = jnp.linalg.cholesky(cov)[z]
        eps = jax.random.normal(key_x, (num_samples, dim), params.means.dtype)
        return params.means[z] + jnp.einsum("nij,nj->ni", chol, eps), z


def _full_covariances(kind: str, covariances: jax.Array, k: int, dim: int) -> jax.Array:
    """Any covariance type as (K, D, D) matrices."""
    eye = jnp.eye(dim, dtype=covariances.dtype)
    if kind == "full":
        return covariances
    if kind == "tied":
        return jnp.broadcast_to(covariances, (k, dim, dim))
    if kind == "diag":
        return covariances[:, :, None] * eye
    return covariances[:, None, None] * eye


def gaussian_mixture(num_components: int, covariance_type: str = "full",
                     reg_covar: float = 1e-6) -> GaussianMixtureModel:
    """A Gaussian mixture with a closed-form M-step.

    Args:
      num_components: K >= 1.
      covariance_type: "full", "diag", "spherical" or "tied" (as in scikit-learn).
      reg_covar: added to the covariance diagonals in every M-step (>= 0), so
        that covariances stay positive definite.
    """
    return GaussianMixtureModel(num_components, covariance_type, reg_covar)
