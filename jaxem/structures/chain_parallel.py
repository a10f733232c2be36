"""The log-partition of one chain by a parallel (associative) reduction over time.

The forward recursion is a product of matrices in the (logsumexp, +) semiring:

    A(φ) = logsumexp_{i,j} v_0[i] + (M_1 ⊗ M_2 ⊗ ... ⊗ M_{T-1})[i, j],
    v_0[i] = ι[i] + ε[0, i],   M_t[i, j] = τ[i, j] (or τ[t-1, i, j]) + ε[t, j],

and (X ⊗ Y)[i, j] = logsumexp_k X[i, k] + Y[k, j] is associative. Multiplying
neighbouring pairs level by level takes O(log T) sequential levels of
independent K×K products (O(T K³) work in all), so on an accelerator a long
chain runs in logarithmic depth. Padding steps are the semiring identity
(0 on the diagonal, -inf elsewhere). The gradient (the posterior marginals)
is JAX's reverse-mode derivative of the reduction.

It holds all T-1 step matrices at once: O(T K²) memory (T = 10⁶, K = 100 in
float64 would need 80 GB), against O(T K) for the sequential scan.

Each product is computed as exp-shifted matrices multiplied in probability
space (row maxima of X and column maxima of Y as shifts), which is exact
unless every term of an entry underflows; the sequential "log" recursion is
the fully robust alternative.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxem.structures.chain_sequential import finite_max, safe_log, safe_logsumexp, valid_steps

__all__ = ["log_matmul", "log_partition_parallel"]


def log_matmul(x: jax.Array, y: jax.Array) -> jax.Array:
    """(X ⊗ Y)[i, j] = logsumexp_k X[i, k] + Y[k, j] for (K, K) log-matrices; -inf safe."""
    row_shift = finite_max(x, axis=1, keepdims=True)  # (K, 1)
    col_shift = finite_max(y, axis=0, keepdims=True)  # (1, K)
    product = jnp.exp(x - row_shift) @ jnp.exp(y - col_shift)
    return safe_log(product) + row_shift + col_shift


def _reduce(matrices: jax.Array) -> jax.Array:
    """The ordered ⊗-product of (N, K, K) log-matrices, N >= 1, by pairwise levels."""
    pair_product = jax.vmap(log_matmul)
    while matrices.shape[0] > 1:
        n = matrices.shape[0]
        paired = pair_product(matrices[0:n - 1:2], matrices[1:n:2])
        if n % 2:
            paired = jnp.concatenate([paired, matrices[n - 1:]], axis=0)
        matrices = paired
    return matrices[0]


def log_partition_parallel(initial, transition, emission, length):
    """A(φ) of one chain by a pairwise ⊗-reduction (same arguments and result as
    `jaxem.structures.chain_sequential.log_partition_scaled`)."""
    num_steps, num_states = emission.shape
    first = initial + emission[0]
    if num_steps == 1:
        return safe_logsumexp(first)
    valid = valid_steps(num_steps, length)
    tau = transition if transition.ndim == 3 else transition[None]
    steps = tau + emission[1:, None, :]  # (T-1, K, K)
    if valid is not None:
        eye = jnp.eye(num_states, dtype=bool)
        identity = jnp.where(eye, 0.0, -jnp.inf).astype(steps.dtype)
        steps = jnp.where(valid[1:, None, None], steps, identity)
    total = _reduce(steps)
    return safe_logsumexp(first[:, None] + total)
