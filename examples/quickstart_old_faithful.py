"""Quickstart: a two-component Gaussian mixture on the Old Faithful geyser data.

The data (272 eruptions: duration and waiting time, in minutes) ship with
jaxem. The maximum-likelihood two-component full-covariance mixture has
log-likelihood -1130.264 (scikit-learn's GaussianMixture finds the same;
`tests/test_examples.py` checks it), weights about (0.356, 0.644) and means
about (2.04, 54.5) and (4.29, 80.0). The script fits it from 8 vmapped
restarts and checks those numbers. Run: `python examples/quickstart_old_faithful.py`.
"""

from __future__ import annotations

import jax

jax.config.update("jax_enable_x64", True)  # an application may; the library never does

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jaxem  # noqa: E402

KNOWN_LOG_LIKELIHOOD = -1130.264


def main() -> dict:
    x = jnp.asarray(jaxem.datasets.old_faithful())              # (272, 2)
    model = jaxem.models.gaussian_mixture(2, covariance_type="full")

    # Eight k-means++ starting points, one per PRNG key: every leaf gets a leading axis 8.
    keys = jax.random.split(jax.random.PRNGKey(0), 8)
    params0 = jax.jit(jax.vmap(lambda key: model.init(key, x)))(keys)

    # One fit from the first starting point ...
    single = jaxem.fit(model, x, jax.tree_util.tree_map(lambda leaf: leaf[0], params0), tol=1e-6)

    # ... and all eight in one vmapped program.
    result = jaxem.fit_restarts(model, x, params0, tol=1e-6)
    best = result.best

    order = np.argsort(np.asarray(best.params.means[:, 0]))      # short eruptions first
    weights = np.asarray(best.params.weights)[order]
    means = np.asarray(best.params.means)[order]
    covariances = np.asarray(best.params.covariances)[order]
    log_likelihood = float(best.log_likelihood)
    bic = float(model.bic(log_likelihood, x.shape[0], x.shape[1]))

    print("Old Faithful, 2-component full-covariance Gaussian mixture")
    for k in range(2):
        print(f"  component {k + 1}: weight {weights[k]:.4f}, mean {np.round(means[k], 3)}, "
              f"covariance {np.round(covariances[k], 3).tolist()}")
    print(f"  log-likelihood {log_likelihood:.4f} (single start: {float(single.log_likelihood):.4f}), "
          f"BIC {bic:.3f}, {int(best.num_iters)} iterations, converged {bool(best.converged)}")

    if abs(log_likelihood - KNOWN_LOG_LIKELIHOOD) > 1e-3:
        raise RuntimeError(f"log-likelihood {log_likelihood} is not the known {KNOWN_LOG_LIKELIHOOD}")
    if not (np.allclose(weights, [0.356, 0.644], atol=1e-3)
            and np.allclose(means, [[2.037, 54.48], [4.290, 79.97]], atol=1e-2)):
        raise RuntimeError(f"weights {weights} or means {means} are not the known optimum")
    print("  checks passed: the known optimum (log-likelihood -1130.264)")
    return {"weights": weights, "means": means, "covariances": covariances,
            "log_likelihood": log_likelihood, "bic": bic,
            "single_log_likelihood": float(single.log_likelihood)}


if __name__ == "__main__":
    main()
