"""Mixture structure: N independent discrete latent variables with K states each.

A mixture's complete-data log-likelihood is one log-potential table

    φ[n, k] = log p(x_n, z_n = k | θ)                      shape (N, K)

and everything EM needs is derived from that table (`jaxem.structures.base`):

    ℓ(θ)        = A_w(φ) = Σ_n w_n logsumexp_k φ[n, k]     (log-partition; w = 1 by default)
    r[n, k]     = ∂A_w/∂φ[n, k] = w_n p(z_n = k | x_n, θ)   (E-step = one jax.grad)
    Q(θ' | θ)   = Σ_{n,k} r[n, k] φ[n, k](θ')               (inner product)

`MixtureStructure` supplies that log-partition for any way of filling the table;
`Mixture` fills it from a user's per-observation `log_joint(params, x, z)`.
Ready models (e.g. the Gaussian mixture) fill it faster, as a matrix product of
sufficient statistics with natural parameters, and inherit the rest.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxem.structures.base import Structure, num_leading, weighted_sum
from jaxem.tree import pytree_dataclass, static_field
from jaxem.validation import (
    abstract,
    all_concrete,
    check_finite_tree,
    check_floating_params,
    check_scalar_function,
    check_state_indexing,
    eval_shape_cached,
)

__all__ = ["Mixture", "MixturePosterior", "MixtureStructure"]


class MixturePosterior(NamedTuple):
    """Posterior of a mixture's latent variables.

    Attributes:
      marginals: (N, K) responsibilities p(z_n = k | x_n, θ); each row sums to 1
        (to w_n with sample weights, the weighted responsibilities).
      log_likelihood: scalar observed-data log-likelihood Σ_n w_n log p(x_n | θ).
    """

    marginals: jax.Array
    log_likelihood: jax.Array

    @property
    def tables(self) -> jax.Array:
        """The marginals shaped like the log-potential table (the structure protocol)."""
        return self.marginals


def log_partition(table: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """A_w(φ) = Σ_n w_n logsumexp_k φ[n, k] for a (N, K) table; `-inf` entries are allowed."""
    return weighted_sum(jax.nn.logsumexp(table, axis=-1), weights)


class MixtureStructure(Structure):
    """The mixture's side of the structure protocol (`jaxem.structures.base`).

    Subclasses supply `num_states` and `log_potentials(params, data) -> (N, K)`;
    they may set `default_m_step` (used by `jaxem.fit` when no M-step is given).
    """

    def log_potentials(self, params: Any, data: Any) -> jax.Array:
        """The (N, K) table φ[n, k] = log p(x_n, z_n = k | params)."""
        raise NotImplementedError

    def log_partition(self, tables: jax.Array, data: Any, weights: Any = None) -> jax.Array:
        return log_partition(tables, weights)

    def posterior(self, marginals: jax.Array, log_likelihood: jax.Array) -> MixturePosterior:
        return MixturePosterior(marginals=marginals, log_likelihood=log_likelihood)

    def num_observations(self, data: Any, weights: Any = None):
        """N (or Σ_n w_n with weights), which scales the fit's tolerance."""
        if weights is None:
            return num_leading(data)
        return jnp.sum(jnp.asarray(weights))

    def weights_shape(self, data: Any) -> tuple:
        """(N,): one weight per observation."""
        return (num_leading(data),)

    def check_params(self, params: Any, data: Any = None, *, batch_ndim: int = 0,
                     name: str = "params") -> None:
        """Concrete leaves are finite; with `data`, `log_potentials` traced on shapes
        alone returns the (N, K) table. `batch_ndim` leading axes of every leaf are
        batch axes. Models override this with their own constraints."""
        check_finite_tree(params, name)
        if data is not None:
            table = eval_shape_cached(self.log_potentials, abstract(params, batch_ndim), abstract(data))
            expected = (num_leading(data), self.num_states)
            if table.shape != expected:
                raise ValueError(
                    f"log_potentials: must return the (N, K) = {expected} table, "
                    f"returned shape {table.shape}."
                )


@pytree_dataclass
@dataclasses.dataclass(frozen=True)
class Mixture(MixtureStructure):
    """A mixture defined by its complete-data log-likelihood of one observation.

    Args:
      log_joint: `log_joint(params, x, z) -> scalar`, log p(x, z | params) for ONE
        observation `x` (a slice of the data pytree without its leading axis) and
        ONE latent value `z` (int32 scalar in [0, num_states)). It may return
        `-inf` for impossible pairs. It must be pure and jax-traceable.
      num_states: K, the number of latent states (>= 1).
      m_step: optional default M-step for this model (e.g. `jaxem.ClosedForm`);
        without one `jaxem.fit` climbs Q with `jaxem.Gradient()`.
      log_prior: optional `log_prior(params) -> scalar`, the model's prior: `jaxem.fit`
        then maximises log-likelihood + log-prior (MAP) unless given another.

    The data is any pytree whose leaves share a leading axis N; jaxem vmaps
    `log_joint` over observations and states. All fields are static (a pytree with
    no leaves), so the same functions and K compile once.
    """

    log_joint: Callable[[Any, Any, jax.Array], jax.Array] = static_field()
    num_states: int = static_field()
    m_step: Any = static_field(default=None)
    log_prior: Callable[[Any], jax.Array] | None = static_field(default=None)

    def __post_init__(self):
        from jaxem.validation import check_callable, check_num_states

        check_callable(self.log_joint, "log_joint")
        check_num_states(self.num_states)
        if self.log_prior is not None:
            check_callable(self.log_prior, "log_prior")

    @property
    def default_m_step(self):
        return self.m_step

    def check_params(self, params: Any, data: Any = None, *, batch_ndim: int = 0,
                     name: str = "params") -> None:
        """Floating leaves, finite where concrete; with `data`: `log_joint` traced on shapes
        alone (one observation, one int32 state) returns a floating scalar (otherwise the
        error says which shape it returned, or which key it missed), and, on concrete
        values, no state indexes a parameter out of range (`check_state_indexing`: JAX
        would clamp it). N < K is allowed: a latent variable may augment a few weighted
        classes (the genetic-linkage example has N = 4, K = 5)."""
        check_floating_params(params, name)
        check_finite_tree(params, name)
        if data is not None:
            one_observation = abstract(data, drop_leading=1)
            state = jax.ShapeDtypeStruct((), jnp.int32)
            check_scalar_function(self.log_joint, (abstract(params, batch_ndim), one_observation, state),
                                  "log_joint", "for ONE observation and ONE state")
            if all_concrete((params, data)):
                first = jax.tree_util.tree_map(lambda leaf: leaf[(0,) * batch_ndim], params)
                check_state_indexing(self.log_joint, first,
                                     jax.tree_util.tree_map(lambda leaf: leaf[0], data), self.num_states)

    def log_potentials(self, params: Any, data: Any) -> jax.Array:
        states = jnp.arange(self.num_states, dtype=jnp.int32)
        per_state = jax.vmap(self.log_joint, in_axes=(None, None, 0))
        per_obs = jax.vmap(per_state, in_axes=(None, 0, None))
        return per_obs(params, data, states)
