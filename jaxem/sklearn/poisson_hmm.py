"""`PoissonHMM`: hmmlearn's `hmmlearn.hmm.PoissonHMM` interface on jaxem, plus vmapped restarts.

The model: z_0 ~ π, z_t | z_{t-1} ~ A[z_{t-1}], x_td | z_t = k ~ Poisson(λ_kd) independently
over the D features (`jaxem.models.poisson_hmm` supplies the emission table, the
forward–backward E-step, Viterbi and sampling). X (N, D) holds non-negative counts. The
M-step is hmmlearn's: π and A as in `jaxem.sklearn._hmm`, and (letter "l")

    λ_kd = (a + n x̄_kd) / (b + n),    x̄_kd = Σ_t γ_tk x_td / Σ_t γ_tk,   n = Σ_t Σ_k γ_tk

with a = lambdas_prior, b = lambdas_weight (hmmlearn's Gamma prior in its shape–rate form;
n is the total expected count over all states, as in hmmlearn; a = b = 0, the default, is
maximum likelihood). A state with no expected count keeps its rates (hmmlearn: NaN).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
import numpy as np
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_array

from jaxem.models.hmm_common import check_count_values
from jaxem.models.poisson_hmm import PoissonHMMParams, poisson_hmm
from jaxem.sklearn._hmm import BaseHMM, ChainMStep, prior

__all__ = ["PoissonHMM"]


class PoissonHMM(BaseHMM):
    """Hidden Markov model with independent Poisson emissions per feature, fitted by Baum–Welch
    in JAX; hmmlearn's `PoissonHMM` interface (0.3), plus `n_init` vmapped restarts and
    `acceleration`.

    Parameters, attributes and methods are hmmlearn's; fits started from the same parameters
    follow hmmlearn's trajectory, and `_init` draws hmmlearn's starting rates (Gamma draws by the
    method of moments of X) for the same `random_state`. What every HMM face does differently
    from hmmlearn is listed in `jaxem.sklearn._hmm.BaseHMM`; here also: X must hold
    non-negative whole numbers (ValueError otherwise; hmmlearn scores other values as
    impossible), and lambdas_ must be finite and >= 0.

    Attributes (after fit): startprob_ (K,), transmat_ (K, K), lambdas_ (K, D), n_features,
    monitor_, restart_log_likelihoods_ (n_init,), restart_degenerate_ (n_init,).
    """

    _params_type = PoissonHMMParams
    _attributes = ("startprob_", "transmat_", "lambdas_")
    _emission_letters = "l"

    def __init__(self, n_components=1, startprob_prior=1.0, transmat_prior=1.0, lambdas_prior=0.0,
                 lambdas_weight=0.0, algorithm="viterbi", random_state=None, n_iter=10, tol=1e-2,
                 verbose=False, params="stl", init_params="stl", implementation="log", n_init=1,
                 acceleration=None):
        self.lambdas_prior = lambdas_prior
        self.lambdas_weight = lambdas_weight
        self._set_chain_settings(n_components, startprob_prior, transmat_prior, algorithm, random_state,
                                 n_iter, tol, verbose, params, init_params, implementation, n_init,
                                 acceleration)

    # --- the hooks of `BaseHMM` ----------------------------------------------------------------------

    def _model(self, algorithm: str | None = None):
        return poisson_hmm(int(self.n_components), algorithm=self._algorithm(algorithm))

    def _m_step(self) -> _PoissonMStep:
        shape = (self.n_components, self.n_features)
        return _PoissonMStep(self._fitted_letters(), *self._chain_priors(),
                             prior(self.lambdas_prior, "lambdas_prior", shape),
                             prior(self.lambdas_weight, "lambdas_weight", shape))

    def _check_X(self, X) -> np.ndarray:
        X = check_array(X, dtype=np.float64)
        check_count_values(X, X.dtype, "X")
        return X

    def _emission_starts(self, X: np.ndarray) -> dict:
        """lambdas_ as set, or hmmlearn's draw: Gamma(shape m²/v, scale v/m) with m and v the
        mean and variance of all of X (its method-of-moments fit)."""
        if self._needs_init("l", "lambdas_"):
            mean, var = X.mean(), X.var()
            if not (mean > 0 and var > 0):
                raise ValueError("X: the starting rates are drawn from the mean and variance of X, which "
                                 f"must be positive (got {mean:.3g} and {var:.3g}); set lambdas_ and leave "
                                 "'l' out of init_params.")
            shape = (self.n_components, self.n_features)

            def draw(random_state):
                return check_random_state(random_state).gamma(shape=mean**2 / var, scale=var / mean,
                                                              size=shape)
            return {"rates": draw}
        rates = np.asarray(self.lambdas_, np.float64)
        self._check_emission(PoissonHMMParams(None, None, rates))
        return {"rates": rates}

    def _check_emission(self, params: PoissonHMMParams | None = None) -> None:
        """hmmlearn's checks: lambdas_ (K, n_features) (n_features taken from it when unset);
        also finite and >= 0."""
        rates = np.atleast_2d(np.asarray(self.lambdas_ if params is None else params.rates, np.float64))
        if params is None:
            self.lambdas_ = rates   # as hmmlearn's `_check` stores it
        dim = getattr(self, "n_features", None) or rates.shape[1]
        if rates.shape != (self.n_components, dim):
            raise ValueError(f"lambdas_ must have shape (n_components, n_features) = "
                             f"({self.n_components}, {dim}), got {rates.shape}")
        if not np.all(np.isfinite(rates) & (rates >= 0)):
            raise ValueError("lambdas_ must be finite and >= 0")
        self.n_features = dim

    def _free_scalars(self) -> dict[str, int]:
        k = self.n_components
        return {"s": k - 1, "t": k * (k - 1), "l": k * self.n_features}


@dataclasses.dataclass(frozen=True)
class _PoissonMStep(ChainMStep):
    """hmmlearn's Poisson M-step (module docstring), after the chain's."""

    lambdas_prior: Any
    lambdas_weight: Any

    def update_emission(self, model, params: PoissonHMMParams, posterior, data) -> PoissonHMMParams:
        if "l" not in self.letters:
            return params
        marginals = posterior.marginals.reshape(-1, model.num_states)   # 0 on padding
        stats = model.emission_statistics(marginals, data, params)   # Σ_t γ_tk (K,), Σ_t γ_tk x_t (K, D)
        counts = stats.counts[:, None]
        total = jnp.sum(stats.counts)
        means = stats.sums / jnp.where(counts > 0, counts, 1.0)
        prior, weight = jnp.asarray(self.lambdas_prior), jnp.asarray(self.lambdas_weight)
        rates = (prior + total * means) / (weight + total)
        return params._replace(rates=jnp.where(counts > 0, rates, params.rates))
