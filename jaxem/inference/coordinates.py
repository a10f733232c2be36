"""A model's parameters in minimal unconstrained coordinates, and its objective there.

Every ready model offers a bijection θ = model.constrain(u), u = model.unconstrain(θ)
onto free real numbers, as many as the model has free parameters (weights as K−1
log-ratios, covariances as Cholesky factors with log diagonals, rates as logs); a
custom model built from a `log_joint` takes its parameters to be unconstrained
already (the identity). Inference after a fit (the observed information, standard
errors, `fit_direct`) works in u, flattened in the order of
`jax.flatten_util.ravel_pytree(model.unconstrain(θ))`.

A coordinate that is not finite (−inf: a structural zero, such as a transition an
HMM forbids) is not free: it is held where it is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jaxem.engine.kernel import objective_prior
from jaxem.engine.squarem import constrain, unconstrain

__all__ = ["coordinate_names", "constrain", "free_coordinates", "objective", "substitute", "unconstrain"]


def objective(model: Any, log_prior: Callable | None, params: Any, data: Any, weights: Any = None):
    """ℓ(θ) = Σ_n w_n log p(x_n | θ) + log_prior(θ): the prior is `log_prior`, else the
    model's own, else none (as in `jaxem.fit`). The log-partition alone, no posterior."""
    value = model.log_partition(model.log_potentials(params, data), data, weights)
    prior = objective_prior(model, log_prior)
    return value if prior is None else value + prior(params)


def coordinate_names(tree: Any) -> list[str]:
    """One name per entry of `ravel_pytree(tree)`, e.g. "weights[0]" or "['logits'][1]"."""
    names = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        base = jax.tree_util.keystr(path).lstrip(".")
        shape = jnp.shape(leaf)
        if not shape:
            names.append(base or "params")
            continue
        names.extend(f"{base}[{', '.join(map(str, index))}]" for index in np.ndindex(*shape))
    return names


def free_coordinates(flat: jax.Array) -> jax.Array:
    """Positions of the finite entries of the flat coordinates (all of them when traced)."""
    if isinstance(flat, jax.core.Tracer):
        return jnp.arange(flat.shape[0])
    return jnp.asarray(np.nonzero(np.isfinite(np.asarray(flat)))[0])


def substitute(u: Any, free: jax.Array):
    """(v, fill): the free coordinates v of `u` and v ↦ u with v in the free positions."""
    flat, unravel = ravel_pytree(u)
    return flat[free], lambda v: unravel(flat.at[free].set(v))
