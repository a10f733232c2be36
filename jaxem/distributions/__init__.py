"""Log-densities and the exponential-family machinery behind closed-form M-steps.

- `scalar`: log-densities of one observation (normal, multivariate normal,
  Poisson, categorical), for writing `log_joint` functions.
- `gaussian`: the Gaussian as an exponential family: features of the data,
  log-potential tables as one matrix product, and the weighted MLE from
  expected sufficient statistics, for four covariance types.
"""

from jaxem.distributions.gaussian import COVARIANCE_TYPES, GaussianFamily, GaussianStats
from jaxem.distributions.scalar import (
    categorical_logpmf,
    mvn_logpdf,
    normal_logpdf,
    poisson_logpmf,
)

__all__ = [
    "COVARIANCE_TYPES",
    "GaussianFamily",
    "GaussianStats",
    "categorical_logpmf",
    "mvn_logpdf",
    "normal_logpdf",
    "poisson_logpmf",
]
