"""`BaseHMM`: what hmmlearn's HMM interfaces share on jaxem — the chain (π, A), the fit loop,
scoring, decoding and sampling — for the faces `GaussianHMM`, `CategoricalHMM`, `PoissonHMM`,
`MultinomialHMM` and `GMMHMM`, which add their emission parameters.

The model: z_0 ~ π, z_t | z_{t-1} ~ A[z_{t-1}], x_t | z_t = k ~ the face's emission
(a `jaxem.models` HMM supplies the emission table, the forward–backward E-step, Viterbi and
sampling). The M-step is hmmlearn's, priors included; for the chain (`ChainMStep`)

    π ∝ max(startprob_prior - 1 + E[#z_0 = k], 0),  A_i ∝ max(transmat_prior - 1 + E[#i -> j], 0)

(zeros stay zeros), and for the emissions the face's own (`ChainMStep.update_emission`).
Only the parameters whose letters are in `params` ("s" π, "t" A, then the face's letters)
are updated.

How hmmlearn's loop maps onto `jaxem.fit`
-----------------------------------------
hmmlearn's iteration i runs an E-step at θ_i (ℓ_i = log p(X | θ_i)), an M-step to
θ_{i+1}, records ℓ_i and stops when ℓ_i - ℓ_{i-1} < tol or after n_iter
iterations. `jaxem.fit` stops after T M-steps when ℓ_T - ℓ_{T-1} < tol'·N with
`convergence="gain"` (jaxem's signed rule); with tol' = tol / N that is hmmlearn's test at
i = T. So a face runs `jaxem.fit_restarts` with at most n_iter - 1 M-steps and then one more
M-step: monitor_.iter = T + 1 and monitor_.history = [ℓ_0, ..., ℓ_T], with no prior in the
objective (hmmlearn monitors log p(X | θ) alone).

What a face supplies (hooks, each documented below): its jaxem model (`_model`), the
parameter NamedTuple and the attribute of each field (`_params_type`, `_attributes`), its
data in the model's form (`_check_X`, `_check_and_set_n_features`, `_check_scored_X`,
`_data_rows`), the starting values of its emission parameters (`_emission_starts`;
`_finish_starts` for draws made in JAX), its checks (`_check_emission`), its M-step
(`_m_step`, with its priors checked by `prior`), its free scalars (`_free_scalars`) and its
samples' form (`_sample`). What it shares with `GaussianMixture`
(padding, PRNG keys, the float64 context, the last M-step, sampling) is in
`jaxem.sklearn._base`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from numbers import Integral
from typing import Any, ClassVar

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
from jaxem.models.hmm_common import dirichlet_map
from jaxem.sklearn import _base
from jaxem.sklearn._monitor import ConvergenceMonitor, record
from jaxem.structures.sequences import Sequences

__all__ = ["BaseHMM", "ChainMStep", "ConvergenceMonitor", "ProbabilityTableHMM", "freeze", "prior"]

DECODER_ALGORITHMS = ("viterbi", "map")
IMPLEMENTATIONS = {"log": "log", "scaling": "scaled"}   # hmmlearn's name -> jaxem's algorithm
# Fits pad the time axis of short batches (max length < _EXACT_STEPS) up to one of eight
# lengths per octave (..., 96, 104, 112, 120, 128, 144, ...: at most 12.5% padding), so that few
# shapes compile; longer ones keep their exact length (padding costs more
# than its share there: T=100,000 ran 10 Baum-Welch iterations in 0.25 s, padded to 106,496 in
# 0.32 s and to 131,072 in 0.38 s).
_MIN_STEPS = 16
_EXACT_STEPS = 1024

_log = logging.getLogger("jaxem.sklearn")


class BaseHMM(BaseEstimator):
    """hmmlearn's `BaseHMM` on jaxem: the chain's attributes startprob_ (K,) and transmat_
    (K, K), `fit` (n_init restarts in one vmapped program), `score`, `score_samples`,
    `predict_proba`, `decode`, `predict`, `sample`, `aic`, `bic`,
    `get_stationary_distribution`, hmmlearn's `_init` and `_check` hooks, `monitor_`.
    Subclasses are the faces; each defines `__init__` (scikit-learn reads the hyperparameters
    from its signature) and calls `_set_chain_settings`.

    What every face does differently from hmmlearn, and why:

    - `n_init` (default 1, not in hmmlearn): restarts from independent draws, fitted
      together in ONE vmapped JAX program (`jaxem.fit_restarts`, strategy "exhaustive":
      each to convergence or n_iter); the one with the highest final log-likelihood is kept
      (first on ties; a degenerate one, `jaxem.engine.degeneracy`, only when all are, with a
      `jaxem.DegenerateSolutionWarning`), and every restart's final log-likelihood is in
      `restart_log_likelihoods_`, which were degenerate in `restart_degenerate_`.
    - Starting values: π and each row of A ~ Dirichlet(1/K) drawn with `random_state` as in
      hmmlearn, then the emission parameters, restart after restart, so that with the same
      `random_state` the first restart starts where hmmlearn does (except where a face says
      otherwise).
    - `tol` must be >= 0 (hmmlearn also takes negative values). As in hmmlearn a fit stops
      when ℓ_i - ℓ_{i-1} < tol, also when the log-likelihood falls (the priors can make it
      fall); with tol = 0 it stops on a decrease.
    - The loop runs compiled, so `monitor_` is filled after the fit: `verbose` rows are
      printed then, and a monitor of the user's kind (hmmlearn's protocol) is given every
      iteration's log-likelihood and asked `converged` after each, but does not stop the fit
      (`jaxem.sklearn._monitor`).
    - Everything is float64 (in a `jax.enable_x64` context; the global setting is left
      alone). `sample` draws with JAX's PRNG.
    - implementation="scaling" fails (ValueError) where hmmlearn's scaled recursion
      underflows (some step with p(x_t | x_0..x_{t-1}) < 1e-300): in `score`,
      `score_samples`, `predict_proba` and `decode(algorithm="map")`, and in `fit` at the
      starting or the last parameters of every restart (hmmlearn: at any iteration).
    - `implementation`: `fit` always runs jaxem's scaled forward–backward (2.8x faster than
      its log-space one, equal up to rounding); with "log" (the default) a fit whose every
      restart came out non-finite (the scaled recursion underflowed: emissions more than
      ~700 nats below the best state's at some step) is rerun in log space. Scoring,
      decoding and posteriors use `implementation`'s recursion.
    - A row of transmat_ (or startprob_, or a face's probability table) with no expected
      counts and no prior mass keeps its values (hmmlearn's becomes zeros, with a warning).
    - With implementation="log" and several restarts, a restart whose scaled recursion
      underflowed while others' did not is dropped (NaN in `restart_log_likelihoods_`); only
      when every restart underflowed is the fit rerun in log space.
    - The priors are compiled into the fit program (a static M-step): equal values share it,
      each new value compiles once.
    - `acceleration` (default None, not in hmmlearn): "squarem" accelerates each restart
      with SQUAREM (`jaxem.fit(acceleration="squarem")`): the same optima in fewer E-steps;
      monitor_.history and monitor_.iter then hold the accepted SQUAREM iterations (each up
      to three E-steps), not hmmlearn's trajectory.
    """

    _params_type: ClassVar[type]
    _attributes: ClassVar[tuple[str, ...]]        # the attribute of each field of _params_type
    _emission_letters: ClassVar[str]              # the `params` letters of the emission fields
    _noun: ClassVar[str] = "state"                # what a degenerate restart's report counts
    _remedy: ClassVar[str] = "a larger min_covar"  # the setting that regularises it
    _collapse_hint: ClassVar[str] = "use fewer states or rescale the data"

    def _set_chain_settings(self, n_components, startprob_prior, transmat_prior, algorithm,
                            random_state, n_iter, tol, verbose, params, init_params, implementation,
                            n_init, acceleration):
        self.n_components = n_components
        self.startprob_prior = startprob_prior
        self.transmat_prior = transmat_prior
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

    # --- fitting ---------------------------------------------------------------------------------

    def fit(self, X, lengths=None):
        """Estimate the parameters by Baum–Welch from `n_init` starts; X (N, ...) holds the
        sequences one after another, `lengths` their lengths (default: one sequence)."""
        self._check_hyperparameters()
        X = self._check_X(X)
        lengths = _check_lengths(lengths, X.shape[0])
        self._check_and_set_n_features(X)
        self._warn_if_degenerate(X)
        random_state = check_random_state(self.random_state)
        starts = self._starting_values(X, random_state)
        model = self._model()
        m_step = self._m_step()
        keys = jax.random.split(_base.jax_key(random_state), int(self.n_init))
        # Per-step tolerance of jaxem.fit (Δ < tol'·N); tol = 0 becomes the smallest positive one,
        # so that a decrease still stops the fit as in hmmlearn.
        tol_per_step = max(float(self.tol) / int(lengths.sum()), np.finfo(np.float64).tiny)
        with _base.jax_context():
            rows = self._data_rows(X)
            data, rows = _sequences(rows, lengths), jnp.asarray(rows)
            starts = _base.to_jax(starts)
            if self.n_iter == 0:
                start = _starting_points_program(model, type(self)._finish_starts, keys, rows, starts)
                params, log_probs, restart_ll = _base.take(start, 0), [], np.full(len(keys), np.nan)
                self.restart_degenerate_ = np.zeros(len(keys), bool)
            else:
                params, log_probs, restart_ll = self._fit_restarts(model, m_step, data, rows, keys, starts,
                                                                   tol_per_step)
        self._set_params(params)
        self.restart_log_likelihoods_ = restart_ll
        self.monitor_ = record(self.monitor_, self.tol, self.n_iter, self.verbose, log_probs)
        return self

    def _fit_restarts(self, model, m_step, data, rows, keys, starts, tol_per_step):
        """Fit every restart; (the best restart's parameters, its ℓ_0..ℓ_T, every restart's
        final log-likelihood (NaN where unusable)). Sets restart_degenerate_."""
        scaling = self.implementation == "scaling"

        def run(fit_model):
            params0, restarts, final, last = _fit_program(
                fit_model, m_step, type(self)._finish_starts, data, rows, keys, starts, tol_per_step,
                int(self.n_iter) - 1, self.acceleration)
            fits = restarts.restarts
            # hmmlearn's scaled recursion fails where it underflows, at θ_0 or θ_T (the
            # iterations between are not checked).
            underflow = (np.asarray(_restarts_underflow_program(fit_model, params0, fits.params, data))
                         if scaling else False)
            fits, final, last = _base.to_numpy((fits, final, last))
            usable = fits.finite & np.isfinite(last) & ~underflow & np.array(
                [_base.all_finite(_base.take(final, r)) for r in range(len(keys))])
            # A covariance the fit does not update is the user's: not a degenerate solution.
            degenerate = np.asarray(restarts.degenerate) & ("c" in self._fitted_letters())
            return (fits, final, last, usable, np.any(underflow), degenerate,
                    restarts.degeneracy_report(self._noun))

        # The scaled recursion first (faster); the log-space one where it underflowed.
        fits, final, last, usable, underflow, degenerate, reports = run(self._model("scaled"))
        if not usable.any() and model.algorithm == "log":
            fits, final, last, usable, underflow, degenerate, reports = run(model)
        if not usable.any() and underflow:
            raise ValueError(self._underflow_message())
        if not usable.any():
            raise ValueError(f"{type(self).__name__}.fit: every restart produced non-finite parameters "
                             f"(typically a {self._noun} collapsed onto one point); "
                             f"{self._collapse_hint}.")
        restart_ll = np.where(usable, last, np.nan)
        best = _base.best_restart(last, usable, degenerate)
        self.restart_degenerate_ = degenerate
        _base.warn_degenerate(degenerate, restart_ll, best, reports, self._noun, self._remedy)
        count = int(fits.num_iters[best])
        log_probs = list(fits.history[best, :count]) + [float(last[best])]
        return _base.take(final, best), log_probs, restart_ll

    def _init(self, X, lengths=None):
        """hmmlearn's initialisation step on its own: set the values `fit` starts its first
        restart from (π, A and the emission parameters for the letters of `init_params` and
        the attributes not set; the same draws from `random_state` as `fit`), set n_features
        and log hmmlearn's warnings. `lengths` is not used (as in hmmlearn)."""
        del lengths
        self._check_hyperparameters()
        X = self._check_X(X)
        self._check_and_set_n_features(X)
        self._warn_if_degenerate(X)
        random_state = check_random_state(self.random_state)
        starts = self._starting_values(X, random_state)
        keys = jax.random.split(_base.jax_key(random_state), int(self.n_init))
        with _base.jax_context():
            rows = jnp.asarray(self._data_rows(X))
            start = _starting_points_program(self._model(), type(self)._finish_starts, keys, rows,
                                             _base.to_jax(starts))
            self._set_params(_base.take(start, 0))
        return self

    def _check(self):
        """hmmlearn's check of the parameters as set: shapes, π and the rows of A (and of the
        face's probability tables) summing to 1 (ValueError otherwise)."""
        self._check_chain(np.asarray(self.startprob_), np.asarray(self.transmat_))
        self._check_emission()

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
        """(X (n_samples, ...), states (n_samples,)) drawn from the model, starting from state
        `currstate` when given, else from π."""
        check_is_fitted(self, "startprob_")
        self._check()
        n_samples = _base.check_int(n_samples, "n_samples", 1)
        rng = check_random_state(self.random_state if random_state is None else random_state)
        params = self._fitted_params()
        if currstate is not None:
            if isinstance(currstate, bool) or not isinstance(currstate, Integral) \
                    or not 0 <= currstate < self.n_components:
                raise ValueError(f"currstate: expected a state in 0..{self.n_components - 1}, "
                                 f"got {currstate!r}.")
            params = params._replace(initial=np.eye(self.n_components)[int(currstate)])
        return self._sample(_base.jax_key(rng), params, n_samples)

    def get_stationary_distribution(self):
        """The stationary distribution of A: its left eigenvector of eigenvalue 1, normalised."""
        check_is_fitted(self, "transmat_")
        values, vectors = scipy.linalg.eig(self.transmat_.T)
        vector = np.real_if_close(vectors[:, np.argmax(values)])
        return vector / vector.sum()

    def aic(self, X, lengths=None):
        """-2 log p(X) + 2 p, p the number of free parameters (all of π, A and the emissions)."""
        return -2 * self.score(X, lengths) + 2 * self._num_free_parameters()

    def bic(self, X, lengths=None):
        """-2 log p(X) + p log N."""
        return -2 * self.score(X, lengths) + self._num_free_parameters() * np.log(len(X))

    # --- the hooks of a face -------------------------------------------------------------------------

    def _model(self, algorithm: str | None = None):
        """The jaxem HMM; its forward–backward is `implementation`'s unless `algorithm` is given
        (`_algorithm`)."""
        raise NotImplementedError

    def _algorithm(self, algorithm: str | None = None) -> str:
        return algorithm or IMPLEMENTATIONS[self.implementation]

    def _m_step(self) -> ChainMStep:
        """hmmlearn's M-step of the face, with its priors (a hashable `ChainMStep`)."""
        raise NotImplementedError

    def _check_X(self, X) -> np.ndarray:
        """X as the face takes it (hmmlearn's `check_array`), before n_features is checked."""
        return check_array(X, dtype=np.float64)

    def _check_and_set_n_features(self, X: np.ndarray) -> None:
        """hmmlearn's: n_features from X's columns, or ValueError when it differs from the
        model's."""
        if getattr(self, "n_features", None) is not None and self.n_features != X.shape[1]:
            raise ValueError(f"X: has {X.shape[1]} features, but the model has {self.n_features}.")
        self.n_features = X.shape[1]

    def _check_scored_X(self, X: np.ndarray) -> None:
        """The check of data to score or decode against the parameters (after `_check`, which
        sets n_features from them): its number of features."""
        if X.shape[1] != self.n_features:
            raise ValueError(f"X: has {X.shape[1]} features, but the model has {self.n_features}.")

    def _data_rows(self, X: np.ndarray) -> np.ndarray:
        """The rows of X in the form of the jaxem model's data (default: X itself)."""
        return X

    def _emission_starts(self, X: np.ndarray) -> dict:
        """The starting emission parameters, by field: an array (as set, when `init_params`
        leaves its letter out, or computed from X), None (drawn in JAX by `_finish_starts`) or
        a function of `random_state` (an int seed or a RandomState: pass it through
        `check_random_state`), drawn for each restart after π and A as hmmlearn's `_init` draws
        them. Checks the values as set."""
        raise NotImplementedError

    @staticmethod
    def _finish_starts(model, keys, rows, starts):
        """Every restart's start (leading axis R) from `starts`, filling fields left None with
        draws in JAX from each restart's key (inside the jitted programs; default: none)."""
        del model, keys, rows
        return starts

    def _check_emission(self, params=None) -> None:
        """hmmlearn's checks of the emission attributes (or of `params`' emission fields)."""
        raise NotImplementedError

    def _free_scalars(self) -> dict[str, int]:
        """The number of free scalars of each `params` letter."""
        raise NotImplementedError

    def _sample(self, key, params, n_samples: int):
        """(X, states) drawn from the model with JAX's PRNG, X in hmmlearn's form."""
        x, z = _base.draw(self._model(), key, params, n_samples)
        return x, z

    # --- shared helpers ------------------------------------------------------------------------------

    def _fitted_params(self):
        return self._params_type(*[np.asarray(getattr(self, name), np.float64) for name in self._attributes])

    def _set_params(self, params) -> None:
        """The attributes from `params`, as writeable NumPy copies."""
        for name, value in zip(self._attributes, params, strict=True):
            setattr(self, name, np.array(value, dtype=np.float64))

    def _starting_values(self, X: np.ndarray, random_state: np.random.RandomState):
        """Every restart's starting parameters (leading axis n_init; None for fields drawn in
        JAX). As in hmmlearn, π and the rows of A are drawn from Dirichlet(1/K) with
        `random_state`, then the emission parameters, restart after restart, so that the first
        restart's draws are hmmlearn's for the same `random_state` (with an int seed, hmmlearn
        draws the emissions from a fresh generator of that seed: so does the first restart)."""
        k = self.n_components
        alpha = np.full(k, 1.0 / k)
        startprob = None if self._needs_init("s", "startprob_") else np.asarray(self.startprob_, np.float64)
        transmat = None if self._needs_init("t", "transmat_") else np.asarray(self.transmat_, np.float64)
        if startprob is not None or transmat is not None:
            self._check_chain(startprob, transmat)
        emission = self._emission_starts(X)
        draws = []
        for restart in range(int(self.n_init)):
            initial = random_state.dirichlet(alpha) if startprob is None else startprob
            transition = random_state.dirichlet(alpha, size=k) if transmat is None else transmat
            # hmmlearn's emission `_init`s use self.random_state itself: with an int seed, draws
            # from fresh generators of that seed (`check_random_state` in each drawing function).
            rng = (self.random_state if restart == 0 and isinstance(self.random_state, Integral)
                   else random_state)
            draws.append(self._params_type(initial, transition, **{
                name: value(rng) if callable(value) else value for name, value in emission.items()}))
        return self._params_type(*[None if draws[0][i] is None else np.stack([d[i] for d in draws])
                                   for i in range(len(draws[0]))])

    def _chain_priors(self) -> tuple:
        """(startprob_prior, transmat_prior), checked against (K,) and (K, K) and frozen."""
        k = self.n_components
        return (prior(self.startprob_prior, "startprob_prior", (k,)),
                prior(self.transmat_prior, "transmat_prior", (k, k)))

    def _check_chain(self, startprob, transmat) -> None:
        """hmmlearn's `_check` of π and A (either may be None: not checked)."""
        k = self.n_components
        if startprob is not None:
            if startprob.shape != (k,):
                raise ValueError("startprob_ must have length n_components")
            _base.check_rows_sum_to_one(startprob, "startprob_")
        if transmat is not None:
            if transmat.shape != (k, k):
                raise ValueError("transmat_ must have shape (n_components, n_components)")
            _base.check_rows_sum_to_one(transmat, "transmat_")

    def _num_free_parameters(self) -> int:
        return sum(self._free_scalars().values())   # hmmlearn counts every parameter, whatever `params` says

    def _fitted_letters(self) -> str:
        return "".join(sorted(set(self.params) & set("st" + self._emission_letters)))

    def _warn_if_degenerate(self, X: np.ndarray) -> None:
        """hmmlearn's warning (logged, as hmmlearn's `_init` does) when X holds fewer values than
        the free scalars of the parameters that `params` fits."""
        per = self._free_scalars()
        fitted = sum(per[letter] for letter in self._fitted_letters())
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
        self._check()
        X = self._check_X(X)
        self._check_scored_X(X)
        lengths = _check_lengths(lengths, X.shape[0])
        num_sequences = len(lengths)
        # The batch padded to a power of two and the time axis as in `fit` (`_padded_steps`); the
        # extra sequences (one step each) are scored and dropped, so they change no result.
        batch = _base.padded_size(num_sequences, 1)
        with _base.jax_context():
            padding = batch - num_sequences
            data = _sequences(self._data_rows(X), np.concatenate([lengths, np.ones(padding, int)]),
                              pad_rows=padding)
            model, params = self._model(), _base.to_jax(self._fitted_params())
            if forward and self.implementation == "scaling" and _underflow_program(model, params, data):
                raise ValueError(self._underflow_message())
            out = _base.to_numpy(_infer_program(model, params, data))
        mask = np.asarray(data.mask)[:num_sequences]
        return {
            "log_likelihoods": out["log_likelihoods"][:num_sequences],
            "posteriors": out["posteriors"][:num_sequences][mask],
            "paths": out["paths"][:num_sequences][mask].astype(np.int64),
            "path_log_probs": out["path_log_probs"][:num_sequences],
        }

    def _underflow_message(self) -> str:
        return (f"{type(self).__name__}: the scaled forward recursion (implementation='scaling') "
                "underflows: some step has p(x_t | x_0..x_{t-1}) < 1e-300; use implementation='log'.")

    def _check_hyperparameters(self) -> None:
        _base.check_int(self.n_components, "n_components", 1)
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


class ProbabilityTableHMM(BaseHMM):
    """A face whose emission parameters are one table emissionprob_ (K, n_features) of
    probabilities, rows summing to 1 (letter "e"; the field `emission` of its parameters):
    `CategoricalHMM` and `MultinomialHMM`."""

    _attributes = ("startprob_", "transmat_", "emissionprob_")
    _emission_letters = "e"

    def _emission_starts(self, X: np.ndarray) -> dict:
        """emissionprob_ as set, or hmmlearn's draw: uniform(0, 1) entries, rows normalised."""
        shape = (self.n_components, self.n_features)
        if self._needs_init("e", "emissionprob_"):
            def draw(random_state):
                table = check_random_state(random_state).rand(*shape)
                return table / table.sum(axis=1, keepdims=True)
            return {"emission": draw}
        emission = np.asarray(self.emissionprob_, np.float64)
        self._check_emission(self._params_type(None, None, emission))
        return {"emission": emission}

    def _check_table(self, emission: np.ndarray, num_features: int) -> None:
        """hmmlearn's checks of the table: shape (K, num_features), rows summing to 1."""
        if emission.shape != (self.n_components, num_features):
            raise ValueError(f"emissionprob_ must have shape (n_components, n_features) = "
                             f"({self.n_components}, {num_features}), got {emission.shape}")
        _base.check_rows_sum_to_one(emission, "emissionprob_")

    def _free_scalars(self) -> dict[str, int]:
        k, m = self.n_components, self.n_features
        return {"s": k - 1, "t": k * (k - 1), "e": k * (m - 1)}


# --- the M-step ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ChainMStep(MStep):
    """hmmlearn's Baum–Welch M-step (module docstring): π and A here, the emission parameters in
    the face's subclass (`update_emission`). An M-step strategy; prior values are frozen to
    floats or nested tuples (`freeze`), so equal settings share compiled code."""

    letters: str
    startprob_prior: Any
    transmat_prior: Any

    def update(self, model, params, posterior, data, log_prior):
        del log_prior  # hmmlearn's priors are this M-step's own
        if "s" in self.letters:
            params = params._replace(initial=dirichlet_map(
                posterior.initial_counts, jnp.asarray(self.startprob_prior), params.initial))
        if "t" in self.letters:
            params = params._replace(transition=dirichlet_map(
                posterior.transition_counts, jnp.asarray(self.transmat_prior), params.transition))
        return self.update_emission(model, params, posterior, data)

    def update_emission(self, model, params, posterior, data):
        """The emission fields of `params` updated for the letters in `self.letters`."""
        raise NotImplementedError


def prior(value, name: str, shape: tuple):
    """A prior setting checked and frozen (`freeze`): a finite number or array that broadcasts
    to `shape` (ValueError naming it otherwise); its own shape is kept."""
    array = np.asarray(value, dtype=np.float64) if np.ndim(value) or np.isscalar(value) else None
    try:
        np.broadcast_to(array, shape)
    except (ValueError, TypeError):
        raise ValueError(f"{name}: expected a number or an array that broadcasts to shape {shape}, "
                         f"got {value!r}.") from None
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name}: expected finite values, got {value!r}.")
    return freeze(array)


def freeze(value):
    """A prior as a float or nested tuples of floats (hashable, for a static M-step)."""
    array = np.asarray(value, dtype=np.float64)
    return float(array) if array.ndim == 0 else tuple(freeze(v) for v in array)


def _no_prior(params) -> jax.Array:
    """hmmlearn monitors log p(X | θ) alone, whatever its priors: the objective has no prior."""
    return jnp.zeros((), params.initial.dtype)


# --- the JAX programs ---------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnums=(1,))
def _starting_points_program(model, finish, keys, rows, starts):
    return finish(model, keys, rows, starts)


@functools.partial(jax.jit, static_argnums=(1, 2, 8, 9))
def _fit_program(model, m_step, finish, data, rows, keys, starts, tol, em_iters: int, acceleration=None):
    """The whole fit as one vmapped program: (starting points (`finish`ed from `starts`); the
    `RestartsResult` (its `best` dropped) after at most `em_iters` M-steps, stopped by
    hmmlearn's signed rule (`convergence="gain"`) on log p(X | θ_i) alone, with every restart's
    degeneracy; every restart's parameters after one more M-step; every restart's last
    log-likelihood log p(X | θ_T)), each with a leading restart axis R."""
    params0 = finish(model, keys, rows, starts)
    # The face chooses the best restart itself, so `fit_restarts` need not avoid degenerate
    # ones; their degeneracy comes from the E-step of the one more M-step (the same θ_T), and
    # XLA drops the E-step `fit_restarts` would have run for it.
    result = fit_restarts(model, data, params0, m_step=m_step, log_prior=_no_prior, max_iter=em_iters,
                          tol=tol, convergence="gain", strategy="exhaustive", acceleration=acceleration,
                          avoid_degenerate=False)
    final, last, *degeneracy = _base.one_more_m_step(model, result.restarts.params, data, m_step,
                                                     degeneracy=hasattr(model, "degeneracy"))
    if degeneracy:
        result = result._replace(degeneracy=degeneracy[0])
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
# probabilities by the emission densities themselves, exp(log p(x_t | z_t = k)), and fails when
# their sum at a step, which is p(x_t | x_0..x_{t-1}), falls below 1e-300. jaxem's scaled recursion
# shifts each step's log-densities by their maximum first and goes on; with
# implementation="scaling" the faces fail where hmmlearn's would.
_UNDERFLOW_BOUND = math.log(1e-300)


def _scaling_underflows(model, params, data: Sequences) -> jax.Array:
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
