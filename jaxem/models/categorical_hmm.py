"""The categorical (discrete-symbol) hidden Markov model: x_t | z_t = k ~ Categorical(B_k).

Observations are integer symbols in [0, M). The emission table is a gather,
ε[t, k] = log B[k, x_t], and the M-step needs the expected symbol counts
Σ_t γ_tk [x_t = m] (one segment sum). With Dirichlet(α_B) priors on the rows of B,

    B_km ∝ max(α_B - 1 + Σ_t γ_tk [x_t = m], 0)

(hmmlearn's `CategoricalHMM` convention; α = 1 is maximum likelihood), and π, A
as in `jaxem.models.hmm_common`. Zero emission probabilities stay zero.

Minimal unconstrained coordinates (`unconstrain` / `constrain`): `CategoricalHMMCoordinates`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxem.models.hmm_common import (
    ProbabilityChain,
    ProbabilityTableEmission,
    check_chain_params,
    flatten_steps,
    normalize_rows,
    step_values,
)
from jaxem.structures.chain_sequential import safe_log
from jaxem.structures.entry_points import check_params_only, entry_point
from jaxem.structures.sequences import check_chain_data
from jaxem.tree import pytree_dataclass, static_field
from jaxem.validation import check_array, check_simplex, is_concrete

__all__ = ["CategoricalHMM", "CategoricalHMMCoordinates", "CategoricalHMMParams", "categorical_hmm"]


class CategoricalHMMParams(NamedTuple):
    """initial (K,), transition (K, K) and emission (K, M) probabilities (rows sum to 1)."""

    initial: jax.Array
    transition: jax.Array
    emission: jax.Array


class CategoricalHMMCoordinates(NamedTuple):
    """`CategoricalHMMParams` in minimal unconstrained coordinates (`model.unconstrain`).

    initial_logits (K-1,), transition_logits (K, K-1), emission_logits (K, M-1): the log-ratios
    of π, of each row of A and of each row of B against their last entry
    (`jaxem.families.simplex`; zero probabilities are -inf and map back to exactly 0).
    """

    initial_logits: jax.Array
    transition_logits: jax.Array
    emission_logits: jax.Array


@pytree_dataclass
@dataclasses.dataclass(frozen=True)
class CategoricalHMM(ProbabilityTableEmission, ProbabilityChain):
    """A K-state HMM emitting symbols in [0, num_symbols), on integer data (T,) or
    `Sequences` of (B, T). Build it with `categorical_hmm(...)`. K, M and the algorithm
    are static; the concentrations are leaves."""

    num_states: int = static_field()
    num_symbols: int = static_field()
    initial_prior: float = 1.0
    transition_prior: float = 1.0
    emission_prior: float = 1.0
    algorithm: str = static_field(default="scaled")

    params_type = CategoricalHMMParams
    coordinates_type = CategoricalHMMCoordinates

    def emission_table(self, params: CategoricalHMMParams, data: Any) -> jax.Array:
        """ε[t, k] = log B[k, x_t]: (T, K), or (B, T, K) for `Sequences`."""
        x, _, unflatten = flatten_steps(data)
        return unflatten(safe_log(params.emission).T[x])

    def log_emission(self, params: CategoricalHMMParams, x: jax.Array, z: jax.Array) -> jax.Array:
        """log B[z, x] for one symbol x and one state z (the per-state form)."""
        return safe_log(params.emission[z, x])

    def emission_statistics(self, marginals: jax.Array, data: Any, params: CategoricalHMMParams) -> jax.Array:
        """Expected symbol counts (K, M): Σ_t γ_tk [x_t = m] over real steps (one segment sum)."""
        x, _, _ = flatten_steps(data)
        return jax.ops.segment_sum(marginals, x, num_segments=self.num_symbols).T

    def init(self, key: jax.Array, data: Any, dtype=None) -> CategoricalHMMParams:
        """Random starting parameters: each row of B is half the symbols' overall frequency
        (smoothed by one pseudo-count) and half a Dirichlet(1) draw; π uniform; A
        half uniform, half a Dirichlet(1) draw per row. No entry is zero. Pure and
        vmappable over `key`; `dtype` defaults to JAX's default float (float64 when
        x64 is enabled). (A Dirichlet(1) draw is a normalised vector of Exp(1) draws.)"""
        self.check_data(data)
        dtype = jax.dtypes.canonicalize_dtype(jnp.float64 if dtype is None else dtype)
        x, valid, _ = flatten_steps(data)
        key_b, key_a = jax.random.split(key)
        k, m = self.num_states, self.num_symbols
        counts = jax.ops.segment_sum(valid.astype(dtype), x, num_segments=m) + 1.0
        frequency = counts / jnp.sum(counts)
        draw_b = _uniform_dirichlet(key_b, (k, m), dtype)
        draw_a = _uniform_dirichlet(key_a, (k, k), dtype)
        emission = normalize_rows(0.5 * frequency + 0.5 * draw_b, jnp.full((k, m), 1.0 / m, dtype))
        transition = normalize_rows(0.5 / k + 0.5 * draw_a, jnp.full((k, k), 1.0 / k, dtype))
        return CategoricalHMMParams(jnp.full((k,), 1.0 / k, dtype), transition, emission)

    def check_data(self, data: Any) -> None:
        """Integer symbols of shape (T,) (or `Sequences` of (B, T)) in [0, num_symbols)."""
        check_chain_data(data)
        values, step_shape, dtype = step_values(data)
        if step_shape != ():
            raise ValueError(
                f"data: expected integer symbols of shape (T,) (or Sequences of (B, T)), got dtype "
                f"{dtype} and per-step shape {step_shape}; hmmlearn's (N, 1) arrays need x[:, 0]."
            )
        if not jnp.issubdtype(dtype, jnp.integer):
            raise TypeError(
                f"data: expected integer symbols in [0, {self.num_symbols}), got dtype {dtype}; "
                "convert whole-number floats with x.astype(int) (categories are labels, not values)."
            )
        if is_concrete(values):
            low, high = int(np.min(values)), int(np.max(values))
            if low < 0 or high >= self.num_symbols:
                raise ValueError(
                    f"data: symbols must lie in [0, {self.num_symbols}) (num_symbols), got values from "
                    f"{low} to {high}; pad Sequences with a valid symbol such as 0."
                )

    def check_params(self, params: Any, data: Any = None, *, batch_ndim: int = 0,
                     name: str = "params") -> None:
        """A `CategoricalHMMParams` of floating-point arrays: initial (K,), the rows of
        transition (K, K) and of emission (K, M) (M = num_symbols) on the simplex, all
        finite. `batch_ndim` leading axes are batch axes. Under jit/vmap only the
        structure, dtypes and shapes are checked."""
        batch = check_chain_params(params, CategoricalHMMParams, self.num_states, batch_ndim, name)
        check_array(params.emission, f"{name}.emission", batch + (self.num_states, self.num_symbols))
        check_simplex(params.emission, f"{name}.emission")

    def num_parameters(self) -> int:
        """Free parameters: (K-1) + K(K-1) + K(M-1)."""
        k, m = self.num_states, self.num_symbols
        return (k - 1) + k * (k - 1) + k * (m - 1)

    @entry_point(static=("num_steps",), check=check_params_only)
    def sample(self, key: jax.Array, params: CategoricalHMMParams, num_steps: int):
        """(x (num_steps,) int32 symbols, z (num_steps,) states) drawn from the model."""
        key_z, key_x = jax.random.split(key)
        z = self.sample_states(key_z, params, num_steps)
        x = jax.random.categorical(key_x, safe_log(params.emission)[z]).astype(jnp.int32)
        return x, z


def _uniform_dirichlet(key: jax.Array, shape: tuple, dtype) -> jax.Array:
    """Rows drawn from the flat Dirichlet(1, ..., 1): normalised Exp(1) variables."""
    draws = jax.random.exponential(key, shape, dtype)
    return draws / jnp.sum(draws, axis=-1, keepdims=True)


def categorical_hmm(num_states: int, num_symbols: int, *, initial_prior: float = 1.0,
                    transition_prior: float = 1.0, emission_prior: float = 1.0,
                    algorithm: str = "scaled") -> CategoricalHMM:
    """A categorical-emission HMM with a closed-form M-step.

    Args:
      num_states: K >= 1.
      num_symbols: M >= 1, the number of distinct symbols (data values in [0, M)).
      initial_prior, transition_prior, emission_prior: symmetric Dirichlet
        concentrations for π, the rows of A and the rows of B (1.0: maximum likelihood).
      algorithm: "scaled" (default), "log" or "parallel" forward–backward.
    """
    return CategoricalHMM(num_states, num_symbols, initial_prior, transition_prior, emission_prior,
                          algorithm)
