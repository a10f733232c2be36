"""`GaussianMixture`: scikit-learn's `sklearn.mixture.GaussianMixture` interface on jaxem.

The model is p(x) = Σ_k w_k N(x | μ_k, Σ_k) (`jaxem.models.gaussian_mixture`);
the `n_init` restarts run as ONE vmapped JAX program (`jaxem.fit_restarts`,
strategy "exhaustive"), in float64, from scikit-learn's own starting points
(`jaxem.sklearn._draws`: the same draws from the same `RandomState`). What it shares
with `GaussianHMM` (padding, PRNG keys, the float64 context, the last M-step,
sampling) is in `jaxem.sklearn._base`.

How scikit-learn's loop maps onto `jaxem.fit`
---------------------------------------------
scikit-learn's iteration n (1-based) runs an E-step at θ_{n-1}, which gives
L_{n-1} = ℓ(θ_{n-1}) / N, then an M-step to θ_n, and stops when
|L_{n-1} - L_{n-2}| < tol (L_{-1} = -inf, or the previous `lower_bound_` on a
warm start). It returns θ_n with n_iter_ = n, lower_bound_ = L_{n-1} and
lower_bounds_ = [L_0, ..., L_{n-1}]. `jaxem.fit` stops after T M-steps when
|ℓ(θ_T) - ℓ(θ_{T-1})| < tol·N, which is scikit-learn's test at n = T + 1. So
this estimator runs `jaxem.fit_restarts` with at most max_iter - 1 M-steps
and then one more M-step, θ_{T+1} = M(θ_T); then n_iter_ = T + 1,
lower_bound_ = ℓ(θ_T) / N and lower_bounds_ = history[:T] / N + [ℓ(θ_T) / N].
"""

from __future__ import annotations

import functools
import math
import time
import warnings
from numbers import Integral, Real
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state, check_scalar
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from jaxem.engine.fit import check_acceleration
from jaxem.engine.restarts import fit_restarts
from jaxem.models.gaussian_mixture import GaussianMixtureModel, GaussianMixtureParams, gaussian_mixture
from jaxem.sklearn import _base, _draws

__all__ = ["GaussianMixture"]

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
INIT_PARAMS = ("kmeans", "k-means++", "random", "random_from_data")
_MIN_SCORE_ROWS = 16   # scoring pads N up to a power of two >= this, so few shapes compile

# scikit-learn's message, then jaxem's detail.
_FIT_FAILED = (
    "Fitting the mixture model failed because some components have ill-defined empirical covariance "
    "(for instance caused by singleton or collapsed samples). Try to decrease the number of components, "
    "increase reg_covar, or scale the input data. (jaxem: no restart ended with positive-definite "
    "covariances that the data determine; {detail}.)"
)
_NOT_POSITIVE_DEFINITE = "a covariance is not positive definite"
_NOT_CONVERGED = (
    "Best performing initialization did not converge. Try different init parameters, or increase "
    "max_iter, tol, or check for degenerate data. (jaxem: the best of {restarts} restart(s) did not "
    "converge within max_iter={max_iter} iterations at tol={tol}.)"
)


class GaussianMixture(DensityMixin, BaseEstimator):
    """Gaussian mixture fitted by EM in JAX; a drop-in for `sklearn.mixture.GaussianMixture`.

    The density is p(x) = Σ_k w_k N(x | μ_k, Σ_k), fitted by maximum likelihood
    with `reg_covar` added to the covariance diagonals in every M-step. The
    constructor parameters, fitted attributes, methods, warnings and errors are
    scikit-learn's (1.6 and later); see its documentation for each one. Fits
    started from the same parameters (`weights_init`, `means_init`,
    `precisions_init`) follow scikit-learn's trajectory: the same parameters,
    `n_iter_`, `converged_` and `lower_bounds_` up to float64 rounding.

    What differs, and why:

    - Restarts: the `n_init` starting points are fitted together in ONE vmapped
      JAX program (`jaxem.fit_restarts(strategy="exhaustive")`), so every
      restart runs to convergence or `max_iter` exactly as in scikit-learn's
      loop, and the best one (highest final lower bound, first on ties) is kept.
      The program costs as much as its slowest restart. Every restart's final
      lower bound is kept in `restart_log_likelihoods_`.
    - Initialisation: the starting responsibilities are scikit-learn's, draw for draw
      (`jaxem.sklearn._draws`): the same `RandomState` is drawn from in the same order
      (KMeans' greedy k-means++ seeds and Lloyd iterations to convergence for "kmeans",
      the k-means++ seeds for "k-means++", the uniform table for "random", K distinct
      rows for "random_from_data"), and the arithmetic runs in JAX. So an int
      `random_state` gives scikit-learn's starting points and fit (tested to 1e-12 for
      every `init_params`); the draws differ only where an empty KMeans cluster is
      relocated, or where XLA's rounding moves a draw across a boundary. As in
      scikit-learn, the starting weights are n_k / N (these do not sum to one for
      "k-means++" and "random_from_data", which shifts `lower_bounds_[0]`).
    - Precision: everything is computed in float64 (in a `jax.enable_x64`
      context; JAX's global setting is left alone) and returned as NumPy
      float64, also for float32 input.
    - A restart whose fit breaks down (a covariance that is not positive
      definite, a non-finite log-likelihood) is dropped, and its entry in
      `restart_log_likelihoods_` is NaN; scikit-learn raises at once. The
      `ValueError` comes only when no restart survives.
    - `verbose` messages are printed when the program has finished (the EM loop
      runs inside `lax.while_loop`, with no host round trip per iteration), so
      they carry no per-iteration timings.
    - `sample` draws with JAX's PRNG (seeded from `random_state`), so its samples differ
      from scikit-learn's; as in scikit-learn they come grouped by component.

    Parameters
    ----------
    n_components : int, default=1
        Number of mixture components K.
    covariance_type : {"full", "tied", "diag", "spherical"}, default="full"
        Covariances: full (K, D, D), tied (D, D), diag (K, D) or spherical (K,).
    tol : float, default=1e-3
        Stop when the per-sample mean log-likelihood changes by less than `tol`.
    reg_covar : float, default=1e-6
        Added to the covariance diagonals, so they stay positive definite.
    max_iter : int, default=100
        Number of EM iterations (M-steps) per restart at most.
    n_init : int, default=1
        Number of restarts, fitted at once in one vmapped program.
    init_params : {"kmeans", "k-means++", "random", "random_from_data"}, default="kmeans"
        How the starting responsibilities are drawn (see above).
    weights_init : array of shape (K,), default=None
        Starting weights (on the simplex); overrides the drawn ones.
    means_init : array of shape (K, D), default=None
        Starting means; overrides the drawn ones.
    precisions_init : array, default=None
        Starting precisions (inverse covariances) in the shape of `covariance_type`:
        full (K, D, D), tied (D, D), diag (K, D), spherical (K,).
    random_state : int, RandomState instance or None, default=None
        The initialisation draws from it as scikit-learn does (the same starting points);
        `sample` seeds a JAX PRNG key from it.
    warm_start : bool, default=False
        When True, a second `fit` starts from the fitted parameters (one restart,
        `n_init` ignored) and its first convergence test uses the previous `lower_bound_`.
    verbose : int, default=0
        1: one line per restart; 2 and more: also the lower-bound change every
        `verbose_interval` iterations.
    verbose_interval : int, default=10
        Iterations between progress lines.
    acceleration : {None, "squarem"}, default=None
        jaxem's own: None runs plain EM (scikit-learn's trajectory); "squarem" accelerates
        each restart with SQUAREM (`jaxem.fit(acceleration="squarem")`): the same optima in
        fewer E-steps; `n_iter_` and `lower_bounds_` then count accepted SQUAREM iterations
        (each costs up to three E-steps), so they differ from scikit-learn's.

    Attributes
    ----------
    weights_ : ndarray (K,)
    means_ : ndarray (K, D)
    covariances_ : ndarray, shape as `precisions_init`
    precisions_ : ndarray, the inverses of `covariances_` (same shape)
    precisions_cholesky_ : ndarray, same shape: U with U Uᵀ = Σ⁻¹ and U upper triangular
        (U = L⁻ᵀ for the Cholesky factor L of Σ) for "full" (per component) and "tied";
        1 / sqrt(Σ) for "diag" and "spherical".
    converged_ : bool, whether the best restart met `tol` within `max_iter`.
    n_iter_ : int, EM iterations of the best restart.
    lower_bound_ : float, the best restart's final per-sample mean log-likelihood
        (the one its last convergence test used; -inf when max_iter=0).
    lower_bounds_ : list of float, the best restart's per-sample mean log-likelihood
        at every iteration (its length is `n_iter_`).
    restart_log_likelihoods_ : ndarray (n_init,), every restart's final per-sample mean
        log-likelihood (its `lower_bound_`; NaN for a restart that broke down, -inf when
        max_iter=0); `lower_bound_` is the largest.
    n_features_in_ : int
    feature_names_in_ : ndarray, when X had string column names.
    """

    def __init__(
        self,
        n_components=1,
        *,
        covariance_type="full",
        tol=1e-3,
        reg_covar=1e-6,
        max_iter=100,
        n_init=1,
        init_params="kmeans",
        weights_init=None,
        means_init=None,
        precisions_init=None,
        random_state=None,
        warm_start=False,
        verbose=0,
        verbose_interval=10,
        acceleration=None,
    ):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.acceleration = acceleration

    # --- fitting --------------------------------------------------------------------------------

    def fit(self, X, y=None):
        """Fit the mixture by EM from `n_init` starting points; returns self."""
        del y
        self._fit(X)
        return self

    def fit_predict(self, X, y=None):
        """Fit the mixture to X (N, D), then return the most probable component of each row (N,)."""
        del y
        X = self._fit(X)
        with _base.jax_context():
            _, log_resp = _score_table(self._model(), self._fitted_params(), X)
        return np.argmax(log_resp, axis=1)

    def _fit(self, X) -> np.ndarray:
        """`fit`'s work; returns X as validated (float64)."""
        self._check_hyperparameters()
        X = validate_data(self, X, dtype=np.float64, ensure_min_samples=2)
        num_obs, dim = X.shape
        if num_obs < self.n_components:
            raise ValueError(
                f"n_components={self.n_components} is larger than the number of samples "
                f"n_samples={num_obs}; use at most n_samples components or more data."
            )
        starts = self._check_starting_parameters(dim)
        model = self._model()
        warm = bool(self.warm_start) and hasattr(self, "converged_")
        if warm and self.means_.shape[1] != dim:
            raise ValueError(
                f"warm_start=True: X has {dim} features but the fitted model has "
                f"{self.means_.shape[1]}; refit with warm_start=False."
            )
        began = time.perf_counter()
        if warm:
            given, num_restarts, previous = self._fitted_params(), 1, float(self.lower_bound_)
        else:
            given, num_restarts, previous = GaussianMixtureParams(*starts), int(self.n_init), -math.inf
        if warm or all(leaf is not None for leaf in given):
            num_draws = 0  # scikit-learn draws nothing when every starting parameter is given
        else:
            num_draws = num_restarts
        draws = _draws.draw(check_random_state(self.random_state), num_obs, self.n_components,
                            self.init_params, num_draws)
        with _base.jax_context():
            outcome = _run(model, X, num_restarts, draws, given, self.init_params, self.max_iter,
                           float(self.tol), previous, self.acceleration)
            best = outcome.best
            params = _base.take(outcome.params, best)
            if not outcome.usable[best]:
                raise ValueError(_FIT_FAILED.format(detail=_NOT_POSITIVE_DEFINITE))
            if outcome.degenerate[best] and self.reg_covar == 0 and "collapsed" in outcome.reports[best]:
                # scikit-learn's Cholesky fails on a covariance that reg_covar = 0 leaves singular.
                raise ValueError(_FIT_FAILED.format(detail=outcome.reports[best]))
            if self.verbose:
                self._print_progress(outcome, previous, time.perf_counter() - began)
            self._set_fitted(params)
            self.converged_ = bool(outcome.converged[best])
            self.n_iter_ = int(outcome.n_iter[best])
            self.lower_bounds_ = list(outcome.lower_bounds[best])
            self.lower_bound_ = float(outcome.restart_lower_bounds[best])
            self.restart_log_likelihoods_ = outcome.restart_lower_bounds
            self.restart_degenerate_ = outcome.degenerate
            _base.warn_degenerate(outcome.degenerate, outcome.restart_lower_bounds, best,
                                  outcome.reports, "component")
            if not self.converged_ and self.max_iter > 0:
                warnings.warn(
                    _NOT_CONVERGED.format(restarts=len(outcome.n_iter), max_iter=self.max_iter, tol=self.tol),
                    ConvergenceWarning,
                    stacklevel=3,
                )
        return X

    # --- prediction -----------------------------------------------------------------------------

    def score_samples(self, X):
        """log p(x_n) for each row of X (N, D): an array (N,)."""
        norm, _ = self._score(X)
        return norm

    def score(self, X, y=None):
        """The mean log-likelihood (1/N) Σ_n log p(x_n) of X (N, D), a float."""
        del y
        return float(np.mean(self.score_samples(X)))

    def predict_proba(self, X):
        """Responsibilities p(z_n = k | x_n) for X (N, D): an array (N, K) with rows summing to 1."""
        _, log_resp = self._score(X)
        return np.exp(log_resp)

    def predict(self, X):
        """The most probable component argmax_k p(z_n = k | x_n) of each row of X (N, D): (N,)."""
        _, log_resp = self._score(X)
        return np.argmax(log_resp, axis=1)

    def bic(self, X):
        """Bayesian information criterion -2 ℓ(X) + p log N for X (N, D); lower is better."""
        X = np.asarray(X) if not hasattr(X, "shape") else X
        log_likelihood = self.score(X) * X.shape[0]
        return float(self._model().bic(log_likelihood, X.shape[0], self.means_.shape[1]))

    def aic(self, X):
        """Akaike information criterion -2 ℓ(X) + 2 p for X (N, D); lower is better."""
        X = np.asarray(X) if not hasattr(X, "shape") else X
        log_likelihood = self.score(X) * X.shape[0]
        return float(self._model().aic(log_likelihood, self.means_.shape[1]))

    def _n_parameters(self) -> int:
        """The number of free parameters (scikit-learn's private name, kept for code that calls it)."""
        return int(self._model().num_parameters(self.means_.shape[1]))

    def sample(self, n_samples=1):
        """Draw (X (n_samples, D), y (n_samples,)) from the fitted mixture, grouped by component y."""
        check_is_fitted(self)
        if isinstance(n_samples, Integral) and not isinstance(n_samples, bool) and n_samples < 1:
            raise ValueError(f"Invalid value for 'n_samples': {n_samples} . The sampling requires at "
                             "least one sample.")
        n_samples = _base.check_int(n_samples, "n_samples", 1)
        key = _base.jax_key(check_random_state(self.random_state))
        x, z = _base.draw(self._model(), key, self._fitted_params(), n_samples)
        order = np.argsort(z, kind="stable")
        return x[order], z[order]

    # --- helpers --------------------------------------------------------------------------------

    def _model(self) -> GaussianMixtureModel:
        return gaussian_mixture(int(self.n_components), self.covariance_type, float(self.reg_covar))

    def _fitted_params(self) -> GaussianMixtureParams:
        return GaussianMixtureParams(self.weights_, self.means_, self.covariances_)

    def _score(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return _score_table(self._model(), self._fitted_params(), X)

    def _set_fitted(self, params: GaussianMixtureParams) -> None:
        self.weights_ = params.weights
        self.means_ = params.means
        self.covariances_ = params.covariances
        self.precisions_cholesky_ = _precisions_cholesky(params.covariances, self.covariance_type)
        self.precisions_ = _precisions_from_cholesky(self.precisions_cholesky_, self.covariance_type)

    def _check_hyperparameters(self) -> None:
        check_scalar(self.n_components, "n_components", Integral, min_val=1)
        if self.covariance_type not in COVARIANCE_TYPES:
            raise ValueError(
                f"covariance_type: expected one of {COVARIANCE_TYPES}, got {self.covariance_type!r}."
            )
        for name in ("tol", "reg_covar"):
            value = getattr(self, name)
            check_scalar(value, name, Real, min_val=0.0)
            if math.isnan(value):
                raise ValueError(f"{name}: must be a number >= 0, got nan.")
        check_scalar(self.max_iter, "max_iter", Integral, min_val=0)
        check_scalar(self.n_init, "n_init", Integral, min_val=1)
        if self.init_params not in INIT_PARAMS:
            raise ValueError(f"init_params: expected one of {INIT_PARAMS}, got {self.init_params!r}.")
        if not isinstance(self.warm_start, (bool, np.bool_)):
            raise TypeError(f"warm_start: expected True or False, got {self.warm_start!r}.")
        check_scalar(self.verbose, "verbose", Integral, min_val=0)
        check_scalar(self.verbose_interval, "verbose_interval", Integral, min_val=1)
        check_random_state(self.random_state)
        check_acceleration(self.acceleration)

    def _check_starting_parameters(self, dim: int):
        """(weights, means, covariances) from the *_init arguments, NumPy float64 or None each."""
        k, kind = self.n_components, self.covariance_type
        weights = means = covariances = None
        if self.weights_init is not None:
            weights = check_array(self.weights_init, dtype=np.float64, ensure_2d=False,
                                  input_name="weights_init")
            _check_shape(weights, (k,), "weights", "weights_init")
            if np.any(weights < 0.0) or np.any(weights > 1.0):
                # scikit-learn's message (which swaps min and max), then ours.
                raise ValueError(
                    "The parameter 'weights' should be in the range [0, 1], but got max value "
                    f"{weights.min():.5f}, min value {weights.max():.5f}. (jaxem: every entry of "
                    f"weights_init must be in [0, 1]; its smallest is {weights.min():.5g} and its "
                    f"largest {weights.max():.5g}.)"
                )
            if abs(1.0 - weights.sum()) > 1e-8:
                raise ValueError(
                    f"The parameter 'weights' should be normalized, but got sum(weights) = "
                    f"{weights.sum():.5f}. (jaxem: weights_init must sum to 1, got {weights.sum():.10g}.)"
                )
        if self.means_init is not None:
            means = check_array(self.means_init, dtype=np.float64, ensure_2d=False, input_name="means_init")
            _check_shape(means, (k, dim), "means", "means_init")
        if self.precisions_init is not None:
            precisions = check_array(self.precisions_init, dtype=np.float64, ensure_2d=False,
                                     allow_nd=kind == "full", input_name="precisions_init")
            shape = {"full": (k, dim, dim), "tied": (dim, dim), "diag": (k, dim), "spherical": (k,)}[kind]
            _check_shape(precisions, shape, f"{kind} precision", "precisions_init")
            covariances = _covariances_from_precisions(precisions, kind)
        return weights, means, covariances

    def _print_progress(self, outcome: _Outcome, previous: float, seconds: float) -> None:
        num_restarts = len(outcome.n_iter)
        for r in range(num_restarts):
            print(f"Initialization {r} (of {num_restarts}, fitted together in one program)")
            bounds = [previous] + list(outcome.lower_bounds[r])
            for n in range(1, int(outcome.n_iter[r]) + 1):
                if n % self.verbose_interval == 0:
                    line = f"  Iteration {n}"
                    if self.verbose >= 2 and n < len(bounds):
                        line += f"\t lower bound change {bounds[n] - bounds[n - 1]:.5f}"
                    print(line)
            status = "converged" if outcome.converged[r] else "did not converge"
            line = f"Initialization {r} {status} after {int(outcome.n_iter[r])} iterations."
            if self.verbose >= 2:
                line += f"\t lower bound {outcome.restart_lower_bounds[r]:.5f}."
            print(line)
        if self.verbose >= 2:
            print(f"All {num_restarts} restart(s) took {seconds:.5f}s together.")


# --- the JAX programs ---------------------------------------------------------------------------


class _Outcome(NamedTuple):
    """Every restart's result, in scikit-learn's conventions (NumPy)."""

    params: GaussianMixtureParams      # final parameters, leading axis R
    n_iter: np.ndarray                 # (R,) int
    converged: np.ndarray              # (R,) bool
    usable: np.ndarray                 # (R,) bool: finite, positive-definite result
    degenerate: np.ndarray             # (R,) bool: `jaxem.engine.degeneracy`
    reports: list                      # R strings: why each is degenerate ("" if not)
    lower_bounds: list                 # R lists of per-sample mean log-likelihoods
    restart_lower_bounds: np.ndarray   # (R,) final lower bound (NaN when not usable)
    best: int


def _run(model, X: np.ndarray, num_restarts: int, draws: _draws.Draws, given: GaussianMixtureParams,
         init_params: str, max_iter: int,
         tol: float, previous: float, acceleration: str | None = None) -> _Outcome:
    """Fit one starting point per key with scikit-learn's conventions.

    `given` holds the fixed starting weights, means and covariances (None for
    those drawn by `init_params`). `previous` is the lower bound before the
    first iteration (-inf, or the last `lower_bound_` on a warm start); `acceleration` is
    `jaxem.fit`'s.
    """
    num_obs = X.shape[0]
    with _base.jax_context():
        x = jnp.asarray(X)
        given = _base.to_jax(given)
        if max_iter == 0:
            # No iteration: scikit-learn keeps the last starting point and a lower bound of -inf.
            params = _base.to_numpy(
                _starting_points_program(model, num_restarts, draws, x, given, init_params))
            usable = np.array([_is_usable(_base.take(params, r), model.covariance_type)
                               for r in range(num_restarts)])
            return _Outcome(params, np.zeros(num_restarts, int), np.zeros(num_restarts, bool), usable,
                            np.zeros(num_restarts, bool), [""] * num_restarts,
                            [[] for _ in range(num_restarts)], np.full(num_restarts, -np.inf),
                            num_restarts - 1)
        em_iters = max_iter - 1
        met_at_start = False
        if math.isfinite(previous):
            # Warm start (given = the fitted parameters): scikit-learn's first convergence test
            # compares ℓ(θ_0)/N with the previous lower bound.
            norm, _ = _score_table(model, given, X)
            met_at_start = abs(float(np.mean(norm)) - previous) < tol
            if met_at_start:
                em_iters = 0
        _, restarts, final = _fit_program(model, x, num_restarts, draws, given, tol, init_params, em_iters,
                                               acceleration)
        restarts, final = _base.to_numpy((restarts, final))
    fits, degenerate, reports = restarts.restarts, restarts.degenerate, restarts.degeneracy_report()
    converged = fits.converged | met_at_start
    usable = np.array([bool(fits.finite[r]) and _is_usable(_base.take(final, r), model.covariance_type)
                       for r in range(num_restarts)])
    lower_bounds = [
        list(fits.history[r, : fits.num_iters[r]] / num_obs) + [fits.log_likelihood[r] / num_obs]
        for r in range(num_restarts)
    ]
    restart_lower_bounds = np.where(usable, fits.log_likelihood / num_obs, np.nan)
    best = int(restarts.best_index)
    if not usable[best] and usable.any():
        # The last M-step broke the best restart: take the best usable one (first on ties), a
        # non-degenerate one if there is one.
        best = _base.best_restart(restart_lower_bounds, usable, degenerate)
    return _Outcome(final, fits.num_iters + 1, converged, usable, degenerate, reports, lower_bounds,
                    restart_lower_bounds, best)


@functools.partial(jax.jit, static_argnums=(2, 6, 7, 8))
def _fit_program(model, x, num_restarts: int, draws, given, tol, init_params: str, em_iters: int,
                 acceleration=None):
    """The whole fit as one program: (the starting points, the `RestartsResult` after at most
    `em_iters` M-steps (its `best` dropped), every restart's parameters after one more M-step
    (scikit-learn's last iteration)); each with a leading restart axis R."""
    params0 = _starting_points(model, num_restarts, draws, x, given, init_params)
    result = fit_restarts(model, x, params0, max_iter=em_iters, tol=tol, convergence="absolute",
                          strategy="exhaustive", acceleration=acceleration)
    final, _ = _base.one_more_m_step(model, result.restarts.params, x)
    return params0, result._replace(best=None), final


def _starting_points(model, num_restarts: int, draws: _draws.Draws, x, given: GaussianMixtureParams,
                     init_params: str) -> GaussianMixtureParams:
    """R starting points (leading axis R): an M-step from the responsibilities scikit-learn
    would draw (`jaxem.sklearn._draws`, one restart per row of `draws`) with weights n_k / N
    (scikit-learn's convention), then the `given` pieces (not None) in place of the drawn ones."""
    def from_draws(one):
        resp = _draws.responsibilities(one, x, model.num_components, init_params).astype(x.dtype)
        params = model.from_responsibilities(resp, x)
        counts = jnp.sum(resp, axis=0) + 10 * jnp.finfo(x.dtype).eps
        return params._replace(weights=counts / x.shape[0])

    if any(leaf is None for leaf in given):
        drawn = jax.vmap(from_draws)(draws)
    else:
        drawn = GaussianMixtureParams(None, None, None)
    return GaussianMixtureParams(*[
        jnp.broadcast_to(fixed, (num_restarts,) + fixed.shape) if fixed is not None else leaf
        for fixed, leaf in zip(given, drawn, strict=True)
    ])


_starting_points_program = jax.jit(_starting_points, static_argnums=(1, 5))


@jax.jit
def _log_prob_and_resp(model, params, x):
    """log p(x_n) (N,) and log p(z_n = k | x_n) (N, K) from the log-potential table."""
    table = model.log_potentials(params, x)
    norm = jax.nn.logsumexp(table, axis=1)
    return norm, table - norm[:, None]


def _score_table(model, params: GaussianMixtureParams, X: np.ndarray):
    """`_log_prob_and_resp` on X (N, D) as NumPy; rows are padded (with copies of the first row)
    to a power of two so that few shapes compile."""
    n = X.shape[0]
    padded = _base.padded_rows(X, _base.padded_size(n, _MIN_SCORE_ROWS))
    with _base.jax_context():
        norm, log_resp = _log_prob_and_resp(model, _base.to_jax(params, jnp.float64), jnp.asarray(padded))
        return np.asarray(norm)[:n], np.asarray(log_resp)[:n]


# --- NumPy helpers -------------------------------------------------------------------------------


def _check_shape(array: np.ndarray, shape: tuple, sklearn_name: str, name: str) -> None:
    """scikit-learn's shape message (it names the parameter `sklearn_name`), then ours."""
    if array.shape != shape:
        raise ValueError(f"The parameter '{sklearn_name}' should have the shape of {shape}, but got "
                         f"{array.shape}. (jaxem: {name} must have shape {shape}.)")


def _is_usable(params: GaussianMixtureParams, kind: str) -> bool:
    """Finite parameters whose covariances are positive definite."""
    if not _base.all_finite(params):
        return False
    try:
        _precisions_cholesky(np.asarray(params.covariances), kind)
    except ValueError:
        return False
    return True


def _precisions_cholesky(covariances: np.ndarray, kind: str) -> np.ndarray:
    """scikit-learn's `precisions_cholesky_`: U = L⁻ᵀ (L the Cholesky factor of Σ) for full and
    tied, 1/sqrt(Σ) for diag and spherical. Raises ValueError when Σ is not positive definite."""
    if kind in ("diag", "spherical"):
        if np.any(covariances <= 0.0):
            raise ValueError(_FIT_FAILED.format(detail=_NOT_POSITIVE_DEFINITE))
        return 1.0 / np.sqrt(covariances)
    matrices = covariances if kind == "full" else covariances[None]
    eye = np.eye(matrices.shape[-1])
    factors = []
    for matrix in matrices:
        try:
            lower = np.linalg.cholesky(matrix)
        except np.linalg.LinAlgError as error:
            raise ValueError(_FIT_FAILED.format(detail=_NOT_POSITIVE_DEFINITE)) from error
        factors.append(scipy.linalg.solve_triangular(lower, eye, lower=True).T)
    factors = np.stack(factors)
    return factors if kind == "full" else factors[0]


def _precisions_from_cholesky(factors: np.ndarray, kind: str) -> np.ndarray:
    """Σ⁻¹ = U Uᵀ (full, tied) or U² (diag, spherical)."""
    if kind == "full":
        return np.einsum("kij,klj->kil", factors, factors)
    if kind == "tied":
        return factors @ factors.T
    return factors**2


def _covariances_from_precisions(precisions: np.ndarray, kind: str) -> np.ndarray:
    """Σ = Λ⁻¹ for user precisions Λ, checking that they are symmetric positive definite."""
    if kind in ("diag", "spherical"):
        if np.any(precisions <= 0.0):
            raise ValueError(f"'{kind} precision' should be positive. (jaxem: every entry of "
                             "precisions_init must be > 0.)")
        return 1.0 / precisions
    matrices = precisions if kind == "full" else precisions[None]
    covariances = []
    for matrix in matrices:
        if not _base.is_symmetric_positive_definite(matrix):
            raise ValueError(f"'{kind} precision' should be symmetric, positive-definite. (jaxem: each "
                             f"{kind} matrix of precisions_init must be.)")
        lower = np.linalg.cholesky(matrix)
        inverse_lower = scipy.linalg.solve_triangular(lower, np.eye(len(matrix)), lower=True)
        covariances.append(inverse_lower.T @ inverse_lower)
    covariances = np.stack(covariances)
    return covariances if kind == "full" else covariances[0]
