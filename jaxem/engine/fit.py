"""The EM loop: `fit` and its result, `FitResult`.

EM maps θ_i to θ_{i+1} = M(θ_i, E(θ_i)), and the E-step at θ_i also gives the
objective

    ℓ(θ_i) = log p(x | θ_i) [+ log_prior(θ_i)].

The loop is a single `lax.while_loop` with fixed-shape state: no Python loop,
no host transfer and no recompilation per iteration. Each pass evaluates one
iterate (one E-step) and then either stops or takes the M-step, so the E-step
and the M-step are each compiled once. It stops at θ_T when

    |ℓ(θ_T) - ℓ(θ_{T-1})| < tol · N      (N = number of observations)

i.e. when the mean per-observation objective changes by less than `tol`, the
convention of scikit-learn's GaussianMixture; or when T = `max_iter`; or when
an iterate has a non-finite objective or parameters, in which case the last
finite iterate is kept and `FitResult.finite` is False."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxem.engine.mstep import resolve_m_step
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
    """The loop evaluates `candidate` = θ_i; `params`/`objective` are the last
    finite iterate θ_{i-1} and ℓ(θ_{i-1}) (θ_0 and NaN before the first pass)."""

    candidate: Any
    params: Any
    objective: jax.Array
    history: jax.Array
    num_iters: jax.Array
    converged: jax.Array
    finite: jax.Array
    done: jax.Array


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
    be a traced integer <= `history_len` (the static length of the history).

    Each pass of the loop evaluates one iterate θ_i (one E-step, which gives
    ℓ(θ_i) and the posterior), decides whether to stop, and only if not takes
    the M-step θ_{i+1} = M(θ_i, E(θ_i)) (under `lax.cond`). So the E-step and
    the M-step each appear once in the compiled program.
    """
    scale = jnp.asarray(model.num_observations(data))

    def evaluate(params):
        posterior = model.e_step(params, data)
        value = posterior.log_likelihood
        if log_prior is not None:
            value = value + log_prior(params)
        return posterior, value

    def m_step_of(params, posterior):
        new = m_step.update(model, params, posterior, data, log_prior)
        # An M-step that promotes dtypes (float32 in, float64 out) keeps the caller's.
        return jax.tree_util.tree_map(lambda n, o: jnp.asarray(n, jnp.result_type(o)), new, params)

    dtype = jnp.result_type(jax.eval_shape(evaluate, params0)[1])
    state = _LoopState(
        candidate=params0,
        params=params0,
        objective=jnp.full((), jnp.nan, dtype),
        history=jnp.full((history_len,), jnp.nan, dtype),
        num_iters=jnp.full((), -1, jnp.int32),  # M-steps behind the last finite iterate
        converged=jnp.zeros((), bool),
        finite=jnp.ones((), bool),
        done=jnp.zeros((), bool),
    )

    def iteration(s: _LoopState) -> _LoopState:
        i = s.num_iters + 1  # the candidate is θ_i
        posterior, objective = evaluate(s.candidate)
        finite = jnp.isfinite(objective) & all_finite(s.candidate)
        first = i == 0
        # A non-finite θ_0 is still returned (with finite=False); a later one never is.
        accept = finite | first
        converged = finite & ~first & (jnp.abs(objective - s.objective) < tol * scale)
        done = ~finite | converged | (i >= budget)
        params = select(accept, s.candidate, s.params)
        objective = jnp.where(accept, objective, s.objective)
        num_iters = jnp.where(accept, i, s.num_iters)
        history = s.history
        # (With history_len = 0 there is nothing to record, and jax refuses to index an axis of
        # size 0.)
        # history[j] = ℓ(θ_j) for j < num_iters: record ℓ(θ_i) when an M-step follows; when θ_i
        # is rejected, θ_{i-1} becomes the result and its entry goes back to NaN.
        if history_len:
            index = jnp.where(accept, i, i - 1)
            value = jnp.where(accept & ~done, objective, jnp.nan)
            history = history.at[index].set(value, mode="drop")
        candidate = jax.lax.cond(done, lambda: params, lambda: m_step_of(params, posterior))
        return _LoopState(candidate, params, objective, history, num_iters, converged, finite, done)

    final = jax.lax.while_loop(lambda s: ~s.done, iteration, state)
    return FitResult(
        params=final.params,
        log_likelihood=final.objective,
        history=final.history,
        num_iters=final.num_iters,
        converged=final.converged,
        finite=final.finite,
    )
