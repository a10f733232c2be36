"""The EM loop: `fit` and its result, `FitResult`.

One iteration maps θ_i to θ_{i+1} = M(θ_i, E(θ_i)) and evaluates the objective

    ℓ(θ) = log p(x | θ) [+ log_prior(θ)]

at the new parameters (the E-step that the next M-step needs computes it for
free). The loop is a single `lax.while_loop` with fixed-shape state: no Python
loop, no host transfer and no recompilation per iteration. It stops when

    |ℓ(θ_{i+1}) - ℓ(θ_i)| < tol · N      (N = number of observations)

i.e. when the mean per-observation objective changes by less than `tol`, the
convention of scikit-learn's GaussianMixture; or after `max_iter` M-steps; or
when an iteration produces a non-finite objective or parameters, in which case
the last finite iterate is kept and `FitResult.finite` is False.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxem.mstep import resolve_m_step
from jaxem.tree import all_finite, select
from jaxem.validation import check_fit_inputs, check_fit_settings

__all__ = ["FitResult", "fit", "DEFAULT_TOL"]

DEFAULT_TOL = 1e-3


class FitResult(NamedTuple):
    """What `fit` returns; a pytree, so results of vmapped fits stack.

    Attributes:
      params: the final parameters θ_T (same pytree as `params0`).
      log_likelihood: ℓ(θ_T), the objective at `params`: the observed-data
        log-likelihood, plus `log_prior(params)` when a prior was given.
      history: (max_iter,) objective before each M-step, history[i] = ℓ(θ_i)
        for i < num_iters, NaN after (scikit-learn's `lower_bounds_` times N).
      num_iters: T, the number of M-steps taken (int32).
      converged: True when the tolerance was met before `max_iter` ran out.
      finite: False when an iteration produced a non-finite objective or
        parameters; the fit then stopped at the last finite iterate.
    """

    params: Any
    log_likelihood: jax.Array
    history: jax.Array
    num_iters: jax.Array
    converged: jax.Array
    finite: jax.Array


class _LoopState(NamedTuple):
    params: Any
    posterior: Any
    objective: jax.Array
    history: jax.Array
    num_iters: jax.Array
    converged: jax.Array
    finite: jax.Array


def fit(
    model: Any,
    data: Any,
    params0: Any,
    *,
    m_step: Any = None,
    log_prior: Callable[[Any], jax.Array] | None = None,
    max_iter: int = 100,
    tol: float = DEFAULT_TOL,
) -> FitResult:
    """Fit `model` to `data` by EM from `params0`.

    Args:
      model: a model exposing `e_step`, `q` and `num_observations`, e.g.
        `jaxem.Mixture(log_joint, K)` or a ready model from `jaxem.models`.
      data: a pytree of arrays sharing a leading axis N (for a mixture).
      params0: starting parameters (any pytree of float arrays).
      m_step: `jaxem.ClosedForm(fn)` or `jaxem.Gradient(...)`; default: the
        model's own M-step, else `jaxem.Gradient()`.
      log_prior: optional `log_prior(params) -> scalar`; the fit is then MAP and
        the objective, history and `log_likelihood` include the prior.
      max_iter: maximum number of M-steps (static; the history has this length).
      tol: stop when the objective changes by less than `tol` per observation.

    Returns:
      A `FitResult`. `jax.jit(fit, static_argnums=0, static_argnames=("m_step",
      "log_prior", "max_iter"))` and `jax.vmap` over `params0` both work; the
      function is also compiled internally, once per (model, m_step, log_prior,
      max_iter) and input shapes.

    Raises:
      TypeError, ValueError: on bad input, before anything is traced, with a
        message naming the argument (`jaxem.validation.check_fit_inputs`):
        settings; data (rank, dtype, emptiness, leading axes, and NaN/inf rows);
        `params0` (structure, shapes, and values: finite, weights on the
        simplex, covariances positive definite, via `model.check_params`); the
        optimizer; `log_prior` and the model's log-densities returning scalars;
        the M-step keeping the parameters' structure and shapes.
        Under an outer `jit` or `vmap` the structural checks still run; the
        value checks (NaN in data, simplex, positive definiteness) cannot and
        are skipped; the loop then still never returns a non-finite iterate
        and reports one with `finite=False`.
    """
    check_fit_settings(max_iter, tol)
    m_step = resolve_m_step(model, m_step)
    check_fit_inputs(model, data, params0, m_step, log_prior)
    return _fit_compiled(model, data, params0, m_step, log_prior, max_iter, tol)


@functools.partial(jax.jit, static_argnums=(0, 3, 4, 5))
def _fit_compiled(model, data, params0, m_step, log_prior, max_iter, tol):
    return run_em(model, data, params0, m_step, log_prior, max_iter, max_iter, tol)


def run_em(model, data, params0, m_step, log_prior, history_len, budget, tol) -> FitResult:
    """The traced EM loop (no input checks): at most `budget` M-steps, which may
    be a traced integer <= `history_len` (the static length of the history)."""
    scale = jnp.asarray(model.num_observations(data))

    def objective_of(params, posterior):
        value = posterior.log_likelihood
        if log_prior is not None:
            value = value + log_prior(params)
        return value

    posterior0 = model.e_step(params0, data)
    objective0 = objective_of(params0, posterior0)
    dtype = jnp.result_type(objective0)
    state = _LoopState(
        params=params0,
        posterior=posterior0,
        objective=objective0,
        history=jnp.full((history_len,), jnp.nan, dtype),
        num_iters=jnp.zeros((), jnp.int32),
        converged=jnp.zeros((), bool),
        finite=jnp.isfinite(objective0) & all_finite(params0),
    )

    def keep_going(s: _LoopState):
        return (s.num_iters < budget) & ~s.converged & s.finite

    def iteration(s: _LoopState) -> _LoopState:
        params = m_step.update(model, s.params, s.posterior, data, log_prior)
        # An M-step that promotes dtypes (float32 in, float64 out) keeps the caller's.
        params = jax.tree_util.tree_map(lambda new, old: jnp.asarray(new, jnp.result_type(old)),
                                        params, s.params)
        posterior = model.e_step(params, data)
        objective = objective_of(params, posterior)
        finite = jnp.isfinite(objective) & all_finite(params)
        # With history_len = 0 the body never runs, but it is still traced, and jax refuses to
        # index an axis of size 0.
        history = s.history.at[s.num_iters].set(s.objective) if history_len else s.history
        # A non-finite iterate is never returned: keep the last finite one.
        pick = functools.partial(select, finite)
        change = jnp.abs(objective - s.objective)
        return _LoopState(
            params=pick(params, s.params),
            posterior=pick(posterior, s.posterior),
            objective=jnp.where(finite, objective, s.objective),
            history=jnp.where(finite, history, s.history),
            num_iters=s.num_iters + finite.astype(jnp.int32),
            converged=finite & (change < tol * scale),
            finite=finite,
        )

    final = jax.lax.while_loop(keep_going, iteration, state)
    return FitResult(
        params=final.params,
        log_likelihood=final.objective,
        history=final.history,
        num_iters=final.num_iters,
        converged=final.converged,
        finite=final.finite,
    )

