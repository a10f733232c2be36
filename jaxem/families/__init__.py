"""Log-densities and the exponential-family machinery behind closed-form M-steps.

- `scalar`: log-densities of one observation (normal, multivariate normal,
  Poisson, categorical), for writing `log_joint` functions.
- `gaussian`: Gaussian log-density tables of N points under K components, the
  additive expected statistics `GaussianStats`, the weighted MLE from them and the
  positive-definite repair, for four covariance types; covariances in minimal
  unconstrained coordinates (`GaussianFamily.unconstrain_covariances`).
- `simplex`: probability vectors in minimal unconstrained coordinates (K - 1
  log-ratios against the last entry) and back.
"""

from jaxem.families.gaussian import COVARIANCE_TYPES, GaussianEstimate, GaussianFamily
from jaxem.families.scalar import (
    categorical_logpmf,
    mvn_logpdf,
    normal_logpdf,
    poisson_logpmf,
)
from jaxem.families.simplex import logits_to_simplex, simplex_to_logits

__all__ = [
    "COVARIANCE_TYPES",
    "GaussianEstimate",
    "GaussianFamily",
    "categorical_logpmf",
    "logits_to_simplex",
    "mvn_logpdf",
    "normal_logpdf",
    "poisson_logpmf",
    "simplex_to_logits",
]
