"""Small models, data and brute-force references shared by the core-engine tests.

Every model here is defined once at module level and every test uses the same
shapes, so the jitted EM loops compile once per (model, M-step, shapes) for the
whole test session. The brute-force references are plain Python/numpy loops over
observations n and states k that compute log p(x_n, z_n = k) directly; they
never call jaxem.
"""

from __future__ import annotations

import functools
import math
import types

import jax
import jax.numpy as jnp
import numpy as np

import jaxem as em

# ------------------------------------------------------------------------------------------------
# Model 1: a 1-D Gaussian mixture in unconstrained coordinates (logits, loc, log_scale), K = 3.
# Data: a float array (N,).
# ------------------------------------------------------------------------------------------------

MIX1D_K = 3
MIX1D_N = 40


def mix1d_log_joint(params, x, z):
    """log softmax(logits)[z] + log N(x | loc[z], exp(log_scale[z])²) for one scalar x."""
    log_w = jax.nn.log_softmax(params["logits"])
    return log_w[z] + em.distributions.normal_logpdf(x, params["loc"][z], jnp.exp(params["log_scale"][z]))


def mix1d_maximize(posterior, data, params):
    """The exact maximiser of Q for `mix1d_log_joint` (weighted MLE), in the same coordinates."""
    del params
    r = posterior.marginals
    counts = jnp.sum(r, axis=0)
    loc = r.T @ data / counts
    var = jnp.sum(r * (data[:, None] - loc) ** 2, axis=0) / counts
    return {"logits": jnp.log(counts / data.shape[0]), "loc": loc, "log_scale": 0.5 * jnp.log(var)}


MIX1D = em.Mixture(mix1d_log_joint, MIX1D_K)
MIX1D_CLOSED_FORM = em.ClosedForm(mix1d_maximize)


def mix1d_brute_log_joint(params, x, k):
    """log p(x, z = k) for one scalar x, with math only."""
    logits = np.asarray(params["logits"], dtype=float)
    log_norm = max(logits) + math.log(sum(math.exp(v - max(logits)) for v in logits))
    loc = float(params["loc"][k])
    scale = math.exp(float(params["log_scale"][k]))
    return (logits[k] - log_norm) - 0.5 * ((float(x) - loc) / scale) ** 2 - math.log(scale) \
        - 0.5 * math.log(2 * math.pi)


def random_mix1d(rng: np.random.Generator):
    """Random parameters and data (N,) for MIX1D (data drawn from a random 3-component mixture)."""
    params = {
        "logits": rng.normal(size=MIX1D_K),
        "loc": rng.normal(scale=2.0, size=MIX1D_K),
        "log_scale": rng.normal(scale=0.3, size=MIX1D_K),
    }
    centres = rng.normal(scale=3.0, size=MIX1D_K)
    labels = rng.integers(0, MIX1D_K, size=MIX1D_N)
    data = centres[labels] + rng.normal(size=MIX1D_N)
    return jax.tree_util.tree_map(jnp.asarray, params), jnp.asarray(data)


# ------------------------------------------------------------------------------------------------
# Model 2: a 2-D isotropic mixture on pytree data {"x": (N, 2), "allowed": (N, K) bool} whose
# log_joint is -inf for the states an observation does not allow.
# ------------------------------------------------------------------------------------------------

MASKED_K = 3
MASKED_N = 12
MASKED_D = 2


def masked_log_joint(params, obs, z):
    """log w_z + Σ_d log N(x_d | loc[z, d], exp(log_scale[z])²), or -inf where state z is not allowed."""
    log_w = jax.nn.log_softmax(params["logits"])
    scale = jnp.exp(params["log_scale"][z])
    value = log_w[z] + jnp.sum(em.distributions.normal_logpdf(obs["x"], params["loc"][z], scale))
    return jnp.where(obs["allowed"][z], value, -jnp.inf)


MASKED = em.Mixture(masked_log_joint, MASKED_K)


def masked_brute_log_joint(params, obs, k):
    if not bool(obs["allowed"][k]):
        return -math.inf
    logits = np.asarray(params["logits"], dtype=float)
    log_norm = max(logits) + math.log(sum(math.exp(v - max(logits)) for v in logits))
    scale = math.exp(float(params["log_scale"][k]))
    value = logits[k] - log_norm
    for d in range(MASKED_D):
        resid = (float(obs["x"][d]) - float(params["loc"][k, d])) / scale
        value += -0.5 * resid * resid - math.log(scale) - 0.5 * math.log(2 * math.pi)
    return value


def random_masked(rng: np.random.Generator):
    """Random parameters and pytree data; every observation allows at least one state and some
    allow exactly one (so their other marginals are exactly 0)."""
    params = {
        "logits": rng.normal(size=MASKED_K),
        "loc": rng.normal(scale=2.0, size=(MASKED_K, MASKED_D)),
        "log_scale": rng.normal(scale=0.3, size=MASKED_K),
    }
    allowed = rng.random((MASKED_N, MASKED_K)) < 0.6
    only = rng.integers(0, MASKED_K, size=MASKED_N)
    allowed[np.arange(MASKED_N), only] = True          # at least one state each
    allowed[:3] = False
    allowed[np.arange(3), only[:3]] = True              # three observations with a single state
    data = {"x": rng.normal(scale=2.0, size=(MASKED_N, MASKED_D)), "allowed": allowed}
    return jax.tree_util.tree_map(jnp.asarray, params), jax.tree_util.tree_map(jnp.asarray, data)


def slice_obs(data, n):
    """Observation n of a data pytree, as numpy."""
    return jax.tree_util.tree_map(lambda leaf: np.asarray(leaf)[n], data)


# ------------------------------------------------------------------------------------------------
# Model 3: a diagonal Gaussian mixture in unconstrained coordinates (logits (K,), loc (K, D),
# log_scale (K, D)), the custom twin of gaussian_mixture(K, "diag", reg_covar=0).
# ------------------------------------------------------------------------------------------------

DIAG_K = 3
DIAG_D = 2
DIAG_N = 60


def diag_log_joint(params, x, z):
    """log softmax(logits)[z] + Σ_d log N(x_d | loc[z, d], exp(log_scale[z, d])²)."""
    log_w = jax.nn.log_softmax(params["logits"])
    scale = jnp.exp(params["log_scale"][z])
    return log_w[z] + jnp.sum(em.distributions.normal_logpdf(x, params["loc"][z], scale))


DIAG_CUSTOM = em.Mixture(diag_log_joint, DIAG_K)


def diag_to_gmm(params) -> em.models.GaussianMixtureParams:
    """Custom-coordinate diagonal parameters as GaussianMixtureParams."""
    return em.models.GaussianMixtureParams(
        jax.nn.softmax(params["logits"]), params["loc"], jnp.exp(2.0 * params["log_scale"]))


def gmm_to_diag(params: em.models.GaussianMixtureParams):
    """GaussianMixtureParams (diag) in the custom coordinates."""
    return {"logits": jnp.log(params.weights), "loc": params.means,
            "log_scale": 0.5 * jnp.log(params.covariances)}


# ------------------------------------------------------------------------------------------------
# Gaussian-mixture data and parameters.
# ------------------------------------------------------------------------------------------------

GMM_K = 3
GMM_D = 2
GMM_N = 60
GMM_MAX_ITER = 40   # one history length for every Gaussian-mixture fit: one compile per model


def clustered_data(rng: np.random.Generator, num_clusters: int, n: int, dim: int,
                   separation: float = 6.0) -> np.ndarray:
    """n points from num_clusters spread-out Gaussian clusters with random shapes."""
    centres = rng.normal(scale=separation, size=(num_clusters, dim))
    labels = np.arange(n) % num_clusters
    mixing = rng.normal(size=(num_clusters, dim, dim)) * 0.5 + np.eye(dim)
    return centres[labels] + np.einsum("nij,nj->ni", mixing[labels], rng.normal(size=(n, dim)))


def random_gmm_params(rng: np.random.Generator, covariance_type: str, k: int, dim: int,
                      data: np.ndarray | None = None) -> em.models.GaussianMixtureParams:
    """Random valid parameters: Dirichlet weights, means (near data points when given), SPD covariances."""
    weights = rng.dirichlet(np.full(k, 2.0))
    if data is None:
        means = rng.normal(scale=2.0, size=(k, dim))
    else:
        means = data[rng.choice(len(data), k, replace=False)] + 0.1 * rng.normal(size=(k, dim))
    if covariance_type == "full":
        a = rng.normal(size=(k, dim, dim))
        cov = a @ np.swapaxes(a, -1, -2) + 0.5 * np.eye(dim)
    elif covariance_type == "tied":
        a = rng.normal(size=(dim, dim))
        cov = a @ a.T + 0.5 * np.eye(dim)
    elif covariance_type == "diag":
        cov = rng.uniform(0.5, 3.0, size=(k, dim))
    else:
        cov = rng.uniform(0.5, 3.0, size=k)
    return em.models.GaussianMixtureParams(jnp.asarray(weights), jnp.asarray(means), jnp.asarray(cov))


def full_covariances(covariance_type: str, cov: np.ndarray, k: int, dim: int) -> np.ndarray:
    """Any covariance type as (K, D, D) numpy matrices (independent of jaxem's own helper)."""
    cov = np.asarray(cov)
    if covariance_type == "full":
        return cov
    if covariance_type == "tied":
        return np.broadcast_to(cov, (k, dim, dim)).copy()
    if covariance_type == "diag":
        return np.stack([np.diag(c) for c in cov])
    return np.stack([c * np.eye(dim) for c in cov])


# ------------------------------------------------------------------------------------------------
# Brute force.
# ------------------------------------------------------------------------------------------------

def brute_table(brute_log_joint, params, data, num_obs: int, k: int) -> np.ndarray:
    """φ[n, k] = log p(x_n, z_n = k) by a double loop."""
    table = np.empty((num_obs, k))
    for n in range(num_obs):
        obs = slice_obs(data, n)
        for j in range(k):
            table[n, j] = brute_log_joint(params, obs, j)
    return table


def brute_em_quantities(table: np.ndarray):
    """(log-likelihood, responsibilities, Q at the same parameters) from a table, with loops:
    ℓ = Σ_n log Σ_k exp φ[n, k]; r[n, k] = exp(φ[n, k] - log Σ_j exp φ[n, j]); Q = Σ_{r > 0} r φ."""
    num_obs, k = table.shape
    ll = 0.0
    resp = np.zeros_like(table)
    q = 0.0
    for n in range(num_obs):
        top = max(table[n])
        total = sum(math.exp(v - top) for v in table[n] if v > -math.inf)
        log_norm = top + math.log(total)
        ll += log_norm
        for j in range(k):
            if table[n, j] > -math.inf:
                resp[n, j] = math.exp(table[n, j] - log_norm)
                q += resp[n, j] * table[n, j]
    return ll, resp, q


def assert_monotone(history: np.ndarray, num_iters: int, rel: float = 1e-9) -> None:
    """history[:num_iters] never decreases by more than rel·|ℓ| (plus a tiny absolute slack)."""
    h = np.asarray(history)[: int(num_iters)]
    assert np.all(np.isfinite(h)), h
    drops = h[:-1] - h[1:]
    allowed = rel * np.maximum(np.abs(h[1:]), 1.0)
    assert np.all(drops <= allowed), (drops.max(), h)


@functools.cache
def jitted(model):
    """The model's derived functions, each jitted once per model (eager calls would compile every
    primitive separately, which costs seconds per test)."""
    return types.SimpleNamespace(
        log_likelihood=jax.jit(model.log_likelihood),
        e_step=jax.jit(model.e_step),
        q=jax.jit(model.q),
        log_potentials=jax.jit(model.log_potentials),
    )


# ------------------------------------------------------------------------------------------------
# Dempster, Laird & Rubin's genetic linkage (1977): 197 animals in four classes with
# probabilities (1/2 + θ/4, (1-θ)/4, (1-θ)/4, θ/4); the first class is two hidden cells.
# Data: the class labels 0..3 with the counts as sample weights. θ̂ = (15 + √53809) / 394.
# ------------------------------------------------------------------------------------------------

LINKAGE_COUNTS = np.array([125.0, 18.0, 20.0, 34.0])
LINKAGE_CLASS_OF_CELL = jnp.array([0, 0, 1, 2, 3])
LINKAGE_THETA_HAT = (15.0 + math.sqrt(53809.0)) / 394.0


def linkage_log_joint(params, x, z):
    """log p(x, z | θ): the cell probability if cell z belongs to class x, else -inf."""
    theta = params["theta"]
    cells = jnp.log(jnp.stack([0.5 + 0 * theta, theta / 4, (1 - theta) / 4, (1 - theta) / 4, theta / 4]))
    return jnp.where(LINKAGE_CLASS_OF_CELL[z] == x, cells[z], -jnp.inf)


def linkage_maximize(posterior, data, params):
    """θ' = (m_1 + m_4) / (m_1 + m_2 + m_3 + m_4) from the expected (weighted) cell counts."""
    m = jnp.sum(posterior.marginals, axis=0)
    return {"theta": (m[1] + m[4]) / (m[1] + m[2] + m[3] + m[4])}


LINKAGE = em.Mixture(linkage_log_joint, 5, m_step=em.ClosedForm(linkage_maximize))
