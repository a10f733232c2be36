"""Ready models built on the structures: each a small file with its log-densities,
closed-form M-step and initialiser.

- `gaussian_mixture`: Gaussian mixture, four covariance types.
- `gaussian_hmm`, `categorical_hmm`, `poisson_hmm`: hidden Markov models (Baum–Welch
  M-steps with Dirichlet priors on the chain; `hmm_common` holds the shared parts).
"""

from jaxem.models.categorical_hmm import CategoricalHMM, CategoricalHMMParams, categorical_hmm
from jaxem.models.gaussian_hmm import GaussianHMM, GaussianHMMParams, gaussian_hmm
from jaxem.models.gaussian_mixture import (
    GaussianMixtureModel,
    GaussianMixtureParams,
    gaussian_mixture,
)
from jaxem.models.poisson_hmm import PoissonHMM, PoissonHMMParams, poisson_hmm

__all__ = [
    "CategoricalHMM",
    "CategoricalHMMParams",
    "GaussianHMM",
    "GaussianHMMParams",
    "PoissonHMM",
    "PoissonHMMParams",
    "categorical_hmm",
    "gaussian_hmm",
    "poisson_hmm",
    "GaussianMixtureModel",
    "GaussianMixtureParams",
    "gaussian_mixture",
]
