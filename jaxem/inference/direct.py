"""The direct-gradient baseline: maximise the observed log-likelihood itself.

    û = argmax_u ℓ(θ(u)),   θ(u) = model.constrain(u)   (`jaxem.inference.coordinates`)

with an optax optimizer (L-BFGS with a zoom line search by default) in the model's
unconstrained coordinates, one optimizer step per iteration of a `lax.while_loop`,
each step accepted only when it does not lower ℓ (`jaxem.engine.mstep.climb_step`).
It is the comparison the seed asks for: EM climbs a surrogate Q whose maximiser is
known; this climbs ℓ with its gradient, ∇ℓ = E_posterior[∇ log p(x, z)] (Fisher's
identity), at the cost of one E-step-sized evaluation and gradient per function
evaluation. It stops as `jaxem.fit` does, when |ℓ(θ_T) − ℓ(θ_{T−1})| < tol · N after
an accepted step, or after `max_iter` steps, or when no step can be accepted.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from jaxem.engine.fit import DEFAULT_TOL, FitResult
from jaxem.engine.mstep import ClimbState, climb_start, climb_step, default_optimizer
from jaxem.inference.coordinates import constrain, free_coordinates, objective, substitute, unconstrain
from jaxem.validation import (
    check_fit_settings,
    check_model_data,
    check_model_params,
    check_optimizer,
    check_weights,
)

__all__ = ["fit_direct"]

# A step scale below this (after ~40 rejected steps in a row) means no step can be accepted.
_SMALLEST_STEP = 2.0 ** -40


class _DirectState(NamedTuple):
    climb: ClimbState
    history: jax.Array
    num_iters: jax.Array
    converged: jax.Array
    done: jax.Array


def fit_direct(model: Any, data: Any, params0: Any, *, optimizer: Any = None, max_iter: int = 500,
               tol: float = DEFAULT_TOL, weights: Any = None,
               log_prior: Callable | None = None) -> FitResult:
    """Maximise ℓ(θ) (plus the prior) directly with optax, in unconstrained coordinates.

    Args:
      model, data, params0, weights, log_prior: as for `jaxem.fit`.
      optimizer: an optax `GradientTransformation`; default L-BFGS with a zoom line
        search (`jaxem.engine.mstep.default_optimizer()`, shared with `Gradient()`).
        Its updates act on the flat vector of free unconstrained coordinates.
      max_iter: the most optimizer steps (static: the length of the history).
      tol: stop when an accepted step changes ℓ by less than `tol` per observation.

    Returns:
      A `FitResult` as `jaxem.fit` gives: `params` (constrained), `log_likelihood`,
      `history[i]` = ℓ before step i, `num_iters` steps taken (a rejected step counts),
      `converged`, `finite`. It reaches the optimum EM reaches from a start in the
      same basin (`tests/test_inference.py`). Jittable and vmappable over
      `params0`; not differentiable (its loop is not; differentiate `jaxem.fit`).
      It maximises ℓ itself, with no `reg_covar` floor: a Gaussian likelihood is
      unbounded near singular covariances, and a run may stop at a small component
      with a nearly singular covariance where EM (floored) would not
      (`benchmarks/README.md`, the K=16 mixture).
    """
    check_fit_settings(max_iter, tol)
    check_model_data(model, data)
    check_model_params(model, params0, data, name="params0")
    shape = getattr(model, "weights_shape", None)
    if weights is not None and shape is not None:
        check_weights(weights, shape(data))
    optimizer = default_optimizer() if optimizer is None else optimizer
    check_optimizer(optimizer)
    u = unconstrain(model, params0)
    free = free_coordinates(ravel_pytree(u)[0])
    return _fit_direct_compiled(model, data, u, free, weights, tol, optimizer, log_prior, max_iter)


@functools.partial(jax.jit, static_argnums=(6, 7, 8))
def _fit_direct_compiled(model, data, u, free, weights, tol, optimizer, log_prior, max_iter):
    start, fill = substitute(u, free)
    tx = optax.with_extra_args_support(optimizer)

    def negative(v):
        return -objective(model, log_prior, constrain(model, fill(v)), data, weights)

    first = climb_start(tx, negative, start)
    threshold = tol * jnp.asarray(model.num_observations(data, weights))
    state = _DirectState(first, jnp.full((max_iter,), jnp.nan, first.value.dtype),
                         jnp.zeros((), jnp.int32), jnp.zeros((), bool), ~jnp.isfinite(first.value))

    def iteration(s: _DirectState) -> _DirectState:
        climb = climb_step(tx, negative, s.climb)
        accepted = climb.step_scale == s.climb.step_scale
        converged = accepted & (s.climb.value - climb.value < threshold)
        num_iters = s.num_iters + 1
        done = converged | (num_iters >= max_iter) | (climb.step_scale < _SMALLEST_STEP)
        history = s.history.at[s.num_iters].set(-s.climb.value, mode="drop")
        return _DirectState(climb, history, num_iters, converged, done)

    final = jax.lax.while_loop(lambda s: ~s.done, iteration, state)
    params = constrain(model, fill(final.climb.params))
    value = -final.climb.value
    finite = jnp.isfinite(value) & jnp.all(jnp.isfinite(final.climb.params))
    return FitResult(params, value, final.history, final.num_iters, final.converged, finite,
                     final.climb.evaluations)
