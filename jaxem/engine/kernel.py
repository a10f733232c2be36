"""One EM step as a kernel: `em_step(model) -> EMKernel(init, step)`.

In the style of optax's `GradientTransformation(init, update)` and blackjax's
`(init, step)` kernels. From θ_i, one step runs the E-step (posterior and
objective at θ_i) and the M-step,

    state.params = θ_i   ->   state.params = θ_{i+1} = M(θ_i, E(θ_i)),
    info.objective = ℓ(θ_i) = Σ_n w_n log p(x_n | θ_i) + log_prior(θ_i),

where the prior is the caller's `log_prior`, else the model's own
`model.log_prior` (a ready model with priors is MAP by default), else none.
`step` is pure and jittable; with a smooth closed-form M-step it is differentiable
in `state.params`, so `jax.jacobian` of one step is the EM map's Jacobian
(Dempster, Laird & Rubin's rate of convergence). Every driver (`jaxem.fit`,
`jaxem.fit_restarts`) is a loop over `em_iteration`, the function both share.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxem.engine.mstep import resolve_m_step
from jaxem.tree import all_finite

__all__ = ["EMInfo", "EMKernel", "EMState", "em_iteration", "em_step", "evaluate", "objective_prior"]


class EMState(NamedTuple):
    """The kernel's state: θ_i and the M-step's memory across iterations (`()` for none)."""

    params: Any
    m_step_state: Any


class EMInfo(NamedTuple):
    """What one step learned about θ_i (the parameters it started from).

    objective: ℓ(θ_i), log-likelihood plus log-prior (scalar).
    log_likelihood: Σ_n w_n log p(x_n | θ_i), without the prior.
    finite: the objective and every parameter leaf of θ_i are finite.
    """

    objective: jax.Array
    log_likelihood: jax.Array
    finite: jax.Array


class EMKernel(NamedTuple):
    """`init(params, data, weights=None) -> EMState`;
    `step(state, data, weights=None) -> (EMState, EMInfo)`."""

    init: Callable[..., EMState]
    step: Callable[..., tuple[EMState, EMInfo]]


def objective_prior(model: Any, log_prior: Callable | None) -> Callable | None:
    """The prior the objective includes: `log_prior`, else the model's `log_prior`, else None."""
    if log_prior is not None:
        return log_prior
    own = getattr(model, "log_prior", None)
    return own if callable(own) else None


def evaluate(model: Any, log_prior: Callable | None, params: Any, data: Any, weights: Any = None):
    """The E-step at θ: (posterior, objective ℓ(θ) including the prior)."""
    prior = objective_prior(model, log_prior)
    posterior = model.exact_e_step(params, data, weights)
    if prior is None:
        return posterior, posterior.log_likelihood
    return posterior, posterior.log_likelihood + prior(params)


def em_iteration(model: Any, m_step: Any, log_prior: Callable | None, state: EMState, data: Any,
                 weights: Any = None) -> tuple[EMState, EMInfo]:
    """One E-step and one M-step from `state` (no input checks; `m_step` resolved)."""
    params = state.params
    posterior, objective = evaluate(model, log_prior, params, data, weights)
    log_likelihood = posterior.log_likelihood
    prior = objective_prior(model, log_prior)
    new, m_state = m_step.step(model, params, posterior, data, prior, state.m_step_state)
    # An M-step that promotes dtypes (float32 in, float64 out) keeps the caller's.
    new = jax.tree_util.tree_map(lambda n, o: jnp.asarray(n, jnp.result_type(o)), new, params)
    finite = jnp.isfinite(objective) & all_finite(params)
    return EMState(new, m_state), EMInfo(objective, log_likelihood, finite)


def em_step(model: Any, *, m_step: Any = None, log_prior: Callable | None = None) -> EMKernel:
    """The EM map of `model` as a kernel `(init, step)`.

    Args:
      model: a structure or ready model (`jaxem.Mixture`, `jaxem.HMM`, `jaxem.models.*`).
      m_step: as for `jaxem.fit` (default: the model's own, else `jaxem.Gradient()`).
      log_prior: optional `log_prior(params) -> scalar`; default: the model's own prior.

    `init` checks its inputs in Python (as `jaxem.fit` does; value checks are skipped
    under jit/vmap); `step` checks nothing and is pure. Ten steps from `init(θ_0, x)`
    give the parameters of `jaxem.fit(model, x, θ_0, max_iter=10, tol=0)`. The kernel
    closes over `model`: `jax.jit(kernel.step)` compiles once per kernel, so a new
    hyperparameter value (a new model, a new kernel) compiles anew; `jaxem.fit` passes
    the model as an argument instead and does not.
    """
    from jaxem.engine.fit import check_inputs

    m_step = resolve_m_step(model, m_step)

    def init(params: Any, data: Any, weights: Any = None) -> EMState:
        check_inputs(model, data, params, weights, m_step, log_prior)
        return EMState(params, m_step.init(model, params))

    def step(state: EMState, data: Any, weights: Any = None) -> tuple[EMState, EMInfo]:
        return em_iteration(model, m_step, log_prior, state, data, weights)

    return EMKernel(init, step)
