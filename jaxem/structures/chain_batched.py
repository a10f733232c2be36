"""The scaled forward–backward for a batch of padded chains that share their
initial and transition tables, scanning over time with the batch inside each step.

This is `chain_sequential.log_partition_scaled` for B sequences at once (same
maths, same results): one `lax.scan` over the T steps whose step updates all B
filtered distributions together, with the arrays stored time-major (T, B, K) so
that every step reads and writes contiguous (B, K) slices. `jax.vmap` of the
one-sequence recursion computes the same thing but slices the middle axis of
(B, T, K) arrays at every step, which is markedly slower on CPU.

Padding is handled entirely outside the loop: padded steps get emission factor
1, their normalisers are excluded from A(φ), and the backward pass sees w = 0
and β̂ = 1 there. The loop bodies contain no masks.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxem.structures.chain_sequential import finite_max, safe_log

__all__ = ["log_partitions_scaled_batch"]


def _forward(initial, transition, emission, lengths):
    """Time-major scaled forward pass of B chains.

    Returns (values (B,), alphas (T, B, K), cs (T, B), a (K, K), b (T, B, K), valid (T, B)).
    """
    num_steps = emission.shape[1]
    valid = jnp.arange(num_steps)[:, None] < lengths[None, :]  # (T, B)
    emission = jnp.swapaxes(emission, 0, 1)  # (T, B, K)
    e_shift = finite_max(emission, axis=2)  # (T, B)
    b = jnp.where(valid[:, :, None], jnp.exp(emission - e_shift[:, :, None]), 1.0)
    i_shift = finite_max(initial)
    t_shift = finite_max(transition)
    p0 = jnp.exp(initial - i_shift)
    a = jnp.exp(transition - t_shift)

    def step(predicted, b_t):
        # predicted: (B, K) p_t (p0 at t = 0, then α̂_{t-1} A); the loop covers all T steps.
        unnormalised = predicted * b_t  # (B, K)
        c = jnp.sum(unnormalised, axis=1)
        alpha = unnormalised / jnp.where(c > 0, c, 1.0)[:, None]
        return alpha @ a, (alpha, c)

    # Tables of mixed precision: the loop runs in the widest.
    start = jnp.broadcast_to(p0, b.shape[1:]).astype(jnp.result_type(p0, a, b))
    _, (alphas, cs) = jax.lax.scan(step, start, b)
    log_c = jnp.where(valid, safe_log(cs), 0.0)
    values = (jnp.sum(log_c, axis=0) + jnp.sum(jnp.where(valid, e_shift, 0.0), axis=0)
              + i_shift + t_shift * (lengths - 1))
    return values, alphas, cs, a, b, valid


def _backward(alphas, cs, a, b, valid, cotangents):
    """Gradients (∂/∂ι (K,), ∂/∂τ (K, K), ∂/∂ε (B, T, K)) of Σ_b g_b A_b for cotangents g (B,)."""
    real_c = valid & (cs > 0)
    inverse_c = jnp.where(real_c, 1.0 / jnp.where(real_c, cs, 1.0), 0.0)  # (T, B), 0 on padding
    padding = (~valid).astype(b.dtype)

    def step(beta, inputs):
        # beta = β̂_t (1 at t = T-1); emits w_t and returns β̂_{t-1}; the loop covers all T steps.
        b_t, inverse_c_t, padding_t = inputs
        w = b_t * beta * inverse_c_t[:, None]  # (B, K)
        previous = w @ a.T + padding_t[:, None]
        return previous, (beta, w)

    _, (betas, ws) = jax.lax.scan(step, jnp.ones_like(alphas[0]), (b, inverse_c, padding), reverse=True)
    ws = ws[1:]
    weight = cotangents[None, :, None]
    gamma = jnp.where(valid[:, :, None], alphas * betas, 0.0) * weight  # (T, B, K)
    num_states = a.shape[0]
    pairs = (alphas[:-1] * weight).reshape(-1, num_states).T @ ws.reshape(-1, num_states)
    return jnp.sum(gamma[0], axis=0), a * pairs, jnp.swapaxes(gamma, 0, 1)


@jax.custom_vjp
def log_partitions_scaled_batch(initial, transition, emission, lengths):
    """A(φ_b) for B padded chains: (B,).

    Args:
      initial: (K,) shared initial log-potentials.
      transition: (K, K) shared transition log-potentials.
      emission: (B, T, K) emission log-potentials.
      lengths: (B,) numbers of real steps, 1 <= lengths <= T.
    """
    return _forward(initial, transition, emission, lengths)[0]


def _fwd(initial, transition, emission, lengths):
    values, alphas, cs, a, b, valid = _forward(initial, transition, emission, lengths)
    return values, (alphas, cs, a, b, valid)


def _bwd(residuals, cotangents):
    return (*_backward(*residuals, cotangents), None)


log_partitions_scaled_batch.defvjp(_fwd, _bwd)
