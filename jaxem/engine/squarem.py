"""SQUAREM: the squared extrapolation of Varadhan & Roland (2008) on the EM map.

EM converges linearly, at the rate of the largest eigenvalue of its Jacobian DM
(the fraction of missing information); where that is close to one it crawls.
SQUAREM takes two EM steps from the last accepted iterate θ_0,

    θ_1 = M(θ_0),   θ_2 = M(θ_1),   r = u_1 - u_0,   v = (u_2 - u_1) - r,

in unconstrained coordinates u = model.unconstrain(θ) (so that an extrapolated point
has weights on the simplex and positive-definite covariances; a model without a
bijection is extrapolated in its own coordinates), and jumps along the quadratic

    u' = u_0 + 2α r + α² v,   α = ‖r‖ / ‖v‖   (the SqS3 step length, clamped to [1, α_max]),

which at α = 1 is θ_2 itself. One more EM step from θ' = constrain(u') stabilises it:
the next iterate is M(θ'). The monotone safeguard: if ℓ(θ') is not finite or is below
ℓ(θ_0), the extrapolation is discarded and the next iterate is θ_2, the plain EM step
(for EM, ℓ(M(θ')) ≥ ℓ(θ') ≥ ℓ(θ_0) and ℓ(θ_2) ≥ ℓ(θ_0), so the objective of the
iterates never decreases). α_max starts at 1 and is multiplied by 4 each time the
longest allowed step is accepted, divided by 4 (not below 1) each time it is rejected
(the adaptive bound of Varadhan & Roland's `squarem1`).

A cycle costs three E-steps when the extrapolation is accepted (at θ_1, θ' and the
next iterate) and four when it is not (the next iterate is then θ_2, whose E-step
begins the next cycle). The driver (`jaxem.engine.fit`) runs every one of these as a
pass of the same loop body, one E-step and one M-step each, so the compiled program
holds the E-step once; this module holds the state of a cycle and its arithmetic.

Coordinates that are not finite (a weight of exactly 0 has logit -inf) are not
extrapolated: they take θ_2's value, and do not count in ‖r‖ and ‖v‖.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxem.engine.kernel import EMState

__all__ = ["ACCELERATIONS", "SquaremState", "constrain", "extrapolate", "squarem_start", "unconstrain",
           "update_step_max"]

ACCELERATIONS = (None, "squarem")

# The SqS3 step length is clamped to [1, step_max]; step_max moves by this factor.
_STEP_FACTOR = 4.0

# Phases of a cycle: which point the next pass of the loop evaluates.
AT_ITERATE = 0  # θ_0: an iterate (accepted, recorded, tested for convergence)
AT_FIRST_STEP = 1  # θ_1 = M(θ_0)
AT_EXTRAPOLATED = 2  # θ' (its M-step is the stabilising step)


class SquaremState(NamedTuple):
    """Where a SQUAREM cycle stands (a pytree; leaves batch under vmap).

    phase: int32, AT_ITERATE, AT_FIRST_STEP or AT_EXTRAPOLATED.
    origin: u_0, the last iterate in unconstrained coordinates.
    fallback: θ_2 with the M-step's memory, the plain EM step taken if θ' is rejected.
    step: the step length α of this cycle; step_max: its current upper bound α_max.
    """

    phase: jax.Array
    origin: Any
    fallback: EMState
    step: jax.Array
    step_max: jax.Array


def unconstrain(model: Any, params: Any) -> Any:
    """u = model.unconstrain(θ), or θ itself for a model without a bijection."""
    method = getattr(model, "unconstrain", None)
    return method(params) if callable(method) else params


def constrain(model: Any, u: Any) -> Any:
    """θ = model.constrain(u), or u itself for a model without a bijection."""
    method = getattr(model, "constrain", None)
    return method(u) if callable(method) else u


def squarem_start(model: Any, start: EMState, dtype: Any) -> SquaremState:
    """The state before the first pass (the loop is at θ_0, an iterate)."""
    u = unconstrain(model, start.params)
    return SquaremState(
        phase=jnp.asarray(AT_ITERATE, jnp.int32),
        origin=u,
        fallback=start,
        step=jnp.ones((), dtype),
        step_max=jnp.ones((), dtype),
    )


def extrapolate(u0: Any, u1: Any, u2: Any, step_max: jax.Array) -> tuple[Any, jax.Array]:
    """(u', α): the SqS3 point u_0 + 2α r + α² v and its step length (module docstring).
    Entries where u_0, u_1 or u_2 is not finite are u_2's."""
    tree_map = jax.tree_util.tree_map
    usable = tree_map(lambda a, b, c: jnp.isfinite(a) & jnp.isfinite(b) & jnp.isfinite(c), u0, u1, u2)
    r = tree_map(lambda m, a, b: jnp.where(m, b - a, 0), usable, u0, u1)
    v = tree_map(lambda m, a, b, c: jnp.where(m, c - 2 * b + a, 0), usable, u0, u1, u2)
    r_norm2 = sum(jnp.sum(jnp.square(x)) for x in jax.tree_util.tree_leaves(r))
    v_norm2 = sum(jnp.sum(jnp.square(x)) for x in jax.tree_util.tree_leaves(v))
    ratio = jnp.sqrt(r_norm2 / jnp.where(v_norm2 > 0, v_norm2, 1))
    step = jnp.where(v_norm2 > 0, jnp.clip(ratio, 1, step_max), 1).astype(step_max.dtype)
    moved = tree_map(lambda m, a, c, dr, dv: jnp.where(m, a + (2 * step) * dr + jnp.square(step) * dv, c)
                     .astype(jnp.result_type(c)), usable, u0, u2, r, v)
    return moved, step


def update_step_max(step: jax.Array, step_max: jax.Array, accepted: jax.Array) -> jax.Array:
    """α_max after a cycle whose step α was `accepted` or not: it grows after an accepted step
    at the bound and shrinks (not below 1) after a rejected one."""
    at_bound = step >= step_max
    grown = jnp.where(at_bound, step_max * _STEP_FACTOR, step_max)
    shrunk = jnp.where(at_bound, jnp.maximum(1, step_max / _STEP_FACTOR), step_max)
    return jnp.where(accepted, grown, shrunk)
