"""M-step strategies: how θ_{n+1} is chosen from the posterior at θ_n.

Every strategy is a hashable object (a static argument of the compiled fit) with

    update(model, params, posterior, data, log_prior) -> new params
    init(model, params) -> state                      memory kept across EM iterations
    step(model, params, posterior, data, log_prior, state) -> (new params, new state)

all pure and traceable, so the EM kernel (`jaxem.engine.kernel`) can call them
inside `lax.while_loop`. `MStep` supplies `init` (no state) and `step` (`update`,
state unchanged); a strategy that keeps memory overrides both. The model is an
argument, not a captured constant, so its hyperparameters stay leaves of the
compiled program. `log_prior` is the objective's prior (the caller's, else the
model's own, else None).

- `Statistics()`: θ_{n+1} = model.maximize(model.statistics(posterior, data, θ_n), θ_n),
  the closed form from expected sufficient statistics; the default of every ready
  exponential-family model (MAP when the model has priors).
- `ClosedForm(fn)`: θ_{n+1} = fn(posterior, data, θ_n), the exact maximiser of Q
  (or Q + log-prior) that the user derived by hand. With sample weights the
  posterior's marginals are weighted (w_n times the posterior probabilities), so
  `fn` sees weighted counts; it must use sums of marginals, not N.
- `Gradient(optimizer, num_steps)`: generalized EM. Climbs
  Q(θ) + log_prior(θ) with an optax optimizer from θ_n and returns the best
  iterate seen, so Q never decreases (the GEM condition that keeps the
  observed log-likelihood monotone). Q is weighted through the marginals.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxem.tree import all_finite, select

__all__ = [
    "ClimbState", "ClosedForm", "Gradient", "MStep", "Statistics", "climb_start", "climb_step",
    "default_optimizer", "negative_q", "resolve_m_step",
]

_DEFAULT_OPTIMIZER = optax.lbfgs()


def default_optimizer() -> optax.GradientTransformationExtraArgs:
    """The optimizer `Gradient()` uses when none is given: L-BFGS with a zoom
    line search (scale-free, so no learning rate has to be tuned per model).
    One shared instance, so models using it share compiled code."""
    return _DEFAULT_OPTIMIZER


class MStep:
    """Base of the M-step strategies: no memory across EM iterations by default.

    `stationary` says what a converged fit satisfies, for gradients through it
    (`jaxem.engine.implicit`): False (the default) for an M-step that maximises Q
    exactly, whose fixed point θ* = T(θ*) is differentiated; True for one that only
    climbs Q (`Gradient`), whose limit is differentiated as a stationary point of ℓ.
    """

    stationary = False

    def update(self, model, params, posterior, data, log_prior):
        raise NotImplementedError

    def init(self, model, params) -> Any:
        """The memory the strategy keeps across EM iterations (none: `()`)."""
        del model, params
        return ()

    def step(self, model, params, posterior, data, log_prior, state):
        """(θ_{n+1}, memory): `update`, with the memory passed through."""
        return self.update(model, params, posterior, data, log_prior), state


def _check_options(name: Any, options: Any) -> tuple:
    """`Gradient`'s optimizer name and options, checked; the options as a sorted tuple of
    (key, value) pairs (hashable, so equal strategies compare equal)."""
    if not isinstance(name, str):
        raise TypeError("Gradient(options): only used with an optimizer given by name, e.g. "
                        "Gradient('adam', options={'learning_rate': 0.05}).")
    items = tuple(sorted(dict(options).items()))
    for key, value in items:
        if not (value is None or isinstance(value, (bool, int, float, str))):
            raise TypeError(f"Gradient(options): {key}={value!r} must be a number, string, bool or "
                            "None (pass a GradientTransformation for anything else).")
    _named_optimizer(name, items)  # fails now, not inside a fit
    return items


@functools.lru_cache(maxsize=128)
def _named_optimizer(name: str, options: tuple) -> optax.GradientTransformation:
    """`optax.<name>(**options)`, one instance per (name, options)."""
    factory = getattr(optax, name, None)
    if not callable(factory):
        raise ValueError(f"Gradient(optimizer): optax has no optimizer {name!r}; use a name such as "
                         "'adam', 'sgd' or 'lbfgs', or pass a GradientTransformation.")
    try:
        transformation = factory(**dict(options))
    except TypeError as error:
        raise TypeError(f"Gradient(options): optax.{name} rejected {dict(options)}: {error}") from error
    if not (hasattr(transformation, "init") and hasattr(transformation, "update")):
        raise ValueError(f"Gradient(optimizer): optax.{name}(...) is not an optimizer (a "
                         "GradientTransformation).")
    return transformation


@dataclasses.dataclass(frozen=True)
class Statistics(MStep):
    """The model's closed form from its expected sufficient statistics:
    θ_{n+1} = model.maximize(model.statistics(posterior, data, θ_n), θ_n)."""

    def update(self, model, params, posterior, data, log_prior):
        del log_prior
        return model.maximize(model.statistics(posterior, data, params), params)


@dataclasses.dataclass(frozen=True)
class ClosedForm(MStep):
    """A closed-form M-step `fn(posterior, data, params) -> new params`.

    `fn` must return a pytree with the same structure, shapes and dtypes as
    `params`. With a `log_prior`, `fn` is responsible for returning the MAP
    update; `fit` only adds the prior to the reported objective.
    """

    fn: Callable[[Any, Any, Any], Any]

    def __post_init__(self):
        from jaxem.validation import check_callable

        check_callable(self.fn, "ClosedForm(fn)")

    def update(self, model, params, posterior, data, log_prior):
        del model, log_prior
        return self.fn(posterior, data, params)


@dataclasses.dataclass(frozen=True)
class Gradient(MStep):
    """Generalized-EM M-step: `num_steps` optax steps on -(Q(θ) + log_prior(θ)).

    Each proposed step θ + s·u (u from the optimizer, s a step scale starting
    at 1) is accepted only if it does not lower the objective and stays finite;
    a rejected step halves s and leaves θ and the optimizer state unchanged. So
    the returned θ has Q + log_prior at least as high as θ_n, and a rejected step
    is never mistaken for convergence of the outer loop (which looks at the
    observed log-likelihood, not at this step).

    Args:
      optimizer: an optax `GradientTransformation`, or the name of an optax
        optimizer (e.g. "adam", built as `getattr(optax, name)(**options)`); default
        `default_optimizer()` (L-BFGS with line search). Parameters are updated in
        whatever coordinates the model uses, so constrained parameters should be
        stored unconstrained (logits, log-scales, Cholesky factors).
      num_steps: optimizer steps per EM iteration (>= 1).
      options: with an optimizer name, its keyword arguments (e.g.
        `{"learning_rate": 0.05}`; numbers, strings, bools or None).

    Compiled fits are shared between equal M-steps. `Gradient("adam", options=
    {"learning_rate": 0.05})` built twice gives two equal strategies, so the second
    fit reuses the first one's program; `Gradient(optax.adam(0.05))` built twice does
    not (each optax call makes new functions), so keep one instance, or name the
    optimizer. A new option value is a new program.

    The optimizer starts afresh on each iteration's Q. Keeping its state across EM
    iterations (in `EMState.m_step_state`, via `climb(..., opt_state)`) was measured
    and stops fits early at worse optima (`benchmarks/gradient_memory.py`), so it
    is not the default nor an option.
    """

    optimizer: optax.GradientTransformation | str | None = None
    num_steps: int = 10
    options: Any = ()
    stationary = True  # its iterates are no exact map: gradients use ∇ℓ(θ*) = 0

    def __post_init__(self):
        opt = self.optimizer
        if isinstance(opt, str) or self.options:
            object.__setattr__(self, "options", _check_options(opt, self.options))
        elif opt is not None and not (
            hasattr(opt, "init") and hasattr(opt, "update") and callable(opt.update)
        ):
            raise TypeError(
                "Gradient(optimizer): expected an optax GradientTransformation such as "
                f"optax.adam(1e-2), got {type(opt).__name__}."
            )
        if isinstance(self.num_steps, bool) or not isinstance(self.num_steps, int):
            raise TypeError(f"Gradient(num_steps): expected an int >= 1, got {self.num_steps!r}.")
        if self.num_steps < 1:
            raise ValueError(f"Gradient(num_steps): must be >= 1, got {self.num_steps}.")

    def _transformation(self):
        if isinstance(self.optimizer, str):
            return optax.with_extra_args_support(_named_optimizer(self.optimizer, self.options))
        return optax.with_extra_args_support(self.optimizer or default_optimizer())

    def update(self, model, params, posterior, data, log_prior):
        return self.climb(negative_q(model, posterior, data, log_prior), params)

    def optimizer_state(self, params) -> Any:
        """A fresh state of the optimizer for `params`."""
        return self._transformation().init(params)

    def climb(self, negative_objective: Callable[[Any], jax.Array], params: Any, opt_state: Any = None,
              with_state: bool = False) -> Any:
        """Minimise `negative_objective` from `params`, never returning a worse point; from the
        optimizer state `opt_state` (a fresh one when None); with `with_state`, returns
        (params, optimizer state)."""
        tx = self._transformation()
        state = climb_start(tx, negative_objective, params, opt_state)
        final = jax.lax.fori_loop(0, self.num_steps,
                                  lambda _, s: climb_step(tx, negative_objective, s), state)
        return (final.params, final.opt_state) if with_state else final.params


class ClimbState(NamedTuple):
    """A safeguarded descent: the point, its value and gradient, the optimizer's state, the
    scale of the next step (halved after each rejected step) and the evaluations of the
    value and gradient so far (a line search's included, when it reports them)."""

    params: Any
    value: jax.Array  # the objective being minimised, at params
    grad: Any
    opt_state: Any
    step_scale: jax.Array
    evaluations: jax.Array


def climb_start(tx, negative_objective: Callable, params: Any, opt_state: Any = None) -> ClimbState:
    """The state `climb_step` starts from (a fresh optimizer state when `opt_state` is None)."""
    value, grad = jax.value_and_grad(negative_objective)(params)
    opt_state = tx.init(params) if opt_state is None else opt_state
    return ClimbState(params, value, grad, opt_state, jnp.ones((), jnp.result_type(value)),
                      jnp.ones((), jnp.int32))


def climb_step(tx, negative_objective: Callable, s: ClimbState) -> ClimbState:
    """One optax step on `negative_objective` (extra args: value, grad, value_fn), accepted
    only when it stays finite and does not increase the value; a rejected step halves the
    step scale and leaves the point and the optimizer state as they were."""
    updates, opt_state = tx.update(
        s.grad, s.opt_state, s.params, value=s.value, grad=s.grad, value_fn=negative_objective,
    )
    updates = jax.tree_util.tree_map(lambda u: s.step_scale.astype(u.dtype) * u, updates)
    candidate = optax.apply_updates(s.params, updates)
    cand_value, cand_grad, computed = _value_and_grad_at(negative_objective, candidate, opt_state,
                                                         s.step_scale)
    finite = jnp.isfinite(cand_value) & all_finite(candidate) & all_finite(cand_grad)
    accept = finite & (cand_value <= s.value)
    return ClimbState(
        params=select(accept, candidate, s.params),
        value=jnp.where(accept, cand_value, s.value),
        grad=select(accept, cand_grad, s.grad),
        opt_state=select(accept, opt_state, s.opt_state),
        step_scale=jnp.where(accept, s.step_scale, 0.5 * s.step_scale),
        evaluations=s.evaluations + _line_search_evaluations(opt_state) + computed,
    )


def _line_search_evaluations(opt_state: Any) -> jax.Array:
    """The evaluations the last update's line search made (optax's zoom line search reports
    them as `num_linesearch_steps`); 0 for an optimizer without one."""
    try:
        steps = optax.tree.get(opt_state, "num_linesearch_steps")
    except (KeyError, ValueError):  # several entries: do not guess which one
        steps = None
    return jnp.zeros((), jnp.int32) if steps is None else jnp.asarray(steps, jnp.int32)


def _value_and_grad_at(negative_objective: Callable, candidate: Any, opt_state: Any, step_scale):
    """(value, gradient, 1 if computed here else 0) at the candidate: those a line search
    (L-BFGS's zoom) stored in the optimizer state at that very point when the step was not
    scaled down, else computed."""
    try:
        stored = optax.tree.get(opt_state, "value"), optax.tree.get(opt_state, "grad")
    except (KeyError, ValueError):  # several entries: do not guess which one
        stored = (None, None)
    compute = jax.value_and_grad(negative_objective)
    if stored[0] is None or stored[1] is None:
        return (*compute(candidate), jnp.ones((), jnp.int32))
    reuse = (step_scale == 1) & jnp.isfinite(stored[0])
    value, grad = jax.lax.cond(reuse, lambda _: stored, compute, candidate)
    return value, grad, jnp.where(reuse, 0, 1).astype(jnp.int32)


def negative_q(model, posterior, data, log_prior) -> Callable[[Any], jax.Array]:
    """θ ↦ -(Q(θ) + log_prior(θ)) for a fixed posterior."""
    def negative_objective(p):
        value = model.q(p, posterior, data)
        if log_prior is not None:
            value = value + log_prior(p)
        return -value

    return negative_objective


def resolve_m_step(model: Any, m_step: Any):
    """The M-step `fit` uses: the given one, else the model's `default_m_step`, else
    `Statistics()` for a model with `maximize` (a ready exponential-family model), else
    `Gradient()`."""
    if m_step is None:
        m_step = getattr(model, "default_m_step", None)
    if m_step is None:
        return Statistics() if callable(getattr(model, "maximize", None)) else Gradient()
    if not isinstance(m_step, MStep):
        raise TypeError(
            "m_step: expected jaxem.ClosedForm(fn), jaxem.Gradient(optimizer, num_steps) or "
            "jaxem.Statistics(), "
            f"got {type(m_step).__name__}. Wrap a function fn(posterior, data, params) "
            "in jaxem.ClosedForm(fn)."
        )
    return m_step
