"""`MultinomialHMM`: hmmlearn's `hmmlearn.hmm.MultinomialHMM` interface on jaxem, plus vmapped restarts.

The model: z_0 ~ π, z_t | z_{t-1} ~ A[z_{t-1}], x_t | z_t = k ~ Multinomial(n_t, B_k): row t
of X (N, M) counts how many of its n_t trials fell on each of the M symbols
(`jaxem.models.multinomial_hmm` supplies the emission table, the forward–backward E-step,
Viterbi and sampling). The M-step is hmmlearn's: π and A as in `jaxem.sklearn._hmm`, and
(letter "e", no prior)

    B_km = Σ_t γ_tk x_tm / Σ_m' Σ_t γ_tk x_tm'

(a row with no expected counts keeps its values; hmmlearn's divides by zero there).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from sklearn.utils.validation import check_array

from jaxem.models.hmm_common import check_count_values, normalize_rows
from jaxem.models.multinomial_hmm import MultinomialHMMParams, multinomial_hmm
from jaxem.sklearn import _base
from jaxem.sklearn._hmm import ChainMStep, ProbabilityTableHMM

__all__ = ["MultinomialHMM"]


class MultinomialHMM(ProbabilityTableHMM):
    """Hidden Markov model with multinomial emissions (count vectors), fitted by Baum–Welch in
    JAX; hmmlearn's `MultinomialHMM` interface (0.3), plus `n_init` vmapped restarts and
    `acceleration`.

    Parameters, attributes and methods are hmmlearn's; fits started from the same parameters
    follow hmmlearn's trajectory. `n_trials`: the number of trials of every row (an int), or
    one per row (an array), or None: taken from the data at `fit` (each row's sum); rows whose
    sums differ from a given n_trials are rejected (ValueError). Scoring uses each row's own
    sum, as hmmlearn does; `sample` needs a single n_trials. What every HMM face does
    differently from hmmlearn is listed in `jaxem.sklearn._hmm.BaseHMM`; here also: hmmlearn
    0.3 logs a warning about the class's history at construction, this face does not.

    Attributes (after fit): startprob_ (K,), transmat_ (K, K), emissionprob_ (K, M), n_features
    (M), n_trials, monitor_, restart_log_likelihoods_ (n_init,), restart_degenerate_ (n_init,).
    """

    _params_type = MultinomialHMMParams

    def __init__(self, n_components=1, n_trials=None, startprob_prior=1.0, transmat_prior=1.0,
                 algorithm="viterbi", random_state=None, n_iter=10, tol=1e-2, verbose=False,
                 params="ste", init_params="ste", implementation="log", n_init=1, acceleration=None):
        self.n_trials = n_trials
        self._set_chain_settings(n_components, startprob_prior, transmat_prior, algorithm, random_state,
                                 n_iter, tol, verbose, params, init_params, implementation, n_init,
                                 acceleration)

    # --- the hooks of `BaseHMM` ----------------------------------------------------------------------

    def _model(self, algorithm: str | None = None):
        return multinomial_hmm(int(self.n_components), int(self.n_features),
                               algorithm=self._algorithm(algorithm))

    def _m_step(self) -> _MultinomialMStep:
        return _MultinomialMStep(self._fitted_letters(), *self._chain_priors())

    def _check_and_set_n_features(self, X: np.ndarray) -> None:
        """hmmlearn's: n_features from X's columns; X holds non-negative integers; n_trials is
        set to each row's sum when None, else every row must sum to it (ValueError)."""
        super()._check_and_set_n_features(X)
        _check_counts(X)
        if self.n_trials is None:
            self.n_trials = X.sum(axis=1)
        elif np.ndim(self.n_trials) == 1 and len(self.n_trials) != len(X):
            raise ValueError(f"n_trials: holds {len(self.n_trials)} numbers (one per row of the data it was "
                             f"set from, e.g. by an earlier fit) but X has {len(X)} rows; set "
                             "n_trials=None to take each row's sum.")
        elif not np.all(X.sum(axis=1) == self.n_trials):
            raise ValueError(f"X: the total count of each row should add up to the number of trials "
                             f"(n_trials={self.n_trials}); set n_trials=None to take each row's sum.")

    def _check_X(self, X) -> np.ndarray:
        return check_array(X)   # integer counts stay integers

    def _check_scored_X(self, X: np.ndarray) -> None:
        super()._check_scored_X(X)
        check_count_values(X, X.dtype, "X")

    def _check_emission(self, params: MultinomialHMMParams | None = None) -> None:
        """hmmlearn's checks: emissionprob_ (K, n_features) (n_features taken from it when
        unset), n_trials set; also rows summing to 1."""
        emission = np.atleast_2d(self.emissionprob_ if params is None else params.emission)
        if params is None:
            self.emissionprob_ = emission   # as hmmlearn's `_check` stores it
        dim = getattr(self, "n_features", None) or emission.shape[1]
        self._check_table(emission, dim)
        self.n_features = dim
        if self.n_trials is None:
            raise ValueError("n_trials must be set")

    def _sample(self, key, params, n_samples: int):
        trials = np.unique(np.asarray(self.n_trials))
        if trials.size != 1:
            raise ValueError(f"n_trials: sampling needs a single number of trials, got {trials.size} "
                             "distinct ones; set n_trials to an int.")
        return _base.draw(self._model(), key, params, n_samples, int(trials[0]))


def _check_counts(X: np.ndarray) -> None:
    if not np.issubdtype(np.asarray(X).dtype, np.integer) or X.min() < 0:
        raise ValueError("X: symbol counts should be nonnegative integers, got "
                         f"dtype {np.asarray(X).dtype} with minimum {X.min()}.")


@dataclasses.dataclass(frozen=True)
class _MultinomialMStep(ChainMStep):
    """hmmlearn's multinomial M-step (module docstring), after the chain's."""

    def update_emission(self, model, params: MultinomialHMMParams, posterior, data) -> MultinomialHMMParams:
        if "e" not in self.letters:
            return params
        marginals = posterior.marginals.reshape(-1, model.num_states)   # 0 on padding
        counts = model.emission_statistics(marginals, data, params)     # Σ_t γ_tk x_tm (K, M)
        return params._replace(emission=normalize_rows(counts, params.emission))
