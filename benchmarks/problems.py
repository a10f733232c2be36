"""What the benchmark scripts share: the Hasselblad (1969) Poisson mixture, Old Faithful, and
the jaxem revision a run imported. Import it after enabling float64 (the scripts do)."""

from __future__ import annotations

import subprocess

import jax
import jax.numpy as jnp
import numpy as np

import jaxem as em

__all__ = ["DEATHS_PER_DAY", "NUM_DAYS", "hasselblad", "jaxem_revision", "old_faithful",
           "poisson_closed_form", "poisson_log_joint"]

DEATHS_PER_DAY = np.arange(10)
NUM_DAYS = np.array([162, 267, 271, 185, 111, 61, 27, 8, 3, 1])


def poisson_log_joint(params, x, z):
    """log π_z + log Poisson(x | λ_z), mixing logits and log-rates (the example's model)."""
    log_weights = jax.nn.log_softmax(params["logits"])
    return log_weights[z] + em.families.poisson_logpmf(x, jnp.exp(params["log_rates"][z]))


def poisson_closed_form(posterior, data, params):
    """π_k = mean_n r_nk, λ_k = Σ r_nk x_n / Σ r_nk, in the unconstrained coordinates."""
    del params
    counts = jnp.sum(posterior.marginals, axis=0)
    rates = posterior.marginals.T @ data.astype(counts.dtype) / counts
    return {"logits": jnp.log(counts / jnp.sum(counts)), "log_rates": jnp.log(rates)}


def hasselblad():
    model = em.Mixture(poisson_log_joint, num_states=2)
    data = jnp.repeat(jnp.asarray(DEATHS_PER_DAY, jnp.float64), jnp.asarray(NUM_DAYS))
    params0 = {"logits": jnp.zeros(2), "log_rates": jnp.log(jnp.array([1.0, 3.0]))}
    return model, data, params0, em.ClosedForm(poisson_closed_form)


def old_faithful():
    model = em.models.gaussian_mixture(2, "full")
    data = jnp.asarray(em.datasets.old_faithful())
    return model, data, model.init(jax.random.PRNGKey(0), data), None


def jaxem_revision() -> str:
    """The commit jaxem was imported from, and whether its jaxem/ had uncommitted changes."""
    where = em.__path__[0]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, cwd=where).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "."], capture_output=True, text=True,
                               cwd=where).stdout.strip()
    except OSError:
        return f"{where}, not a git checkout"
    return f"{where}, commit {commit or '?'}, " + ("jaxem/ modified" if dirty else "jaxem/ clean")
