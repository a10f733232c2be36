"""The Poisson hidden Markov model: x_td | z_t = k ~ Poisson(λ_kd), independently over d.

Observations are non-negative counts of shape (T, D). The emission table is

    ε[t, k] = Σ_d x_td log λ_kd - λ_kd - log x_td!

and with a Gamma(a, b) prior (shape a, rate b) on every rate the M-step is

    λ_kd = (Σ_t γ_tk x_td + a - 1) / (Σ_t γ_tk + b)

(a = 1, b = 0, the default, is maximum likelihood and equals hmmlearn's
`PoissonHMM` with its default prior); π and A as in `jaxem.models.hmm_common`.

Minimal unconstrained coordinates (`unconstrain` / `constrain`): `PoissonHMMCoordinates`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln, xlogy

from jaxem.init import INIT_METHODS, initial_responsibilities
from jaxem.models import hmm_common
from jaxem.models.hmm_common import ProbabilityChain, flatten_steps
from jaxem.structures.chain_sequential import safe_log
from jaxem.structures.entry_points import check_params_only, entry_point
from jaxem.structures.sequences import check_chain_data
from jaxem.tree import pytree_dataclass, static_field
from jaxem.validation import is_concrete

__all__ = ["PoissonHMM", "PoissonHMMCoordinates", "PoissonHMMParams", "poisson_hmm"]


class PoissonHMMParams(NamedTuple):
    """initial (K,) and transition (K, K) probabilities; rates (K, D) > 0."""

    initial: jax.Array
    transition: jax.Array
    rates: jax.Array


class PoissonHMMCoordinates(NamedTuple):
    """`PoissonHMMParams` in minimal unconstrained coordinates (`model.unconstrain`).

    initial_logits (K-1,), transition_logits (K, K-1): log-ratios of π and of each row of A
    against their last entry (`jaxem.families.simplex`; structural zeros are -inf);
    log_rates (K, D): log λ (a rate of exactly 0 is -inf and maps back to exactly 0).
    """

    initial_logits: jax.Array
    transition_logits: jax.Array
    log_rates: jax.Array


class PoissonStats(NamedTuple):
    """counts (K,) Σ_t γ_tk and sums (K, D) Σ_t γ_tk x_t over real steps."""

    counts: jax.Array
    sums: jax.Array


@pytree_dataclass
@dataclasses.dataclass(frozen=True)
class PoissonHMM(ProbabilityChain):
    """A K-state HMM with independent Poisson emissions on counts (T, D) or `Sequences`
    of (B, T, D). Build it with `poisson_hmm(...)`. K and the algorithm are static; the
    prior parameters are leaves."""

    num_states: int = static_field()
    initial_prior: float = 1.0
    transition_prior: float = 1.0
    rate_prior_shape: float = 1.0
    rate_prior_rate: float = 0.0
    algorithm: str = static_field(default="scaled")

    params_type = PoissonHMMParams
    coordinates_type = PoissonHMMCoordinates

    def __post_init__(self):
        self.check_settings(("initial_prior", "transition_prior", "rate_prior_shape", "rate_prior_rate"))

    def emission_table(self, params: PoissonHMMParams, data: Any) -> jax.Array:
        """ε[t, k] = Σ_d log Poisson(x_td | λ_kd): (T, K), or (B, T, K) for `Sequences`."""
        x, _, unflatten = flatten_steps(data)
        x = x.astype(params.rates.dtype)
        rates = params.rates
        table = (jnp.sum(xlogy(x[:, None, :], rates[None]), axis=-1)
                 - jnp.sum(rates, axis=-1) - jnp.sum(gammaln(x + 1.0), axis=-1, keepdims=True))
        return unflatten(table)

    def log_emission(self, params: PoissonHMMParams, x: jax.Array, z: jax.Array) -> jax.Array:
        """Σ_d log Poisson(x_d | λ_zd) for one step x (D,) and one state z (the per-state form)."""
        x = x.astype(params.rates.dtype)
        rates = params.rates[z]
        return jnp.sum(xlogy(x, rates) - rates - gammaln(x + 1.0))

    def emission_statistics(self, marginals: jax.Array, data: Any, params: PoissonHMMParams) -> PoissonStats:
        """Σ_t γ_tk and Σ_t γ_tk x_t over real steps, for γ (N, K) over the data's rows."""
        x, _, _ = flatten_steps(data)
        return PoissonStats(jnp.sum(marginals, axis=0), marginals.T @ x.astype(marginals.dtype))

    def maximize_emission(self, stats: PoissonStats, params: PoissonHMMParams) -> dict:
        """The Gamma-MAP rates (Σ γ x + a - 1) / (Σ γ + b), the current rate where the
        denominator is 0."""
        numerator = jnp.maximum(stats.sums + self.rate_prior_shape - 1.0, 0.0)
        denominator = stats.counts[:, None] + self.rate_prior_rate
        positive = denominator > 0
        rates = jnp.where(positive, numerator / jnp.where(positive, denominator, 1.0), params.rates)
        return {"rates": rates}

    def emission_log_prior(self, params: PoissonHMMParams) -> jax.Array:
        """The Gamma(a, b) log-prior of the rates, Σ (a - 1) log λ - b λ (up to constants;
        exactly 0 at the defaults a = 1, b = 0)."""
        rates = params.rates
        positive = rates > 0
        log_rates = jnp.log(jnp.where(positive, rates, 1.0))
        shape_term = jnp.where(positive, (self.rate_prior_shape - 1.0) * log_rates, 0.0)
        return jnp.sum(shape_term - self.rate_prior_rate * rates).astype(rates.dtype)

    def emission_unconstrain(self, params: PoissonHMMParams) -> dict:
        """log λ; a zero rate gives -inf with a zero (not inf) gradient."""
        return {"log_rates": safe_log(params.rates)}

    def emission_constrain(self, coordinates: PoissonHMMCoordinates) -> dict:
        """λ = exp(log λ)."""
        return {"rates": jnp.exp(coordinates.log_rates)}

    def init(self, key: jax.Array, data: Any, method: str = "kmeans++") -> PoissonHMMParams:
        """Starting parameters from initial state responsibilities of the steps (method as
        for `jaxem.init`): rates are responsibility-weighted means shrunk by half a
        pseudo-observation towards the overall mean (so none is 0); π and A are the
        responsibilities' smoothed initial and transition frequencies. Pure and vmappable."""
        if method not in INIT_METHODS:
            raise ValueError(f"method: expected one of {INIT_METHODS}, got {method!r}.")
        self.check_data(data)
        dtype = jax.dtypes.canonicalize_dtype(jnp.float64)
        x, valid, _ = flatten_steps(data)
        x = x.astype(dtype)
        points = hmm_common.fill_padding(data).astype(dtype)
        resp = initial_responsibilities(key, points, self.num_states, method).astype(dtype) * valid[:, None]
        weights = valid.astype(dtype)
        overall = weights @ x / jnp.sum(weights)
        pseudo = 0.5
        rates = (resp.T @ x + pseudo * overall) / (jnp.sum(resp, axis=0)[:, None] + pseudo)
        initial, transition = self.initial_chain(resp, data)
        return PoissonHMMParams(initial, transition, rates)

    def check_data(self, data: Any) -> None:
        """Non-negative counts of shape (T, D) (or `Sequences` of (B, T, D))."""
        check_chain_data(data)
        values, step_shape, dtype = hmm_common.step_values(data)
        if len(step_shape) != 1:
            raise ValueError(
                f"data: expected counts of shape (T, D) (or Sequences of (B, T, D)), got per-step shape "
                f"{step_shape}; use x[:, None] for one count per step."
            )
        hmm_common.check_count_values(values, dtype, hint="; a Poisson HMM models counts 0, 1, 2, ...")

    def check_params(self, params: Any, data: Any = None, *, batch_ndim: int = 0,
                     name: str = "params") -> None:
        """A `PoissonHMMParams` of floating-point arrays: initial (K,) and the rows of
        transition (K, K) on the simplex, rates (K, D) finite and >= 0 (D from `data`
        when given). `batch_ndim` leading axes are batch axes. Under jit/vmap only
        the structure, dtypes and shapes are checked."""
        batch = hmm_common.check_chain_params(params, PoissonHMMParams, self.num_states, batch_ndim, name)
        hmm_common.check_state_table(params.rates, f"{name}.rates", self.num_states, batch, data)
        if is_concrete(params.rates) and np.any(np.asarray(params.rates) < 0):
            index = tuple(int(i) for i in np.argwhere(np.asarray(params.rates) < 0)[0])
            raise ValueError(
                f"{name}.rates{''.join(f'[{i}]' for i in index)}: is negative "
                f"({float(np.asarray(params.rates)[index]):.3g}); Poisson rates must be >= 0."
            )

    def num_parameters(self, dim: int) -> int:
        """Free parameters: (K-1) + K(K-1) + K·D."""
        k = self.num_states
        return (k - 1) + k * (k - 1) + k * dim

    @entry_point(static=("num_steps",), check=check_params_only)
    def sample(self, key: jax.Array, params: PoissonHMMParams, num_steps: int):
        """(x (num_steps, D) counts, z (num_steps,) states) drawn from the model."""
        key_z, key_x = jax.random.split(key)
        z = self.sample_states(key_z, params, num_steps)
        return jax.random.poisson(key_x, params.rates[z]), z


def poisson_hmm(num_states: int, *, initial_prior: float = 1.0, transition_prior: float = 1.0,
                rate_prior_shape: float = 1.0, rate_prior_rate: float = 0.0,
                algorithm: str = "scaled") -> PoissonHMM:
    """A Poisson-emission HMM with a closed-form M-step.

    Args:
      num_states: K >= 1.
      initial_prior, transition_prior: symmetric Dirichlet concentrations for π
        and the rows of A (1.0: maximum likelihood).
      rate_prior_shape, rate_prior_rate: Gamma(a, b) prior on every rate
        (a = 1, b = 0: maximum likelihood).
      algorithm: "scaled" (default), "log" or "parallel" forward–backward.
    """
    return PoissonHMM(num_states, initial_prior, transition_prior, rate_prior_shape, rate_prior_rate,
                      algorithm)
