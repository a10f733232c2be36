"""The structure protocol, and the E-step, Q and log-likelihood derived from it once.

A latent structure turns log-potential tables φ(θ) into a log-partition. With
one non-negative weight w_n per observation (per sequence for a batch of
sequences; all ones when `weights` is None),

    ℓ(θ)  = A_w(φ(θ)) = Σ_n w_n A_n(φ_n(θ))             the observed log-likelihood
    μ     = ∇_φ A_w(φ(θₙ))                               the posterior marginals, shaped like φ
    Q(θ)  = ⟨μ, φ(θ)⟩                                    the Q-function (an inner product)

so the marginals are *weighted*: w_n times the posterior probabilities of
observation n (a closed-form M-step written with sums of marginals, never with
N, is then right for weighted data too). A structure supplies

    log_potentials(params, data) -> tables            a pytree of arrays
    log_partition(tables, data, weights) -> scalar    A_w (weights may be None)
    posterior(marginals, log_likelihood) -> posterior a NamedTuple with `.tables`,
                                                      the marginals shaped like the tables
    num_observations(data, weights) -> scalar         Σ w (scales the fit's tolerance)
    weights_shape(data) -> tuple                      the shape `weights` must have

and may supply a faster marginals pass as the log-partition's custom gradient
(the chain's scaled forward–backward does), which must agree with autodiff.
`Structure` derives the rest here; `mixture.MixtureStructure` and
`chain.ChainStructure` are the two structures. A new structure is a new file
with a subclass that supplies those five methods.

Ready exponential-family models add `statistics(posterior, data)`, the expected
sufficient statistics (an additive pytree, linear in the marginals), and
`maximize(stats, params)`; `expected_stats(params, data, weights)` is derived.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxem.structures.entry_points import entry_point

__all__ = ["Structure", "inner_product", "num_leading", "weighted_sum"]


def num_leading(data: Any) -> int:
    """The size of the leading axis shared by all leaves of `data`."""
    leaves = jax.tree_util.tree_leaves(data)
    if not leaves:
        raise ValueError("data: the pytree has no array leaves; pass an array of shape (N, ...).")
    return jnp.shape(leaves[0])[0]


def inner_product(marginals: jax.Array, table: jax.Array) -> jax.Array:
    """⟨μ, φ⟩ = Σ μ ⊙ φ, where entries with μ = 0 contribute exactly 0.

    An impossible configuration has φ = -inf and μ = 0; the naive product is
    0 · (-inf) = NaN. Both the value and its gradient are guarded (the
    double-`where` pattern), so NaN never reaches a backward pass.
    """
    support = marginals > 0
    safe_table = jnp.where(support, table, 0.0)
    return jnp.sum(jnp.where(support, marginals * safe_table, 0.0))


def weighted_sum(values: jax.Array, weights: jax.Array | None) -> jax.Array:
    """Σ_n w_n v_n (Σ_n v_n when `weights` is None); a zero weight contributes exactly 0,
    also when v_n is -inf, in value and gradient."""
    if weights is None:
        return jnp.sum(values)
    weights = jnp.asarray(weights, jnp.result_type(values))
    keep = weights > 0
    return jnp.sum(jnp.where(keep, weights * jnp.where(keep, values, 0.0), 0.0))


class Structure:
    """Derived log-likelihood, E-step, Q-function and expected statistics of any structure.

    Subclasses supply the five protocol methods of the module docstring and
    `num_states`; they may define `default_m_step` (used by `jaxem.fit` when no
    M-step is given) and `log_prior(params)` (the model's own prior: `jaxem.fit`
    then maximises log-likelihood + log-prior by default).
    """

    num_states: int
    default_m_step: Any = None

    # --- the protocol ----------------------------------------------------------------------

    def log_potentials(self, params: Any, data: Any) -> Any:
        raise NotImplementedError

    def log_partition(self, tables: Any, data: Any, weights: Any = None) -> jax.Array:
        raise NotImplementedError

    def posterior(self, marginals: Any, log_likelihood: jax.Array) -> Any:
        raise NotImplementedError

    def num_observations(self, data: Any, weights: Any = None) -> Any:
        raise NotImplementedError

    def weights_shape(self, data: Any) -> tuple:
        raise NotImplementedError

    # --- derived -----------------------------------------------------------------------------

    @entry_point
    def log_likelihood(self, params: Any, data: Any, weights: Any = None) -> jax.Array:
        """ℓ(θ) = Σ_n w_n log p(x_n | θ) (scalar; unweighted when `weights` is None).

        Called on concrete arrays it first checks `data`, `params` and `weights`
        and raises on bad input, then runs one compiled program (compiled once per
        model structure and shapes; `jaxem.structures.entry_points`); under
        jit/vmap/grad it checks shapes only and traces into the caller's program.
        """
        return self.log_partition(self.log_potentials(params, data), data, weights)

    @entry_point
    def e_step(self, params: Any, data: Any, weights: Any = None) -> Any:
        """The posterior: marginals ∇_φ A_w (weighted, shaped like the tables) and ℓ(θ).
        Checks and compilation as for `log_likelihood`."""
        return self.exact_e_step(params, data, weights)

    def exact_e_step(self, params: Any, data: Any, weights: Any = None) -> Any:
        """`e_step` without the entry point's checks (the traced E-step the engine calls)."""
        tables = self.log_potentials(params, data)
        value, marginals = jax.value_and_grad(lambda t: self.log_partition(t, data, weights))(tables)
        return self.posterior(marginals, value)

    def q(self, params: Any, posterior: Any, data: Any) -> jax.Array:
        """Q(θ) = ⟨μ, φ(θ)⟩ for a fixed posterior μ (weighted: the weights are in μ)."""
        tables = self.log_potentials(params, data)
        pairs = zip(jax.tree_util.tree_leaves(posterior.tables), jax.tree_util.tree_leaves(tables),
                    strict=True)
        return sum(inner_product(mu, phi) for mu, phi in pairs)

    @entry_point
    def expected_stats(self, params: Any, data: Any, weights: Any = None) -> Any:
        """S = Σ_n w_n E[T(x_n, z_n) | x_n, θ]: the expected sufficient statistics, an
        additive pytree (the statistics of two parts of the data add leaf by leaf to
        those of the whole). For models that define `statistics`."""
        return self.statistics(self.exact_e_step(params, data, weights), data, params)

    # --- unconstrained coordinates ----------------------------------------------------------

    def unconstrain(self, params: Any) -> Any:
        """The parameters in unconstrained coordinates (for standard errors, direct-gradient
        fits and the observed information); the inverse is `constrain`.

        Default: the identity. A structure built from a user's `log_joint` (`jaxem.Mixture`,
        `jaxem.HMM`) takes its parameters to be unconstrained real numbers already (logits,
        log-scales, ...; the user's log_joint maps them to probabilities). They are then
        minimal only if none is redundant: K free logits for K weights, say, leave one
        direction along which the likelihood is flat (a singular Hessian); subclass and
        override both methods to supply a minimal bijection. The ready models
        (`jaxem.models`) override them with their own minimal coordinates."""
        return params

    def constrain(self, coordinates: Any) -> Any:
        """The parameters from their unconstrained coordinates, the inverse of `unconstrain`.
        Default: the identity (see `unconstrain`)."""
        return coordinates

    def statistics(self, posterior: Any, data: Any, params: Any) -> Any:
        """The expected sufficient statistics of `data` under `posterior` (linear in the
        marginals); `params` fixes only the point the statistics are centred at."""
        raise NotImplementedError(
            f"{type(self).__name__} has no expected sufficient statistics; use a ClosedForm or "
            "Gradient M-step."
        )
