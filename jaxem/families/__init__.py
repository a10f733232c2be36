"""Log-densities and the exponential-family machinery behind closed-form M-steps.

- `scalar`: log-densities of one observation (normal, multivariate normal,
  Poisson, categorical), for writing `log_joint` functions.
- `gaussian`: Gaussian log-density tables of N points under K components, the
  additive expected statistics `GaussianStats`, the weighted MLE from them and the
  positive-definite repair, for four covariance types.
"""

from jaxem.families.gaussian import COVARIANCE_TYPES, GaussianEstimate, GaussianFamily
from jaxem.families.scalar import (
    categorical_logpmf,
    mvn_logpdf,
    normal_logpdf,
    poisson_logpmf,
)

__all__ = [
    "COVARIANCE_TYPES",
    "GaussianEstimate",
    "GaussianFamily",
    "categorical_logpmf",
    "mvn_logpdf",
    "normal_logpdf",
    "poisson_logpmf",
]
