"""Degenerate solutions: components (or HMM states) that only the regularisation holds up.

A Gaussian likelihood is unbounded: a component that shrinks onto one point, or
onto points that share a value in one feature, gains log-likelihood without
limit as a variance goes to zero. With `reg_covar` > 0 the variance stops at
reg_covar, and the fit reports a finite log-likelihood that beats every
meaningful optimum (e.g. -99.2 against -180.19 for a 3-component full mixture
on the iris measurements, where 29 rows share one petal width). Such a
solution is an artefact of the floor, not an answer. mclust, for instance,
refuses a fit whose covariance is numerically singular.

The criterion, per component k (`Degeneracy`, from `model.degeneracy`):

- `few_points`: its expected count n_k is below what its parameters need to be
  determined: D + 1 points for a full covariance (fewer span at most D - 1
  directions), 2 for diag and spherical (one point has no spread), 1 for tied
  (the mean alone is the component's own).
- `singular`: along some direction its own spread, without reg_covar, is at most
  `min_variance_ratio` (default `MIN_VARIANCE_RATIO` = 1e-6) times the data's:
  the smallest eigenvalue of S⁻¹ (Σ_k - reg_covar·I) S⁻¹, with S² the data's
  per-feature variances, is <= the ratio. The test is scale-free. Features on
  which the data themselves are constant are left out: every solution shares
  their zero variance, so they do not single out a spurious one.

`jaxem.fit_restarts` computes it for every restart of a model that has a
`degeneracy` method (the Gaussian mixture and the Gaussian HMM) and never
chooses a degenerate restart as best while a non-degenerate finite one exists;
if every restart is degenerate, the best of them is returned and flagged.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxem.validation import check_hyperparameter

__all__ = ["MIN_VARIANCE_RATIO", "DegenerateSolutionWarning", "Degeneracy", "check_min_variance_ratio",
           "data_variances", "describe"]

MIN_VARIANCE_RATIO = 1e-6


class DegenerateSolutionWarning(UserWarning):
    """The solution reported is degenerate, or degenerate ones with a higher likelihood were
    passed over (the command line and the scikit-learn/hmmlearn faces warn so)."""


class Degeneracy(NamedTuple):
    """Why each component (or state) of a solution is degenerate (module docstring).

    few_points (..., K) bool: fewer expected points than its parameters need;
    singular (..., K) bool: a covariance direction held up only by reg_covar.
    Leading axes are batch axes (R for the restarts of `jaxem.fit_restarts`).
    """

    few_points: jax.Array
    singular: jax.Array

    @property
    def degenerate(self) -> jax.Array:
        """(...,) bool: whether any component is degenerate."""
        return jnp.any(self.few_points | self.singular, axis=-1)


def check_min_variance_ratio(value: Any) -> None:
    """`min_variance_ratio` must be a finite number >= 0."""
    check_hyperparameter(value, "min_variance_ratio", hint=f" (default {MIN_VARIANCE_RATIO})")


def describe(degeneracy: Degeneracy, noun: str = "component") -> str:
    """One solution's degeneracy (leaves of shape (K,)) in words; "" when none."""
    few = np.flatnonzero(np.asarray(degeneracy.few_points))
    singular = np.flatnonzero(np.asarray(degeneracy.singular))
    parts = []
    if singular.size:
        parts.append(f"{noun}(s) {', '.join(map(str, singular))} collapsed: a variance held up only "
                     "by the regularisation floor")
    if few.size:
        parts.append(f"{noun}(s) {', '.join(map(str, few))} with fewer expected points than "
                     "their parameters need")
    return "; ".join(parts)


def data_variances(x: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """The (weighted) variance of each feature of x (N, D): (D,), exactly 0 for a feature
    that is constant up to rounding (standard deviation below 100 eps·|mean|)."""
    if weights is None:
        weights = jnp.ones(x.shape[0], x.dtype)
    weights = weights / jnp.sum(weights)
    mean = weights @ x
    variances = weights @ (x - mean) ** 2
    resolution = (100 * jnp.finfo(x.dtype).eps * mean) ** 2
    return jnp.where(variances > resolution, variances, 0.0)
