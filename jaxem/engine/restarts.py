"""Many starting points in one vmapped program: `fit_restarts`.

A vmapped `while_loop` runs until its slowest member stops, so a plain batch of R
restarts costs R × (iterations of the slowest restart). Here the batch runs in
segments of `SEGMENT_PASSES` passes; before each, the unfinished restarts are
gathered into the smallest batch of a fixed ladder of sizes (R, then powers of
two: `compaction_ladder`) and scattered back after it, so a finished restart stops
costing within a segment, and at most 1 + ⌈log2 R⌉ batch shapes are compiled (all
in one program, behind a `lax.switch`; under an outer `vmap` the switch becomes a
select and every branch runs). Loops are paused and resumed with their whole state
(`jaxem.engine.fit.LoopState`), so each restart's result is that of its own fit.

- `strategy="exhaustive"` (the default) runs every restart to convergence and
  equals a Python loop of `jaxem.fit` over the starting points: the same
  optimum scikit-learn's `n_init` finds.
- `strategy="emem"` (Biernacki, Celeux & Govaert 2003) spends iterations where
  they are likely to matter: every restart runs at most `explore_iters` EM
  iterations, then the `num_refine` restarts with the highest objective
  continue to convergence (or `max_iter` in all) from where they paused. Restarts not refined keep
  their short-run results (their `converged` says whether they finished).
  It is faster, and a heuristic: the restart that would end best is not always
  among the best after the short runs (the 32-restart benchmark shows one such
  case), so it is opt-in.

A restart whose objective is not finite is never chosen as best, nor, while a
non-degenerate finite one exists, a degenerate one (`jaxem.engine.degeneracy`: a
component that only the regularisation holds up, or with too few points; for models
with a `degeneracy` method). `RestartsResult.degeneracy` says which restarts were
degenerate and why. Derivatives
(`jax.grad` and friends) reach `best.params` and `best.log_likelihood` by implicit
differentiation at the best restart's fixed point (`jaxem.engine.implicit`); the
choice of the best and the other restarts carry none.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxem.engine.degeneracy import (
    MIN_VARIANCE_RATIO,
    Degeneracy,
    check_min_variance_ratio,
    describe,
)
from jaxem.engine.fit import (
    FitResult,
    LoopState,
    advance,
    check_acceleration,
    check_inputs,
    finish,
    fit_options,
    resolve_tolerances,
    start_loop,
)
from jaxem.engine.implicit import implicit_outputs, perturbed_closures, run_stopped
from jaxem.engine.mstep import resolve_m_step
from jaxem.validation import check_fit_settings, check_int, check_restart_batch

__all__ = ["RestartsResult", "SEGMENT_PASSES", "best_index", "compaction_ladder", "fit_restarts"]

# Passes (E-steps) each restart runs between two compactions of the batch. On 32 restarts of a
# K=16 mixture (N=20,000, D=8) to tol 1e-3: 1.56 s with 4, 1.73 s with 8, 2.68 s without
# compaction; a ladder of powers of 4 instead of 2 compiled 1 s faster and ran 0.25 s slower.
SEGMENT_PASSES = 4


class RestartsResult(NamedTuple):
    """Every restart's fit and the best one.

    Attributes:
      best: the `FitResult` with the highest finite objective among the non-degenerate
        restarts (among all finite ones when every restart is degenerate, or with
        `avoid_degenerate=False`).
      best_index: its index among the restarts (int32).
      restarts: a `FitResult` whose leaves have a leading axis R, one per restart
        (`restarts.stop_reason_name` lists why each stopped).
      degeneracy: a `jaxem.engine.degeneracy.Degeneracy` with leaves (R, K): which
        components of each restart's solution are degenerate and why; None for a model
        without a `degeneracy` method.
    """

    best: FitResult
    best_index: jax.Array
    restarts: FitResult
    degeneracy: Degeneracy | None = None

    @property
    def degenerate(self) -> jax.Array:
        """(R,) bool: whether each restart's solution is degenerate (all False without
        `degeneracy`)."""
        if self.degeneracy is None:
            return jnp.zeros(self.restarts.finite.shape, bool)
        return self.degeneracy.degenerate

    def degeneracy_report(self, noun: str = "component") -> list[str]:
        """For each restart, its degeneracy in words ("" when it has none); on the host."""
        if self.degeneracy is None:
            return [""] * int(self.restarts.finite.shape[0])
        leaves = jax.tree_util.tree_map(lambda a: jax.device_get(a), self.degeneracy)
        return [describe(Degeneracy(*(leaf[r] for leaf in leaves)), noun)
                for r in range(leaves.few_points.shape[0])]


def best_index(results: FitResult, degenerate: jax.Array | None = None) -> jax.Array:
    """Index of the restart with the highest finite objective (NaN/inf never win); with
    `degenerate` (R,) bool, among the non-degenerate restarts when there is a finite one."""
    finite = results.finite & jnp.isfinite(results.log_likelihood)
    if degenerate is not None:
        finite = jnp.where(jnp.any(finite & ~degenerate), finite & ~degenerate, finite)
    score = jnp.where(finite, results.log_likelihood, -jnp.inf)
    return jnp.argmax(score).astype(jnp.int32)


def fit_restarts(
    model: Any,
    data: Any,
    params0: Any,
    *,
    strategy: str = "exhaustive",
    explore_iters: int | None = None,
    num_refine: int | None = None,
    min_variance_ratio: float = MIN_VARIANCE_RATIO,
    avoid_degenerate: bool = True,
    **options: Any,
) -> RestartsResult:
    """Fit a batch of starting points in one vmapped program.

    Args:
      model, data: as for `jaxem.fit` (shared by every restart).
      options: `jaxem.fit`'s keyword arguments (weights, m_step, log_prior,
        max_iter, tol, param_tol, convergence, acceleration), with its defaults (the
        "relative" rule); the weights are shared by every restart.
      params0: starting parameters with a leading restart axis R on every leaf
        (e.g. `jax.vmap(lambda k: model.init(k, x))(jax.random.split(key, R))`).
      strategy: "exhaustive" (every restart to convergence; default) or "emem"
        (explore all briefly, refine the best).
      explore_iters: with "emem" only, the iterations every restart gets first;
        default 10.
      num_refine: with "emem" only, how many restarts are refined to
        convergence; default max(1, R // 8).
      min_variance_ratio: the threshold of `jaxem.engine.degeneracy`: a component whose
        variance along some direction, less reg_covar, is at most this fraction of the
        data's is degenerate (default 1e-6; a traced value, so new values reuse the
        compiled program). Used by models with a `degeneracy` method.
      avoid_degenerate: when True (default), a degenerate restart is never chosen as best
        while a non-degenerate finite one exists; False picks the highest objective.

    Returns:
      A `RestartsResult`; `restarts.history` has shape (R, max_iter) and each
      row is that restart's whole trajectory across both phases.

    Raises:
      TypeError, ValueError: as `jaxem.fit`, with every restart's starting
        parameters checked (the message gives the restart's index), plus the
        restart settings and a restart axis shared by all leaves of `params0`.
    """
    options = fit_options(options, "fit_restarts")
    max_iter, convergence = options["max_iter"], options["convergence"]
    weights, m_step, log_prior = options["weights"], options["m_step"], options["log_prior"]
    tol, param_tol = resolve_tolerances(convergence, options["tol"], options["param_tol"])
    check_fit_settings(max_iter, tol)
    acceleration = options["acceleration"]
    check_acceleration(acceleration)
    check_min_variance_ratio(min_variance_ratio)
    if not isinstance(avoid_degenerate, bool):
        raise TypeError(f"avoid_degenerate: expected True or False, got {avoid_degenerate!r}.")
    if strategy not in ("emem", "exhaustive"):
        raise ValueError(f"strategy: expected 'emem' or 'exhaustive', got {strategy!r}.")
    num_restarts = check_restart_batch(params0)
    if strategy == "emem":
        if explore_iters is None:
            explore_iters = 10
        if num_refine is None:
            num_refine = max(1, num_restarts // 8)
        check_int(num_refine, "num_refine", 1)
        if num_refine > num_restarts:
            raise ValueError(f"num_refine: must be in [1, {num_restarts}], got {num_refine}.")
        check_int(explore_iters, "explore_iters", 0)
        explore_iters = min(explore_iters, max_iter)
    else:
        for name, value in (("explore_iters", explore_iters), ("num_refine", num_refine)):
            if value is not None:
                raise ValueError(f"{name}: only used with strategy='emem'; pass strategy='emem' "
                                 f"or leave {name} out.")
        num_refine, explore_iters = num_restarts, max_iter
    m_step = resolve_m_step(model, m_step)
    check_inputs(model, data, params0, weights, m_step, log_prior, batch_ndim=1)
    eta = (model, data, weights)
    converted = perturbed_closures(m_step, log_prior, jax.tree_util.tree_map(lambda a: a[0], params0), eta)

    def loop(model, data, params0, weights, tol, param_tol, ratio):
        return _restarts_compiled(model, data, params0, weights, tol, param_tol, ratio, m_step, log_prior,
                                  max_iter, explore_iters, num_refine, convergence, acceleration,
                                  avoid_degenerate)

    ratio = jnp.asarray(min_variance_ratio, jnp.result_type(float))
    result = run_stopped(loop, converted, model, data, params0, weights, tol, param_tol, ratio)
    params, value = implicit_outputs(converted, result.best.params, result.best.log_likelihood, eta)
    return result._replace(best=result.best._replace(params=params, log_likelihood=value))


@functools.partial(jax.jit, static_argnums=(7, 8, 9, 10, 11, 12, 13, 14))
def _restarts_compiled(model, data, params0, weights, tol, param_tol, ratio, m_step, log_prior, max_iter,
                       explore_iters, num_refine, convergence, acceleration, avoid_degenerate):
    def start(params):
        return start_loop(model, data, params, weights, m_step, log_prior, max_iter, explore_iters,
                          acceleration)

    def run(states):
        return _run_compacted(states, model, data, weights, m_step, log_prior, tol, param_tol, convergence)

    states = run(jax.vmap(start)(params0))
    if explore_iters < max_iter:
        states = _refine(run, states, num_refine, max_iter)
    results = jax.vmap(finish)(states)
    degeneracy = None
    if hasattr(model, "degeneracy"):
        degeneracy = jax.vmap(lambda p: model.degeneracy(p, data, weights, min_variance_ratio=ratio))(
            results.params)
    avoided = degeneracy.degenerate if (avoid_degenerate and degeneracy is not None) else None
    best = best_index(results, avoided)
    return RestartsResult(
        best=jax.tree_util.tree_map(lambda x: x[best], results),
        best_index=best,
        restarts=results,
        degeneracy=degeneracy,
    )


def compaction_ladder(num_restarts: int) -> tuple[int, ...]:
    """The batch sizes unfinished restarts are compacted to: R, then the powers of two
    below it, largest first (so few shapes compile: 1 + ⌈log2 R⌉ of them)."""
    sizes = [num_restarts]
    while sizes[-1] > 1:
        sizes.append(1 << ((sizes[-1] - 1).bit_length() - 1))
    return tuple(sizes)


def _run_compacted(states: LoopState, model, data, weights, m_step, log_prior, tol, param_tol,
                   convergence) -> LoopState:
    """Run a batch of loops until all are done, `SEGMENT_PASSES` passes at a time; before each
    segment the unfinished restarts are gathered into the smallest batch of the ladder
    that holds them (padded with finished ones, which a pass leaves unchanged) and
    scattered back after it. A loop can be paused after any pass and resumed with the
    same result, so each restart ends exactly as its own `jaxem.fit` would."""
    num_restarts = states.done.shape[0]
    ladder = compaction_ladder(num_restarts)

    def run_alone(state: LoopState, pass_limit=None) -> LoopState:
        return advance(state, model, data, weights, m_step, log_prior, tol, convergence,
                       pass_limit=pass_limit, param_tol=param_tol)

    if num_restarts == 1:
        # A batch of one runs unbatched and to the end: a vmapped loop pays a select per
        # state leaf per pass and batched products of batch size 1.
        return _with_batch_of_one(run_alone)(states)

    def segment(sub: LoopState) -> LoopState:
        if sub.done.shape[0] == 1:
            return _with_batch_of_one(lambda s: run_alone(s, s.num_e_steps + SEGMENT_PASSES))(sub)
        return jax.vmap(lambda s: run_alone(s, s.num_e_steps + SEGMENT_PASSES))(sub)

    def compacted(size: int):
        def run(all_: LoopState) -> LoopState:
            if size == num_restarts:
                return segment(all_)
            # The unfinished restarts first (a stable sort keeps their order), then finished ones.
            chosen = jnp.argsort(all_.done, stable=True)[:size]
            sub = segment(jax.tree_util.tree_map(lambda x: x[chosen], all_))
            return jax.tree_util.tree_map(lambda x, y: x.at[chosen].set(y), all_, sub)
        return run

    branches = [compacted(size) for size in ladder]

    def step(all_: LoopState) -> LoopState:
        unfinished = jnp.sum(~all_.done)
        # The smallest size on the (descending) ladder that holds every unfinished restart.
        level = jnp.sum(jnp.asarray(ladder) >= unfinished) - 1
        return jax.lax.switch(level, branches, all_)

    return jax.lax.while_loop(lambda s: jnp.any(~s.done), step, states)


def _with_batch_of_one(fn):
    """`fn` on a state with a leading axis of size 1, run without that axis."""
    def run(states: LoopState) -> LoopState:
        out = fn(jax.tree_util.tree_map(lambda x: x[0], states))
        return jax.tree_util.tree_map(lambda x: x[None], out)
    return run


def _refine(run, explored: LoopState, num_refine: int, max_iter: int) -> LoopState:
    """Continue the `num_refine` restarts with the highest explored objective, up to
    `max_iter` iterations in all, from where their loops paused."""
    score = jnp.where(explored.finite, explored.objective, -jnp.inf)
    _, chosen = jax.lax.top_k(score, num_refine)
    start = jax.tree_util.tree_map(lambda x: x[chosen], explored)
    # Finished restarts (converged or non-finite) get no more passes.
    start = start._replace(budget=jnp.full_like(start.budget, max_iter),
                           done=start.converged | ~start.finite)
    more = run(start)
    return jax.tree_util.tree_map(lambda all_, sub: all_.at[chosen].set(sub), explored, more)
