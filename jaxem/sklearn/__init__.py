"""scikit-learn–compatible estimators built on jaxem (optional extra: ``pip install jaxem[sklearn]``).

- `GaussianMixture`: a drop-in replacement for `sklearn.mixture.GaussianMixture`.
- `GaussianHMM`: hmmlearn's `hmmlearn.hmm.GaussianHMM` interface.

Both fit their `n_init` restarts as one vmapped JAX program and report every
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

from jaxem.sklearn.gaussian_hmm import GaussianHMM
from jaxem.sklearn.gaussian_mixture import GaussianMixture

__all__ = ["GaussianHMM", "GaussianMixture"]
