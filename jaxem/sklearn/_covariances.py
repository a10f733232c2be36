"""hmmlearn's handling of full and tied covariances that its Cholesky factorisation rejects,
shared by the Gaussian faces (`GaussianHMM`, `GMMHMM`): `as_hmmlearn_evaluates`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["as_hmmlearn_evaluates"]

# hmmlearn's fallback for a full or tied covariance whose Cholesky factorisation fails: its
# log-density (`hmmlearn.stats`) factorises Σ + 1e-7 I instead.
_HMMLEARN_CHOLESKY_FALLBACK = 1e-7
# The face applies it also where the factorisation barely succeeds, some pivot L_ii² <= 1e-10 Σ_ii
# (a correlation within 1e-10 of singular): there jaxem's float64 emission densities lose all
# accuracy and, in the compiled fit, can come out non-finite (a state on one point and a
# constant feature gave cond(Σ) ~ 1e13, densities -4.5e15 for hmmlearn's -6.3e17, then NaN).
_BARELY_DEFINITE = 1e-10


def as_hmmlearn_evaluates(covariances: jax.Array) -> jax.Array:
    """Full (K, D, D) or tied (D, D) covariances as hmmlearn's emission densities use them:
    each matrix whose Cholesky factorisation fails (not positive definite: a state collapsed
    onto fewer points than dimensions, or onto a constant feature, where the scalar covars_prior
    adds a rank-one matrix) plus 1e-7 I; so also each one that is within 1e-10 of singular
    (`_BARELY_DEFINITE`); the others unchanged. Stored so, the next E-step is hmmlearn's where
    its factorisation fails (it keeps the indefinite matrix and adds 1e-7 I in every density),
    and the fitted covariances stay positive definite."""
    chol = jnp.linalg.cholesky(covariances)
    pivots = jnp.diagonal(chol, axis1=-2, axis2=-1) ** 2
    variances = jnp.diagonal(covariances, axis1=-2, axis2=-1)
    ok = jnp.all(jnp.isfinite(chol), axis=(-2, -1)) & jnp.all(pivots > _BARELY_DEFINITE * variances,
                                                                 axis=-1)
    eye = jnp.eye(covariances.shape[-1], dtype=covariances.dtype)
    return jnp.where(ok[..., None, None], covariances,
                     covariances + _HMMLEARN_CHOLESKY_FALLBACK * eye)
