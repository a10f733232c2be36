"""Small pytree utilities used by the EM loop and the M-steps."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["all_finite", "select"]


def all_finite(tree: Any) -> jax.Array:
    """True (a bool scalar) when every inexact leaf of `tree` is finite."""
    flags = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)
             if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
    return jnp.all(jnp.stack(flags)) if flags else jnp.array(True)


def select(condition: jax.Array, on_true: Any, on_false: Any) -> Any:
    """Leafwise `jnp.where(condition, on_true, on_false)` for a scalar condition."""
    return jax.tree_util.tree_map(lambda a, b: jnp.where(condition, a, b), on_true, on_false)
