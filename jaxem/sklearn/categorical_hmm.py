"""`CategoricalHMM`: hmmlearn's `hmmlearn.hmm.CategoricalHMM` interface on jaxem, plus vmapped restarts.

The model: z_0 ~ π, z_t | z_{t-1} ~ A[z_{t-1}], x_t | z_t = k ~ Categorical(B_k) over the
symbols 0..M-1 (M = n_features; `jaxem.models.categorical_hmm` supplies the emission table,
the forward–backward E-step, Viterbi and sampling). X has hmmlearn's shape (N, 1) of
non-negative integers. The M-step is hmmlearn's: π and A as in `jaxem.sklearn._hmm`, and

    B_km ∝ max(emissionprob_prior - 1 + Σ_t γ_tk [x_t = m], 0)

(letter "e"; zeros stay zeros, a row with no mass keeps its values).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from sklearn.utils.validation import check_array

from jaxem.models.categorical_hmm import CategoricalHMMParams, categorical_hmm
from jaxem.models.hmm_common import dirichlet_map
from jaxem.sklearn import _base
from jaxem.sklearn._hmm import ChainMStep, ProbabilityTableHMM, prior

__all__ = ["CategoricalHMM"]


class CategoricalHMM(ProbabilityTableHMM):
    """Hidden Markov model with categorical (discrete-symbol) emissions, fitted by Baum–Welch in
    JAX; hmmlearn's `CategoricalHMM` interface (0.3), plus `n_init` vmapped restarts and
    `acceleration`.

    Parameters, attributes and methods are hmmlearn's; fits started from the same parameters
    follow hmmlearn's trajectory. What every HMM face does differently from hmmlearn is listed
    in `jaxem.sklearn._hmm.BaseHMM`; here also:

    - X must have shape (N, 1) (hmmlearn also takes other shapes, deprecated); symbols are
      integers in [0, n_features), n_features taken from the data (max + 1) unless set.
    - A row of emissionprob_ with no expected counts and no prior mass keeps its values
      (hmmlearn's normalisation divides by zero there).

    Attributes (after fit): startprob_ (K,), transmat_ (K, K), emissionprob_ (K, M), n_features,
    monitor_, restart_log_likelihoods_ (n_init,), restart_degenerate_ (n_init,) (never True: a
    categorical state has no degenerate solution in `jaxem.engine.degeneracy`'s sense).
    """

    _params_type = CategoricalHMMParams

    def __init__(self, n_components=1, startprob_prior=1.0, transmat_prior=1.0, *, emissionprob_prior=1.0,
                 n_features=None, algorithm="viterbi", random_state=None, n_iter=10, tol=1e-2,
                 verbose=False, params="ste", init_params="ste", implementation="log", n_init=1,
                 acceleration=None):
        self.emissionprob_prior = emissionprob_prior
        self.n_features = n_features
        self._set_chain_settings(n_components, startprob_prior, transmat_prior, algorithm, random_state,
                                 n_iter, tol, verbose, params, init_params, implementation, n_init,
                                 acceleration)

    # --- the hooks of `BaseHMM` ----------------------------------------------------------------------

    def _model(self, algorithm: str | None = None):
        return categorical_hmm(int(self.n_components), int(self.n_features),
                               algorithm=self._algorithm(algorithm))

    def _m_step(self) -> _CategoricalMStep:
        table = prior(self.emissionprob_prior, "emissionprob_prior", (self.n_components, self.n_features))
        return _CategoricalMStep(self._fitted_letters(), *self._chain_priors(), table)

    def _check_X(self, X) -> np.ndarray:
        X = check_array(X)
        if X.shape[1] != 1:
            raise ValueError(f"X: expected one symbol per row, shape (n_samples, 1), got {X.shape}; "
                             "pass symbols as X.reshape(-1, 1).")
        return X

    def _check_and_set_n_features(self, X: np.ndarray) -> None:
        """hmmlearn's: X holds non-negative integers; n_features is max + 1 unless set, and
        then the largest symbol must be below it (ValueError otherwise)."""
        X = np.asarray(X)
        if not np.issubdtype(X.dtype, np.integer):
            raise ValueError(f"X: symbols should be integers, got dtype {X.dtype}; convert whole-number "
                             "floats with X.astype(int).")
        if X.min() < 0:
            raise ValueError(f"X: symbols should be nonnegative, got {X.min()}.")
        if self.n_features is None:
            self.n_features = int(X.max()) + 1
        elif X.max() > self.n_features - 1:
            raise ValueError(f"X: largest symbol is {X.max()} but the model only emits symbols up to "
                             f"{self.n_features - 1} (n_features={self.n_features}).")

    def _check_scored_X(self, X: np.ndarray) -> None:
        self._check_and_set_n_features(X)

    def _data_rows(self, X: np.ndarray) -> np.ndarray:
        return X[:, 0].astype(np.int32)

    def _check_emission(self, params: CategoricalHMMParams | None = None) -> None:
        """hmmlearn's checks: emissionprob_ (K, n_features) (n_features taken from it when
        unset) with rows summing to 1."""
        emission = np.atleast_2d(self.emissionprob_ if params is None else params.emission)
        if params is None:
            self.emissionprob_ = emission   # as hmmlearn's `_check` stores it
        if self.n_features is None:
            self.n_features = emission.shape[1]
        self._check_table(emission, self.n_features)

    def _sample(self, key, params, n_samples: int):
        x, z = _base.draw(self._model(), key, params, n_samples)
        return x.reshape(-1, 1), z


@dataclasses.dataclass(frozen=True)
class _CategoricalMStep(ChainMStep):
    """hmmlearn's categorical M-step (module docstring), after the chain's."""

    emissionprob_prior: Any

    def update_emission(self, model, params: CategoricalHMMParams, posterior, data) -> CategoricalHMMParams:
        if "e" not in self.letters:
            return params
        marginals = posterior.marginals.reshape(-1, model.num_states)   # 0 on padding
        counts = model.emission_statistics(marginals, data, params)
        return params._replace(emission=dirichlet_map(counts, np.asarray(self.emissionprob_prior),
                                                      params.emission))
