"""`HMM`: a hidden Markov model written as three per-state log-probability functions.

    log p(x, z | θ) = log_initial(θ, z_0) + Σ_{t>=1} log_transition(θ, z_{t-1}, z_t)
                      + Σ_t log_emission(θ, x_t, z_t)

jaxem evaluates the three functions on every state (and every step) to fill the
chain's log-potential tables and derives the rest from `ChainStructure`: the
log-likelihood is the forward recursion, the E-step its gradient (Baum–Welch's
forward–backward), Q an inner product, so `jaxem.fit` with `jaxem.Gradient()`
or a `jaxem.ClosedForm` M-step runs Baum–Welch (or generalized EM) unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxem.structures.chain import ALGORITHMS, ChainStructure
from jaxem.structures.chain_decoding import sample_chain
from jaxem.structures.entry_points import check_params_only, entry_point
from jaxem.structures.sequences import Sequences, check_chain_data
from jaxem.tree import pytree_dataclass, static_field

__all__ = ["HMM"]


@pytree_dataclass
@dataclasses.dataclass(frozen=True)
class HMM(ChainStructure):
    """A hidden Markov model from its three log-probability functions.

    Args:
      log_initial: `log_initial(params, z) -> scalar`, log p(z_0 = z | params).
      log_transition: `log_transition(params, z_prev, z) -> scalar`,
        log p(z_t = z | z_{t-1} = z_prev, params). May be -inf (a structural zero).
      log_emission: `log_emission(params, x_t, z) -> scalar`, log p(x_t | z_t = z,
        params) for ONE time step `x_t` (the data pytree without its time axis).
      num_states: K >= 1. States `z` are int32 scalars in [0, K).
      m_step: optional default M-step (e.g. `jaxem.ClosedForm(fn)`); without one
        `jaxem.fit` climbs Q with `jaxem.Gradient()`.
      algorithm: "scaled" (default), "log" or "parallel"; see `jaxem.structures.chain`.
      sample_emission: optional `sample_emission(key, params, z) -> x_t`, which
        enables `sample`.
      log_prior: optional `log_prior(params) -> scalar`, the model's prior: `jaxem.fit`
        then maximises log-likelihood + log-prior (MAP) unless given another.

    Data: one sequence (a pytree whose leaves share a leading time axis T) or
    `jaxem.Sequences(values, lengths)`. All functions must be pure and
    jax-traceable. Every field is static (a pytree with no leaves).
    """

    log_initial: Callable[[Any, jax.Array], jax.Array] = static_field()
    log_transition: Callable[[Any, jax.Array, jax.Array], jax.Array] = static_field()
    log_emission: Callable[[Any, Any, jax.Array], jax.Array] = static_field()
    num_states: int = static_field()
    m_step: Any = static_field(default=None)
    algorithm: str = static_field(default="scaled")
    sample_emission: Callable[[jax.Array, Any, jax.Array], Any] | None = static_field(default=None)
    log_prior: Callable[[Any], jax.Array] | None = static_field(default=None)

    def __post_init__(self):
        from jaxem.validation import check_callable, check_num_states

        check_callable(self.log_initial, "log_initial")
        check_callable(self.log_transition, "log_transition")
        check_callable(self.log_emission, "log_emission")
        check_num_states(self.num_states)
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm: expected one of {tuple(ALGORITHMS)}, got {self.algorithm!r}.")
        if self.sample_emission is not None:
            check_callable(self.sample_emission, "sample_emission")
        if self.log_prior is not None:
            check_callable(self.log_prior, "log_prior")

    @property
    def default_m_step(self):
        return self.m_step

    def _states(self) -> jax.Array:
        return jnp.arange(self.num_states, dtype=jnp.int32)

    def initial_table(self, params: Any, data: Any = None) -> jax.Array:
        """ι (K,): log_initial on every state."""
        return jax.vmap(self.log_initial, in_axes=(None, 0))(params, self._states())

    def transition_table(self, params: Any, data: Any = None) -> jax.Array:
        """τ (K, K): τ[i, j] = log_transition(params, i, j)."""
        states = self._states()
        row = jax.vmap(self.log_transition, in_axes=(None, None, 0))
        return jax.vmap(row, in_axes=(None, 0, None))(params, states, states)

    def emission_table(self, params: Any, data: Any) -> jax.Array:
        """ε (T, K), or (B, T, K) for `Sequences`: log_emission on every step and state."""
        per_state = jax.vmap(self.log_emission, in_axes=(None, None, 0))
        per_step = jax.vmap(per_state, in_axes=(None, 0, None))
        if isinstance(data, Sequences):
            return jax.vmap(per_step, in_axes=(None, 0, None))(params, data.values, self._states())
        return per_step(params, data, self._states())

    def check_data(self, data: Any) -> None:
        """One sequence with leading time axis T >= 1, or a valid `Sequences` batch."""
        check_chain_data(data)

    def check_params(self, params: Any, data: Any = None, *, batch_ndim: int = 0,
                     name: str = "params") -> None:
        """Concrete leaves are finite; with `data`, the three functions traced on shapes
        alone (one state, one time step) return floating scalars; otherwise the error
        says which shape they returned. `batch_ndim` leading axes are batch axes."""
        from jaxem.validation import abstract, check_finite_tree, check_scalar_function

        check_finite_tree(params, name)
        if data is None:
            return
        one = abstract(params, batch_ndim)
        state = jax.ShapeDtypeStruct((), jnp.int32)
        values = data.values if isinstance(data, Sequences) else data
        one_step = abstract(values, drop_leading=2 if isinstance(data, Sequences) else 1)
        check_scalar_function(self.log_initial, (one, state), "log_initial", "for ONE state")
        check_scalar_function(self.log_transition, (one, state, state), "log_transition",
                              "for ONE pair of states")
        check_scalar_function(self.log_emission, (one, one_step, state), "log_emission",
                              "for ONE time step and ONE state")

    def sample_states(self, key: jax.Array, params: Any, num_steps: int) -> jax.Array:
        """A state path (num_steps,) drawn from the chain's prior."""
        return sample_chain(key, self.initial_table(params), self.transition_table(params), num_steps)

    @entry_point(static=("num_steps",), check=check_params_only)
    def sample(self, key: jax.Array, params: Any, num_steps: int):
        """(x, z): a sequence of `num_steps` observations and its states, drawn from
        the model; needs `sample_emission`."""
        if self.sample_emission is None:
            raise ValueError(
                "sample: this HMM has no sample_emission; pass "
                "HMM(..., sample_emission=lambda key, params, z: ...) to draw observations, "
                "or use sample_states for the latent path alone."
            )
        key_z, key_x = jax.random.split(key)
        states = self.sample_states(key_z, params, num_steps)
        keys = jax.random.split(key_x, num_steps)
        x = jax.vmap(self.sample_emission, in_axes=(0, None, 0))(keys, params, states)
        return x, states
