"""Pytree utilities: leafwise helpers for the EM loop (and a predicate that `vmap` reduces
over its batch), and models as pytrees.

A ready model is a frozen dataclass registered as a pytree (`pytree_dataclass`): its
structural settings (number of states, covariance type, algorithm, user functions) are
marked `static_field()` and live in the treedef, so they fix the compiled program; every
other field (reg_covar, prior strengths) is a leaf, so a new value reuses the compiled
program and can be differentiated. Unflattening bypasses `__init__` (and its input
checks), as JAX rebuilds pytrees with tracers or placeholders as leaves.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["all_across_batch", "all_finite", "as_hyperparameters", "pytree_dataclass", "select",
           "static_field"]


def all_finite(tree: Any) -> jax.Array:
    """True (a bool scalar) when every inexact leaf of `tree` is finite."""
    flags = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)
             if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
    return jnp.all(jnp.stack(flags)) if flags else jnp.array(True)


def select(condition: jax.Array, on_true: Any, on_false: Any) -> Any:
    """Leafwise `jnp.where(condition, on_true, on_false)` for a scalar condition."""
    return jax.tree_util.tree_map(lambda a, b: jnp.where(condition, a, b), on_true, on_false)


@jax.custom_batching.custom_vmap
def all_across_batch(predicate: jax.Array) -> jax.Array:
    """`predicate` (a bool scalar) unchanged; under `vmap`, ONE unbatched bool, True when it
    holds for every member of the batch.

    For a `lax.cond` between two exact ways of computing the same value (a fast one and a
    safe one): with a batched predicate `vmap` turns the cond into a select and computes
    both branches; with this one it stays a branch, taking the fast way only when every
    member of the batch may. Not for conds whose branches compute different values."""
    return predicate


@all_across_batch.def_vmap
def _all_across_batch_rule(axis_size, in_batched, predicate):
    del axis_size
    (batched,) = in_batched
    return (jnp.all(predicate) if batched else predicate), False


def as_hyperparameters(obj: Any, names: tuple) -> None:
    """Store the concrete real numbers among the fields `names` of the frozen dataclass `obj`
    as Python floats: weakly typed leaves, so an int, a NumPy scalar or another value all
    reuse one compiled program and never promote float32 computations. Arrays that are not
    concrete (tracers) are left as they are."""
    for name in names:
        value = getattr(obj, name)
        if isinstance(value, jax.core.Tracer) or isinstance(value, bool):
            continue
        if isinstance(value, (int, float, np.integer, np.floating)) or jnp.ndim(value) == 0:
            object.__setattr__(obj, name, float(value))


def static_field(**kwargs: Any) -> Any:
    """A dataclass field that is part of the treedef (static under `jit`), not a leaf."""
    metadata = dict(kwargs.pop("metadata", {}), static=True)
    return dataclasses.field(metadata=metadata, **kwargs)


def pytree_dataclass(cls: type) -> type:
    """Register the dataclass `cls` as a pytree: `static_field()`s go in the treedef
    (they must be hashable and comparable), all other fields are children (leaves or
    sub-pytrees). Returns `cls`."""
    fields = [f for f in dataclasses.fields(cls) if f.init]
    static = tuple(f.name for f in fields if f.metadata.get("static"))
    dynamic = tuple(f.name for f in fields if not f.metadata.get("static"))

    def flatten_with_keys(obj):
        children = [(jax.tree_util.GetAttrKey(name), getattr(obj, name)) for name in dynamic]
        return children, tuple(getattr(obj, name) for name in static)

    def flatten(obj):
        return [getattr(obj, name) for name in dynamic], tuple(getattr(obj, name) for name in static)

    def unflatten(aux, children):
        obj = object.__new__(cls)
        for name, value in zip(static, aux, strict=True):
            object.__setattr__(obj, name, value)
        for name, value in zip(dynamic, children, strict=True):
            object.__setattr__(obj, name, value)
        return obj

    jax.tree_util.register_pytree_with_keys(cls, flatten_with_keys, unflatten, flatten)
    return cls
