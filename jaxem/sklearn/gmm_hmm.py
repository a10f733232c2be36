"""`GMMHMM`: hmmlearn's `hmmlearn.hmm.GMMHMM` interface on jaxem, plus vmapped restarts.

The model: z_0 ~ π, z_t | z_{t-1} ~ A[z_{t-1}], x_t | z_t = k ~ Σ_m w_km N(μ_km, Σ_km), a
mixture of M = n_mix Gaussians per state (`jaxem.models.gmm_hmm` supplies the emission table,
the component responsibilities r_tkm = γ_tk p(m | x_t, z_t = k), the forward–backward E-step,
Viterbi and sampling). Covariance shapes are hmmlearn's: spherical (K, M), diag (K, M, D),
full (K, M, D, D), tied (K, D, D) (one per state, shared by its components).

The M-step is hmmlearn's, priors included, so that a fit follows hmmlearn's trajectory. With
n_km = Σ_t r_tkm, n_k = Σ_t γ_tk, α = weights_prior, m_μ = means_prior, λ = means_weight,
and the scatter S_km = Σ_t r_tkm (x_t - μ_km)(x_t - μ_km)ᵀ about the E-step's means μ_km
(hmmlearn's; not about the new means, so this is a generalized EM step):

    w_km = (n_km + α_km - 1) / (n_k + Σ_m (α_km - 1))                               ("w")
    μ'_km = (λ_km m_μ,km + Σ_t r_tkm x_t) / (n_km + λ_km)                           ("m")
    full:      Σ_km = (Ψ_kmᵀ + λ_km (μ'_km - m_μ)(...)ᵀ + S_km) / (n_km + ν_km + D + 2)  ("c")
    diag:      Σ_kmd = (λ_km (μ'_kmd - m_μ)² + 2 β_kmd + S_kmdd) / (n_km + 1 + 2 (a_kmd + 1))
    spherical: σ²_km = (λ_km |μ'_km - m_μ|² + 2 β_km + tr S_km) / (D (n_km + 1) + 2 (a_km + 1))
    tied:      Σ_k = (Σ_m λ_km (μ'_km - m_μ)(...)ᵀ + Ψ_kᵀ + Σ_m S_km) / (n_k + M + ν_k + D + 1)

with covars_prior (Ψ full/tied, a diag/spherical) and covars_weight (ν full/tied, β
diag/spherical) defaulting, when None, to hmmlearn's: full Ψ = 0, ν = -(D + 2); tied Ψ = 0,
ν = -(M + D + 1); diag a = -1.5, β = 0; spherical a = -(M + 2)/2, β = 0 (maximum likelihood
for full, tied and diag). π and A as in `jaxem.sklearn._hmm`. Where a denominator is not
positive (a component with no expected points and no prior mass) the parameter keeps its value
(hmmlearn: NaN or ±inf). A full or tied Σ that is not positive definite, or within 1e-10 of
singular, is stored as Σ + 1e-7 I, as `GaussianHMM` does (`jaxem.sklearn._covariances`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
import numpy as np
from sklearn.cluster import KMeans
from sklearn.utils import check_random_state

from jaxem.models.gmm_hmm import GMMHMMParams, gmm_hmm
from jaxem.models.hmm_common import flatten_steps
from jaxem.sklearn import _base
from jaxem.sklearn._covariances import as_hmmlearn_evaluates
from jaxem.sklearn._hmm import BaseHMM, ChainMStep, freeze, prior
from jaxem.sklearn.gaussian_hmm import COVARIANCE_TYPES

__all__ = ["GMMHMM"]


class GMMHMM(BaseHMM):
    """Hidden Markov model with a Gaussian-mixture emission per state, fitted by Baum–Welch in
    JAX; hmmlearn's `GMMHMM` interface (0.3), plus `n_init` vmapped restarts and
    `acceleration`.

    Parameters, attributes and methods are hmmlearn's; fits started from the same parameters
    follow hmmlearn's trajectory, and the starting means are hmmlearn's for the same
    `random_state` (scikit-learn's KMeans over all rows into K clusters, then into M within
    each; a cluster with fewer than M rows gets M draws around the clusters' mean centroid,
    here from `random_state`, in hmmlearn from NumPy's global generator). What every HMM face
    does differently from hmmlearn is listed in `jaxem.sklearn._hmm.BaseHMM`; here also:
    covars_prior and covars_weight left None stay None (hmmlearn replaces them by their
    defaults on the estimator); parameters whose M-step denominator is not positive keep
    their values (module docstring); `aic` and `bic` count K (M - 1) free weights (hmmlearn
    0.3 counts M - 1, so its criteria are lower by 2 (K - 1)(M - 1) and (K - 1)(M - 1) log N).

    Attributes (after fit): startprob_ (K,), transmat_ (K, K), weights_ (K, M), means_
    (K, M, D), covars_ (hmmlearn's shape for covariance_type), n_features, monitor_,
    restart_log_likelihoods_ (n_init,), restart_degenerate_ (n_init,): degenerate restarts
    (a component on fewer points than its covariance needs, or with a numerically singular
    covariance, `jaxem.engine.degeneracy`) are passed over for the best non-degenerate one.
    """

    _params_type = GMMHMMParams
    _attributes = ("startprob_", "transmat_", "weights_", "means_", "covars_")
    _emission_letters = "mcw"
    _noun = "mixture component"   # degeneracy reports number them k·n_mix + m (state k, component m)
    _remedy = "a larger covars_prior"
    _collapse_hint = "use fewer states or mixture components, or rescale the data"

    def __init__(self, n_components=1, n_mix=1, min_covar=1e-3, startprob_prior=1.0, transmat_prior=1.0,
                 weights_prior=1.0, means_prior=0.0, means_weight=0.0, covars_prior=None,
                 covars_weight=None, algorithm="viterbi", covariance_type="diag", random_state=None,
                 n_iter=10, tol=1e-2, verbose=False, params="stmcw", init_params="stmcw",
                 implementation="log", n_init=1, acceleration=None):
        self.n_mix = n_mix
        self.min_covar = min_covar
        self.weights_prior = weights_prior
        self.means_prior = means_prior
        self.means_weight = means_weight
        self.covars_prior = covars_prior
        self.covars_weight = covars_weight
        self.covariance_type = covariance_type
        self._set_chain_settings(n_components, startprob_prior, transmat_prior, algorithm, random_state,
                                 n_iter, tol, verbose, params, init_params, implementation, n_init,
                                 acceleration)

    # --- the hooks of `BaseHMM` ----------------------------------------------------------------------

    def _model(self, algorithm: str | None = None):
        """The jaxem model, without a covariance floor (hmmlearn's M-step has none), so that the
        degeneracy test (`jaxem.engine.degeneracy`) sees the covariances as fitted."""
        return gmm_hmm(int(self.n_components), int(self.n_mix), self.covariance_type, reg_covar=0.0,
                       algorithm=self._algorithm(algorithm))

    def _m_step(self) -> _GMMMStep:
        return _GMMMStep(self._fitted_letters(), *self._chain_priors(), *self._priors())

    def _priors(self) -> tuple:
        """(weights_prior, means_prior, means_weight, covars_prior, covars_weight) with
        hmmlearn's defaults for the None ones, checked and in its shapes (`_init_covar_priors`,
        `_fix_priors_shape`), frozen; the estimator's settings are left as they are."""
        k, m, d, kind = self.n_components, self.n_mix, self.n_features, self.covariance_type
        default_prior, default_weight = {
            "full": (0.0, -(1.0 + d + 1.0)), "tied": (0.0, -(m + d + 1.0)),
            "diag": (-1.5, 0.0), "spherical": (-(m + 2.0) / 2.0, 0.0)}[kind]
        covars_prior = default_prior if self.covars_prior is None else self.covars_prior
        covars_weight = default_weight if self.covars_weight is None else self.covars_weight
        prior_shape, weight_shape = {
            "full": ((k, m, d, d), (k, m)), "tied": ((k, d, d), (k,)),
            "diag": ((k, m, d), (k, m, d)), "spherical": ((k, m), (k, m))}[kind]
        settings = (("weights_prior", self.weights_prior, (k, m)),
                    ("means_prior", self.means_prior, (k, m, d)),
                    ("means_weight", self.means_weight, (k, m)),
                    ("covars_prior", covars_prior, prior_shape),
                    ("covars_weight", covars_weight, weight_shape))
        return tuple(freeze(np.broadcast_to(np.asarray(prior(value, name, shape)), shape))
                     for name, value, shape in settings)

    def _emission_starts(self, X: np.ndarray) -> dict:
        """hmmlearn's starting values: weights 1/M; means by KMeans (class docstring), drawn for
        each restart; covariances from the data covariance plus min_covar."""
        k, m, d = self.n_components, self.n_mix, self.n_features
        cov = np.atleast_2d(np.cov(X.T)) + self.min_covar * np.eye(d)
        weights = (np.full((k, m), 1.0 / m) if self._needs_init("w", "weights_")
                   else np.asarray(self.weights_, np.float64))
        means = (_means_draw(X, k, m, cov) if self._needs_init("m", "means_")
                 else np.asarray(self.means_, np.float64))
        if self._needs_init("c", "covars_"):
            covars = {"tied": np.broadcast_to(cov, (k, d, d)), "full": np.broadcast_to(cov, (k, m, d, d)),
                      "diag": np.broadcast_to(np.diag(cov), (k, m, d)),
                      "spherical": np.full((k, m), cov.mean())}[self.covariance_type]
        else:
            covars = np.asarray(self.covars_, np.float64)
        self._check_emission(GMMHMMParams(None, None, weights, None if callable(means) else means, covars))
        return {"weights": weights, "means": means, "covariances": np.array(covars)}

    def _check_emission(self, params: GMMHMMParams | None = None) -> None:
        """hmmlearn's checks: weights_ (K, M) with rows summing to 1, means_ (K, M, n_features),
        covars_ of the covariance type's shape, non-negative (diag, spherical) or symmetric
        positive semi-definite (full, tied)."""
        k, m = self.n_components, self.n_mix
        weights, means, covars = ((self.weights_, self.means_, self.covars_) if params is None
                                  else params[2:])
        if means is not None and getattr(self, "n_features", None) is None:
            self.n_features = np.shape(means)[-1]
        d = self.n_features
        if weights is not None:
            weights = np.asarray(weights)
            if weights.shape != (k, m):
                raise ValueError(f"weights_ must have shape (n_components, n_mix), actual shape: "
                                 f"{weights.shape}")
            _base.check_rows_sum_to_one(weights, "weights_")
        if means is not None and np.shape(means) != (k, m, d):
            raise ValueError(f"means_ must have shape (n_components, n_mix, n_features), actual shape: "
                             f"{np.shape(means)}")
        if covars is not None:
            _check_mixture_covars(np.asarray(covars), self.covariance_type, k, m, d)

    def _free_scalars(self) -> dict[str, int]:
        k, m, d = self.n_components, self.n_mix, self.n_features
        return {"s": k - 1, "t": k * (k - 1), "m": k * m * d,
                "c": {"spherical": k * m, "diag": k * m * d, "full": k * m * d * (d + 1) // 2,
                      "tied": k * d * (d + 1) // 2}[self.covariance_type],
                "w": k * (m - 1)}   # hmmlearn 0.3 counts m - 1: its aic and bic are lower

    def _check_hyperparameters(self) -> None:
        if self.covariance_type not in COVARIANCE_TYPES:
            raise ValueError(
                f"covariance_type must be one of {COVARIANCE_TYPES}, got {self.covariance_type!r}.")
        _base.check_int(self.n_mix, "n_mix", 1)
        super()._check_hyperparameters()

    def _check(self):
        self._check_hyperparameters()
        super()._check()


def _means_draw(X, k, m, cov):
    """The drawing function of the starting means (K, M, D) (`GMMHMM._emission_starts`)."""
    return lambda random_state: _kmeans_means(X, k, m, cov, random_state)


def _kmeans_means(X: np.ndarray, k: int, m: int, cov: np.ndarray, random_state) -> np.ndarray:
    """hmmlearn's starting means: scikit-learn's KMeans (n_init=10, seeded by `random_state`)
    clusters X into k; each cluster's rows into m (a cluster of fewer than m rows: m draws from
    N(mean of the k centroids, cov))."""
    main = KMeans(n_clusters=k, random_state=random_state, n_init=10)
    labels = main.fit_predict(X)
    centroid = main.cluster_centers_.mean(axis=0)
    draws = check_random_state(random_state)   # one generator for every small cluster's draws
    means = []
    for label in range(k):
        rows = X[labels == label]
        if rows.shape[0] >= m:
            within = KMeans(n_clusters=m, random_state=random_state, n_init=10).fit(rows)
            means.append(within.cluster_centers_)
        else:
            means.append(draws.multivariate_normal(centroid, cov, size=m))
    return np.stack(means)


def _check_mixture_covars(covars: np.ndarray, kind: str, k: int, m: int, d: int) -> None:
    shape = {"spherical": (k, m), "tied": (k, d, d), "diag": (k, m, d), "full": (k, m, d, d)}[kind]
    if covars.shape != shape:
        raise ValueError(f"{kind!r} mixture covars must have shape {shape}, actual shape: {covars.shape}")
    if kind in ("spherical", "diag"):
        if np.any(covars < 0):
            raise ValueError(f"{kind!r} mixture covars must be non-negative")
        return
    for index in np.ndindex(covars.shape[:-2]):
        matrix = covars[index]
        where = f"state #{index[0]}" + (f", mixture #{index[1]}" if len(index) > 1 else "")
        if not np.allclose(matrix, matrix.T):
            raise ValueError(f"Covariance of {where} is not symmetric")
        if np.linalg.eigvalsh(matrix).min() < 0:
            raise ValueError(f"Covariance of {where} is not positive definite")


@dataclasses.dataclass(frozen=True)
class _GMMMStep(ChainMStep):
    """hmmlearn's GMM-HMM M-step with its priors (module docstring), after the chain's; prior
    values in hmmlearn's shapes (`GMMHMM._priors`)."""

    weights_prior: Any
    means_prior: Any
    means_weight: Any
    covars_prior: Any
    covars_weight: Any

    def update_emission(self, model, params: GMMHMMParams, posterior, data) -> GMMHMMParams:
        if not set(self.letters) & set("wmc"):
            return params
        x, valid, _ = flatten_steps(data)
        gamma = posterior.marginals.reshape(-1, model.num_states)   # 0 on padding
        resp = model.responsibilities(gamma, data, params)         # r_tkm (N, K, M)
        real = valid.astype(x.dtype)
        shift = real @ x / jnp.sum(real)                            # moments about the data mean
        xc = x - shift
        n_km, n_k = jnp.sum(resp, axis=0), jnp.sum(gamma, axis=0)
        first = jnp.einsum("nkm,nd->kmd", resp, xc)                 # Σ_t r_tkm (x_t - c)
        weights, means, covariances = params.weights, params.means, params.covariances
        alpha = jnp.asarray(self.weights_prior) - 1.0
        if "w" in self.letters:
            denominator = (n_k + jnp.sum(alpha, axis=1))[:, None]
            positive = denominator > 0
            weights = jnp.where(positive, (n_km + alpha) / jnp.where(positive, denominator, 1.0), weights)
        mean_prior, mean_weight = jnp.asarray(self.means_prior), jnp.asarray(self.means_weight)
        if "m" in self.letters:
            numerator = mean_weight[..., None] * mean_prior + first + n_km[..., None] * shift
            denominator = n_km + mean_weight
            unused = (weights == 0) & jnp.all(numerator == 0, axis=-1)
            denominator = jnp.where(unused, 1.0, denominator)
            means = jnp.where(denominator[..., None] > 0,
                              numerator / jnp.where(denominator > 0, denominator, 1.0)[..., None], means)
        if "c" in self.letters:
            covariances = self._covariances(model, params, resp, xc, shift, first, n_km, n_k, means)
        return params._replace(weights=weights, means=means, covariances=covariances)

    def _covariances(self, model, params, resp, xc, shift, first, n_km, n_k, means):
        """The covariance update of the module docstring; S_km about the E-step's means."""
        kind, d, m = model.covariance_type, xc.shape[1], model.num_mix
        old = params.means - shift                                    # μ_km - c
        gap = means - jnp.asarray(self.means_prior)                   # μ'_km - m_μ
        lam = jnp.asarray(self.means_weight)
        prior, weight = jnp.asarray(self.covars_prior), jnp.asarray(self.covars_weight)
        if kind in ("diag", "spherical"):
            second = jnp.einsum("nkm,nd->kmd", resp, xc * xc)
            scatter = second - 2 * old * first + n_km[..., None] * old * old          # diag of S_km
            if kind == "diag":
                numerator = lam[..., None] * gap**2 + 2 * weight + scatter
                denominator = n_km[..., None] + 1 + 2 * (prior + 1)
            else:
                numerator = lam * jnp.sum(gap**2, axis=-1) + 2 * weight + jnp.sum(scatter, axis=-1)
                denominator = d * (n_km + 1) + 2 * (prior + 1)
            return jnp.where(denominator > 0, numerator / jnp.where(denominator > 0, denominator, 1.0),
                             params.covariances)
        second = jnp.einsum("nkm,ni,nj->kmij", resp, xc, xc)
        cross = jnp.einsum("kmi,kmj->kmij", first, old)
        scatter = (second - cross - jnp.swapaxes(cross, -1, -2)
                   + n_km[..., None, None] * jnp.einsum("kmi,kmj->kmij", old, old))   # S_km
        outer = lam[..., None, None] * jnp.einsum("kmi,kmj->kmij", gap, gap)
        if kind == "full":
            numerator = jnp.swapaxes(prior, -1, -2) + outer + scatter
            denominator = (n_km + 1 + weight + d + 1)[..., None, None]
        else:
            numerator = jnp.sum(outer, axis=1) + jnp.swapaxes(prior, -1, -2) + jnp.sum(scatter, axis=1)
            denominator = (n_k + m + weight + d + 1)[:, None, None]
        covariances = jnp.where(denominator > 0, numerator / jnp.where(denominator > 0, denominator, 1.0),
                                params.covariances)
        return as_hmmlearn_evaluates(covariances)
