"""scikit-learn's initialisation of `GaussianMixture`, draw for draw.

scikit-learn draws every restart's starting responsibilities from one NumPy
`RandomState` (`check_random_state(random_state)`), restart after restart. The
face takes the same draws from the same `RandomState`, in the same order, on the
host, and does the arithmetic in JAX (vmapped over restarts, inside the fit
program), so an int `random_state` gives scikit-learn's starting points and
therefore its fit. Per restart, for each `init_params`:

- "kmeans": `KMeans(n_clusters=K, n_init=1, random_state=rs).fit(X).labels_` as
  one-hot responsibilities. KMeans centres X (x - mean), seeds by greedy
  k-means++ (`_kmeans_plusplus`: the first seed by `rs.choice(N)`, then for each
  further seed `L = 2 + int(log K)` candidates drawn by `rs.uniform(size=L)` times
  the current potential, searched in the cumulative squared distances, and the
  candidate that lowers the potential most is kept) and runs Lloyd's algorithm to
  convergence (at most 300 iterations; stop when no label changes, or when the
  squared centre shift is at most 1e-4 times the mean feature variance, then
  relabel by the final centres). Host draws: 1 + (K - 1)·L doubles.
- "k-means++": `kmeans_plusplus(X, K, random_state=rs)` (the same seeding on the
  uncentred X); each component's responsibility is 1 at its seed point.
- "random": `rs.uniform(size=(N, K))`, rows normalised (drawn on the host).
- "random_from_data": `rs.choice(N, size=K, replace=False)`, one point each.

Differences that remain, with their cause: an empty cluster in Lloyd's algorithm
takes the points farthest from their centres in descending order (scikit-learn
takes them in `np.argpartition`'s order), and distances, cumulative sums and
means are computed by XLA, whose rounding may differ from NumPy's in the last
bit (which changes a draw only when a uniform falls within rounding of a
boundary).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Draws", "KMEANS_MAX_ITER", "KMEANS_TOL", "draw", "responsibilities"]

KMEANS_MAX_ITER = 300   # scikit-learn's KMeans defaults
KMEANS_TOL = 1e-4


class Draws(NamedTuple):
    """One restart's host draws (leading axis R once stacked); unused fields are empty.

    first (): the first k-means++ seed; uniforms (K - 1, L): the later seeds' draws;
    table (N, K): "random"'s uniforms; rows (K,): "random_from_data"'s points.
    """

    first: np.ndarray
    uniforms: np.ndarray
    table: np.ndarray
    rows: np.ndarray


def num_local_trials(k: int) -> int:
    """scikit-learn's k-means++ candidates per seed: 2 + int(log K)."""
    return 2 + int(math.log(k))


def draw(random_state: np.random.RandomState, num_obs: int, k: int, init_params: str,
         num_restarts: int) -> Draws:
    """The draws of `num_restarts` restarts, taken from `random_state` as scikit-learn does."""
    empty = np.zeros((num_restarts, 0))
    firsts, uniforms, tables, rows = [], [], [], []
    for _ in range(num_restarts):
        if init_params in ("kmeans", "k-means++"):
            # RandomState.choice(N) with p uniform: one double, searched in the cumulative p.
            cdf = np.cumsum(np.full(num_obs, 1.0 / num_obs))
            cdf /= cdf[-1]
            firsts.append(int(cdf.searchsorted(random_state.random_sample(), side="right")))
            uniforms.append(random_state.uniform(size=(k - 1, num_local_trials(k))))
        elif init_params == "random":
            tables.append(random_state.uniform(size=(num_obs, k)))
        else:
            rows.append(random_state.choice(num_obs, size=k, replace=False))
    return Draws(
        np.asarray(firsts, np.int32) if firsts else np.zeros(num_restarts, np.int32),
        np.stack(uniforms) if uniforms else empty,
        np.stack(tables) if tables else empty,
        np.stack(rows).astype(np.int32) if rows else np.zeros((num_restarts, 0), np.int32),
    )


def responsibilities(draws: Draws, x: jax.Array, k: int, init_params: str) -> jax.Array:
    """One restart's (N, K) starting responsibilities from its `Draws` (jittable)."""
    n = x.shape[0]
    if init_params == "random":
        return draws.table / jnp.sum(draws.table, axis=1, keepdims=True)
    if init_params == "random_from_data":
        return jnp.zeros((n, k), x.dtype).at[draws.rows, jnp.arange(k)].set(1.0)
    if init_params == "k-means++":
        seeds = _kmeans_plusplus(x, draws.first, draws.uniforms)
        return jnp.zeros((n, k), x.dtype).at[seeds, jnp.arange(k)].set(1.0)
    centred = x - jnp.mean(x, axis=0)
    centres = centred[_kmeans_plusplus(centred, draws.first, draws.uniforms)]
    return jax.nn.one_hot(_lloyd(centred, centres), k, dtype=x.dtype)


def _squared_distances(points: jax.Array, x: jax.Array, x_norms: jax.Array) -> jax.Array:
    """‖p - x_n‖² as scikit-learn's `_euclidean_distances(squared=True)` computes it: (P, N)."""
    distances = jnp.sum(points * points, axis=1)[:, None] - 2.0 * points @ x.T + x_norms[None, :]
    return jnp.maximum(distances, 0.0)


def _kmeans_plusplus(x: jax.Array, first: jax.Array, uniforms: jax.Array) -> jax.Array:
    """scikit-learn's greedy k-means++ seeds (their row indices, (K,)) from its draws."""
    n = x.shape[0]
    x_norms = jnp.sum(x * x, axis=1)
    closest = _squared_distances(x[first][None], x, x_norms)[0]
    seeds = jnp.zeros(uniforms.shape[0] + 1, jnp.int32).at[0].set(first)

    def add_seed(c, carry):
        seeds, closest, potential = carry
        candidates = jnp.searchsorted(jnp.cumsum(closest), uniforms[c - 1] * potential, side="left")
        candidates = jnp.minimum(candidates, n - 1)
        distances = jnp.minimum(closest[None], _squared_distances(x[candidates], x, x_norms))
        potentials = jnp.sum(distances, axis=1)
        best = jnp.argmin(potentials)
        return seeds.at[c].set(candidates[best]), distances[best], potentials[best]

    if seeds.shape[0] == 1:
        return seeds
    seeds, _, _ = jax.lax.fori_loop(1, seeds.shape[0], add_seed, (seeds, closest, jnp.sum(closest)))
    return seeds


def _lloyd(x: jax.Array, centres: jax.Array) -> jax.Array:
    """scikit-learn's Lloyd iterations from `centres`; the final labels (N,)."""
    k = centres.shape[0]
    tol = jnp.mean(jnp.var(x, axis=0)) * KMEANS_TOL

    def labels_of(centres):
        distances = jnp.sum(centres * centres, axis=1)[None, :] - 2.0 * x @ centres.T
        return jnp.argmin(distances, axis=1).astype(jnp.int32)

    def new_centres(labels, centres):
        one_hot = jax.nn.one_hot(labels, k, dtype=x.dtype)
        counts = jnp.sum(one_hot, axis=0)
        sums = one_hot.T @ x
        # Empty clusters take the points farthest from their centres (descending order).
        far = jnp.argsort(-jnp.sum((x - centres[labels]) ** 2, axis=1))[:k]
        empty_rank = jnp.cumsum(counts == 0) - 1
        relocated = x[far[jnp.clip(empty_rank, 0, k - 1)]]
        return jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1.0)[:, None], relocated)

    def running(state):
        i, _, _, done = state
        return (i < KMEANS_MAX_ITER) & ~done

    def step(state):
        i, centres, old_labels, _ = state
        labels = labels_of(centres)
        moved = new_centres(labels, centres)
        strict = jnp.all(labels == old_labels)
        shifted = jnp.sum((moved - centres) ** 2) <= tol
        return i + 1, moved, labels, strict | shifted

    start = (jnp.int32(0), centres, jnp.full(x.shape[0], -1, jnp.int32), jnp.asarray(False))
    _, centres, _, _ = jax.lax.while_loop(running, step, start)
    return labels_of(centres)
