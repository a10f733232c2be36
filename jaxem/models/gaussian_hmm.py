"""The Gaussian hidden Markov model, x_t | z_t = k ~ N(μ_k, Σ_k), with a fast closed-form M-step.

The emission table of all T steps (of all sequences) is computed for all states
at once (`jaxem.families.GaussianFamily`), the emission statistics are the Gaussian
family's with the state probabilities γ as weights, and the closed-form M-step is
the family's weighted MLE, kept positive definite as the mixture's is. Everything
else (forward recursion, posterior, Q, Viterbi) comes from `ChainStructure`.

The M-step is Baum–Welch's (hmmlearn's `GaussianHMM` with `covars_prior=0`,
`covars_weight=1`, no mean prior): means Σ_t γ_tk x_t / Σ_t γ_tk, covariances
the weighted scatter about the new means (tied: pooled over states; spherical:
the mean of the diagonal) plus `reg_covar` on the diagonal; π and A by
Dirichlet MAP (`jaxem.models.hmm_common`). K, the covariance type and the
algorithm are static; `reg_covar` and the concentrations are leaves.

Minimal unconstrained coordinates (`unconstrain` / `constrain`): `GaussianHMMCoordinates`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxem.engine.degeneracy import MIN_VARIANCE_RATIO, Degeneracy, data_variances
from jaxem.families.gaussian import GaussianFamily, GaussianStats
from jaxem.init import INIT_METHODS, initial_responsibilities
from jaxem.models.hmm_common import (
    ProbabilityChain,
    check_chain_params,
    check_state_table,
    fill_padding,
    flatten_steps,
    step_values,
)
from jaxem.structures.entry_points import check_params_only, entry_point
from jaxem.structures.sequences import check_chain_data
from jaxem.tree import as_hyperparameters, pytree_dataclass, static_field

__all__ = ["GaussianHMM", "GaussianHMMCoordinates", "GaussianHMMParams", "gaussian_hmm"]


class GaussianHMMParams(NamedTuple):
    """initial (K,) and transition (K, K) probabilities; means (K, D); covariances
    of the model's type: full (K, D, D), diag (K, D), spherical (K,), tied (D, D)."""

    initial: jax.Array
    transition: jax.Array
    means: jax.Array
    covariances: jax.Array


class GaussianHMMCoordinates(NamedTuple):
    """`GaussianHMMParams` in minimal unconstrained coordinates (`model.unconstrain`).

    initial_logits (K-1,): log π_k - log π_K; transition_logits (K, K-1): the same per row of A
    (`jaxem.models.hmm_common.ProbabilityChain.unconstrain`; structural zeros are -inf);
    means (K, D) unchanged; covariance_coords: `GaussianFamily.unconstrain_covariances`
    (log-Cholesky (K, D(D+1)/2) full, (D(D+1)/2,) tied; log-variances (K, D) diag, (K,) spherical).
    """

    initial_logits: jax.Array
    transition_logits: jax.Array
    means: jax.Array
    covariance_coords: jax.Array


@pytree_dataclass
@dataclasses.dataclass(frozen=True)
class GaussianHMM(ProbabilityChain):
    """A K-state HMM with Gaussian emissions on data (T, D) or `Sequences` of (B, T, D).

    Build it with `gaussian_hmm(...)`; models with equal static fields share compiled code.
    """

    num_states: int = static_field()
    covariance_type: str = static_field(default="full")
    reg_covar: float = 1e-6
    initial_prior: float = 1.0
    transition_prior: float = 1.0
    algorithm: str = static_field(default="scaled")

    params_type = GaussianHMMParams
    coordinates_type = GaussianHMMCoordinates

    def __post_init__(self):
        self.check_settings(("initial_prior", "transition_prior"))
        GaussianFamily(self.covariance_type, self.reg_covar)  # validates both
        as_hyperparameters(self, ("reg_covar",))

    @property
    def family(self) -> GaussianFamily:
        return GaussianFamily(self.covariance_type, self.reg_covar)

    # --- the model ----------------------------------------------------------------------------

    def centres(self, params: GaussianHMMParams) -> jax.Array:
        """(K, D): the points the emission statistics are taken about, a function of θ alone
        (`GaussianFamily.centres`: the mean of the μ_k in float64, each μ_k in float32)."""
        return self.family.centres(params.means)

    def emission_table(self, params: GaussianHMMParams, data: Any) -> jax.Array:
        """ε[t, k] = log N(x_t | μ_k, Σ_k) (`GaussianFamily.log_density_table`):
        (T, K), or (B, T, K) for `Sequences`."""
        x, unflatten, shift = _steps(data)
        return unflatten(self.family.log_density_table(x, params.means, params.covariances, shift))

    def log_emission(self, params: GaussianHMMParams, x: jax.Array, z: jax.Array) -> jax.Array:
        """log N(x | μ_z, Σ_z) for one step x (D,) and one state z (the per-state form)."""
        cov = self.family.component_covariance(params.covariances, z)
        return self.family.log_density(x, params.means[z], cov)

    def emission_statistics(self, marginals: jax.Array, data: Any,
                            params: GaussianHMMParams) -> GaussianStats:
        """The Gaussian statistics of the steps weighted by γ (N, K), about `centres(params)`."""
        x, _, shift = _steps(data)
        return self.family.statistics(marginals, x, self.centres(params), shift, params.covariances)

    def maximize_emission(self, stats: GaussianStats, params: GaussianHMMParams) -> dict:
        """Means and covariances (kept positive definite) from the emission statistics."""
        estimate = self.family.maximize(stats, self.centres(params))
        return {"means": estimate.means, "covariances": estimate.covariances}

    def emission_unconstrain(self, params: GaussianHMMParams) -> dict:
        """Means unchanged; covariances in log-Cholesky / log-variance coordinates."""
        return {"means": params.means,
                "covariance_coords": self.family.unconstrain_covariances(params.covariances)}

    def emission_constrain(self, coordinates: GaussianHMMCoordinates) -> dict:
        """The inverse of `emission_unconstrain`."""
        return {"means": coordinates.means,
                "covariances": self.family.constrain_covariances(coordinates.covariance_coords)}

    # --- initialisation -------------------------------------------------------------------------

    def init(self, key: jax.Array, data: Any, method: str = "kmeans++") -> GaussianHMMParams:
        """Starting parameters from initial state responsibilities of the steps.

        method: as for `jaxem.init` ("kmeans++", "kmeans", "random_from_data",
        "random"). Emissions are an M-step from those responsibilities; π and A
        are their empirical initial and transition frequencies, smoothed by one
        pseudo-count. Padding is never used. Pure and vmappable over `key`.
        """
        if method not in INIT_METHODS:
            raise ValueError(f"method: expected one of {INIT_METHODS}, got {method!r}.")
        self.check_data(data)
        x, valid, _ = flatten_steps(data)
        resp = initial_responsibilities(key, fill_padding(data), self.num_states, method)
        resp = resp.astype(x.dtype) * valid[:, None]
        estimate = self.family.weighted_mle(resp, x)
        initial, transition = self.initial_chain(resp, data)
        return GaussianHMMParams(initial, transition, estimate.means, estimate.covariances)

    # --- checks, criteria, sampling ----------------------------------------------------------------

    def check_data(self, data: Any) -> None:
        """One sequence (T, D) or `Sequences` with values (B, T, D), finite floats."""
        check_chain_data(data)
        _, step_shape, dtype = step_values(data)
        if len(step_shape) != 1 or not jnp.issubdtype(dtype, jnp.floating):
            raise ValueError(
                f"data: expected float observations of shape (T, D) (or Sequences of (B, T, D)), got "
                f"dtype {dtype} and per-step shape {step_shape}; use x[:, None] for 1-D data."
            )

    def check_params(self, params: Any, data: Any = None, *, batch_ndim: int = 0,
                     name: str = "params") -> None:
        """A `GaussianHMMParams` of floating-point arrays: initial (K,) and the rows of
        transition (K, K) on the simplex, means (K, D) (D from `data` when given),
        covariances of this type's shape, symmetric positive definite (full, tied) or
        positive (diag, spherical), all finite. `batch_ndim` leading axes are batch
        axes. Under jit/vmap only the structure, dtypes and shapes are checked."""
        batch = check_chain_params(params, GaussianHMMParams, self.num_states, batch_ndim, name)
        k = self.num_states
        dim = check_state_table(params.means, f"{name}.means", k, batch, data)
        self.family.check_covariances(params.covariances, f"{name}.covariances", batch, k, dim)

    def degeneracy(self, params: GaussianHMMParams, data: Any, weights: Any = None,
                   *, min_variance_ratio=MIN_VARIANCE_RATIO, posterior: Any = None) -> Degeneracy:
        """Which states of `params` are degenerate on `data` (`jaxem.engine.degeneracy`), as for
        the Gaussian mixture with the state occupancies as counts:

        - few_points (K,): expected occupancy Σ_t γ_tk (summed over sequences, times their
          `weights` (B,) when given) below `GaussianFamily.points_needed`;
        - singular (K,): a direction whose variance, less reg_covar, is at most
          `min_variance_ratio` times the data's (over the real steps).

        Runs one E-step, unless given its result: `posterior`, the value of
        `self.exact_e_step(params, data, weights)`. Pure and jittable; vmap it over restarts.
        """
        x, valid, _ = flatten_steps(data)
        step_weights = valid.astype(x.dtype)  # 0 on padding, else the sequence's weight
        if weights is not None:
            steps = x.shape[0] // jnp.shape(weights)[0]
            step_weights = step_weights * jnp.repeat(jnp.asarray(weights, x.dtype), steps)
        if posterior is None:
            posterior = self.exact_e_step(params, data, weights)
        marginals = posterior.marginals.reshape(-1, self.num_states)  # weighted already
        counts = valid.astype(x.dtype) @ marginals
        few_points = counts < self.family.points_needed(x.shape[-1])
        singular = self.family.singular_components(params.covariances, data_variances(x, step_weights),
                                                   min_variance_ratio)
        return Degeneracy(few_points, jnp.broadcast_to(singular, few_points.shape))

    def num_parameters(self, dim: int) -> int:
        """Free parameters: (K-1) initial, K(K-1) transition, K·D means, covariances."""
        k = self.num_states
        return (k - 1) + k * (k - 1) + k * dim + self.family.num_covariance_parameters(k, dim)

    def bic(self, log_likelihood, num_observations: int, dim: int):
        """Bayesian information criterion -2ℓ + p log N (lower is better)."""
        return -2.0 * log_likelihood + self.num_parameters(dim) * math.log(num_observations)

    @entry_point(static=("num_steps",), check=check_params_only)
    def sample(self, key: jax.Array, params: GaussianHMMParams, num_steps: int):
        """(x (num_steps, D), z (num_steps,)): one sequence drawn from the model."""
        key_z, key_x = jax.random.split(key)
        z = self.sample_states(key_z, params, num_steps)
        return self.family.sample(key_x, params.means, params.covariances, z), z


def _steps(data: Any):
    """(x (N, D), unflatten, shift): the data's rows (`flatten_steps`) and the mean of the real
    steps, a shift of the data alone (inside a fit, computed once outside the loop)."""
    x, valid, unflatten = flatten_steps(data)
    real = valid.astype(x.dtype)
    return x, unflatten, real @ x / jnp.sum(real)


def gaussian_hmm(num_states: int, covariance_type: str = "full", *, reg_covar: float = 1e-6,
                 initial_prior: float = 1.0, transition_prior: float = 1.0,
                 algorithm: str = "scaled") -> GaussianHMM:
    """A Gaussian-emission HMM with a closed-form (Baum–Welch) M-step.

    Args:
      num_states: K >= 1.
      covariance_type: "full", "diag", "spherical" or "tied".
      reg_covar: added to the covariance diagonals in every M-step (>= 0).
      initial_prior, transition_prior: symmetric Dirichlet concentrations for π
        and the rows of A (1.0: maximum likelihood).
      algorithm: "scaled" (default), "log" or "parallel" forward–backward.
    """
    return GaussianHMM(num_states, covariance_type, reg_covar, initial_prior, transition_prior, algorithm)
