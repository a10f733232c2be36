"""The EM loop: `fit` and its result, `FitResult`.

`fit` is a single `lax.while_loop` over the EM kernel (`jaxem.engine.kernel`):
each pass runs one step from θ_i, which gives the objective

    ℓ(θ_i) = Σ_n w_n log p(x_n | θ_i) [+ log-prior(θ_i)]

and θ_{i+1}. Fixed-shape state: no Python loop, no host transfer and no
recompilation per iteration, nor per value of a model's hyperparameters (the
model is a pytree argument of the compiled program). It stops at θ_T (T >= 1) by
the rule `convergence` (N = Σ_n w_n, the number of observations):

- "relative" (the default): the objective's relative change and every parameter's
  relative change are both small,

      |ℓ(θ_T) - ℓ(θ_{T-1})| < tol · max(|ℓ(θ_T)|, N)          (tol = 1e-8)
      max_j |p_T,j - p_{T-1},j| <= param_tol · (max_j |p_T,j| + param_tol)
                                  for every leaf p of θ         (param_tol = sqrt(tol) = 1e-4)

  The objective is measured against its own size, taken as at least N (one nat per
  observation, so an ℓ near zero, data in units where densities are near 1, still
  stops); a leaf against its largest entry (so entries near zero beside larger ones
  are judged on the leaf's scale), with param_tol as an absolute floor (so a leaf whose
  optimum is exactly 0 stops too). Entries equal in both iterates (structural zeros,
  equal infinities) count as unchanged; integer leaves must be equal. The parameter
  test keeps a fit from stopping where ℓ has flattened but θ still moves (near a
  saddle, on a plateau); sqrt(tol) pairs the two, as ℓ is quadratic in θ near an
  optimum. One exception: when ℓ did not change beyond rounding, |Δℓ| <= 4 eps ·
  max(|ℓ(θ_T)|, N), and rounding is far below the tolerance (4 eps <= tol / 100: float64
  for tol >= 1e-13), the objective test alone stops the fit (`stop_reason` "unchanged"):
  what still moves no longer affects ℓ, typically a dying component whose log-weight or
  log-rate heads for -inf, which would otherwise run on until it overflows (a SQUAREM fit
  of a Poisson mixture did, `tests/test_acceleration.py`). In float32 at the default tol
  ℓ's rounding (4 eps = 5e-7 relative) is far above the tolerance, an unchanged ℓ says
  little (parameters still moving by 1e-4 change ℓ by less than its last digit), and only
  the parameter test decides. `tol = 0` never stops before `max_iter`.
- "absolute": |ℓ(θ_T) - ℓ(θ_{T-1})| < tol · N (tol = 1e-3), i.e. the mean objective per
  observation changes by less than `tol`: scikit-learn's GaussianMixture rule (its face,
  `jaxem.sklearn.GaussianMixture`, uses it).
- "gain": ℓ(θ_T) - ℓ(θ_{T-1}) < tol · N (tol = 1e-3), hmmlearn's signed rule, which a
  decrease also meets (the hmmlearn faces use it).

Why not "absolute" by default: its threshold grows with N while the optimisation error
that matters does not (a gap g in ℓ puts θ about sqrt(2g) standard errors from θ̂,
whatever N), so at large N it stops far from the maximum. Measured (float64, 3
overlapping 2-D full-covariance components, k-means++ start; `tests/test_stop_rule.py`):
on 2,000,000 rows it stopped after 7 iterations 2,063.6 nats below the maximum (ℓ rose
1,983 nats over the next 8); the relative rule stops after 37 iterations 0.020 nats
below it (tol 1e-7: 31 iterations, 0.19 nats; without the parameter test, 32 and 0.13).
On 100,000 rows: 11 iterations ~103 nats short, against 39 iterations 0.001 nats short.
On the small fits of the README (Old Faithful, 2 full components, 8 restarts) it takes
9.4 iterations per restart on average where "absolute" took 5.9, and reaches the maximum
to 2e-7 nats instead of 0.02; where EM is slow (3 full components on Old Faithful, ~136
iterations to converge) "absolute" stopped after ~8, up to 8.3 nats short, and the
relative rule runs to `max_iter` and says so (`converged` False). In float32 ℓ carries
about 7 digits, so tol = 1e-8 is met when ℓ stops changing at all, which EM reaches at a
fixed point of float32 arithmetic; a fit that cycles at rounding level runs to
`max_iter` (pass a larger tol, e.g. 1e-6). The loop also stops when T = `max_iter`, or
when an iterate has a non-finite objective or parameters, in which case the last finite
iterate is kept and `FitResult.finite` is False. `FitResult.stop_reason` says which of
these ended the fit (`STOP_REASONS`).

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
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

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
from jaxem.validation import (
    check_fit_inputs,
    check_fit_settings,
    check_model_data,
    check_tolerance,
    check_weights,
    is_concrete,
)

__all__ = ["CONVERGENCE_RULES", "DEFAULT_CONVERGENCE", "DEFAULT_RELATIVE_TOL", "DEFAULT_TOL", "FitResult",
           "LoopState", "STOP_REASONS", "advance", "check_inputs", "fit", "fit_options", "finish",
           "resolve_tolerances", "run_em", "start_loop", "stop_reason_names"]

DEFAULT_CONVERGENCE = "relative"

# tol's default for "absolute" and "gain": per observation (scikit-learn's and hmmlearn's 1e-3).
DEFAULT_TOL = 1e-3

# tol's default for "relative" (param_tol's default is its square root). Measured in the module
# docstring: a 2,000,000-row Gaussian mixture ends within a fraction of a nat of its maximum.
DEFAULT_RELATIVE_TOL = 1e-8

# Why a fit stopped (`FitResult.stop_reason` indexes this): the iteration budget ran out, a
# convergence rule was met ("unchanged": the relative rule's objective test, with ℓ unchanged to
# rounding while a parameter still moved), or an iterate was not finite.
STOP_REASONS = ("max_iter", "absolute", "gain", "relative", "unchanged", "non_finite")
_MAX_ITER, _NON_FINITE = STOP_REASONS.index("max_iter"), STOP_REASONS.index("non_finite")
_ABSOLUTE, _GAIN = STOP_REASONS.index("absolute"), STOP_REASONS.index("gain")
_RELATIVE, _UNCHANGED = STOP_REASONS.index("relative"), STOP_REASONS.index("unchanged")

# "Unchanged to rounding" for the relative rule: |Δℓ| <= this many eps times max(|ℓ|, N); it
# stands in for the parameter test only where rounding is far below the tolerance (this many
# eps <= tol / _RESOLUTION), i.e. where ℓ could have shown a change the tolerance cares about.
_ROUNDING_EPS = 4
_RESOLUTION = 100


def _absolute(objective, previous, params, previous_params, num_observations, tol, param_tol):
    """scikit-learn's rule: |ℓ_T − ℓ_{T−1}| < tol · N. Returns (met, reason)."""
    return jnp.abs(objective - previous) < tol * num_observations, _ABSOLUTE


def _gain(objective, previous, params, previous_params, num_observations, tol, param_tol):
    """hmmlearn's signed rule: ℓ_T − ℓ_{T−1} < tol · N (a decrease meets it too)."""
    return objective - previous < tol * num_observations, _GAIN


def _relative(objective, previous, params, previous_params, num_observations, tol, param_tol):
    """|ℓ_T − ℓ_{T−1}| < tol · max(|ℓ_T|, N), and either every parameter leaf moved by at most
    param_tol · (‖θ_T‖∞ + param_tol) in its largest entry (`parameters_settled`: reason
    "relative") or ℓ did not change beyond rounding, |Δℓ| <= 4 eps · max(|ℓ_T|, N), where
    rounding is far below the tolerance, 4 eps <= tol / 100 (reason "unchanged": the
    parameters that still move no longer change ℓ, e.g. a dying component's log-weight
    heading for −inf; float64 at tol >= 1e-13, float32 at tol >= 5e-5)."""
    scale = jnp.maximum(jnp.abs(objective), num_observations)
    change = jnp.abs(objective - previous)
    settled = parameters_settled(params, previous_params, param_tol)
    rounding = _ROUNDING_EPS * jnp.finfo(jnp.result_type(objective)).eps
    unchanged = (change <= rounding * scale) & (rounding * _RESOLUTION <= tol)
    met = (change < tol * scale) & (settled | unchanged)
    return met, jnp.where(settled, _RELATIVE, _UNCHANGED)


def parameters_settled(params: Any, previous: Any, param_tol: Any) -> jax.Array:
    """True when, in every leaf of the parameters, max_j |θ_T,j − θ_{T−1},j| ≤
    param_tol · (max_j |θ_T,j| + param_tol): the largest change of the leaf relative to its
    largest entry, with param_tol as an absolute floor (so a leaf whose optimum is 0 still
    settles, and one of exact zeros that stay zero always has). Entries equal in both
    (±inf included) count as unchanged; non-inexact leaves (ints, bools) must be equal."""
    flags, rows = [], []
    for new, old in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(previous), strict=True):
        new, old = jnp.asarray(new), jnp.asarray(old)
        if not jnp.issubdtype(new.dtype, jnp.inexact):
            flags.append(jnp.all(new == old))
            continue
        change = jnp.where(new == old, 0, jnp.abs(new - old))
        change = jnp.where(jnp.isnan(change), jnp.inf, change)
        size = jnp.where(jnp.isfinite(new), jnp.abs(new), 0)
        rows.append(jnp.stack([jnp.ravel(change), jnp.ravel(size)]))  # (2, leaf size)
    if rows:
        # Every leaf's two maxima from ONE reduction over the leaves padded with zeros (which
        # change neither maximum) to a common width: a few fused kernels, not two per leaf,
        # which counts in the compile time of a fit.
        width = max(row.shape[1] for row in rows)
        padded = jnp.stack([jnp.pad(row, ((0, 0), (0, width - row.shape[1]))) for row in rows])
        largest = jnp.max(padded, axis=-1, initial=0)  # (leaves, 2): max change, max |θ|
        tol = jnp.asarray(param_tol, largest.dtype)
        flags.append(jnp.all(largest[:, 0] <= tol * (largest[:, 1] + tol)))
    return jnp.all(jnp.stack(flags)) if flags else jnp.array(True)


CONVERGENCE_RULES = {"absolute": _absolute, "gain": _gain, "relative": _relative}


def stop_reason_names(stop_reason: Any) -> Any:
    """The name (`STOP_REASONS`) of a stop reason: a str for a scalar, nested lists of str
    for a batch (e.g. every restart's); None for None. On the host."""
    if stop_reason is None:
        return None
    names = np.asarray(STOP_REASONS, dtype=object)[np.asarray(jax.device_get(stop_reason), dtype=np.int64)]
    return names.tolist() if isinstance(names, np.ndarray) else names


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
      stop_reason: why the loop stopped (int32, an index into `STOP_REASONS`):
        "max_iter" (the budget ran out: `max_iter`, or `explore_iters` for an emEM
        restart that was not refined), the rule that was met ("relative",
        "unchanged" (the relative rule, met with ℓ unchanged to rounding while a
        parameter still moved), "absolute" or "gain"; then `converged` is True), or
        "non_finite" (then `finite` is False). `stop_reason_name` gives the name. None in a result
        built without it (by hand, `jaxem.fit_direct`, a file saved before it existed).
    """

    params: Any
    log_likelihood: jax.Array
    history: jax.Array
    num_iters: jax.Array
    converged: jax.Array
    finite: jax.Array
    num_e_steps: jax.Array
    stop_reason: Any = None

    @property
    def stop_reason_name(self) -> Any:
        """`stop_reason` by name, e.g. "relative" (`stop_reason_names`: nested lists of
        names for a batch of results, None when it was not recorded). On the host."""
        return stop_reason_names(self.stop_reason)


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
    stop_reason: as in `FitResult` once done ("max_iter" before).
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
    stop_reason: jax.Array


def fit(
    model: Any,
    data: Any,
    params0: Any,
    *,
    weights: Any = None,
    m_step: Any = None,
    log_prior: Callable[[Any], jax.Array] | None = None,
    max_iter: int = 100,
    tol: float | None = None,
    param_tol: float | None = None,
    convergence: str = DEFAULT_CONVERGENCE,
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
      tol: the stop rule's tolerance (module docstring); default None: 1e-8 for
        "relative" (|Δℓ| < tol · max(|ℓ|, N)), 1e-3 per observation for "absolute" and
        "gain" (tol · N). A traced value: new values reuse the compiled program.
      param_tol: "relative" only: every parameter leaf must move by at most param_tol
        times its largest entry (+ param_tol); default None: sqrt(tol).
      convergence: "relative" (default: objective and parameters, relative),
        "absolute" (|Δℓ| < tol·N, scikit-learn's) or "gain" (Δℓ < tol·N, hmmlearn's).
      acceleration: None (plain EM, default) or "squarem": SQUAREM
        (`jaxem.engine.squarem`), with its monotone safeguard, so ℓ still never
        decreases from one iterate to the next (for EM M-steps, which never
        decrease it). Far fewer E-steps where EM is slow (`FitResult.num_e_steps`).

    Returns:
      A `FitResult`; its `stop_reason` (`stop_reason_name`) says whether the rule, the
      `max_iter` budget or a non-finite iterate ended the fit. Differentiable by
      implicit differentiation at the fixed point (module docstring): exact for a
      converged fit, so use a small `tol` when differentiating; derivatives with
      respect to `params0` are zero.
      `jax.jit(lambda model, x, p: fit(model, x, p, ...))` (the model
      a pytree argument) and `jax.vmap` over `params0` both work; the function is
      also compiled internally, once per model structure
      (static fields), M-step, prior, `max_iter`, convergence rule and input
      shapes: new values of a model's hyperparameters, of the data, the weights or
      `tol` or `param_tol` reuse the compiled program.

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
    tol, param_tol = resolve_tolerances(convergence, tol, param_tol)
    check_fit_settings(max_iter, tol)
    check_acceleration(acceleration)
    m_step = resolve_m_step(model, m_step)
    check_inputs(model, data, params0, weights, m_step, log_prior)
    eta = (model, data, weights)
    converted = perturbed_closures(m_step, log_prior, params0, eta)

    def loop(model, data, params0, weights, tol, param_tol):
        return _fit_compiled(model, data, params0, weights, tol, param_tol, m_step, log_prior, max_iter,
                             convergence, acceleration)

    result = run_stopped(loop, converted, model, data, params0, weights, tol, param_tol)
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
    if not (isinstance(convergence, str) and convergence in CONVERGENCE_RULES):
        raise ValueError(f"convergence: expected one of {tuple(CONVERGENCE_RULES)}, got {convergence!r}.")


def resolve_tolerances(convergence: Any, tol: Any, param_tol: Any) -> tuple[Any, Any]:
    """(tol, param_tol) for `convergence`, checked: tol None is the rule's default
    (`DEFAULT_RELATIVE_TOL` for "relative", `DEFAULT_TOL` per observation for "absolute" and
    "gain"); param_tol is the relative rule's (None: sqrt(tol)) and None for the other
    rules, which refuse one."""
    check_convergence(convergence)
    if tol is None:
        tol = DEFAULT_RELATIVE_TOL if convergence == "relative" else DEFAULT_TOL
    check_tolerance(tol, "tol", "1e-8" if convergence == "relative" else "1e-3")
    if convergence != "relative":
        if param_tol is not None:
            raise ValueError(f"param_tol: only the 'relative' rule tests the parameters, not "
                             f"convergence={convergence!r}; leave param_tol out or pass "
                             "convergence='relative'.")
        return tol, None
    if param_tol is None:
        param_tol = math.sqrt(float(tol)) if is_concrete(tol) else jnp.sqrt(tol)
    check_tolerance(param_tol, "param_tol", "1e-4")
    return tol, param_tol


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


@functools.partial(jax.jit, static_argnums=(6, 7, 8, 9, 10))
def _fit_compiled(model, data, params0, weights, tol, param_tol, m_step, log_prior, max_iter, convergence,
                  acceleration):
    return run_em(model, data, params0, weights, m_step, log_prior, max_iter, max_iter, tol, convergence,
                  acceleration, param_tol=param_tol)


def run_em(model, data, params0, weights, m_step, log_prior, history_len, budget, tol,
           convergence=DEFAULT_CONVERGENCE, acceleration=None, *, param_tol=None) -> FitResult:
    """The traced EM loop (no input checks): `finish(advance(start_loop(...)))`, at most
    `budget` iterations, which may be a traced integer <= `history_len` (the static
    length of the history)."""
    state = start_loop(model, data, params0, weights, m_step, log_prior, history_len, budget, acceleration)
    state = advance(state, model, data, weights, m_step, log_prior, tol, convergence, param_tol=param_tol)
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
        stop_reason=jnp.full((), _MAX_ITER, jnp.int32),
    )


def advance(state: LoopState, model, data, weights, m_step, log_prior, tol, convergence=DEFAULT_CONVERGENCE,
            pass_limit=None, *, param_tol=None) -> LoopState:
    """Run passes until the loop is done or, with `pass_limit` (a traced integer allowed),
    until `num_e_steps` reaches it. Resuming a paused loop gives the loop run at once.
    `tol`, `param_tol` as resolved by `resolve_tolerances` (param_tol None: sqrt(tol))."""
    num_observations = jnp.asarray(model.num_observations(data, weights))
    if param_tol is None:
        param_tol = jnp.sqrt(jnp.asarray(tol, jnp.result_type(float)))

    def stopping(objective, previous, params, previous_params):
        return CONVERGENCE_RULES[convergence](objective, previous, params, previous_params, num_observations,
                                              tol, param_tol)

    def running(s: LoopState) -> jax.Array:
        return ~s.done if pass_limit is None else ~s.done & (s.num_e_steps < pass_limit)

    def one_pass(s: LoopState) -> LoopState:
        return _pass(s, model, data, weights, m_step, log_prior, stopping)

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
        stop_reason=state.stop_reason,
    )


def _pass(s: LoopState, model, data, weights, m_step, log_prior, stopping) -> LoopState:
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
    met, rule_reason = stopping(info.objective, s.objective, s.candidate.params, s.params)
    converged = at_iterate & info.finite & ~first & met
    out_of_budget = at_iterate & (i >= s.budget)
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
        done=broken | converged | out_of_budget,
        squarem=squarem,
        stop_reason=jnp.select([converged, broken, out_of_budget], [rule_reason, _NON_FINITE, _MAX_ITER],
                               s.stop_reason).astype(jnp.int32),
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

