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

With `acceleration="squarem"` the iterates are those SQUAREM accepts, one per
cycle of two EM steps, an extrapolation and a stabilising EM step
(`jaxem.engine.squarem`); every E-step is still a pass of the same loop body. The
loop state (`LoopState`) is a pytree that can be paused after any pass and
resumed (`advance`), which `jaxem.fit_restarts` uses to drop finished restarts.

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
from jaxem.engine.squarem import (
    ACCELERATIONS,
    AT_EXTRAPOLATED,
    AT_FIRST_STEP,
    AT_ITERATE,
    SquaremState,
    constrain,
    extrapolate,
    squarem_start,
    unconstrain,
    update_step_max,
)
from jaxem.tree import select
from jaxem.validation import check_fit_inputs, check_fit_settings, check_model_data, check_weights

__all__ = ["CONVERGENCE_RULES", "DEFAULT_TOL", "FitResult", "LoopState", "advance", "check_inputs", "fit",
           "fit_options", "finish", "run_em", "start_loop"]

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
      history: (max_iter,) the objective of each iterate before the last,
        history[i] = ℓ(θ_i) for i < num_iters, NaN after (scikit-learn's
        `lower_bounds_` times N). With SQUAREM the iterates are those accepted,
        one per cycle.
      num_iters: T, the number of iterations taken (int32): M-steps for plain EM,
        SQUAREM cycles with `acceleration="squarem"`.
      converged: True when the tolerance was met before `max_iter` ran out.
      finite: False when an iteration produced a non-finite objective or
        parameters; the fit then stopped at the last finite iterate.
      num_e_steps: the E-steps (evaluations of the objective) the fit spent (int32):
        T + 1 for plain EM that stops by convergence or `max_iter`, about three
        per cycle with SQUAREM.
    """

    params: Any
    log_likelihood: jax.Array
    history: jax.Array
    num_iters: jax.Array
    converged: jax.Array
    finite: jax.Array
    num_e_steps: jax.Array


class LoopState(NamedTuple):
    """The EM loop between two passes; a pytree, so restarts batch it and a loop can be
    paused and resumed (`advance`) with the same result as one run. Each pass evaluates
    `candidate` (one E-step and one M-step).

    candidate: the point the next pass evaluates, with the M-step's memory.
    params, objective: the last accepted iterate θ_T and ℓ(θ_T) (θ_0 and NaN before the
      first pass).
    history: (history_len,) ℓ of the accepted iterates, history[i] = ℓ(θ_i); `finish`
      masks the entries from num_iters on.
    num_iters: T, the iterations behind `params` (-1 before the first pass).
    num_e_steps: the passes (E-steps) so far.
    budget: the most iterations allowed (at most history_len).
    converged, finite, done: as in `FitResult`; done: no pass is left to run.
    squarem: a `SquaremState` when the loop is accelerated, else ().
    """

    candidate: EMState
    params: Any
    objective: jax.Array
    history: jax.Array
    num_iters: jax.Array
    num_e_steps: jax.Array
    budget: jax.Array
    converged: jax.Array
    finite: jax.Array
    done: jax.Array
    squarem: Any


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
    acceleration: str | None = None,
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
      acceleration: None (plain EM, default) or "squarem": SQUAREM
        (`jaxem.engine.squarem`), with its monotone safeguard, so ℓ still never
        decreases from one iterate to the next (for EM M-steps, which never
        decrease it). Far fewer E-steps where EM is slow (`FitResult.num_e_steps`).

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
    check_acceleration(acceleration)
    m_step = resolve_m_step(model, m_step)
    check_inputs(model, data, params0, weights, m_step, log_prior)
    eta = (model, data, weights)
    converted = perturbed_closures(m_step, log_prior, params0, eta)

    def loop(model, data, params0, weights, tol):
        return _fit_compiled(model, data, params0, weights, tol, m_step, log_prior, max_iter, convergence,
                             acceleration)

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


def check_acceleration(acceleration: Any) -> None:
    if not (acceleration is None or (isinstance(acceleration, str) and acceleration in ACCELERATIONS)):
        raise ValueError(f"acceleration: expected None (plain EM) or 'squarem', got {acceleration!r}.")


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


@functools.partial(jax.jit, static_argnums=(5, 6, 7, 8, 9))
def _fit_compiled(model, data, params0, weights, tol, m_step, log_prior, max_iter, convergence, acceleration):
    return run_em(model, data, params0, weights, m_step, log_prior, max_iter, max_iter, tol, convergence,
                  acceleration)


def run_em(model, data, params0, weights, m_step, log_prior, history_len, budget, tol,
           convergence="absolute", acceleration=None) -> FitResult:
    """The traced EM loop (no input checks): `finish(advance(start_loop(...)))`, at most
    `budget` iterations, which may be a traced integer <= `history_len` (the static
    length of the history)."""
    state = start_loop(model, data, params0, weights, m_step, log_prior, history_len, budget, acceleration)
    state = advance(state, model, data, weights, m_step, log_prior, tol, convergence)
    return finish(state)


def start_loop(model, data, params0, weights, m_step, log_prior, history_len: int, budget,
               acceleration=None) -> LoopState:
    """The loop before its first pass, at θ_0 (plain EM, or SQUAREM with "squarem")."""
    start = EMState(params0, m_step.init(model, params0))
    dtype = jnp.result_type(jax.eval_shape(lambda p: evaluate(model, log_prior, p, data, weights)[1],
                                           params0))
    return LoopState(
        candidate=start,
        params=params0,
        objective=jnp.full((), jnp.nan, dtype),
        history=jnp.full((history_len,), jnp.nan, dtype),
        num_iters=jnp.full((), -1, jnp.int32),
        num_e_steps=jnp.zeros((), jnp.int32),
        budget=jnp.asarray(budget, jnp.int32),
        converged=jnp.zeros((), bool),
        finite=jnp.ones((), bool),
        done=jnp.zeros((), bool),
        squarem=() if acceleration is None else squarem_start(model, start, dtype),
    )


def advance(state: LoopState, model, data, weights, m_step, log_prior, tol, convergence="absolute",
            pass_limit=None) -> LoopState:
    """Run passes until the loop is done or, with `pass_limit` (a traced integer allowed),
    until `num_e_steps` reaches it. Resuming a paused loop gives the loop run at once."""
    scale = jnp.asarray(model.num_observations(data, weights))

    def running(s: LoopState) -> jax.Array:
        return ~s.done if pass_limit is None else ~s.done & (s.num_e_steps < pass_limit)

    def one_pass(s: LoopState) -> LoopState:
        return _pass(s, model, data, weights, m_step, log_prior, tol * scale, CONVERGENCE_RULES[convergence])

    return jax.lax.while_loop(running, one_pass, state)


def finish(state: LoopState) -> FitResult:
    """The `FitResult` of a loop (its history masked after the last accepted iterate)."""
    positions = jnp.arange(state.history.shape[0])
    return FitResult(
        params=state.params,
        log_likelihood=state.objective,
        history=jnp.where(positions < state.num_iters, state.history, jnp.nan),
        num_iters=state.num_iters,
        converged=state.converged,
        finite=state.finite,
        num_e_steps=state.num_e_steps,
    )


def _pass(s: LoopState, model, data, weights, m_step, log_prior, threshold, rule) -> LoopState:
    """One pass: the E-step and M-step at the candidate, then what follows from it.

    Plain EM: every candidate θ_i is an iterate; it is accepted if finite, tested for
    convergence (ℓ(θ_i) against ℓ(θ_{i-1})), and M(θ_i) is the next candidate. With
    SQUAREM the candidates cycle through θ_0 (an iterate, as in plain EM), θ_1 and the
    extrapolated θ' (`jaxem.engine.squarem`); only θ_0 is an iterate. So the E-step
    and the M-step each appear once in the compiled program (the M-step of the last
    pass is computed and discarded)."""
    following, info = em_iteration(model, m_step, log_prior, s.candidate, data, weights)
    accelerated = s.squarem != ()
    phase = s.squarem.phase if accelerated else AT_ITERATE
    at_iterate = phase == AT_ITERATE
    i = s.num_iters + 1  # the index the candidate has if it is an iterate
    first = i == 0
    # A non-finite θ_0 is still returned (with finite=False); a later one never is. A
    # non-finite extrapolated point is not an iterate: it is rejected, and the fit goes on.
    accept = at_iterate & (info.finite | first)
    broken = ~info.finite & (phase != AT_EXTRAPOLATED)
    converged = at_iterate & info.finite & ~first & rule(info.objective - s.objective, threshold)
    history = s.history
    if history.shape[0]:  # (jax refuses to index an axis of size 0)
        history = history.at[jnp.where(accept, i, history.shape[0])].set(info.objective, mode="drop")
    candidate, squarem = following, s.squarem
    if accelerated:
        candidate, squarem = _squarem_next(model, s, following, info)
    return LoopState(
        candidate=candidate,
        params=select(accept, s.candidate.params, s.params),
        objective=jnp.where(accept, info.objective, s.objective),
        history=history,
        num_iters=jnp.where(accept, i, s.num_iters),
        num_e_steps=s.num_e_steps + 1,
        budget=s.budget,
        converged=converged,
        finite=s.finite & ~broken,
        done=broken | converged | (at_iterate & (i >= s.budget)),
        squarem=squarem,
    )


def _squarem_next(model, s: LoopState, following: EMState, info) -> tuple[EMState, SquaremState]:
    """The next candidate of a SQUAREM cycle and its state, after the pass at s.candidate
    gave ℓ(candidate) (`info`) and `following` = M(candidate)."""
    sq = s.squarem
    phase = sq.phase
    here = unconstrain(model, s.candidate.params)
    moved, step = extrapolate(sq.origin, here, unconstrain(model, following.params), sq.step_max)
    extrapolated = EMState(constrain(model, moved), following.m_step_state)
    # At θ': keep its stabilised step M(θ') unless ℓ(θ') fell below ℓ(θ_0) or is not finite.
    kept = info.finite & (info.objective >= s.objective)
    settled = select(kept, following, sq.fallback)
    candidate = select(phase == AT_ITERATE, following,
                       select(phase == AT_FIRST_STEP, extrapolated, settled))
    return candidate, SquaremState(
        phase=(phase + 1) % 3,
        origin=select(phase == AT_ITERATE, here, sq.origin),
        fallback=select(phase == AT_FIRST_STEP, following, sq.fallback),
        step=jnp.where(phase == AT_FIRST_STEP, step, sq.step),
        step_max=jnp.where(phase == AT_EXTRAPOLATED, update_step_max(sq.step, sq.step_max, kept),
                           sq.step_max),
    )

