"""The observed information and standard errors at a fitted θ̂.

In the model's unconstrained coordinates u (`jaxem.inference.coordinates`),

    I(û) = −∇²_u ℓ(θ(u)) at û = unconstrain(θ̂),

by automatic differentiation (forward over reverse), where ℓ is the objective the
fit maximised: the log-likelihood plus the model's own prior, if any (then the
curvature is the posterior's, Laplace's approximation). The asymptotic covariance
of û is I⁻¹ and, by the delta method, that of θ̂ = θ(û) is J I⁻¹ Jᵀ with
J = ∂θ/∂u, so every entry of θ gets a standard error, including those fixed by a
constraint (the last mixture weight: SE(π_K) = SE(1 − Σ_{k<K} π_k)).

Cross-checks in the tests: Louis' identity (I = E[−∇² log p(x, z)] − Cov[∇ log
p(x, z)] under the posterior) and Meng & Rubin's SEM (I = I_oc (I − DM), DM the
Jacobian of the EM map), the closed form of Dempster, Laird & Rubin's linkage
model, and finite differences of the Hasselblad Poisson mixture's likelihood.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jaxem.inference.coordinates import (
    constrain,
    coordinate_names,
    free_coordinates,
    objective,
    substitute,
    unconstrain,
)
from jaxem.validation import check_model_data, check_model_params, check_weights

__all__ = ["InformationWarning", "observed_information", "standard_errors"]

# Eigenvalues of I below this fraction of the largest count as zero (singular directions).
RELATIVE_EIGENVALUE_FLOOR = 1e-10


class InformationWarning(RuntimeWarning):
    """The information is singular or indefinite: some standard errors are NaN (the message
    says which parameters and why)."""


def observed_information(model: Any, data: Any, params: Any, *, weights: Any = None,
                         log_prior: Callable | None = None) -> jax.Array:
    """−∇²ℓ at `params` in the model's unconstrained coordinates: a (P, P) matrix.

    Args:
      model, data, weights, log_prior: as for `jaxem.fit` (the objective includes
        `log_prior`, else the model's own prior).
      params: the fitted parameters θ̂ (e.g. `fit(...).params`).

    Returns:
      The matrix over the free coordinates of u = model.unconstrain(params)
      (the identity for a custom model), in the order of
      `jax.flatten_util.ravel_pytree(u)`, leaving out coordinates that are not
      finite (structural zeros, held fixed). At a strict local maximum it is
      symmetric positive definite. Jittable when `params` are traced only if every
      coordinate is finite; called on concrete arrays it checks its inputs first.
    """
    _check(model, data, params, weights)
    u = unconstrain(model, params)
    flat, _ = ravel_pytree(u)
    free = free_coordinates(flat)
    return _information(model, data, weights, u, free, log_prior)


def standard_errors(model: Any, data: Any, params: Any, *, weights: Any = None,
                    log_prior: Callable | None = None) -> Any:
    """Standard errors of every entry of `params`: a pytree shaped like `params`.

    sqrt(diag(J I⁻¹ Jᵀ)) with I the observed information in unconstrained
    coordinates and J = ∂θ/∂u (the delta method; module docstring). Entries held
    by a structural zero get 0.

    When I is not positive definite the fit is not at a strict maximum, and an
    `InformationWarning` names the parameters concerned and says why:
    - a negative eigenvalue: `params` is not a maximum (a saddle point or a fit
      stopped early; fit to convergence, with a small `tol`);
    - an eigenvalue that is zero to 1e-10 of the largest: the data do not
      determine some combination of parameters (a collapsed component, a
      parameter the likelihood ignores).
    Exactly the entries of θ that depend on those directions get NaN; the others
    are computed in the remaining subspace.

    Not jittable (it inspects the eigenvalues and may warn); `observed_information`
    is.
    """
    _check(model, data, params, weights)
    u = unconstrain(model, params)
    flat, unravel_u = ravel_pytree(u)
    free = free_coordinates(flat)
    information = np.asarray(_information(model, data, weights, u, free, log_prior), dtype=np.float64)
    jacobian = np.asarray(_jacobian(model, u, free), dtype=np.float64)   # (entries of θ, free)
    _, unravel_params = ravel_pytree(params)
    if not np.all(np.isfinite(information)):
        raise ValueError("params: the observed information is not finite there (a log-density of "
                         "-inf or NaN at these parameters); pass the parameters of a finite fit.")

    eigenvalues, vectors = np.linalg.eigh(0.5 * (information + information.T))
    scale = max(float(np.max(np.abs(eigenvalues))), np.finfo(np.float64).tiny)
    good = eigenvalues > RELATIVE_EIGENVALUE_FLOOR * scale
    covariance = (vectors[:, good] / eigenvalues[good]) @ vectors[:, good].T
    variances = np.einsum("ij,jk,ik->i", jacobian, covariance, jacobian)
    errors = np.sqrt(np.maximum(variances, 0.0))
    if not np.all(good):
        bad = vectors[:, ~good]
        exposure = np.linalg.norm(jacobian @ bad, axis=1)
        affected = exposure > 1e-8 * np.maximum(np.linalg.norm(jacobian, axis=1), 1e-300)
        errors[affected] = np.nan
        _warn(eigenvalues, good, scale, bad, np.asarray(free), u, params, affected)
    dtype = jnp.result_type(flat)
    return unravel_params(jnp.asarray(errors, dtype))


def _warn(eigenvalues, good, scale, bad, free, u, params, affected) -> None:
    names = np.array(coordinate_names(u))[free]
    involved = sorted({str(names[i]) for i in np.nonzero(np.abs(bad).max(axis=1) > 0.1)[0]})
    negative = int(np.sum(eigenvalues < -RELATIVE_EIGENVALUE_FLOOR * scale))
    nan_entries = [n for n, a in zip(coordinate_names(params), affected, strict=True) if a]
    if negative:
        why = (f"it has {negative} negative eigenvalue(s), so these parameters are not at a "
               "maximum (a saddle point, or a fit stopped early: fit to convergence with a small tol)")
    else:
        why = ("it is singular: the data do not determine these parameters (a collapsed component, "
               "or a parameter the likelihood does not depend on)")
    warnings.warn(
        f"standard_errors: the observed information is not positive definite; {why}. Directions "
        f"involved (unconstrained coordinates): {', '.join(involved)}. Standard errors set to NaN "
        f"for: {', '.join(nan_entries)}.",
        InformationWarning, stacklevel=3,
    )


def _check(model, data, params, weights) -> None:
    check_model_data(model, data)
    check_model_params(model, params, data)
    shape = getattr(model, "weights_shape", None)
    if weights is not None and shape is not None:
        check_weights(weights, shape(data))


@functools.partial(jax.jit, static_argnums=(5,))
def _information(model, data, weights, u, free, log_prior):
    start, fill = substitute(u, free)
    def value(v):
        return objective(model, log_prior, constrain(model, fill(v)), data, weights)

    return -jax.hessian(value)(start)


@jax.jit
def _jacobian(model, u, free):
    start, fill = substitute(u, free)
    return jax.jacfwd(lambda v: ravel_pytree(constrain(model, fill(v)))[0])(start)
