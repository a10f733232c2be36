"""The multinomial hidden Markov model: x_t | z_t = k ~ Multinomial(n_t, B_k).

Observations are count vectors x_t (M,) of non-negative integers; row t is the outcome
of n_t = Σ_m x_tm trials over M symbols, and n_t may differ from row to row (a row of
zeros, n_t = 0, carries no information). The emission table is the multinomial
log-probability, coefficient included (hmmlearn's `MultinomialHMM` density),

    ε[t, k] = log n_t! - Σ_m log x_tm! + Σ_m x_tm log B_km,

with x_tm log B_km = 0 when x_tm = 0 (also where B_km = 0), and -inf where a state
cannot emit a symbol the row holds (x_tm > 0, B_km = 0). The coefficient depends on
the data alone, so it changes neither the posterior nor the M-step. The M-step needs
the expected symbol counts Σ_t γ_tk x_tm (one matrix product); with Dirichlet(α_B)
priors on the rows of B,

    B_km ∝ max(α_B - 1 + Σ_t γ_tk x_tm, 0)

(α = 1 is maximum likelihood and equals hmmlearn's update), and π, A as in
`jaxem.models.hmm_common`. Zero emission probabilities stay zero. With one trial per
row (n_t = 1) this is the categorical HMM on one-hot rows.

Minimal unconstrained coordinates (`unconstrain` / `constrain`): `MultinomialHMMCoordinates`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln

from jaxem.init import INIT_METHODS, initial_responsibilities
from jaxem.models.hmm_common import (
    ProbabilityChain,
    ProbabilityTableEmission,
    check_chain_params,
    check_count_values,
    fill_padding,
    flatten_steps,
    normalize_rows,
    step_values,
)
from jaxem.structures.chain_sequential import safe_log
from jaxem.structures.entry_points import entry_point
from jaxem.structures.sequences import check_chain_data
from jaxem.tree import pytree_dataclass, static_field
from jaxem.validation import check_array, check_model_params, check_simplex, is_concrete

__all__ = ["MultinomialHMM", "MultinomialHMMCoordinates", "MultinomialHMMParams", "multinomial_hmm"]


class MultinomialHMMParams(NamedTuple):
    """initial (K,), transition (K, K) and emission (K, M) probabilities (rows sum to 1)."""

    initial: jax.Array
    transition: jax.Array
    emission: jax.Array


class MultinomialHMMCoordinates(NamedTuple):
    """`MultinomialHMMParams` in minimal unconstrained coordinates (`model.unconstrain`).

    initial_logits (K-1,), transition_logits (K, K-1), emission_logits (K, M-1): the log-ratios
    of π, of each row of A and of each row of B against their last entry
    (`jaxem.families.simplex`; zero probabilities are -inf and map back to exactly 0).
    """

    initial_logits: jax.Array
    transition_logits: jax.Array
    emission_logits: jax.Array


def multinomial_log_coefficients(x: jax.Array) -> jax.Array:
    """log n_t! - Σ_m log x_tm! for count rows x (N, M): (N,). A function of the data alone."""
    return gammaln(jnp.sum(x, axis=-1) + 1.0) - jnp.sum(gammaln(x + 1.0), axis=-1)


def check_num_trials(num_trials: Any, num_steps: int) -> None:
    """`num_trials` of `sample`: an int >= 0, or integers >= 0 of shape (num_steps,)."""
    dtype = getattr(num_trials, "dtype", None)
    if dtype is None:
        if isinstance(num_trials, bool) or not isinstance(num_trials, (int, np.integer)):
            raise TypeError(
                f"num_trials: expected an int >= 0 or an integer array of shape ({num_steps},) "
                f"(one number of trials per step), got {num_trials!r}."
            )
        dtype = np.asarray(num_trials).dtype
    if not jnp.issubdtype(dtype, jnp.integer):
        raise TypeError(
            f"num_trials: expected integers (the number of trials of each step), got dtype {dtype}; "
            "convert with np.asarray(n, dtype=int)."
        )
    if jnp.shape(num_trials) not in ((), (num_steps,)):
        raise ValueError(
            f"num_trials: expected one int or shape ({num_steps},) (num_steps), got shape "
            f"{jnp.shape(num_trials)}."
        )
    if is_concrete(num_trials) and np.any(np.asarray(num_trials) < 0):
        raise ValueError(f"num_trials: must be >= 0, got a minimum of {int(np.min(num_trials))}.")


def _check_sample(model: Any, key: Any, params: Any, num_steps: int, num_trials: Any) -> None:
    check_model_params(model, params)
    check_num_trials(num_trials, num_steps)


def sample_multinomial(key: jax.Array, num_trials: jax.Array, probs: jax.Array) -> jax.Array:
    """Counts (N, M) with row t ~ Multinomial(n_t, p_t), for num_trials (N,) and probs (N, M):
    x_t1 ~ Binomial(n_t, p_t1), then each x_tm ~ Binomial(remaining trials,
    p_tm / Σ_{m' >= m} p_tm') (a scan over the M symbols; the last takes what remains)."""
    probs = jnp.moveaxis(probs, -1, 0)  # (M, N)
    remaining_mass = jnp.cumsum(probs[::-1], axis=0)[::-1]
    ratios = jnp.clip(probs / jnp.where(remaining_mass > 0, remaining_mass, 1.0), 0.0, 1.0)
    ratios = ratios.at[-1].set(1.0)

    def draw(remaining, args):
        ratio, step_key = args
        count = jax.random.binomial(step_key, remaining, ratio, dtype=probs.dtype)
        count = jnp.minimum(jnp.round(count), remaining)
        return remaining - count, count

    keys = jax.random.split(key, ratios.shape[0])
    _, counts = jax.lax.scan(draw, num_trials.astype(probs.dtype), (ratios, keys))
    return jnp.moveaxis(counts, 0, -1)


@pytree_dataclass
@dataclasses.dataclass(frozen=True)
class MultinomialHMM(ProbabilityTableEmission, ProbabilityChain):
    """A K-state HMM emitting count vectors over `num_symbols` symbols, on data (T, M) or
    `Sequences` of (B, T, M). Build it with `multinomial_hmm(...)`. K, M and the algorithm
    are static; the concentrations are leaves."""

    num_states: int = static_field()
    num_symbols: int = static_field()
    initial_prior: float = 1.0
    transition_prior: float = 1.0
    emission_prior: float = 1.0
    algorithm: str = static_field(default="scaled")

    params_type = MultinomialHMMParams
    coordinates_type = MultinomialHMMCoordinates

    # --- the model ----------------------------------------------------------------------------

    def emission_table(self, params: MultinomialHMMParams, data: Any) -> jax.Array:
        """ε[t, k] = log Multinomial(x_t | n_t, B_k): (T, K), or (B, T, K) for `Sequences`.

        One matrix product x (N, M) @ log Bᵀ with the zero probabilities' logs replaced by 0
        (so 0·log 0 is 0, not NaN), then -inf where a row holds a symbol the state cannot emit."""
        x, _, unflatten = flatten_steps(data)
        emission = params.emission
        x = x.astype(emission.dtype)
        possible = emission > 0
        log_emission = jnp.where(possible, safe_log(emission), 0.0)
        impossible = (x > 0).astype(emission.dtype) @ (~possible).astype(emission.dtype).T > 0
        table = x @ log_emission.T + multinomial_log_coefficients(x)[:, None]
        return unflatten(jnp.where(impossible, -jnp.inf, table))

    def log_emission(self, params: MultinomialHMMParams, x: jax.Array, z: jax.Array) -> jax.Array:
        """log Multinomial(x | Σ x, B_z) for one count vector x (M,) and one state z (the
        per-state form)."""
        probs = params.emission[z]
        x = x.astype(probs.dtype)
        terms = jnp.where(x > 0, x * safe_log(probs), 0.0)
        return multinomial_log_coefficients(x) + jnp.sum(terms)

    def emission_statistics(self, marginals: jax.Array, data: Any, params: MultinomialHMMParams) -> jax.Array:
        """Expected symbol counts (K, M): Σ_t γ_tk x_tm over real steps (γ is 0 on padding)."""
        x, _, _ = flatten_steps(data)
        return marginals.T @ x.astype(marginals.dtype)

    # --- initialisation -------------------------------------------------------------------------

    def init(self, key: jax.Array, data: Any, method: str = "kmeans++", dtype=None) -> MultinomialHMMParams:
        """Starting parameters from initial state responsibilities r (N, K) of the steps' symbol
        proportions x_t / n_t (method as for `jaxem.init`; rows with n_t = 0 count as
        all-zero proportions): B_k = (Σ_t r_tk x_t + ½ p̄) / (Σ_t r_tk n_t + ½), the
        responsibilities' symbol frequencies shrunk by half a trial towards the overall
        frequency p̄ (smoothed by one pseudo-count per symbol, so no entry is zero); π and A
        are the responsibilities' smoothed initial and transition frequencies. Padding is
        never used. Pure and vmappable over `key`; `dtype` defaults to JAX's default float
        (float64 when x64 is enabled)."""
        if method not in INIT_METHODS:
            raise ValueError(f"method: expected one of {INIT_METHODS}, got {method!r}.")
        self.check_data(data)
        dtype = jax.dtypes.canonicalize_dtype(jnp.float64 if dtype is None else dtype)
        x, valid, _ = flatten_steps(data)
        x = x.astype(dtype) * valid[:, None]
        trials = jnp.sum(x, axis=1, keepdims=True)
        points = fill_padding(data).astype(dtype)
        totals = jnp.sum(points, axis=1, keepdims=True)
        proportions = points / jnp.where(totals > 0, totals, 1.0)
        resp = initial_responsibilities(key, proportions, self.num_states, method).astype(dtype)
        resp = resp * valid[:, None]
        symbol_totals = jnp.sum(x, axis=0) + 1.0
        overall = symbol_totals / jnp.sum(symbol_totals)
        pseudo = 0.5
        emission = (resp.T @ x + pseudo * overall) / (resp.T @ trials + pseudo)
        emission = normalize_rows(emission, jnp.broadcast_to(overall, emission.shape))
        initial, transition = self.initial_chain(resp, data)
        return MultinomialHMMParams(initial, transition, emission)

    # --- checks, sampling ------------------------------------------------------------------------

    def check_data(self, data: Any) -> None:
        """Non-negative whole-number counts of shape (T, M) (or `Sequences` of (B, T, M)),
        M = num_symbols; integer or whole-number float dtype. Values are checked when
        concrete."""
        check_chain_data(data)
        values, step_shape, dtype = step_values(data)
        m = self.num_symbols
        if len(step_shape) != 1 or step_shape[0] != m:
            raise ValueError(
                f"data: expected count vectors of shape (T, {m}) (num_symbols = {m}; or Sequences of "
                f"(B, T, {m})), got per-step shape {step_shape}; symbols given as labels (T,) need "
                f"one-hot rows, np.eye({m}, dtype=int)[x], or use categorical_hmm."
            )
        check_count_values(values, dtype, hint="; a multinomial HMM models how many of each row's trials "
                           "fell on each symbol (0, 1, 2, ...).")

    def check_params(self, params: Any, data: Any = None, *, batch_ndim: int = 0,
                     name: str = "params") -> None:
        """A `MultinomialHMMParams` of floating-point arrays: initial (K,), the rows of
        transition (K, K) and of emission (K, M) (M = num_symbols) on the simplex, all
        finite. `batch_ndim` leading axes are batch axes. Under jit/vmap only the
        structure, dtypes and shapes are checked."""
        batch = check_chain_params(params, MultinomialHMMParams, self.num_states, batch_ndim, name)
        check_array(params.emission, f"{name}.emission", batch + (self.num_states, self.num_symbols))
        check_simplex(params.emission, f"{name}.emission")

    def num_parameters(self) -> int:
        """Free parameters: (K-1) + K(K-1) + K(M-1) (hmmlearn's count)."""
        k, m = self.num_states, self.num_symbols
        return (k - 1) + k * (k - 1) + k * (m - 1)

    @entry_point(static=("num_steps",), check=_check_sample)
    def sample(self, key: jax.Array, params: MultinomialHMMParams, num_steps: int, num_trials):
        """(x (num_steps, M) int32 counts, z (num_steps,) states) drawn from the model.

        num_trials: the number of trials n_t of each step, an int >= 0 (the same for every
        step) or an integer array (num_steps,); row t of x sums to n_t. (hmmlearn's
        `MultinomialHMM.sample` needs a single n_trials; here it may vary per step.)"""
        key_z, key_x = jax.random.split(key)
        z = self.sample_states(key_z, params, num_steps)
        trials = jnp.broadcast_to(jnp.asarray(num_trials), (num_steps,))
        counts = sample_multinomial(key_x, trials, params.emission[z])
        return counts.astype(jnp.int32), z


def multinomial_hmm(num_states: int, num_symbols: int, *, initial_prior: float = 1.0,
                    transition_prior: float = 1.0, emission_prior: float = 1.0,
                    algorithm: str = "scaled") -> MultinomialHMM:
    """A multinomial-emission HMM (count vectors, any number of trials per step) with a
    closed-form M-step.

    Args:
      num_states: K >= 1.
      num_symbols: M >= 1, the length of each count vector (data of shape (T, M)).
      initial_prior, transition_prior, emission_prior: symmetric Dirichlet
        concentrations for π, the rows of A and the rows of B (1.0: maximum likelihood).
      algorithm: "scaled" (default), "log" or "parallel" forward–backward.
    """
    return MultinomialHMM(num_states, num_symbols, initial_prior, transition_prior, emission_prior,
                          algorithm)
