"""Chain structure: sequences of discrete latent states with Markov dependence (HMMs).

A hidden Markov model's complete-data log-likelihood is a sum of three
log-potential tables (for one sequence of T steps and K states)

    ι[k]        = log p(z_0 = k | θ)                       initial     (K,)
    τ[i, j]     = log p(z_t = j | z_{t-1} = i, θ)          transition  (K, K), or (T-1, K, K)
    ε[t, k]     = log p(x_t | z_t = k, θ)                  emission    (T, K)

and everything EM needs is derived from them, exactly as for a mixture:

    log p(x | θ) = A(ι, τ, ε)                     the forward recursion (log-partition)
                                                  (Σ_b w_b A_b with per-sequence weights)
    posterior    = ∇A: ∂A/∂ε = γ (smoothed marginals p(z_t = k | x)),
                   ∂A/∂ι = γ_0, ∂A/∂τ = Σ_t ξ_t (expected transition counts)
    Q(θ' | θ)    = ⟨γ_0, ι(θ')⟩ + ⟨Σξ, τ(θ')⟩ + ⟨γ, ε(θ')⟩   (inner products)

`ChainStructure` holds that derivation for any way of filling the tables;
`jaxem.HMM` fills them from three per-state functions, and the ready models
(`jaxem.models`) fill them faster from sufficient statistics.

Data is one sequence (any pytree whose leaves share a leading time axis T) or a
batch `jaxem.Sequences(values, lengths)` of padded sequences. For a batch the
emission table is (B, T, K); the initial table is (K,) (shared) or (B, K), the
transition table (K, K) or (T-1, K, K) (shared) or (B, T-1, K, K). The
log-likelihood is the sum over sequences, the counts are summed over sequences,
and padding contributes nothing anywhere.

Algorithms for A and its gradient (`algorithm=`): "scaled" (default: scaled
forward scan with an explicit backward pass; a batch sharing its initial and
transition tables runs as one time-major scan, `chain_batched`), "log"
(log-space scan, differentiated by JAX; the robust choice for extreme
potentials) and "parallel" (an associative reduction in O(log T) depth for long
sequences on accelerators). See `chain_sequential` and `chain_parallel`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxem.structures.base import Structure, num_leading, weighted_sum
from jaxem.structures.chain_batched import log_partitions_scaled_batch
from jaxem.structures.chain_decoding import sample_posterior, viterbi
from jaxem.structures.chain_parallel import log_partition_parallel
from jaxem.structures.chain_sequential import log_partition_log, log_partition_scaled
from jaxem.structures.entry_points import check_params_and_data, entry_point
from jaxem.structures.sequences import Sequences

__all__ = ["ALGORITHMS", "ChainPosterior", "ChainStructure", "ChainTables", "chain_log_partition"]

ALGORITHMS = {
    "scaled": log_partition_scaled,
    "log": log_partition_log,
    "parallel": log_partition_parallel,
}


class ChainTables(NamedTuple):
    """The log-potential tables of a chain (shapes in the module docstring)."""

    initial: jax.Array
    transition: jax.Array
    emission: jax.Array


class ChainPosterior(NamedTuple):
    """Posterior of a chain's latent states: the gradient of the log-partition.

    Attributes:
      marginals: smoothed state probabilities p(z_t = k | x), (T, K) for one
        sequence or (B, T, K) for `Sequences` (rows of padded steps are 0).
      initial_counts: expected initial states Σ_b p(z_{b,0} = k | x), shaped like
        the initial table ((K,), or (B, K) for a per-sequence table).
      transition_counts: expected transitions Σ_{b,t} p(z_t = i, z_{t+1} = j | x),
        shaped like the transition table ((K, K), or per step when it is time-varying).
      log_likelihood: scalar log p(x | θ), summed over sequences.

    With per-sequence weights w_b every marginal and count of sequence b is
    multiplied by w_b and the log-likelihood is Σ_b w_b log p(x_b | θ).
    """

    marginals: jax.Array
    initial_counts: jax.Array
    transition_counts: jax.Array
    log_likelihood: jax.Array

    @property
    def tables(self) -> ChainTables:
        """The marginals shaped like the log-potential tables (the structure protocol)."""
        return ChainTables(self.initial_counts, self.transition_counts, self.marginals)


def _lengths(data: Any, tables: ChainTables):
    """(lengths, batched): the true lengths of the data's sequences."""
    if isinstance(data, Sequences):
        return jnp.asarray(data.lengths), True
    return tables.emission.shape[0], False


def _batch_axes(tables: ChainTables) -> ChainTables:
    """vmap axes of a batch's tables: emissions always, the others when per sequence."""
    return ChainTables(
        initial=0 if tables.initial.ndim == 2 else None,
        transition=0 if tables.transition.ndim == 4 else None,
        emission=0,
    )


def chain_log_partition(tables: ChainTables, lengths, batched: bool, algorithm: str = "scaled",
                        weights=None):
    """A_w(φ) = Σ_b w_b A(φ_b): scalar. `lengths` is a scalar (one sequence) or (B,); `weights`
    None, (B,) for a batch or a scalar for one sequence."""
    per_sequence = sequence_log_partitions(tables, lengths, batched, algorithm)
    return weighted_sum(per_sequence, weights)


def sequence_log_partitions(tables: ChainTables, lengths, batched: bool, algorithm: str = "scaled"):
    """A(φ) per sequence: (B,) for a batch, a scalar for one sequence.

    A batch with shared homogeneous tables and the "scaled" algorithm runs as one
    time-major scan (`chain_batched`); other batches vmap the one-chain recursion.
    """
    fn = ALGORITHMS[algorithm]
    if not batched:
        return fn(tables.initial, tables.transition, tables.emission, lengths)
    if algorithm == "scaled" and tables.initial.ndim == 1 and tables.transition.ndim == 2:
        return log_partitions_scaled_batch(*tables, lengths)
    return jax.vmap(fn, in_axes=(*_batch_axes(tables), 0))(*tables, lengths)


class ChainStructure(Structure):
    """The chain's side of the structure protocol (`jaxem.structures.base`), and decoding.

    Subclasses supply `num_states` and the three tables

        initial_table(params, data)    -> (K,) or (B, K)
        transition_table(params, data) -> (K, K), (T-1, K, K) or (B, T-1, K, K)
        emission_table(params, data)   -> (T, K) or (B, T, K)

    (or override `log_potentials` directly); they may set `algorithm`
    ("scaled", "log" or "parallel") and `default_m_step`.
    """

    algorithm: str = "scaled"

    # --- the tables ----------------------------------------------------------------------------

    def initial_table(self, params: Any, data: Any = None) -> jax.Array:
        raise NotImplementedError

    def transition_table(self, params: Any, data: Any = None) -> jax.Array:
        raise NotImplementedError

    def emission_table(self, params: Any, data: Any) -> jax.Array:
        raise NotImplementedError

    def log_potentials(self, params: Any, data: Any) -> ChainTables:
        """The tables (ι, τ, ε) of `data` under `params`."""
        return ChainTables(
            self.initial_table(params, data),
            self.transition_table(params, data),
            self.emission_table(params, data),
        )

    # --- the structure protocol ----------------------------------------------------------------

    def log_partition(self, tables: ChainTables, data: Any, weights: Any = None) -> jax.Array:
        """Σ_b w_b A(φ_b), the forward recursion of every sequence (`algorithm`)."""
        lengths, batched = _lengths(data, tables)
        return chain_log_partition(tables, lengths, batched, self.algorithm, weights)

    def posterior(self, marginals: ChainTables, log_likelihood: jax.Array) -> ChainPosterior:
        return ChainPosterior(
            marginals=marginals.emission,
            initial_counts=marginals.initial,
            transition_counts=marginals.transition,
            log_likelihood=log_likelihood,
        )

    def num_observations(self, data: Any, weights: Any = None):
        """The number of real (unpadded) time steps, Σ_b w_b T_b with per-sequence weights;
        scales `jaxem.fit`'s tolerance."""
        if isinstance(data, Sequences):
            lengths = jnp.asarray(data.lengths)
            return jnp.sum(lengths) if weights is None else jnp.sum(jnp.asarray(weights) * lengths)
        steps = num_leading(data)
        return steps if weights is None else jnp.asarray(weights) * steps

    def weights_shape(self, data: Any) -> tuple:
        """(B,) for `Sequences` (one weight per sequence); () for one sequence."""
        return (data.num_sequences,) if isinstance(data, Sequences) else ()

    @entry_point
    def sequence_log_likelihoods(self, params: Any, data: Any) -> jax.Array:
        """log p(x_b | params) per sequence: (B,) for `Sequences`, a scalar for one sequence."""
        tables = self.log_potentials(params, data)
        lengths, batched = _lengths(data, tables)
        return sequence_log_partitions(tables, lengths, batched, self.algorithm)

    # --- decoding --------------------------------------------------------------------------------

    @entry_point
    def state_probabilities(self, params: Any, data: Any) -> jax.Array:
        """Smoothed p(z_t = k | x): (T, K), or (B, T, K) with zero rows on padding."""
        return self.exact_e_step(params, data).marginals

    @entry_point
    def viterbi(self, params: Any, data: Any):
        """The most probable state paths and their log-probabilities log p(x, z*).

        Returns (paths, log_probs): (T,) int32 and a scalar for one sequence;
        (B, T) with -1 on padding and (B,) for `Sequences`.
        """
        tables = self.log_potentials(params, data)
        lengths, batched = _lengths(data, tables)
        if not batched:
            return viterbi(*tables, lengths)
        return jax.vmap(viterbi, in_axes=(*_batch_axes(tables), 0))(*tables, lengths)

    @entry_point(check=lambda model, key, params, data: check_params_and_data(model, params, data))
    def sample_posterior(self, key: jax.Array, params: Any, data: Any) -> jax.Array:
        """State paths drawn from p(z | x): (T,) int32, or (B, T) with -1 on padding."""
        tables = self.log_potentials(params, data)
        lengths, batched = _lengths(data, tables)
        if not batched:
            return sample_posterior(key, *tables, lengths)
        keys = jax.random.split(key, tables.emission.shape[0])
        return jax.vmap(sample_posterior, in_axes=(0, *_batch_axes(tables), 0))(keys, *tables, lengths)
