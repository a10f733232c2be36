"""The EM loop: `fit` and its result, `FitResult`.

`fit` is a single `lax.while_loop` over the EM kernel (`jaxem.engine.kernel`):
each pass runs one step from θ_i, which gives the objective

    ℓ(θ_i) = Σ_n w_n log p(x_n | θ_i) [+ log-prior(θ_i)]

and θ_{i+1}. Fixed-shape state: no Python loop, no host transfer and no
recompilation per iteration, nor per value of a model's hyperparameters (the
model is a pytree argument of the compiled program). It stops at θ_T when

    |ℓ(θ_T) - ℓ(θ_{T-1})| < tol · N      (N = Σ_n w_n, the number of observations)

i.e. when the mean per-observation objective changes by less than `tol`, the
convention of scikit-learn's GaussianMixture (`convergence="absolute"`; with
`convergence="gain"` the signed test ℓ(θ_T) - ℓ(θ_{T-1}) < tol · N, hmmlearn's,
which a decrease also meets); or when T = `max_iter`; or when an iterate has a
non-finite objective or parameters, in which case the last finite iterate is
kept and `FitResult.finite` is False.

`fit` composes with `jax.grad`, `vjp`, `jvp` and `jacfwd`: derivatives of `params`
and `log_likelihood` with respect to the data, the weights, the model's
hyperparameters and anything the model's functions close over are those of the
fixed point (`jaxem.engine.implicit`); the loop itself is never differentiated,
and `params0`, `history` and the counters carry no derivative."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxem.engine.implicit import implicit_outputs, perturbed_closures, run_stopped
from jaxem.engine.kernel import EMState, em_iteration, evaluate, objective_prior
from jaxem.engine.mstep import Statistics, resolve_m_step
from jaxem.tree import select
from jaxem.validation import check_fit_inputs, check_fit_settings, check_model_data, check_weights

__all__ = ["CONVERGENCE_RULES", "DEFAULT_TOL", "FitResult", "check_inputs", "fit", "fit_options", "run_em"]

DEFAULT_TOL = 1e-3

CONVERGENCE_RULES = {
    "absolute": lambda change, threshold: jnp.abs(change) < threshold,
    "gain": lambda change, threshold: change < threshold,
}


class FitResult(NamedTuple):
    """What `fit` returns; a pytree, so results of vmapped fits stack.

    Attributes:
      params: the final parameters θ_T (same pytree as `params0`).
      log_likelihood: ℓ(θ_T), the objective at `params`: the observed-data
        log-likelihood, plus the prior (the caller's `log_prior`, else the model's own).
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
    """The loop steps from `candidate` = θ_i (with the M-step's memory); `params`/`objective`
    are the last finite iterate θ_{i-1} and ℓ(θ_{i-1}) (θ_0 and NaN before the first pass)."""

    candidate: EMState
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
    weights: Any = None,
    m_step: Any = None,
    log_prior: Callable[[Any], jax.Array] | None = None,
    max_iter: int = 100,
    tol: float = DEFAULT_TOL,
    convergence: str = "absolute",
) -> FitResult:
    """Fit `model` to `data` by EM from `params0`.

    Args:
      model: a model exposing the structure protocol (`jaxem.structures.base`), e.g.
        `jaxem.Mixture(log_joint, K)` or a ready model from `jaxem.models`.
      data: a pytree of arrays sharing a leading axis N (for a mixture), one
        sequence or `jaxem.Sequences` (for an HMM).
      params0: starting parameters (any pytree of float arrays).
      weights: optional non-negative weight per observation, (N,) (per sequence,
        (B,), for `Sequences`; a scalar for one sequence). Integer weights fit as
        duplicated rows, zero weights as removed rows; the tolerance scales with Σ w.
      m_step: `jaxem.ClosedForm(fn)`, `jaxem.Gradient(...)` or `jaxem.Statistics()`;
        default: the model's own M-step, else `jaxem.Gradient()`.
      log_prior: optional `log_prior(params) -> scalar`; default: the model's own
        `log_prior` when it has one (so a ready model with priors is fitted MAP).
        The objective, history and `log_likelihood` include the prior.
      max_iter: maximum number of M-steps (static; the history has this length).
      tol: stop when the objective changes by less than `tol` per observation.
      convergence: "absolute" (|Δℓ| < tol·N, default) or "gain" (Δℓ < tol·N).

    Returns:
      A `FitResult`. Differentiable by implicit differentiation at the fixed point
      (module docstring): exact for a converged fit, so use a small `tol` when
      differentiating; derivatives with respect to `params0` are zero.
      `jax.jit(lambda model, x, p: fit(model, x, p, ...))` (the model
      a pytree argument) and `jax.vmap` over `params0` both work; the function is
      also compiled internally, once per model structure
      (static fields), M-step, prior, `max_iter`, convergence rule and input
      shapes: new values of a model's hyperparameters, of the data, the weights or
      `tol` reuse the compiled program.

    Raises:
      TypeError, ValueError: on bad input, before anything is traced, with a
        message naming the argument (`jaxem.validation.check_fit_inputs`):
        settings; data (rank, dtype, emptiness, leading axes, and NaN/inf rows);
        `params0` (structure, shapes, and values: finite, weights on the
        simplex, covariances positive definite, via `model.check_params`); the
        sample weights (shape, finite, non-negative); the optimizer; `log_prior`
        and the model's log-densities returning scalars; the M-step keeping the
        parameters' structure and shapes.
        Under an outer `jit` or `vmap` the structural checks still run; the
        value checks (NaN in data, simplex, positive definiteness) cannot and
        are skipped; the loop then still never returns a non-finite iterate and
        reports one with `finite=False`.
    """
    check_fit_settings(max_iter, tol)
    check_convergence(convergence)
    m_step = resolve_m_step(model, m_step)
    check_inputs(model, data, params0, weights, m_step, log_prior)
    eta = (model, data, weights)
    converted = perturbed_closures(m_step, log_prior, params0, eta)

    def loop(model, data, params0, weights, tol):
        return _fit_compiled(model, data, params0, weights, tol, m_step, log_prior, max_iter, convergence)

    result = run_stopped(loop, converted, model, data, params0, weights, tol)
    params, value = implicit_outputs(converted, result.params, result.log_likelihood, eta)
    return result._replace(params=params, log_likelihood=value)


def fit_options(options: dict, caller: str) -> dict:
    """`fit`'s keyword arguments for another driver (`caller`): `options` over `fit`'s
    defaults; an unknown name is a TypeError that lists the known ones."""
    known = {name: parameter.default for name, parameter in inspect.signature(fit).parameters.items()
             if parameter.kind is inspect.Parameter.KEYWORD_ONLY}
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise TypeError(f"{caller}: unexpected keyword argument(s) {unknown}; it takes jaxem.fit's "
                        f"options {list(known)} and its own.")
    return {**known, **options}


def check_convergence(convergence: Any) -> None:
    if convergence not in CONVERGENCE_RULES:
        raise ValueError(f"convergence: expected one of {tuple(CONVERGENCE_RULES)}, got {convergence!r}.")


def check_inputs(model: Any, data: Any, params0: Any, weights: Any, m_step: Any, log_prior: Any, *,
                 batch_ndim: int = 0) -> None:
    """Everything a fit checks before tracing (`check_fit_inputs`), sample weights included,
    and that the prior the objective uses is one the M-step maximises and returns a scalar."""
    own = getattr(model, "log_prior", None)
    if isinstance(m_step, Statistics) and log_prior is not None and log_prior != own:
        raise ValueError(
            "log_prior: the model's closed-form M-step (jaxem.Statistics) maximises the model's own "
            "prior, not this one; pass m_step=jaxem.Gradient() (or a ClosedForm that maximises "
            "Q + log_prior), or build the model with the prior you want."
        )
    shape = getattr(model, "weights_shape", None)
    if weights is not None and shape is not None:
        check_model_data(model, data)
        check_weights(weights, shape(data))
    check_fit_inputs(model, data, params0, m_step, log_prior, weights=weights, batch_ndim=batch_ndim,
                     one_step=_one_step, own_prior=own if callable(own) else None)


def _one_step(model, m_step, log_prior, params, data, weights):
    """The M-step's raw output from θ_i (for the M-step's output check)."""
    posterior, _ = evaluate(model, log_prior, params, data, weights)
    prior = objective_prior(model, log_prior)
    return m_step.step(model, params, posterior, data, prior, m_step.init(model, params))[0]


@functools.partial(jax.jit, static_argnums=(5, 6, 7, 8))
def _fit_compiled(model, data, params0, weights, tol, m_step, log_prior, max_iter, convergence):
    return run_em(model, data, params0, weights, m_step, log_prior, max_iter, max_iter, tol, convergence)


def run_em(model, data, params0, weights, m_step, log_prior, history_len, budget, tol,
           convergence="absolute") -> FitResult:
    """The traced EM loop (no input checks): at most `budget` M-steps, which may
    be a traced integer <= `history_len` (the static length of the history).

    Each pass of the loop takes one kernel step from θ_i (which gives ℓ(θ_i) and
    θ_{i+1}), decides whether to stop, and keeps θ_i as the result if so. So the
    E-step and the M-step each appear once in the compiled program (the M-step of
    the last pass is computed and discarded).
    """
    scale = jnp.asarray(model.num_observations(data, weights))
    rule = CONVERGENCE_RULES[convergence]
    start = EMState(params0, m_step.init(model, params0))
    dtype = jnp.result_type(jax.eval_shape(lambda p: evaluate(model, log_prior, p, data, weights)[1],
                                           params0))
    state = _LoopState(
        candidate=start,
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
        following, info = em_iteration(model, m_step, log_prior, s.candidate, data, weights)
        finite = info.finite
        objective = info.objective
        first = i == 0
        # A non-finite θ_0 is still returned (with finite=False); a later one never is.
        accept = finite | first
        converged = finite & ~first & rule(objective - s.objective, tol * scale)
        done = ~finite | converged | (i >= budget)
        params = select(accept, s.candidate.params, s.params)
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
        return _LoopState(following, params, objective, history, num_iters, converged, finite, done)

    final = jax.lax.while_loop(lambda s: ~s.done, iteration, state)
    return FitResult(
        params=final.params,
        log_likelihood=final.objective,
        history=final.history,
        num_iters=final.num_iters,
        converged=final.converged,
        finite=final.finite,
    )
