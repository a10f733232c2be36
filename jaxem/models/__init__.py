"""Ready models built on the structures: each a small file with its log-densities,
closed-form M-step and initialiser.

- `gaussian_mixture`: Gaussian mixture, four covariance types.
- `gaussian_hmm`, `categorical_hmm`, `poisson_hmm`, `multinomial_hmm` (count vectors with
  any number of trials per step), `gmm_hmm` (a Gaussian mixture per state, hmmlearn's
  GMMHMM): hidden Markov models (Baum–Welch M-steps with Dirichlet priors on the chain;
  `hmm_common` holds the shared parts).

Every ready model maps its parameters to minimal unconstrained coordinates and back
(`model.unconstrain(params)`, `model.constrain(coordinates)`; the `...Coordinates` types).
"""

from jaxem.models.categorical_hmm import (
    CategoricalHMM,
    CategoricalHMMCoordinates,
    CategoricalHMMParams,
    categorical_hmm,
)
from jaxem.models.gaussian_hmm import (
    GaussianHMM,
    GaussianHMMCoordinates,
    GaussianHMMParams,
    gaussian_hmm,
)
from jaxem.models.gaussian_mixture import (
    GaussianMixtureCoordinates,
    GaussianMixtureModel,
    GaussianMixtureParams,
    gaussian_mixture,
)
from jaxem.models.gmm_hmm import GMMHMM, GMMHMMCoordinates, GMMHMMParams, gmm_hmm
from jaxem.models.multinomial_hmm import (
    MultinomialHMM,
    MultinomialHMMCoordinates,
    MultinomialHMMParams,
    multinomial_hmm,
)
from jaxem.models.poisson_hmm import PoissonHMM, PoissonHMMCoordinates, PoissonHMMParams, poisson_hmm

__all__ = [
    "CategoricalHMM",
    "CategoricalHMMCoordinates",
    "CategoricalHMMParams",
    "GaussianHMM",
    "GaussianHMMCoordinates",
    "GaussianHMMParams",
    "GMMHMM",
    "GMMHMMCoordinates",
    "GMMHMMParams",
    "MultinomialHMM",
    "MultinomialHMMCoordinates",
    "MultinomialHMMParams",
    "PoissonHMM",
    "PoissonHMMCoordinates",
    "PoissonHMMParams",
    "categorical_hmm",
    "gaussian_hmm",
    "gmm_hmm",
    "multinomial_hmm",
    "poisson_hmm",
    "GaussianMixtureCoordinates",
    "GaussianMixtureModel",
    "GaussianMixtureParams",
    "gaussian_mixture",
]
