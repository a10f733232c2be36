"""`GaussianHMM`: hmmlearn's `hmmlearn.hmm.GaussianHMM` interface on jaxem, plus vmapped restarts.

The model: z_0 ~ π, z_t | z_{t-1} ~ A[z_{t-1}], x_t | z_t = k ~ N(μ_k, Σ_k)
(`jaxem.models.gaussian_hmm` supplies the emission table, the forward–backward
E-step, Viterbi and sampling). The M-step is hmmlearn's, priors included:

    π ∝ max(startprob_prior - 1 + E[#z_0 = k], 0),  A_i ∝ max(transmat_prior - 1 + E[#i -> j], 0)
    μ_k = (w_μ m_μ + Σ_t γ_tk x_t) / (w_μ + n_k),            n_k = Σ_t γ_tk
    diag/spherical: Σ_k = (c + w_μ (μ_k - m_μ)² + Σ_t γ_tk (x_t - μ_k)²) / max(max(w_c - 1, 0) + n_k, 1e-5)
                    (spherical: the mean over features)
    full:  Σ_k = (c + w_μ (μ_k - m_μ)(μ_k - m_μ)ᵀ + Σ_t γ_tk (x_t - μ_k)(x_t - μ_k)ᵀ)
                 / (max(w_c - D, 0) + n_k)
    tied:  the numerators summed over k, over max(w_c - D, 0) + Σ_k n_k

with m_μ = means_prior, w_μ = means_weight, c = covars_prior, w_c = covars_weight
(zeros stay zeros in π and A). Only the parameters whose letters are in
`params` ("s" π, "t" A, "m" μ, "c" Σ) are updated. A full or tied Σ that is not
positive definite (hmmlearn's densities then use Σ + 1e-7 I), or within 1e-10 of
singular, is stored as Σ + 1e-7 I (`jaxem.sklearn._covariances`).

What the HMM faces share (the chain, the fit loop and its mapping onto `jaxem.fit`,
scoring, decoding, sampling) is `jaxem.sklearn._hmm.BaseHMM`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxem.families.gaussian import GaussianFamily
from jaxem.init import LLOYD_ITERATIONS, kmeans_plusplus, lloyd
from jaxem.models.gaussian_hmm import GaussianHMMParams, gaussian_hmm
from jaxem.models.hmm_common import flatten_steps
from jaxem.sklearn import _base
from jaxem.sklearn._covariances import as_hmmlearn_evaluates
from jaxem.sklearn._hmm import BaseHMM, ChainMStep, ConvergenceMonitor, prior

__all__ = ["ConvergenceMonitor", "GaussianHMM"]

COVARIANCE_TYPES = ("spherical", "diag", "full", "tied")


class GaussianHMM(BaseHMM):
    """Hidden Markov model with Gaussian emissions, fitted by Baum–Welch in JAX;
    hmmlearn's `GaussianHMM` interface (0.3), plus `n_init` vmapped restarts.

    Parameters, attributes and methods are hmmlearn's (see its documentation);
    fits started from the same parameters follow hmmlearn's trajectory (the same
    parameters, monitor_.iter and monitor_.history up to float64 rounding).
    Starting values work as in hmmlearn: leave a letter out of `init_params` and
    set the attribute (startprob_, transmat_, means_, covars_) before `fit`.

    What every HMM face does differently from hmmlearn (restarts, float64, the compiled loop,
    `implementation`, `acceleration`, ...) is listed in `jaxem.sklearn._hmm.BaseHMM`; here also:

    - Starting values: covariances as in hmmlearn (the data covariance + min_covar, spread
      over the states); means by k-means++ seeding plus `jaxem.init.LLOYD_ITERATIONS` Lloyd
      iterations with JAX's PRNG (hmmlearn: scikit-learn's KMeans with 10 inits), so they
      differ.
    - A full or tied covariance that its Cholesky factorisation rejects is stored as
      Σ + 1e-7 I, the matrix hmmlearn's densities use in its place (hmmlearn keeps Σ); so is
      one within 1e-10 of singular, where jaxem's float64 densities are unreliable and
      hmmlearn uses Σ itself.

    Attributes (after fit)
    ----------------------
    startprob_ (K,), transmat_ (K, K), means_ (K, D), covars_ (K, D, D) full
    matrices for every covariance type (the stored form, `_covars_`, has
    hmmlearn's per-type shape: spherical (K,), diag (K, D), full (K, D, D),
    tied (D, D)), n_features, monitor_, restart_log_likelihoods_ (n_init,),
    restart_degenerate_ (n_init,).
    (hmmlearn 0.3.3 keeps spherical covariances as (K, D) after a fit, and its
    covars_ then has shape (K·D, D, D); here `_covars_` stays (K,).)
    """

    _params_type = GaussianHMMParams
    _attributes = ("startprob_", "transmat_", "means_", "_covars_")
    _emission_letters = "mc"
    _collapse_hint = "use fewer states, larger covars_prior or min_covar, or rescale the data"

    def __init__(self, n_components=1, covariance_type="diag", min_covar=1e-3,
                 startprob_prior=1.0, transmat_prior=1.0, means_prior=0, means_weight=0,
                 covars_prior=1e-2, covars_weight=1, algorithm="viterbi", random_state=None,
                 n_iter=10, tol=1e-2, verbose=False, params="stmc", init_params="stmc",
                 implementation="log", n_init=1, acceleration=None):
        self.covariance_type = covariance_type
        self.min_covar = min_covar
        self.means_prior = means_prior
        self.means_weight = means_weight
        self.covars_prior = covars_prior
        self.covars_weight = covars_weight
        self._set_chain_settings(n_components, startprob_prior, transmat_prior, algorithm, random_state,
                                 n_iter, tol, verbose, params, init_params, implementation, n_init,
                                 acceleration)

    # --- covariances in hmmlearn's two forms -------------------------------------------------------

    @property
    def covars_(self):
        """Covariances as full matrices (K, D, D), whatever the covariance type."""
        covars = np.asarray(self._covars_)
        k, kind = self.n_components, self.covariance_type
        if kind == "full":
            return covars
        if kind == "tied":
            return np.broadcast_to(covars, (k,) + covars.shape).copy()
        if kind == "diag":
            return np.stack([np.diag(c) for c in covars])
        dim = self.means_.shape[1] if hasattr(self, "means_") else self.n_features
        return np.stack([c * np.eye(dim) for c in np.asarray(covars).reshape(k, -1)[:, 0]])

    @covars_.setter
    def covars_(self, covars):
        covars = np.array(covars, dtype=np.float64, copy=True)
        _check_covars(covars, self.covariance_type, self.n_components)
        if self.covariance_type == "spherical" and covars.ndim > 1:
            # hmmlearn takes any array of K positive entries per state ((K, D) after its fits, or
            # (K, 1, 1, 1)); one variance per state is kept: the mean of the state's entries.
            covars = covars.reshape(len(covars), -1).mean(axis=1)
        self._covars_ = covars

    # --- the hooks of `BaseHMM` ----------------------------------------------------------------------

    def _model(self, algorithm: str | None = None):
        """The jaxem model; its forward–backward is `implementation`'s unless `algorithm` is given.
        Its reg_covar is min_covar, the floor of the face's own M-step (`_GaussianMStep`), which
        the model's degeneracy test (`jaxem.engine.degeneracy`) subtracts."""
        return gaussian_hmm(int(self.n_components), self.covariance_type, reg_covar=float(self.min_covar),
                            algorithm=self._algorithm(algorithm))

    def _m_step(self) -> _GaussianMStep:
        k, d = self.n_components, self.n_features
        covars = {"spherical": (k,), "diag": (k, d), "full": (k, d, d), "tied": (d, d)}[self.covariance_type]
        return _GaussianMStep(self._fitted_letters(), *self._chain_priors(),
                              prior(self.means_prior, "means_prior", (k, d)),
                              prior(self.means_weight, "means_weight", (k, 1)),
                              prior(self.covars_prior, "covars_prior", covars),
                              prior(self.covars_weight, "covars_weight", (k, 1)))

    def _check_scored_X(self, X: np.ndarray) -> None:
        if X.shape[1] != self.means_.shape[1]:
            raise ValueError(f"X: has {X.shape[1]} features, but the model has {self.means_.shape[1]}.")

    def _emission_starts(self, X: np.ndarray) -> dict:
        """Means None (k-means in JAX, `_finish_starts`) or as set; covariances as set or the
        data covariance plus min_covar, spread over the states as hmmlearn does (no draws)."""
        k = self.n_components
        means = None if self._needs_init("m", "means_") else np.asarray(self.means_, np.float64)
        if self._needs_init("c", "_covars_"):
            cov = np.atleast_2d(np.cov(X.T)) + self.min_covar * np.eye(X.shape[1])
            covars = {"spherical": np.full(k, cov.mean()), "tied": cov,
                      "diag": np.tile(np.diag(cov), (k, 1)), "full": np.tile(cov, (k, 1, 1))}
            covars = covars[self.covariance_type]
        else:
            covars = np.asarray(self._covars_, np.float64)
        self._check_emission(GaussianHMMParams(None, None, means, covars))
        return {"means": means, "covariances": covars}

    @staticmethod
    def _finish_starts(model, keys, rows, starts):
        return _kmeans_means(model, keys, rows, starts)

    def _check_emission(self, params: GaussianHMMParams | None = None) -> None:
        """hmmlearn's checks: means (K, n_features) and covariances of the covariance type's
        shape, positive (definite)."""
        k = self.n_components
        means = np.asarray(self.means_) if params is None else params.means
        covars = np.asarray(self._covars_) if params is None else params.covariances
        dim = getattr(self, "n_features", None)
        if means is not None and (means.ndim != 2 or means.shape[0] != k
                                  or (dim is not None and means.shape[1] != dim)):
            raise ValueError(f"means_ must have shape (n_components, n_features) = {(k, dim)}, "
                             f"got {means.shape}")
        if covars is not None:
            _check_covars(covars, self.covariance_type, k)

    def _free_scalars(self) -> dict[str, int]:
        """The number of free scalars of each parameter letter (s π, t A, m μ, c Σ)."""
        k, d = self.n_components, self.n_features
        return {"s": k - 1, "t": k * (k - 1), "m": k * d,
                "c": {"spherical": k, "diag": k * d, "full": k * d * (d + 1) // 2,
                      "tied": d * (d + 1) // 2}[self.covariance_type]}

    def _check_hyperparameters(self) -> None:
        if self.covariance_type not in COVARIANCE_TYPES:
            raise ValueError(
                f"covariance_type must be one of {COVARIANCE_TYPES}, got {self.covariance_type!r}.")
        super()._check_hyperparameters()


# --- the M-step ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _GaussianMStep(ChainMStep):
    """hmmlearn's Gaussian M-step with its priors (module docstring), after the chain's
    (`ChainMStep`); it reads K and the covariance type from the model it is given."""

    means_prior: Any
    means_weight: Any
    covars_prior: Any
    covars_weight: Any

    def update_emission(self, model, params: GaussianHMMParams, posterior, data) -> GaussianHMMParams:
        initial, transition, means, covariances = params
        if "m" not in self.letters and "c" not in self.letters:
            return GaussianHMMParams(initial, transition, means, covariances)
        x, valid, _ = flatten_steps(data)
        gamma = posterior.marginals.reshape(-1, model.num_states)  # 0 on padding
        weights = valid.astype(x.dtype)
        shift = weights @ x / jnp.sum(weights)   # moments about the data mean, for accuracy
        kind = model.covariance_type
        # The Gaussian family's statistics, per feature for diag/spherical, per state for full/tied.
        family = GaussianFamily("full" if kind in ("full", "tied") else "diag")
        stats = family.statistics(gamma, x, jnp.broadcast_to(shift, (model.num_states, x.shape[1])))
        counts, first = stats.counts, stats.first   # n_k and Σ_t γ_tk (x_t - shift)
        mean_prior, mean_weight = jnp.asarray(self.means_prior), jnp.asarray(self.means_weight)
        cov_prior, cov_weight = jnp.asarray(self.covars_prior), jnp.asarray(self.covars_weight)
        if "m" in self.letters:
            total = first + counts[:, None] * shift   # Σ_t γ_tk x_t
            means = (mean_weight * mean_prior + total) / (mean_weight + counts[:, None])
        if "c" in self.letters:
            m = means - shift
            prior_gap = means - mean_prior
            if kind in ("diag", "spherical"):
                scatter = stats.second - 2 * m * first + m * m * counts[:, None]
                numerator = cov_prior + mean_weight * prior_gap**2 + scatter
                covariances = numerator / jnp.maximum(jnp.maximum(cov_weight - 1, 0) + counts[:, None], 1e-5)
                if kind == "spherical":
                    covariances = jnp.mean(covariances, axis=1)
            else:
                cross = jnp.einsum("ki,kj->kij", first, m)
                scatter = (stats.second - cross - jnp.swapaxes(cross, 1, 2)
                           + jnp.einsum("ki,kj->kij", m, m) * counts[:, None, None])
                numerator = mean_weight * jnp.einsum("ki,kj->kij", prior_gap, prior_gap) + scatter
                extra = jnp.maximum(cov_weight - means.shape[1], 0)
                if kind == "full":
                    covariances = (cov_prior + numerator) / (extra + counts[:, None, None])
                else:
                    covariances = (cov_prior + jnp.sum(numerator, axis=0)) / (extra + jnp.sum(counts))
                covariances = as_hmmlearn_evaluates(covariances)
        return GaussianHMMParams(initial, transition, means, covariances)


# --- starting means in JAX ---------------------------------------------------------------------------


def _kmeans_means(model, keys, rows, starts: GaussianHMMParams) -> GaussianHMMParams:
    """Every restart's start (leading axis R): `starts`, with the means drawn by k-means on the
    data rows (N, D) (k-means++ seeding from each key, then Lloyd iterations) where they are None."""
    if starts.means is not None:
        return starts
    k = model.num_states
    means = jax.vmap(lambda key: lloyd(rows, kmeans_plusplus(key, rows, k), LLOYD_ITERATIONS))(keys)
    return starts._replace(means=means)


# --- NumPy checks --------------------------------------------------------------------------------


def _check_covars(covars: np.ndarray, kind: str, k: int) -> None:
    """hmmlearn's checks of user covariances: shape and positive (definite)."""
    if kind in ("spherical", "diag"):
        if (kind == "spherical" and len(covars) != k) or (kind == "diag" and covars.ndim != 2):
            raise ValueError(f"'{kind}' covars: wrong shape {covars.shape}.")
        if np.any(covars <= 0):
            raise ValueError(f"'{kind}' covars must be positive")
        return
    if kind not in ("full", "tied"):
        raise ValueError(f"covariance_type must be one of {COVARIANCE_TYPES}, got {kind!r}.")
    matrices = covars if kind == "full" else covars[None]
    if matrices.ndim != 3 or matrices.shape[1] != matrices.shape[2]:
        raise ValueError(f"'{kind}' covars: wrong shape {covars.shape}.")
    for matrix in matrices:
        if not _base.is_symmetric_positive_definite(matrix):
            raise ValueError(f"'{kind}' covars must be symmetric, positive-definite")
