"""The Gaussian-mixture hidden Markov model: x_t | z_t = k ~ Σ_m w_km N(μ_km, Σ_km).

Each of the K states emits from its own mixture of M Gaussian components (hmmlearn's
`GMMHMM`). Observations are floats of shape (T, D). The emission table is

    ε[t, k] = logsumexp_m (log w_km + log N(x_t | μ_km, Σ_km)),

and the M-step treats the mixture component as a second latent variable: with γ_tk the
smoothed state probabilities and the per-component responsibilities

    r_tkm = γ_tk · w_km N(x_t | μ_km, Σ_km) / Σ_m' w_km' N(x_t | μ_km', Σ_km'),

n_km = Σ_t r_tkm, and the new parameters are

    w_km ∝ max(α_w - 1 + n_km, 0)                       (Dirichlet(α_w) MAP; α_w = 1: ML)
    μ_km = Σ_t r_tkm x_t / n_km
    Σ_km = Σ_t r_tkm (x_t - μ_km)(x_t - μ_km)ᵀ / n_km + reg_covar·I

(diag: its diagonal; spherical: the mean of the diagonal; tied: one Σ_k per state, the
scatter pooled over the state's M components, Σ_m Σ_t r_tkm (x_t - μ_km)(...)ᵀ / Σ_m n_km),
kept positive definite as the Gaussian mixture's are; π and A by Dirichlet MAP
(`jaxem.models.hmm_common`). Covariance shapes are hmmlearn's: spherical (K, M),
diag (K, M, D), full (K, M, D, D), tied (K, D, D).

The Gaussian algebra is `jaxem.families.GaussianFamily`'s, applied state by state: a
state's emission is exactly a Gaussian mixture of M components whose covariances have
the family's shapes for M components (tied: one (D, D) shared by them), so the family's
log-density table, statistics and M-step are vmapped over the K states.
For full, diag and spherical this is the family over the K·M components; for tied it is
the family's tied case within each state. The data's features are computed once, not
once per state. Statistics are `GaussianStats` with a leading state axis; their counts
n_km also give the weights.

One difference from hmmlearn's `GMMHMM` (0.3): hmmlearn takes the covariance scatter about
the means of the E-step, Σ_t r_tkm (x_t - μ_km^old)(...)ᵀ, not about the updated means;
that exceeds the maximising covariance by (μ_km^new - μ_km^old)(...)ᵀ (tied: the
n_km-weighted average of those over m). Here the scatter is about the new means, which
maximises the expected complete-data log-likelihood (an exact EM step, so the
log-likelihood never decreases with reg_covar = 0).

Minimal unconstrained coordinates (`unconstrain` / `constrain`): `GMMHMMCoordinates`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxem.engine.degeneracy import MIN_VARIANCE_RATIO, Degeneracy, data_variances
from jaxem.families.gaussian import GaussianFamily, GaussianStats
from jaxem.families.simplex import logits_to_simplex, simplex_to_logits
from jaxem.init import INIT_METHODS, initial_responsibilities, squared_distances
from jaxem.models.hmm_common import (
    ProbabilityChain,
    check_chain_params,
    dirichlet_log_prior,
    dirichlet_map,
    fill_padding,
    flatten_steps,
    normalize_rows,
    step_values,
)
from jaxem.structures.chain_sequential import safe_log
from jaxem.structures.entry_points import check_params_only, entry_point
from jaxem.structures.sequences import check_chain_data
from jaxem.tree import as_hyperparameters, pytree_dataclass, static_field
from jaxem.validation import check_array, check_num_states, check_simplex

__all__ = ["GMMHMM", "GMMHMMCoordinates", "GMMHMMParams", "gmm_hmm", "weighted_kmeans_plusplus"]


class GMMHMMParams(NamedTuple):
    """initial (K,) and transition (K, K) probabilities; weights (K, M), each row on the
    simplex; means (K, M, D); covariances of the model's type (hmmlearn's shapes):
    spherical (K, M), diag (K, M, D), full (K, M, D, D), tied (K, D, D) (one per state,
    shared by its M components)."""

    initial: jax.Array
    transition: jax.Array
    weights: jax.Array
    means: jax.Array
    covariances: jax.Array


class GMMHMMCoordinates(NamedTuple):
    """`GMMHMMParams` in minimal unconstrained coordinates (`model.unconstrain`).

    initial_logits (K-1,), transition_logits (K, K-1), weight_logits (K, M-1): log-ratios of
    π, of each row of A and of each state's weights against their last entry
    (`jaxem.families.simplex`; zeros are -inf and map back to exactly 0); means (K, M, D)
    unchanged; covariance_coords: `GaussianFamily.unconstrain_covariances` entry by entry
    (log-Cholesky (K, M, D(D+1)/2) full, (K, D(D+1)/2) tied; log-variances (K, M, D) diag,
    (K, M) spherical).
    """

    initial_logits: jax.Array
    transition_logits: jax.Array
    weight_logits: jax.Array
    means: jax.Array
    covariance_coords: jax.Array


def weighted_kmeans_plusplus(key: jax.Array, x: jax.Array, weights: jax.Array, num_centers: int) -> jax.Array:
    """k-means++ seeds (num_centers, D) among the rows of x (N, D) that have weight > 0
    (weights (N,) >= 0): the first with probability ∝ weights, each next one ∝ weight times
    the squared distance to the nearest seed so far. When those are all zero (fewer distinct
    weighted rows than seeds) the draw falls back to ∝ weights, and with no weight at all to
    a uniform row. Each draw is a Gumbel-max over one (num_centers, N) Gumbel array (one random
    call). Pure, fixed-shape, vmappable over `key` and `weights`."""
    noise = jax.random.gumbel(key, (num_centers, x.shape[0]), x.dtype)
    fallback = jnp.where(jnp.sum(weights) > 0, safe_log(weights), 0.0)

    def draw(i, scores):
        logits = jnp.where(jnp.sum(scores) > 0, safe_log(scores), fallback)
        return x[jnp.argmax(logits + noise[i])]

    first = draw(0, weights)
    centers = jnp.zeros((num_centers, x.shape[1]), x.dtype).at[0].set(first)
    closest = jnp.sum((x - first) ** 2, axis=1)

    def add_center(i, carry):
        centers, closest = carry
        new = draw(i, weights * closest)
        return centers.at[i].set(new), jnp.minimum(closest, jnp.sum((x - new) ** 2, axis=1))

    return jax.lax.fori_loop(1, num_centers, add_center, (centers, closest))[0]


@pytree_dataclass
@dataclasses.dataclass(frozen=True)
class GMMHMM(ProbabilityChain):
    """A K-state HMM whose states emit from M-component Gaussian mixtures, on data (T, D) or
    `Sequences` of (B, T, D). Build it with `gmm_hmm(...)`. K, M, the covariance type and
    the algorithm are static; `reg_covar` and the concentrations are leaves."""

    num_states: int = static_field()
    num_mix: int = static_field(default=1)
    covariance_type: str = static_field(default="diag")
    reg_covar: float = 1e-6
    initial_prior: float = 1.0
    transition_prior: float = 1.0
    weights_prior: float = 1.0
    algorithm: str = static_field(default="scaled")

    params_type = GMMHMMParams
    coordinates_type = GMMHMMCoordinates

    def __post_init__(self):
        self.check_settings(("initial_prior", "transition_prior", "weights_prior"))
        check_num_states(self.num_mix, "num_mix")
        GaussianFamily(self.covariance_type, self.reg_covar)  # validates both
        as_hyperparameters(self, ("reg_covar",))

    @property
    def family(self) -> GaussianFamily:
        """The Gaussian family of ONE state's M components (vmapped over states)."""
        return GaussianFamily(self.covariance_type, self.reg_covar)

    # --- the model ----------------------------------------------------------------------------

    def centres(self, params: GMMHMMParams) -> jax.Array:
        """(K, M, D): the points the statistics are taken about, a function of θ alone
        (`GaussianFamily.centres` per state: the mean of the state's μ_km in float64, each
        μ_km in float32)."""
        return jax.vmap(self.family.centres)(params.means)

    def component_table(self, params: GMMHMMParams, x: jax.Array, shift: jax.Array) -> jax.Array:
        """[log w_km + log N(x_t | μ_km, Σ_km)]_{t,k,m}: (N, K, M) for rows x (N, D), about
        the shift c (D,) (`GaussianFamily.log_density_table`, one state at a time)."""
        family = self.family
        table = jax.vmap(lambda means, covariances: family.log_density_table(x, means, covariances, shift))(
            params.means, params.covariances)  # (K, N, M); x's features are computed once
        return jnp.moveaxis(table, 0, 1) + safe_log(params.weights)

    def emission_table(self, params: GMMHMMParams, data: Any) -> jax.Array:
        """ε[t, k] = logsumexp_m (log w_km + log N(x_t | μ_km, Σ_km)): (T, K), or (B, T, K)
        for `Sequences`."""
        x, unflatten, shift = _steps(data)
        return unflatten(jax.nn.logsumexp(self.component_table(params, x, shift), axis=-1))

    def log_emission(self, params: GMMHMMParams, x: jax.Array, z: jax.Array) -> jax.Array:
        """log Σ_m w_zm N(x | μ_zm, Σ_zm) for one step x (D,) and one state z (the per-state
        form)."""
        weights, means, covariances = (jnp.asarray(v)[z] for v in params[2:])
        if self.covariance_type == "tied":
            covariances = jnp.broadcast_to(covariances, (self.num_mix,) + covariances.shape)
        family = GaussianFamily("full" if self.covariance_type == "tied" else self.covariance_type)
        dens = jax.vmap(family.log_density, in_axes=(None, 0, 0))(x, means, covariances)
        return jax.nn.logsumexp(safe_log(weights) + dens)

    def responsibilities(self, marginals: jax.Array, data: Any, params: GMMHMMParams) -> jax.Array:
        """r_tkm = γ_tk · softmax_m(log w_km + log N(x_t | μ_km, Σ_km)): (N, K, M) for state
        marginals γ (N, K) over the rows of `flatten_steps(data)` (0 on padding)."""
        x, _, shift = _steps(data)
        within = jax.nn.softmax(self.component_table(params, x, shift), axis=-1)
        return marginals[:, :, None] * within.astype(marginals.dtype)

    def emission_statistics(self, marginals: jax.Array, data: Any, params: GMMHMMParams) -> GaussianStats:
        """The Gaussian statistics of each state's components (`GaussianStats` with a leading
        K axis: counts n_km (K, M), first (K, M, D), second (K, M, D, D) full, (K, M, D) diag,
        (K, M) spherical, (K, D, D) tied) of the steps weighted by r_tkm, about
        `centres(params)`. Additive over batches of sequences at the same `params`."""
        x, _, shift = _steps(data)
        resp = self.responsibilities(marginals, data, params)
        family = self.family
        return jax.vmap(lambda r, centres, covariances: family.statistics(r, x, centres, shift, covariances))(
            jnp.moveaxis(resp, 1, 0), self.centres(params), params.covariances)

    def maximize_emission(self, stats: GaussianStats, params: GMMHMMParams) -> dict:
        """Weights by Dirichlet MAP from the counts n_km; means and covariances (kept
        positive definite) by each state's Gaussian-family M-step."""
        estimate = jax.vmap(self.family.maximize)(stats, self.centres(params))
        weights = dirichlet_map(stats.counts, self.weights_prior, params.weights)
        return {"weights": weights, "means": estimate.means, "covariances": estimate.covariances}

    def emission_log_prior(self, params: GMMHMMParams) -> jax.Array:
        """Dirichlet log-prior of each state's weights (0 at the default α_w = 1)."""
        return dirichlet_log_prior(params.weights, self.weights_prior)

    def emission_unconstrain(self, params: GMMHMMParams) -> dict:
        """Weights as log-ratios, means unchanged, covariances in log-Cholesky /
        log-variance coordinates (extra leading axes carried through)."""
        return {"weight_logits": simplex_to_logits(params.weights), "means": params.means,
                "covariance_coords": self.family.unconstrain_covariances(params.covariances)}

    def emission_constrain(self, coordinates: GMMHMMCoordinates) -> dict:
        """The inverse of `emission_unconstrain`."""
        return {"weights": logits_to_simplex(coordinates.weight_logits), "means": coordinates.means,
                "covariances": self.family.constrain_covariances(coordinates.covariance_coords)}

    # --- initialisation -------------------------------------------------------------------------

    def init(self, key: jax.Array, data: Any, method: str = "kmeans++") -> GMMHMMParams:
        """Starting parameters, data-driven (as hmmlearn's: clusters for the states, then
        clusters within each state).

        State responsibilities r (N, K) of the steps come from `jaxem.init` (`method`:
        "kmeans++", "kmeans", "random_from_data", "random"); within state k, M seeds are drawn
        by k-means++ among its steps (`weighted_kmeans_plusplus`, weights r_tk) and each step
        goes to its nearest seed. Means are those groups' weighted means (the seed for an
        empty group), weights their smoothed sizes (n_km + 1, normalised), and every
        covariance starts at the data's (of the model's type, plus reg_covar); π and A are
        the responsibilities' smoothed initial and transition frequencies. Padding is never
        used. Pure and vmappable over `key`."""
        if method not in INIT_METHODS:
            raise ValueError(f"method: expected one of {INIT_METHODS}, got {method!r}.")
        self.check_data(data)
        x, valid, _ = flatten_steps(data)
        points = fill_padding(data)
        key_states, key_mix = jax.random.split(key)
        resp = initial_responsibilities(key_states, points, self.num_states, method).astype(x.dtype)
        resp = resp * valid[:, None]
        seeds = jax.vmap(lambda k, r: weighted_kmeans_plusplus(k, x, r, self.num_mix))(
            jax.random.split(key_mix, self.num_states), resp.T)  # (K, M, D)
        nearest = jax.vmap(lambda s: jnp.argmin(squared_distances(x, s), axis=1))(seeds)  # (K, N)
        groups = jax.nn.one_hot(nearest.T, self.num_mix, dtype=x.dtype) * resp[:, :, None]  # (N, K, M)
        counts = jnp.sum(groups, axis=0)  # (K, M)
        sums = jnp.einsum("nkm,nd->kmd", groups, x)
        means = jnp.where(counts[..., None] > 0, sums / jnp.where(counts > 0, counts, 1.0)[..., None], seeds)
        weights = normalize_rows(counts + 1.0, jnp.full_like(counts, 1.0 / self.num_mix))
        initial, transition = self.initial_chain(resp, data)
        return GMMHMMParams(initial, transition, weights, means, self._data_covariances(x, valid))

    def _data_covariances(self, x: jax.Array, valid: jax.Array) -> jax.Array:
        """The data's covariance (plus reg_covar) in every component, in this type's shape."""
        kind = self.covariance_type
        one = GaussianFamily("full" if kind == "tied" else kind, self.reg_covar)
        covariance = one.weighted_mle(valid[:, None].astype(x.dtype), x).covariances[0]
        k, m = self.num_states, self.num_mix
        batch = (k,) if kind == "tied" else (k, m)
        return jnp.broadcast_to(covariance, batch + covariance.shape)

    # --- checks, criteria, sampling ----------------------------------------------------------------

    def check_data(self, data: Any) -> None:
        """One sequence (T, D) or `Sequences` with values (B, T, D), finite floats."""
        check_chain_data(data)
        _, step_shape, dtype = step_values(data)
        if len(step_shape) != 1 or not jnp.issubdtype(dtype, jnp.floating):
            raise ValueError(
                f"data: expected float observations of shape (T, D) (or Sequences of (B, T, D)), got "
                f"dtype {dtype} and per-step shape {step_shape}; use x[:, None] for 1-D data and "
                "x.astype(float) for integers."
            )

    def check_params(self, params: Any, data: Any = None, *, batch_ndim: int = 0,
                     name: str = "params") -> None:
        """A `GMMHMMParams` of floating-point arrays: initial (K,), the rows of transition
        (K, K) and of weights (K, M) on the simplex, means (K, M, D) (D from `data` when
        given), covariances of this type's shape (spherical (K, M), diag (K, M, D), full
        (K, M, D, D), tied (K, D, D)), symmetric positive definite (full, tied) or positive
        (diag, spherical), all finite. `batch_ndim` leading axes are batch axes. Under
        jit/vmap only the structure, dtypes and shapes are checked."""
        batch = check_chain_params(params, GMMHMMParams, self.num_states, batch_ndim, name)
        k, m = self.num_states, self.num_mix
        check_array(params.weights, f"{name}.weights", batch + (k, m))
        check_simplex(params.weights, f"{name}.weights")
        if jnp.ndim(params.means) != len(batch) + 3:
            raise ValueError(
                f"{name}.means: expected shape (K, M, D) = ({k}, {m}, D), got {jnp.shape(params.means)}."
            )
        dim = step_values(data)[1][-1] if data is not None else jnp.shape(params.means)[-1]
        check_array(params.means, f"{name}.means", batch + (k, m, dim))
        self.family.check_covariances(params.covariances, f"{name}.covariances", batch + (k,), m, dim)

    def degeneracy(self, params: GMMHMMParams, data: Any, weights: Any = None,
                   *, min_variance_ratio=MIN_VARIANCE_RATIO, posterior: Any = None) -> Degeneracy:
        """Which mixture components of `params` are degenerate on `data`
        (`jaxem.engine.degeneracy`), as for the Gaussian mixture with the expected component
        counts n_km = Σ_t r_tkm (one E-step; summed over sequences, times their `weights` (B,)
        when given). Leaves are (K·M,): entry k·M + m is component m of state k.

        - few_points: n_km below `GaussianFamily.points_needed` (D + 1 full, 2 diag and
          spherical, 1 tied);
        - singular: a direction whose variance, less reg_covar, is at most
          `min_variance_ratio` times the data's (over the real steps); tied: the state's
          shared covariance, so all its components alike.

        `posterior`: the value of `self.exact_e_step(params, data, weights)` when the caller
        has it (the E-step is then not run again). Pure and jittable; vmap it over restarts.
        """
        x, valid, _ = flatten_steps(data)
        if posterior is None:
            posterior = self.exact_e_step(params, data, weights)
        marginals = posterior.marginals.reshape(-1, self.num_states)
        counts = self.emission_statistics(marginals, data, params).counts  # (K, M)
        step_weights = valid.astype(x.dtype)
        if weights is not None:
            steps = x.shape[0] // jnp.shape(weights)[0]
            step_weights = step_weights * jnp.repeat(jnp.asarray(weights, x.dtype), steps)
        few_points = counts < self.family.points_needed(x.shape[-1])
        variances = data_variances(x, step_weights)
        family = self.family
        singular = jax.vmap(lambda c: family.singular_components(c, variances, min_variance_ratio))(
            params.covariances)  # (K, M), or (K, 1) tied
        singular = jnp.broadcast_to(singular, few_points.shape)
        return Degeneracy(few_points.reshape(-1), singular.reshape(-1))

    def num_parameters(self, dim: int) -> int:
        """Free parameters: (K-1) initial, K(K-1) transition, K(M-1) weights, K·M·D means and
        the covariances (K·M·D(D+1)/2 full, K·M·D diag, K·M spherical, K·D(D+1)/2 tied)."""
        k, m = self.num_states, self.num_mix
        covariances = k * self.family.num_covariance_parameters(m, dim)
        return (k - 1) + k * (k - 1) + k * (m - 1) + k * m * dim + covariances

    def bic(self, log_likelihood, num_observations: int, dim: int):
        """Bayesian information criterion -2ℓ + p log N (lower is better)."""
        return -2.0 * log_likelihood + self.num_parameters(dim) * math.log(num_observations)

    @entry_point(static=("num_steps",), check=check_params_only)
    def sample(self, key: jax.Array, params: GMMHMMParams, num_steps: int):
        """(x (num_steps, D), z (num_steps,) states): one sequence drawn from the model (a
        state path, then per step a component of that state's mixture and a Gaussian draw)."""
        key_z, key_m, key_x = jax.random.split(key, 3)
        z = self.sample_states(key_z, params, num_steps)
        component = jax.random.categorical(key_m, safe_log(params.weights)[z])
        k, m, d = params.means.shape
        full = jax.vmap(lambda c: self.family.full_covariances(c, m, d))(params.covariances)
        flat = GaussianFamily("full")
        x = flat.sample(key_x, params.means.reshape(k * m, d), full.reshape(k * m, d, d), z * m + component)
        return x, z


def _steps(data: Any):
    """(x (N, D), unflatten, shift): the data's rows (`flatten_steps`) and the mean of the real
    steps, a shift of the data alone (inside a fit, computed once outside the loop)."""
    x, valid, unflatten = flatten_steps(data)
    real = valid.astype(x.dtype)
    return x, unflatten, real @ x / jnp.sum(real)


def gmm_hmm(num_states: int, num_mix: int, covariance_type: str = "diag", *, initial_prior: float = 1.0,
            transition_prior: float = 1.0, weights_prior: float = 1.0, reg_covar: float = 1e-6,
            algorithm: str = "scaled") -> GMMHMM:
    """An HMM with Gaussian-mixture emissions (hmmlearn's GMMHMM) and a closed-form M-step.

    Args:
      num_states: K >= 1.
      num_mix: M >= 1, the Gaussian components of each state's mixture.
      covariance_type: "diag" (default), "full", "spherical" or "tied" (one full covariance
        per state, shared by its M components, as in hmmlearn).
      initial_prior, transition_prior, weights_prior: symmetric Dirichlet concentrations for
        π, the rows of A and each state's mixture weights (1.0: maximum likelihood).
      reg_covar: added to the covariance diagonals in every M-step (>= 0), as in
        `gaussian_hmm`. With reg_covar = 0 the log-likelihood never decreases, except once
        a component collapses onto fewer points than its covariance needs (then only the
        positive-definite floor holds it up; `GMMHMM.degeneracy` reports it); with
        reg_covar > 0 an iteration may lower it by at most about ½·reg_covar·Σ n_km tr(Σ_km⁻¹),
        as for `gaussian_mixture`.
      algorithm: "scaled" (default), "log" or "parallel" forward–backward.
    """
    return GMMHMM(num_states, num_mix, covariance_type, reg_covar, initial_prior, transition_prior,
                  weights_prior, algorithm)
