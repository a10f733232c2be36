"""Helpers shared by every latent structure: inner products of marginals with
log-potential tables, and the leading-axis size of a data pytree."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["inner_product", "num_leading"]


def inner_product(marginals: jax.Array, table: jax.Array) -> jax.Array:
    """⟨μ, φ⟩ = Σ μ ⊙ φ, where entries with μ = 0 contribute exactly 0.

    An impossible configuration has φ = -inf and μ = 0; the naive product is
    0 · (-inf) = NaN. Both the value and its gradient are guarded (the
    double-`where` pattern), so NaN never reaches a backward pass.
    """
    support = marginals > 0
    safe_table = jnp.where(support, table, 0.0)
    return jnp.sum(jnp.where(support, marginals * safe_table, 0.0))


def num_leading(data: Any) -> int:
    """The size of the leading axis shared by all leaves of `data`."""
    leaves = jax.tree_util.tree_leaves(data)
    if not leaves:
        raise ValueError("data: the pytree has no array leaves; pass an array of shape (N, ...).")
    return jnp.shape(leaves[0])[0]
