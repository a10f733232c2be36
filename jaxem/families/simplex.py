"""Probability vectors in minimal unconstrained coordinates: log-ratios against the last entry.

A probability vector p = (p_1, ..., p_K) (p_k >= 0, Σ p_k = 1) has K - 1 free
parameters. Its coordinates are the K - 1 log-ratios against the LAST entry,

    u_k = log p_k - log p_K        (k = 1, ..., K - 1),

with inverse p = softmax([u_1, ..., u_{K-1}, 0]) (the additive log-ratio map and
its inverse). Every u in R^{K-1} is a valid vector with all p_k > 0, and the map
is smooth in both directions, so a Hessian in u has no redundant direction.

Zeros (structural zeros, e.g. the forbidden transitions of a left-right HMM):

- An entry p_k = 0 (k < K) has u_k = -inf, and softmax maps -inf back to exactly
  0. Its gradient is 0 in both directions (no NaN or inf reaches a backward pass).
  Code that optimises in u must hold non-finite coordinates fixed: the vector then
  moves on its face {p_k = 0}, whose dimension is the number of finite coordinates.
- The last entry p_K = 0 would make every log-ratio +inf (and lose the ratios). Then
  the reference is the last POSITIVE entry p_j instead: u_j = +inf marks it, the other
  positive entries hold u_k = log p_k - log p_j and the zero entries -inf. The inverse
  reads the marker: p = softmax(u with the +inf put to 0 and a last logit of -inf).
  So a vector with any pattern of zeros round-trips exactly (zeros stay exactly 0),
  and the finite coordinates are again exactly the free parameters of its face
  (one fewer than its positive entries). Which entry is the reference is a property of
  the zero pattern, so it never changes while the non-finite coordinates are held fixed.

Inputs are taken to be valid (not checked): non-negative, summing to 1 along `axis`,
with at least one positive entry (an all-zero vector gives NaN), and for
`logits_to_simplex` at most one +inf per vector (as `simplex_to_logits` makes them).
Both functions are pure, work under jit/vmap/grad, keep the floating dtype of their
input and carry any other axes through unchanged (batches of vectors, rows of a matrix).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["logits_to_simplex", "simplex_to_logits"]


def _safe_log(x: jax.Array) -> jax.Array:
    """log x with log 0 = -inf and a zero (not inf/NaN) gradient at 0 (double `where`)."""
    positive = x > 0
    return jnp.where(positive, jnp.log(jnp.where(positive, x, 1.0)), -jnp.inf)


def simplex_to_logits(p: jax.Array, axis: int = -1) -> jax.Array:
    """The K - 1 log-ratios u_k = log p_k - log p_K of probability vectors along `axis`.

    Args:
      p: probabilities of shape (..., K, ...) with K >= 1 along `axis`, each vector on
        the simplex; any floating dtype.
      axis: the axis that holds the K entries of each vector.

    Returns:
      u of the same shape with K - 1 along `axis` (size 0 when K = 1) and p's dtype.
      Zero entries give -inf; if p_K = 0 the last positive entry is the reference and
      its coordinate is +inf (module docstring). Inverse: `logits_to_simplex`.
    """
    p = jnp.moveaxis(jnp.asarray(p), axis, -1)
    if not jnp.issubdtype(p.dtype, jnp.floating):
        raise TypeError(f"p: expected floating-point probabilities, got dtype {p.dtype}.")
    size = p.shape[-1]
    if size == 0:
        raise ValueError("p: a probability vector needs at least one entry (K >= 1), got K = 0.")
    positive = p > 0
    log_p = _safe_log(p)
    # The reference: the last positive entry (index K - 1 unless p_K = 0).
    reference = size - 1 - jnp.argmax(positive[..., ::-1], axis=-1)
    log_reference = jnp.take_along_axis(log_p, reference[..., None], axis=-1)
    u = log_p[..., :-1] - log_reference
    u = jnp.where(jnp.arange(size - 1) == reference[..., None], jnp.inf, u)
    return jnp.moveaxis(u, -1, axis)


def logits_to_simplex(u: jax.Array, axis: int = -1) -> jax.Array:
    """Probability vectors p = softmax([u, 0]) from their K - 1 log-ratios along `axis`.

    Args:
      u: coordinates of shape (..., K - 1, ...) along `axis` (K - 1 = 0 allowed: p = [1]),
        as made by `simplex_to_logits`: any real numbers, -inf for an entry that is exactly
        0, and +inf for the reference entry of a vector whose last entry is 0.
      axis: the axis that holds the K - 1 coordinates of each vector.

    Returns:
      p of the same shape with K along `axis` and u's dtype; entries with u = -inf are
      exactly 0 (and so is p_K when a coordinate is +inf).
    """
    u = jnp.moveaxis(jnp.asarray(u), axis, -1)
    if not jnp.issubdtype(u.dtype, jnp.floating):
        u = u.astype(jax.dtypes.canonicalize_dtype(jnp.float64))
    marker = u == jnp.inf  # the reference entry of a vector whose last entry is 0
    has_marker = jnp.any(marker, axis=-1, keepdims=True)
    last = jnp.where(has_marker, -jnp.inf, 0.0).astype(u.dtype)
    logits = jnp.concatenate([jnp.where(marker, 0.0, u), last], axis=-1)
    return jnp.moveaxis(jax.nn.softmax(logits, axis=-1), -1, axis)
