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
singular, is stored as Σ + 1e-7 I (`_as_hmmlearn_evaluates`).

How hmmlearn's loop maps onto `jaxem.fit`
-----------------------------------------
hmmlearn's iteration i runs an E-step at θ_i (ℓ_i = log p(X | θ_i)), an M-step to
θ_{i+1}, records ℓ_i and stops when ℓ_i - ℓ_{i-1} < tol or after n_iter
iterations. `jaxem.fit` stops after T M-steps when |ℓ_T - ℓ_{T-1}| < tol'·N; with
tol' = tol / N that is hmmlearn's test at i = T. So the estimator runs
`jaxem.fit_restarts` with at most n_iter - 1 M-steps and then one more M-step:
monitor_.iter = T + 1 and monitor_.history = [ℓ_0, ..., ℓ_T]. hmmlearn's test is
signed (a decrease stops it too): the fit runs with `convergence="gain"`, jaxem's signed
stop rule, and with no prior in the objective (hmmlearn monitors log p(X | θ) alone).

What it shares with `GaussianMixture` (padding, PRNG keys, the float64 context,
the last M-step, sampling) is in `jaxem.sklearn._base`.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import logging
import math
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_array, check_is_fitted

from jaxem.engine.fit import check_acceleration
from jaxem.engine.mstep import MStep
from jaxem.engine.restarts import fit_restarts
from jaxem.families.gaussian import GaussianFamily
from jaxem.init import LLOYD_ITERATIONS, kmeans_plusplus, lloyd
from jaxem.models.gaussian_hmm import GaussianHMMParams, gaussian_hmm
from jaxem.models.hmm_common import dirichlet_map, flatten_steps
from jaxem.sklearn import _base
from jaxem.structures.sequences import Sequences

__all__ = ["ConvergenceMonitor", "GaussianHMM"]

COVARIANCE_TYPES = ("spherical", "diag", "full", "tied")
DECODER_ALGORITHMS = ("viterbi", "map")
IMPLEMENTATIONS = {"log": "log", "scaling": "scaled"}   # hmmlearn's name -> jaxem's algorithm
# Fits pad the time axis of short batches (max length < _EXACT_STEPS) up to one of eight
# lengths per octave (..., 96, 104, 112, 120, 128, 144, ...: at most 12.5% padding), so that few
# shapes compile; longer ones keep their exact length (padding costs more
# than its share there: T=100,000 ran 10 Baum-Welch iterations in 0.25 s, padded to 106,496 in
# 0.32 s and to 131,072 in 0.38 s).
_MIN_STEPS = 16
_EXACT_STEPS = 1024

_log = logging.getLogger(__name__)


class ConvergenceMonitor:
    """hmmlearn's convergence record of a fit: `history` (every iteration's total
    log-likelihood log p(X | θ_i)), `iter` (iterations run), `tol`, `n_iter`, and
    `converged`: True when n_iter iterations ran or the last gain was below tol.

    The fit's convergence test runs inside the compiled EM loop, so replacing
    `monitor_` by a subclass with another `converged` rule does not change when
    a fit stops (it does in hmmlearn).
    """

    _row = "{iter:>10d} {log_prob:>16.8f} {delta:>+16.8f}"

    def __init__(self, tol, n_iter, verbose):
        self.tol = tol
        self.n_iter = n_iter
        self.verbose = verbose
        self.history = collections.deque()
        self.iter = 0

    def __repr__(self):
        fields = sorted(dict(vars(self), history=list(self.history)).items())
        return f"{type(self).__name__}(" + ", ".join(f"{k}={v!r}" for k, v in fields) + ")"

    def _reset(self):
        self.iter = 0
        self.history.clear()

    def _record(self, log_probs) -> None:
        """Take a finished fit's log-likelihoods ℓ_0..ℓ_T (printing them when verbose)."""
        for log_prob in log_probs:
            if self.verbose:
                delta = log_prob - self.history[-1] if self.history else np.nan
                print(self._row.format(iter=self.iter + 1, log_prob=log_prob, delta=delta), file=sys.stderr)
            self.history.append(float(log_prob))
            self.iter += 1

    @property
    def converged(self) -> bool:
        return (self.iter == self.n_iter
                or (len(self.history) >= 2 and self.history[-1] - self.history[-2] < self.tol))


class GaussianHMM(BaseEstimator):
    """Hidden Markov model with Gaussian emissions, fitted by Baum–Welch in JAX;
    hmmlearn's `GaussianHMM` interface (0.3), plus `n_init` vmapped restarts.

    Parameters, attributes and methods are hmmlearn's (see its documentation);
    fits started from the same parameters follow hmmlearn's trajectory (the same
    parameters, monitor_.iter and monitor_.history up to float64 rounding).
    Starting values work as in hmmlearn: leave a letter out of `init_params` and
    set the attribute (startprob_, transmat_, means_, covars_) before `fit`.

    What differs, and why:

    - `n_init` (default 1, not in hmmlearn): restarts from independent draws,
      fitted together in ONE vmapped JAX program (`jaxem.fit_restarts`,
      strategy "exhaustive": each to convergence or n_iter); the one with the
      highest final log-likelihood is kept (first on ties), and every restart's
      final log-likelihood is in `restart_log_likelihoods_`.
    - Starting values: π and each row of A ~ Dirichlet(1/K) drawn with
      `random_state` as in hmmlearn (restart after restart, so with an int seed
      the first restart's π and A are hmmlearn's); covariances as in hmmlearn
      (the data covariance + min_covar, spread over the states); means by
      k-means++ seeding plus `jaxem.init.LLOYD_ITERATIONS` Lloyd iterations with
      JAX's PRNG (hmmlearn: scikit-learn's KMeans with 10 inits), so they differ.
    - `tol` must be >= 0 (hmmlearn also takes negative values). As in hmmlearn a
      fit stops when ℓ_i - ℓ_{i-1} < tol, also when the log-likelihood falls
      (the priors can make it fall); with tol = 0 it stops on a decrease.
    - Everything is float64 (in a `jax.enable_x64` context; the global setting
      is left alone). `verbose` rows are printed after the compiled fit ends.
    - `sample` draws with JAX's PRNG.
    - A full or tied covariance that its Cholesky factorisation rejects is stored as
      Σ + 1e-7 I, the matrix hmmlearn's densities use in its place (hmmlearn keeps Σ); so is
      one within 1e-10 of singular, where jaxem's float64 densities are unreliable and
      hmmlearn uses Σ itself.
    - implementation="scaling" fails (ValueError) where hmmlearn's scaled recursion
      underflows (some step with p(x_t | x_0..x_{t-1}) < 1e-300): in `score`, `score_samples`,
      `predict_proba` and `decode(algorithm="map")`, and in `fit` at the starting or the last
      parameters of every restart (hmmlearn: at any iteration).
    - `implementation`: `fit` always runs jaxem's scaled forward–backward (2.8x faster
      than its log-space one, equal up to rounding); with "log" (the default) a fit whose
      every restart came out non-finite (the scaled recursion underflowed: emissions more
      than ~700 nats below the best state's at some step) is rerun in log space. Scoring,
      decoding and posteriors use `implementation`'s recursion.
    - `acceleration` (default None, not in hmmlearn): "squarem" accelerates each restart
      with SQUAREM (`jaxem.fit(acceleration="squarem")`): the same optima in fewer
      E-steps; monitor_.history and monitor_.iter then hold the accepted SQUAREM
      iterations (each up to three E-steps), not hmmlearn's trajectory.

    Attributes (after fit)
    ----------------------
    startprob_ (K,), transmat_ (K, K), means_ (K, D), covars_ (K, D, D) full
    matrices for every covariance type (the stored form, `_covars_`, has
    hmmlearn's per-type shape: spherical (K,), diag (K, D), full (K, D, D),
    tied (D, D)), n_features, monitor_, restart_log_likelihoods_ (n_init,).
    (hmmlearn 0.3.3 keeps spherical covariances as (K, D) after a fit, and its
    covars_ then has shape (K·D, D, D); here `_covars_` stays (K,).)
    """

    def __init__(self, n_components=1, covariance_type="diag", min_covar=1e-3,
                 startprob_prior=1.0, transmat_prior=1.0, means_prior=0, means_weight=0,
                 covars_prior=1e-2, covars_weight=1, algorithm="viterbi", random_state=None,
                 n_iter=10, tol=1e-2, verbose=False, params="stmc", init_params="stmc",
                 implementation="log", n_init=1, acceleration=None):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.min_covar = min_covar
        self.startprob_prior = startprob_prior
        self.transmat_prior = transmat_prior
        self.means_prior = means_prior
        self.means_weight = means_weight
        self.covars_prior = covars_prior
        self.covars_weight = covars_weight
        self.algorithm = algorithm
        self.random_state = random_state
        self.n_iter = n_iter
        self.tol = tol
        self.verbose = verbose
        self.params = params
        self.init_params = init_params
        self.implementation = implementation
        self.n_init = n_init
        self.acceleration = acceleration
        # hmmlearn creates the monitor with the estimator.
        self.monitor_ = ConvergenceMonitor(self.tol, self.n_iter, self.verbose)

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

    # --- fitting ---------------------------------------------------------------------------------

    def fit(self, X, lengths=None):
        """Estimate the parameters by Baum–Welch from `n_init` starts; X (N, D) holds the
        sequences one after another, `lengths` their lengths (default: one sequence)."""
        self._check_hyperparameters()
        X = check_array(X, dtype=np.float64)
        lengths = _check_lengths(lengths, X.shape[0])
        self._set_n_features(X)
        self._warn_if_degenerate(X)
        random_state = check_random_state(self.random_state)
        starts = self._starting_values(X, random_state)
        model = self._model()
        priors = [_freeze(getattr(self, name)) for name in (
            "startprob_prior", "transmat_prior", "means_prior", "means_weight", "covars_prior",
            "covars_weight")]
        letters = "".join(sorted(set(self.params) & set("stmc")))
        m_step = _HmmlearnMStep(letters, *priors)
        keys = jax.random.split(_base.jax_key(random_state), int(self.n_init))
        # Per-step tolerance of jaxem.fit (|Δ| < tol'·N); tol = 0 becomes the smallest positive one,
        # so that a decrease still stops the fit as in hmmlearn.
        tol_per_step = max(float(self.tol) / int(lengths.sum()), np.finfo(np.float64).tiny)
        with _base.jax_context():
            rows, data = jnp.asarray(X), _sequences(X, lengths)
            starts = _base.to_jax(starts)
            if self.n_iter == 0:
                start = _starting_points_program(model, keys, rows, starts)
                params, log_probs, restart_ll = _base.take(start, 0), [], np.full(len(keys), np.nan)
            else:
                scaling = self.implementation == "scaling"

                def run(fit_model):
                    params0, restarts, final, last = _fit_program(
                        fit_model, m_step, data, rows, keys, starts, tol_per_step, int(self.n_iter) - 1,
                        self.acceleration)
                    fits = restarts.restarts
                    # hmmlearn's scaled recursion fails where it underflows, at θ_0 or θ_T (the
                    # iterations between are not checked).
                    underflow = (np.asarray(_restarts_underflow_program(fit_model, params0, fits.params,
                                                                        data)) if scaling else False)
                    fits, final, last = _base.to_numpy((fits, final, last))
                    usable = fits.finite & np.isfinite(last) & ~underflow & np.array(
                        [_base.all_finite(_base.take(final, r)) for r in range(len(keys))])
                    degenerate = np.asarray(restarts.degenerate)
                    return (fits, final, last, usable, np.any(underflow), degenerate,
                            restarts.degeneracy_report("state"))

                # The scaled recursion first (faster); the log-space one where it underflowed.
                fits, final, last, usable, underflow, degenerate, reports = run(self._model("scaled"))
                if not usable.any() and model.algorithm == "log":
                    fits, final, last, usable, underflow, degenerate, reports = run(model)
                if not usable.any() and underflow:
                    raise ValueError(_UNDERFLOW)
                if not usable.any():
                    raise ValueError(
                        "GaussianHMM.fit: every restart produced non-finite parameters (typically a "
                        "state collapsed onto one point); use fewer states, larger covars_prior or "
                        "min_covar, or rescale the data.")
                restart_ll = np.where(usable, last, np.nan)
                # The best usable restart (first on ties), a non-degenerate one if there is one.
                preferred = usable & ~degenerate if (usable & ~degenerate).any() else usable
                best = int(np.argmax(np.where(preferred, last, -np.inf)))
                self.restart_degenerate_ = degenerate
                _base.warn_degenerate(degenerate, restart_ll, best, reports, "state")
                params = _base.take(final, best)
                count = int(fits.num_iters[best])
                log_probs = list(fits.history[best, :count]) + [float(last[best])]
        self._set_params(params)
        self.restart_log_likelihoods_ = restart_ll
        self.monitor_ = ConvergenceMonitor(self.tol, self.n_iter, self.verbose)
        self.monitor_._record(log_probs)
        if np.any(self.transmat_.sum(axis=1) == 0):
            _log.warning("Some rows of transmat_ have zero sum because no transition from the state "
                         "was ever observed.")
        return self

    def _init(self, X, lengths=None):
        """hmmlearn's initialisation step on its own: set the values `fit` starts its first
        restart from (π, A, μ, Σ for the letters of `init_params` and the attributes not set;
        the same draws from `random_state` as `fit`), set n_features and log hmmlearn's
        warnings. `lengths` is not used (as in hmmlearn)."""
        del lengths
        self._check_hyperparameters()
        X = check_array(X, dtype=np.float64)
        self._set_n_features(X)
        self._warn_if_degenerate(X)
        random_state = check_random_state(self.random_state)
        starts = self._starting_values(X, random_state)
        keys = jax.random.split(_base.jax_key(random_state), int(self.n_init))
        with _base.jax_context():
            start = _starting_points_program(self._model(), keys, jnp.asarray(X), _base.to_jax(starts))
            self._set_params(_base.take(start, 0))
        return self

    # --- inference -------------------------------------------------------------------------------

    def score(self, X, lengths=None):
        """log p(X) summed over the sequences (a float)."""
        return float(np.sum(self._infer(X, lengths, forward=True)["log_likelihoods"]))

    def score_samples(self, X, lengths=None):
        """(log p(X), posteriors p(z_t = k | X) of shape (N, K))."""
        out = self._infer(X, lengths, forward=True)
        return float(np.sum(out["log_likelihoods"])), out["posteriors"]

    def predict_proba(self, X, lengths=None):
        """Posteriors p(z_t = k | X) of shape (N, K)."""
        return self._infer(X, lengths, forward=True)["posteriors"]

    def decode(self, X, lengths=None, algorithm=None):
        """(log-probability, states (N,)) by "viterbi" (the most probable path; its log p(X, z*))
        or "map" (each step's most probable state; hmmlearn's score: the sum of their
        posteriors)."""
        check_is_fitted(self, "startprob_")
        algorithm = algorithm or self.algorithm
        if algorithm not in DECODER_ALGORITHMS:
            raise ValueError(f"algorithm: expected one of {DECODER_ALGORITHMS}, got {algorithm!r}.")
        out = self._infer(X, lengths, forward=algorithm == "map")
        if algorithm == "viterbi":
            return float(np.sum(out["path_log_probs"])), out["paths"]
        posteriors = out["posteriors"]
        return float(np.max(posteriors, axis=1).sum()), np.argmax(posteriors, axis=1)

    def predict(self, X, lengths=None):
        """The decoded states (N,) by `self.algorithm`."""
        return self.decode(X, lengths)[1]

    def sample(self, n_samples=1, random_state=None, currstate=None):
        """(X (n_samples, D), states (n_samples,)) drawn from the model, starting from state
        `currstate` when given, else from π."""
        check_is_fitted(self, "startprob_")
        n_samples = _base.check_int(n_samples, "n_samples", 1)
        rng = check_random_state(self.random_state if random_state is None else random_state)
        params = self._fitted_params()
        if currstate is not None:
            params = params._replace(initial=np.eye(self.n_components)[int(currstate)])
        return _base.draw(self._model(), _base.jax_key(rng), params, n_samples)

    def get_stationary_distribution(self):
        """The stationary distribution of A: its left eigenvector of eigenvalue 1, normalised."""
        check_is_fitted(self, "transmat_")
        values, vectors = scipy.linalg.eig(self.transmat_.T)
        vector = np.real_if_close(vectors[:, np.argmax(values)])
        return vector / vector.sum()

    def aic(self, X, lengths=None):
        """-2 log p(X) + 2 p, p the number of free parameters (all of π, A, μ, Σ)."""
        return -2 * self.score(X, lengths) + 2 * self._num_free_parameters()

    def bic(self, X, lengths=None):
        """-2 log p(X) + p log N."""
        return -2 * self.score(X, lengths) + self._num_free_parameters() * np.log(len(X))

    # --- helpers ---------------------------------------------------------------------------------

    def _model(self, algorithm: str | None = None):
        """The jaxem model; its forward–backward is `implementation`'s unless `algorithm` is given.
        Its reg_covar is min_covar, the floor of the face's own M-step (`_HmmlearnMStep`), which
        the model's degeneracy test (`jaxem.engine.degeneracy`) subtracts."""
        return gaussian_hmm(int(self.n_components), self.covariance_type, reg_covar=float(self.min_covar),
                            algorithm=algorithm or IMPLEMENTATIONS[self.implementation])

    def _fitted_params(self) -> GaussianHMMParams:
        return GaussianHMMParams(*[np.asarray(value, np.float64) for value in (
            self.startprob_, self.transmat_, self.means_, self._covars_)])

    def _set_params(self, params: GaussianHMMParams) -> None:
        """startprob_, transmat_, means_ and _covars_ from `params`, as writeable NumPy copies."""
        self.startprob_, self.transmat_, self.means_, self._covars_ = [
            np.array(value, dtype=np.float64) for value in params]

    def _set_n_features(self, X: np.ndarray) -> None:
        if hasattr(self, "n_features") and self.n_features != X.shape[1]:
            raise ValueError(f"X: has {X.shape[1]} features, but the model has {self.n_features}.")
        self.n_features = X.shape[1]

    def _free_scalars(self) -> dict[str, int]:
        """The number of free scalars of each parameter letter (s π, t A, m μ, c Σ)."""
        k, d = self.n_components, self.n_features
        return {"s": k - 1, "t": k * (k - 1), "m": k * d,
                "c": {"spherical": k, "diag": k * d, "full": k * d * (d + 1) // 2,
                      "tied": d * (d + 1) // 2}[self.covariance_type]}

    def _num_free_parameters(self) -> int:
        return sum(self._free_scalars().values())   # hmmlearn counts every parameter, whatever `params` says

    def _warn_if_degenerate(self, X: np.ndarray) -> None:
        """hmmlearn's warning (logged, as hmmlearn's `_init` does) when X holds fewer values than
        the free scalars of the parameters that `params` fits."""
        per = self._free_scalars()
        fitted = sum(per[letter] for letter in sorted(set(self.params) & set(per)))
        if X.size < fitted:
            _log.warning("Fitting %d free scalar parameters to only %d data values: expect a "
                         "degenerate solution.", fitted, X.size)

    def _infer(self, X, lengths, forward: bool = False):
        """Per-sequence log-likelihoods, posteriors (N, K), Viterbi paths (N,) and their scores.
        With `forward` (the result comes from the forward recursion, which hmmlearn runs
        scaled when implementation="scaling"), ValueError where hmmlearn's scaled recursion
        underflows."""
        check_is_fitted(self, "startprob_")
        self._check_hyperparameters()
        self._check_values(self._fitted_params())
        X = check_array(X, dtype=np.float64)
        if X.shape[1] != self.means_.shape[1]:
            raise ValueError(f"X: has {X.shape[1]} features, but the model has {self.means_.shape[1]}.")
        lengths = _check_lengths(lengths, X.shape[0])
        num_sequences = len(lengths)
        # Padded to a power of two in both directions; the extra sequences (one step each) are
        # scored and dropped, so they change no result.
        batch = _base.padded_size(num_sequences, 1)
        with _base.jax_context():
            data = _sequences(X, np.concatenate([lengths, np.ones(batch - num_sequences, int)]),
                              pad_rows=batch - num_sequences)
            model, params = self._model(), _base.to_jax(self._fitted_params())
            if forward and self.implementation == "scaling" and _underflow_program(model, params, data):
                raise ValueError(_UNDERFLOW)
            out = _base.to_numpy(_infer_program(model, params, data))
        mask = np.asarray(data.mask)[:num_sequences]
        return {
            "log_likelihoods": out["log_likelihoods"][:num_sequences],
            "posteriors": out["posteriors"][:num_sequences][mask],
            "paths": out["paths"][:num_sequences][mask].astype(np.int64),
            "path_log_probs": out["path_log_probs"][:num_sequences],
        }

    def _check_hyperparameters(self) -> None:
        _base.check_int(self.n_components, "n_components", 1)
        if self.covariance_type not in COVARIANCE_TYPES:
            raise ValueError(
                f"covariance_type must be one of {COVARIANCE_TYPES}, got {self.covariance_type!r}.")
        if self.algorithm not in DECODER_ALGORITHMS:
            raise ValueError(f"algorithm: expected one of {DECODER_ALGORITHMS}, got {self.algorithm!r}.")
        if self.implementation not in IMPLEMENTATIONS:
            raise ValueError(f"implementation: expected one of {tuple(IMPLEMENTATIONS)}, "
                             f"got {self.implementation!r}.")
        check_acceleration(self.acceleration)
        for name, low in (("n_iter", 0), ("n_init", 1)):
            _base.check_int(getattr(self, name), name, low)
        if not (isinstance(self.tol, (int, float)) and self.tol >= 0) or math.isnan(self.tol):
            raise ValueError(f"tol: expected a number >= 0, got {self.tol!r}.")

    def _needs_init(self, letter: str, name: str) -> bool:
        if letter in self.init_params:
            if hasattr(self, name):
                _log.warning("Even though the %r attribute is set, it will be overwritten during "
                             "initialization because 'init_params' contains %r", name, letter)
            return True
        return not hasattr(self, name)

    def _starting_values(self, X: np.ndarray, random_state: np.random.RandomState) -> GaussianHMMParams:
        """Every restart's starting π, A and covariances (leading axis n_init), and its means or
        None where k-means draws them. As in hmmlearn, π and the rows of A are drawn from
        Dirichlet(1/K) with `random_state` (restart after restart, so the first restart's draws
        are hmmlearn's), and the covariances are the data covariance plus min_covar."""
        k, n_init = self.n_components, int(self.n_init)
        alpha = np.full(k, 1.0 / k)
        startprob = None if self._needs_init("s", "startprob_") else np.asarray(self.startprob_, np.float64)
        transmat = None if self._needs_init("t", "transmat_") else np.asarray(self.transmat_, np.float64)
        means = None if self._needs_init("m", "means_") else np.asarray(self.means_, np.float64)
        if self._needs_init("c", "_covars_"):
            cov = np.atleast_2d(np.cov(X.T)) + self.min_covar * np.eye(X.shape[1])
            covars = {"spherical": np.full(k, cov.mean()), "tied": cov,
                      "diag": np.tile(np.diag(cov), (k, 1)), "full": np.tile(cov, (k, 1, 1))}
            covars = covars[self.covariance_type]
        else:
            covars = np.asarray(self._covars_, np.float64)
        self._check_values(GaussianHMMParams(startprob, transmat, means, covars), X.shape[1])
        draws = [(random_state.dirichlet(alpha) if startprob is None else startprob,
                  random_state.dirichlet(alpha, size=k) if transmat is None else transmat)
                 for _ in range(n_init)]
        return GaussianHMMParams(
            np.stack([d[0] for d in draws]), np.stack([d[1] for d in draws]),
            None if means is None else np.broadcast_to(means, (n_init,) + means.shape),
            np.broadcast_to(covars, (n_init,) + covars.shape))

    def _check_values(self, params: GaussianHMMParams, dim: int | None = None) -> None:
        """hmmlearn's `_check`: shapes, and π and the rows of A summing to 1."""
        k = self.n_components
        if params.initial is not None:
            if params.initial.shape != (k,):
                raise ValueError("startprob_ must have length n_components")
            if not np.allclose(params.initial.sum(), 1):
                raise ValueError(f"startprob_ must sum to 1 (got {params.initial.sum():.4f})")
        if params.transition is not None:
            if params.transition.shape != (k, k):
                raise ValueError("transmat_ must have shape (n_components, n_components)")
            if not np.allclose(params.transition.sum(axis=1), 1):
                raise ValueError(f"transmat_ rows must sum to 1 (got row sums of {params.transition.sum(1)})")
        if params.means is not None and dim is not None and params.means.shape != (k, dim):
            raise ValueError(f"means_ must have shape (n_components, n_features) = {(k, dim)}, "
                             f"got {params.means.shape}")


# --- the M-step ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _HmmlearnMStep(MStep):
    """hmmlearn's Baum–Welch M-step with its priors (module docstring), an M-step strategy
    (it reads K and the covariance type from the model it is given). Prior values are
    frozen to floats or nested tuples, so equal settings share compiled code."""

    letters: str
    startprob_prior: Any
    transmat_prior: Any
    means_prior: Any
    means_weight: Any
    covars_prior: Any
    covars_weight: Any

    def update(self, model, params: GaussianHMMParams, posterior, data, log_prior) -> GaussianHMMParams:
        del log_prior  # hmmlearn's priors are this M-step's own
        initial, transition, means, covariances = params
        if "s" in self.letters:
            initial = dirichlet_map(posterior.initial_counts, jnp.asarray(self.startprob_prior), initial)
        if "t" in self.letters:
            transition = dirichlet_map(posterior.transition_counts, jnp.asarray(self.transmat_prior),
                                       transition)
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
                covariances = _as_hmmlearn_evaluates(covariances)
        return GaussianHMMParams(initial, transition, means, covariances)


# hmmlearn's fallback for a full or tied covariance whose Cholesky factorisation fails: its
# log-density (`hmmlearn.stats`) factorises Σ + 1e-7 I instead.
_HMMLEARN_CHOLESKY_FALLBACK = 1e-7
# The face applies it also where the factorisation barely succeeds, some pivot L_ii² <= 1e-10 Σ_ii
# (a correlation within 1e-10 of singular): there jaxem's float64 emission densities lose all
# accuracy and, in the compiled fit, can come out non-finite (a state on one point and a
# constant feature gave cond(Σ) ~ 1e13, densities -4.5e15 for hmmlearn's -6.3e17, then NaN).
_BARELY_DEFINITE = 1e-10


def _as_hmmlearn_evaluates(covariances: jax.Array) -> jax.Array:
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


def _no_prior(params: GaussianHMMParams) -> jax.Array:
    """hmmlearn monitors log p(X | θ) alone, whatever its priors: the objective has no prior."""
    return jnp.zeros((), params.means.dtype)


# --- the JAX programs ---------------------------------------------------------------------------


def _starting_points(model, keys, rows, starts: GaussianHMMParams) -> GaussianHMMParams:
    """Every restart's start (leading axis R): `starts`, with the means drawn by k-means on the
    data rows (N, D) (k-means++ seeding from each key, then Lloyd iterations) where they are None."""
    if starts.means is not None:
        return starts
    k = model.num_states
    means = jax.vmap(lambda key: lloyd(rows, kmeans_plusplus(key, rows, k), LLOYD_ITERATIONS))(keys)
    return starts._replace(means=means)


_starting_points_program = jax.jit(_starting_points)


@functools.partial(jax.jit, static_argnums=(1, 7, 8))
def _fit_program(model, m_step, data, rows, keys, starts, tol, em_iters: int, acceleration=None):
    """The whole fit as one vmapped program: (starting points; the `RestartsResult` (its `best`
    dropped) after at most `em_iters` M-steps, stopped by hmmlearn's signed rule
    (`convergence="gain"`) on log p(X | θ_i) alone, with every restart's degeneracy; every
    restart's parameters after one more M-step; every restart's last log-likelihood
    log p(X | θ_T)), each with a leading restart axis R."""
    params0 = _starting_points(model, keys, rows, starts)
    result = fit_restarts(model, data, params0, m_step=m_step, log_prior=_no_prior, max_iter=em_iters,
                          tol=tol, convergence="gain", strategy="exhaustive", acceleration=acceleration)

    final, last = _base.one_more_m_step(model, result.restarts.params, data, m_step)
    return params0, result._replace(best=None), final, last


@jax.jit
def _infer_program(model, params, data):
    paths, path_log_probs = model.viterbi(params, data)
    return {
        "log_likelihoods": model.sequence_log_likelihoods(params, data),
        "posteriors": model.e_step(params, data).marginals,
        "paths": paths,
        "path_log_probs": path_log_probs,
    }


# hmmlearn's scaled forward recursion (implementation="scaling") multiplies the predicted state
# probabilities by the emission densities themselves, exp(log N(x_t | μ_k, Σ_k)), and fails when
# their sum at a step, which is p(x_t | x_0..x_{t-1}), falls below 1e-300. jaxem's scaled recursion
# shifts each step's log-densities by their maximum first and goes on; with
# implementation="scaling" the face fails where hmmlearn's would.
_UNDERFLOW_BOUND = math.log(1e-300)
_UNDERFLOW = ("GaussianHMM: the scaled forward recursion (implementation='scaling') underflows: "
              "some step has p(x_t | x_0..x_{t-1}) < 1e-300; use implementation='log'.")


def _scaling_underflows(model, params: GaussianHMMParams, data: Sequences) -> jax.Array:
    """Whether some real step t of some sequence has log p(x_t | x_0..x_{t-1}, θ) below
    log 1e-300 (or not finite): a forward filter in log space, per sequence (a bool)."""
    initial, transition, emission = model.log_potentials(params, data)   # (K,), (K, K), (B, T, K)

    def sequence(table, real):
        def step(log_filtered, inputs):   # log p(z_{t-1} | x_0..x_{t-1}) -> log p(z_t | x_0..x_t)
            log_b, is_real = inputs
            joint = jax.nn.logsumexp(log_filtered[:, None] + transition, axis=0) + log_b
            log_c = jax.nn.logsumexp(joint)
            return jnp.where(is_real, joint - log_c, log_filtered), jnp.where(is_real, log_c, 0.0)

        joint = initial + table[0]
        log_c0 = jax.nn.logsumexp(joint)
        _, log_cs = jax.lax.scan(step, joint - log_c0, (table[1:], real[1:]))
        # NaN (after a step with p = 0) fails the comparison too.
        return ~(jnp.all(log_cs >= _UNDERFLOW_BOUND) & (log_c0 >= _UNDERFLOW_BOUND))

    return jnp.any(jax.vmap(sequence)(emission, data.mask))


@jax.jit
def _underflow_program(model, params, data):
    return _scaling_underflows(model, params, data)


@jax.jit
def _restarts_underflow_program(model, params0, params1, data):
    """Per restart (R,): whether hmmlearn's scaled recursion underflows at params0 or params1
    (both with a leading restart axis R)."""
    underflows = jax.vmap(_scaling_underflows, in_axes=(None, 0, None))
    return underflows(model, params0, data) | underflows(model, params1, data)


# --- NumPy helpers -------------------------------------------------------------------------------


def _sequences(X: np.ndarray, lengths: np.ndarray, pad_rows: int = 0) -> Sequences:
    """The rows of X split by `lengths` (plus `pad_rows` copies of X's first row, for extra
    one-step sequences) as `Sequences` padded to `_padded_steps` steps. Call inside
    `_base.jax_context()`: the values become JAX arrays here."""
    X = _base.padded_rows(X, X.shape[0] + pad_rows)
    max_length = _padded_steps(int(lengths.max()))
    return Sequences.from_concatenated(X, lengths, max_length=max_length)


def _padded_steps(n: int) -> int:
    """The padded length of sequences of at most n steps (see _EXACT_STEPS)."""
    if n >= _EXACT_STEPS:
        return n
    n = max(n, _MIN_STEPS)
    unit = 1 << max(n.bit_length() - 4, 0)   # 8 steps per octave
    return -(-n // unit) * unit


def _check_lengths(lengths, num_rows: int) -> np.ndarray:
    if lengths is None:
        return np.array([num_rows])
    lengths = np.asarray(lengths)
    if lengths.ndim != 1 or not np.issubdtype(lengths.dtype, np.integer) or lengths.sum() != num_rows \
            or np.any(lengths < 1):
        raise ValueError(f"lengths: expected positive integers summing to the {num_rows} rows of X, "
                         f"got {lengths.tolist()}.")
    return lengths


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


def _freeze(value):
    """A prior as a float or nested tuples of floats (hashable, for a static M-step)."""
    array = np.asarray(value, dtype=np.float64)
    return float(array) if array.ndim == 0 else tuple(_freeze(v) for v in array)
