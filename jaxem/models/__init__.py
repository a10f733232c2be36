"""Ready models built on the structures: each a small file with its log-densities,
closed-form M-step and initialiser.

- `gaussian_mixture`: Gaussian mixture, four covariance types.
"""

from jaxem.models.gaussian_mixture import (
    GaussianMixtureModel,
    GaussianMixtureParams,
    gaussian_mixture,
)

__all__ = ["GaussianMixtureModel", "GaussianMixtureParams", "gaussian_mixture"]
