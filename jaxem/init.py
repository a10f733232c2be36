"""Initialisers: starting responsibilities for N points and K components.

All take an explicit PRNG key, are pure and fixed-shape, so
`jax.vmap(lambda k: init(k, x, K))(keys)` builds a batch of restarts in one
program. A model turns responsibilities into parameters with one M-step.

- "kmeans++": k-means++ seeding (Arthur & Vassilvitskii 2007): the first seed
  uniformly, each next one with probability ∝ squared distance to the nearest
  seed; every point is then assigned to its nearest seed.
- "kmeans": k-means++ seeding followed by `LLOYD_ITERATIONS` Lloyd iterations.
- "random_from_data": K distinct data points as seeds, nearest-seed assignment.
- "random": responsibilities drawn uniformly and normalised per point
  (scikit-learn's init_params="random").
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = [
    "INIT_METHODS",
    "LLOYD_ITERATIONS",
    "initial_responsibilities",
    "kmeans_plusplus",
    "nearest_assignment",
]

INIT_METHODS = ("kmeans++", "kmeans", "random_from_data", "random")
LLOYD_ITERATIONS = 10


def squared_distances(x: jax.Array, centers: jax.Array) -> jax.Array:
    """‖x_n - c_k‖² for x (N, D) and centers (K, D): (N, K), clipped at 0."""
    d2 = (jnp.sum(x * x, 1)[:, None] - 2.0 * x @ centers.T + jnp.sum(centers * centers, 1)[None, :])
    return jnp.maximum(d2, 0.0)


def kmeans_plusplus(key: jax.Array, x: jax.Array, num_centers: int) -> jax.Array:
    """k-means++ seeds (num_centers, D) drawn from the rows of x (N, D)."""
    n = x.shape[0]
    keys = jax.random.split(key, num_centers)
    first = x[jax.random.randint(keys[0], (), 0, n)]
    centers = jnp.zeros((num_centers, x.shape[1]), x.dtype).at[0].set(first)
    closest = jnp.sum((x - first) ** 2, axis=1)

    def add_center(i, carry):
        centers, closest = carry
        # All-zero distances (duplicate data) fall back to a uniform draw.
        logits = jnp.where(jnp.sum(closest) > 0, jnp.log(closest), 0.0)
        new = x[jax.random.categorical(keys[i], logits)]
        closest = jnp.minimum(closest, jnp.sum((x - new) ** 2, axis=1))
        return centers.at[i].set(new), closest

    centers, _ = jax.lax.fori_loop(1, num_centers, add_center, (centers, closest))
    return centers


def nearest_assignment(x: jax.Array, centers: jax.Array) -> jax.Array:
    """One-hot (N, K) responsibilities of each point to its nearest center."""
    labels = jnp.argmin(squared_distances(x, centers), axis=1)
    return jax.nn.one_hot(labels, centers.shape[0], dtype=x.dtype)


def lloyd(x: jax.Array, centers: jax.Array, num_iterations: int) -> jax.Array:
    """k-means (Lloyd) iterations; an empty cluster keeps its previous center."""
    def step(_, centers):
        resp = nearest_assignment(x, centers)
        counts = jnp.sum(resp, axis=0)
        sums = resp.T @ x
        return jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1)[:, None], centers)

    return jax.lax.fori_loop(0, num_iterations, step, centers)


def initial_responsibilities(key: jax.Array, x: jax.Array, num_components: int,
                             method: str = "kmeans++") -> jax.Array:
    """(N, K) starting responsibilities for data x (N, D) by `method` (see module doc)."""
    n = x.shape[0]
    if method == "random":
        resp = jax.random.uniform(key, (n, num_components), x.dtype)
        return resp / jnp.sum(resp, axis=1, keepdims=True)
    if method == "random_from_data":
        centers = x[jax.random.choice(key, n, (num_components,), replace=False)]
    elif method in ("kmeans++", "kmeans"):
        centers = kmeans_plusplus(key, x, num_components)
        if method == "kmeans":
            centers = lloyd(x, centers, LLOYD_ITERATIONS)
    else:
        raise ValueError(f"method: expected one of {INIT_METHODS}, got {method!r}.")
    return nearest_assignment(x, centers)
