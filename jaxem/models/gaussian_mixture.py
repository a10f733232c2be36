"""The Gaussian mixture model, p(x) = Σ_k w_k N(x | μ_k, Σ_k), with a closed-form M-step.

The log-potential table is computed for all components at once (one matrix
product for full covariances in float64, centred per component in float32), the
expected sufficient statistics are the Gaussian family's (`GaussianStats`, plus
the counts that give the weights), and `maximize` is the closed-form M-step
(`jaxem.families.GaussianFamily`); every other EM quantity (E-step, Q-function,
log-likelihood) is derived by `MixtureStructure`. The M-step is scikit-learn's
`GaussianMixture` estimator, so fits started from the same parameters follow the
same trajectory. The model is a pytree: K and the covariance type are static,
`reg_covar` is a leaf (new values reuse the compiled fit).

`unconstrain` / `constrain` map the parameters to minimal unconstrained coordinates
(`GaussianMixtureCoordinates`: as many free real numbers as `num_parameters`) and back,
for standard errors and direct-gradient optimisation.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxem.engine.degeneracy import MIN_VARIANCE_RATIO, Degeneracy, data_variances
from jaxem.families.gaussian import GaussianFamily, GaussianStats
from jaxem.families.simplex import logits_to_simplex, simplex_to_logits
from jaxem.init import INIT_METHODS, initial_responsibilities
from jaxem.structures.entry_points import check_params_only, entry_point
from jaxem.structures.mixture import MixturePosterior, MixtureStructure
from jaxem.tree import as_hyperparameters, pytree_dataclass, static_field
from jaxem.validation import (
    check_array,
    check_data,
    check_finite_tree,
    check_num_states,
    check_prng_key,
    check_simplex,
    is_concrete,
)

__all__ = ["GaussianMixtureCoordinates", "GaussianMixtureModel", "GaussianMixtureParams",
           "gaussian_mixture"]


class GaussianMixtureParams(NamedTuple):
    """weights (K,) on the simplex; means (K, D); covariances of the model's
    covariance type: full (K, D, D), diag (K, D), spherical (K,), tied (D, D)."""

    weights: jax.Array
    means: jax.Array
    covariances: jax.Array


class GaussianMixtureCoordinates(NamedTuple):
    """`GaussianMixtureParams` in minimal unconstrained coordinates (`model.unconstrain`).

    weight_logits (K-1,): log w_k - log w_K (`jaxem.families.simplex`; a zero weight is -inf);
    means (K, D): the means unchanged;
    covariance_coords: `GaussianFamily.unconstrain_covariances` of the covariances: the
    log-Cholesky entries (K, D(D+1)/2) (full) or (D(D+1)/2,) (tied), the log-variances
    (K, D) (diag) or (K,) (spherical).
    """

    weight_logits: jax.Array
    means: jax.Array
    covariance_coords: jax.Array


@pytree_dataclass
@dataclasses.dataclass(frozen=True)
class GaussianMixtureModel(MixtureStructure):
    """A K-component Gaussian mixture on data of shape (N, D).

    Build it with `gaussian_mixture(...)`. A pytree: `num_components` and
    `covariance_type` are static, `reg_covar` a leaf.
    """

    num_components: int = static_field()
    covariance_type: str = static_field(default="full")
    reg_covar: float = 1e-6

    def __post_init__(self):
        check_num_states(self.num_components, "num_components")
        GaussianFamily(self.covariance_type, self.reg_covar)  # validates both
        as_hyperparameters(self, ("reg_covar",))

    @property
    def family(self) -> GaussianFamily:
        return GaussianFamily(self.covariance_type, self.reg_covar)

    @property
    def num_states(self) -> int:
        return self.num_components

    # --- the model --------------------------------------------------------------------------

    def log_joint(self, params: GaussianMixtureParams, x: jax.Array, z: jax.Array) -> jax.Array:
        """log w_z + log N(x | μ_z, Σ_z) for one observation x (D,) and one state z."""
        cov = self.family.component_covariance(params.covariances, z)
        return jnp.log(params.weights[z]) + self.family.log_density(x, params.means[z], cov)

    def centres(self, params: GaussianMixtureParams) -> jax.Array:
        """(K, D): the points the statistics are taken about, a function of θ alone
        (`GaussianFamily.centres`: Σ_k w_k μ_k in float64, each μ_k in float32)."""
        return self.family.centres(params.means, params.weights)

    def log_potentials(self, params: GaussianMixtureParams, data: jax.Array) -> jax.Array:
        """φ[n, k] = log w_k + log N(x_n | μ_k, Σ_k): (N, K) (`GaussianFamily.log_density_table`,
        about the data mean)."""
        table = self.family.log_density_table(data, params.means, params.covariances)
        return table + jnp.log(params.weights)

    def statistics(self, posterior: MixturePosterior, data: jax.Array,
                   params: GaussianMixtureParams) -> GaussianStats:
        """The expected sufficient statistics Σ_n r_nk [1, x_n - c_k, (x_n - c_k)(...)ᵀ] about
        `centres(params)`: additive over rows (for the same `params`)."""
        return self.family.statistics(posterior.marginals, data, self.centres(params),
                                      covariances=params.covariances)

    def maximize(self, stats: GaussianStats, params: GaussianMixtureParams) -> GaussianMixtureParams:
        """The closed-form M-step (the default; `jaxem.Statistics`) from the statistics:
        weights n_k / Σ n, the weighted means and covariances (kept positive definite)."""
        return _params(self.family.maximize(stats, self.centres(params)))

    def from_responsibilities(self, responsibilities: jax.Array, data: jax.Array) -> GaussianMixtureParams:
        """Parameters maximising Q for the given responsibilities (N, K) without a current
        θ: the two-pass weighted MLE (`GaussianFamily.weighted_mle`), kept positive definite."""
        return _params(self.family.weighted_mle(responsibilities, data))

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
        check_prng_key(key)
        self.check_data(data)
        return _init_compiled(self, key, data, method)

    # --- checks and criteria ----------------------------------------------------------------

    def check_data(self, data) -> None:
        """Data must be a finite floating-point array of shape (N, D) with N >= num_components
        whose values do not overflow the dtype when squared and summed (|x| < sqrt(max / 4ND)).
        Under jit/vmap only the dtype and shape are checked."""
        check_data(data)
        if not hasattr(data, "ndim") or data.ndim != 2:
            raise ValueError(
                f"data: expected a 2-D array of shape (N, D), got shape {jnp.shape(data)}; "
                "reshape a 1-D array with x[:, None]."
            )
        if not jnp.issubdtype(data.dtype, jnp.floating):
            raise TypeError(
                f"data: expected a floating-point array, got dtype {data.dtype}; convert with "
                "jnp.asarray(x, dtype=jnp.float32) (or float64)."
            )
        if data.shape[0] < self.num_components:
            raise ValueError(
                f"data: has {data.shape[0]} observations but num_components is "
                f"{self.num_components}; use fewer components or more data."
            )
        if is_concrete(data):
            largest = float(np.max(np.abs(np.asarray(data))))
            limit = math.sqrt(float(jnp.finfo(data.dtype).max) / (4.0 * data.shape[0] * data.shape[1]))
            if largest >= limit:
                raise ValueError(
                    f"data: values as large as {largest:.3g} overflow {data.dtype} when squared and "
                    f"summed (limit {limit:.3g}); rescale the data (e.g. divide by its standard "
                    "deviation) or use float64."
                )

    def check_params(self, params, data=None, *, batch_ndim: int = 0, name: str = "params") -> None:
        """Parameters must be a `GaussianMixtureParams` of floating-point arrays with
        weights (K,) on the simplex, means (K, D) and
        covariances of this covariance type's shape, finite, and symmetric positive
        definite (full, tied) or positive (diag, spherical). `batch_ndim` leading
        axes are batch axes (restarts). Under jit/vmap only the structure, dtypes and
        shapes are checked."""
        if not isinstance(params, GaussianMixtureParams):
            raise TypeError(
                f"{name}: expected GaussianMixtureParams(weights, means, covariances), got "
                f"{type(params).__name__}; build one with jaxem.models.GaussianMixtureParams(w, mu, cov) "
                "or start from model.init(key, data)."
            )
        for field, value in zip(params._fields, params, strict=True):
            check_array(value, f"{name}.{field}")
        if jnp.ndim(params.weights) != batch_ndim + 1 or jnp.ndim(params.means) != batch_ndim + 2:
            raise ValueError(
                f"{name}: expected weights of shape (K,) and means (K, D)"
                + (f" after {batch_ndim} batch axis/axes" if batch_ndim else "")
                + f", got {jnp.shape(params.weights)} and {jnp.shape(params.means)}."
            )
        batch = tuple(jnp.shape(params.weights)[:batch_ndim])
        k = self.num_components
        dim = jnp.shape(data)[-1] if data is not None else jnp.shape(params.means)[-1]
        check_array(params.weights, f"{name}.weights", batch + (k,))
        check_array(params.means, f"{name}.means", batch + (k, dim))
        check_finite_tree(params, name)
        check_simplex(params.weights, f"{name}.weights")
        self.family.check_covariances(params.covariances, f"{name}.covariances", batch, k, dim)

    # --- minimal unconstrained coordinates ---------------------------------------------------

    def unconstrain(self, params: GaussianMixtureParams) -> GaussianMixtureCoordinates:
        """The parameters in minimal unconstrained coordinates (`GaussianMixtureCoordinates`):
        every entry a free real number, `num_parameters(D)` of them in all, so a Hessian
        there has no redundant direction. Inverse: `constrain`.

        Parameters are taken to be valid (`check_params`; not checked here). A weight that is
        exactly 0 gives the coordinate -inf (hold it fixed) and maps back to exactly 0.
        Leading batch axes (restarts) are carried through; dtypes are kept. Pure; works
        under jit/vmap/grad."""
        return GaussianMixtureCoordinates(simplex_to_logits(params.weights), params.means,
                                          self.family.unconstrain_covariances(params.covariances))

    def constrain(self, coordinates: GaussianMixtureCoordinates) -> GaussianMixtureParams:
        """The parameters from their unconstrained coordinates (the inverse of `unconstrain`):
        weights softmax([logits, 0]), means unchanged, covariances
        `GaussianFamily.constrain_covariances`. Any finite coordinates give valid parameters."""
        return GaussianMixtureParams(logits_to_simplex(coordinates.weight_logits), coordinates.means,
                                     self.family.constrain_covariances(coordinates.covariance_coords))

    def degeneracy(self, params: GaussianMixtureParams, data: jax.Array, weights: jax.Array | None = None,
                   *, min_variance_ratio=MIN_VARIANCE_RATIO) -> Degeneracy:
        """Which components of `params` are degenerate on `data` (N, D) (`jaxem.engine.degeneracy`):

        - few_points (K,): expected count w_k·Σ_n weights_n below `GaussianFamily.points_needed`
          (D + 1 full, 2 diag/spherical, 1 tied);
        - singular (K,): a direction whose variance, less reg_covar, is at most
          `min_variance_ratio` times the data's (`GaussianFamily.singular_components`).

        Pure and jittable; vmap it over restarts. The fit itself stays finite either way
        (reg_covar and `GaussianFamily.positive_definite`); this says what happened.
        """
        total = data.shape[0] if weights is None else jnp.sum(weights)
        few_points = params.weights * total < self.family.points_needed(data.shape[-1])
        variances = data_variances(data, weights)
        singular = self.family.singular_components(params.covariances, variances, min_variance_ratio)
        return Degeneracy(few_points, jnp.broadcast_to(singular, few_points.shape))

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

    @entry_point(static=("num_samples",), check=check_params_only)
    def sample(self, key: jax.Array, params: GaussianMixtureParams, num_samples: int):
        """Draw (x (num_samples, D), z (num_samples,)) from the mixture."""
        key_z, key_x = jax.random.split(key)
        z = jax.random.categorical(key_z, jnp.log(params.weights), shape=(num_samples,))
        return self.family.sample(key_x, params.means, params.covariances, z), z


def _params(estimate) -> GaussianMixtureParams:
    counts = estimate.counts
    return GaussianMixtureParams(counts / jnp.sum(counts), estimate.means, estimate.covariances)


@functools.partial(jax.jit, static_argnums=(3,))
def _init_compiled(model: GaussianMixtureModel, key, data, method: str) -> GaussianMixtureParams:
    resp = initial_responsibilities(key, data, model.num_components, method)
    return model.from_responsibilities(resp.astype(jnp.result_type(data)), data)


def gaussian_mixture(num_components: int, covariance_type: str = "full",
                     reg_covar: float = 1e-6) -> GaussianMixtureModel:
    """A Gaussian mixture with a closed-form M-step.

    Args:
      num_components: K >= 1.
      covariance_type: "full", "diag", "spherical" or "tied" (as in scikit-learn).
      reg_covar: added to the covariance diagonals in every M-step (>= 0), so
        that covariances stay positive definite.

    Monotonicity: Σ_k = S_k + reg_covar·I exactly maximises
    Q(θ) - ½·reg_covar·Σ_k n_k tr(Σ_k⁻¹) (n_k the current expected counts), which is
    not a fixed objective. So with reg_covar = 0 the log-likelihood never decreases
    (up to rounding); with reg_covar > 0 one iteration can lower it by at most
    ½·reg_covar·Σ_k n_k(θ_t) tr(Σ_k(θ_t)⁻¹) (about ½·N·D·reg_covar/σ² for variances
    σ²): negligible for the default 1e-6 next to the data's variances, but visible when
    reg_covar is comparable to them (tests/test_reg_covar.py).
    """
    return GaussianMixtureModel(num_components, covariance_type, reg_covar)
