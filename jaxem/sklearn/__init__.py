"""scikit-learn–compatible estimators built on jaxem (optional extra: ``pip install jaxem[sklearn]``).

- `GaussianMixture`: a drop-in replacement for `sklearn.mixture.GaussianMixture`.
- `GaussianHMM`, `GMMHMM`, `CategoricalHMM`, `PoissonHMM`, `MultinomialHMM`: hmmlearn's
  `hmmlearn.hmm` interfaces (`jaxem.sklearn._hmm.BaseHMM` holds what they share).

Each fits their `n_init` restarts as one vmapped JAX program and report every
restart's final log-likelihood (`restart_log_likelihoods_`). They compute in
float64 inside a `jax.enable_x64(True)` context; importing this module does not
change JAX's global configuration.
"""

try:
    import sklearn  # noqa: F401
except ImportError as error:  # pragma: no cover - exercised only without scikit-learn
    raise ImportError(
        "jaxem.sklearn needs scikit-learn; install it with `pip install jaxem[sklearn]` "
        "or `pip install scikit-learn`."
    ) from error

from jaxem.sklearn.categorical_hmm import CategoricalHMM
from jaxem.sklearn.gaussian_hmm import GaussianHMM
from jaxem.sklearn.gaussian_mixture import GaussianMixture
from jaxem.sklearn.gmm_hmm import GMMHMM
from jaxem.sklearn.multinomial_hmm import MultinomialHMM
from jaxem.sklearn.poisson_hmm import PoissonHMM

__all__ = ["CategoricalHMM", "GMMHMM", "GaussianHMM", "GaussianMixture", "MultinomialHMM", "PoissonHMM"]
