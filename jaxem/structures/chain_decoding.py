"""Decoding and sampling for one chain, from its log-potential tables.

Tables as in `jaxem.structures.chain_sequential`: initial ι (K,), transition τ
(K, K) or (T-1, K, K), emission ε (T, K), and `length` real steps (the rest is
padding; decoded and sampled states there are -1).

- `viterbi`: the most probable path argmax_z [ι[z_0] + Σ τ[z_{t-1}, z_t] + Σ ε[t, z_t]]
  by max-product: δ_t[j] = max_i (δ_{t-1}[i] + τ[i, j]) + ε[t, j], with
  backpointers and a backward trace. Its score is log p(x, z*) when the tables
  are normalised log-probabilities.
- `sample_posterior`: a path drawn from p(z | x) by forward filtering, backward
  sampling: z_{L-1} ~ α̂_{L-1}, then z_t ~ α̂_t[i] exp(τ[i, z_{t+1}]), normalised.
- `sample_chain`: a path of a homogeneous chain drawn from its prior,
  z_0 ~ softmax(ι), z_t ~ softmax(τ[z_{t-1}]).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxem.structures.chain_sequential import keep_real, safe_log, scaled_forward, step_inputs, valid_steps

__all__ = ["sample_chain", "sample_posterior", "viterbi"]


def viterbi(initial, transition, emission, length):
    """Most probable state path of one chain.

    Returns (path (T,) int32 with -1 on padding, score: the path's total log-potential).
    """
    num_steps, num_states = emission.shape
    valid = valid_steps(num_steps, length)
    states = jnp.arange(num_states, dtype=jnp.int32)

    def forward(delta, inputs):
        scores = delta[:, None] + inputs.get("transition", transition)  # (K_prev, K)
        pointer = jnp.argmax(scores, axis=0).astype(jnp.int32)
        new = jnp.max(scores, axis=0) + inputs["e"]
        valid_t = inputs.get("valid")
        return keep_real(valid_t, new, delta), keep_real(valid_t, pointer, states)

    xs = step_inputs({"e": emission}, valid, transition if transition.ndim == 3 else None)
    final, pointers = jax.lax.scan(forward, initial + emission[0], xs)
    last = jnp.argmax(final).astype(jnp.int32)

    def backward(state, pointer):
        previous = pointer[state]
        return previous, previous

    _, earlier = jax.lax.scan(backward, last, pointers, reverse=True)
    path = jnp.concatenate([earlier, last[None]])
    return keep_real(valid, path, -1), jnp.max(final)


def sample_posterior(key, initial, transition, emission, length):
    """One path (T,) int32 drawn from p(z | x) (-1 on padding).

    Each draw is a Gumbel-max: argmax_i (log w_i + g_i) with g ~ Gumbel(0, 1) drawn
    for all steps up front, so the backward scan contains no random-number calls.
    """
    num_steps, num_states = emission.shape
    valid = valid_steps(num_steps, length)
    _, alphas, _, a, _ = scaled_forward(initial, transition, emission, length)
    gumbels = jax.random.gumbel(key, (num_steps, num_states), alphas.dtype)
    last_alpha = alphas[-1] if valid is None else alphas[length - 1]  # the last real step's filter
    last = jnp.argmax(safe_log(last_alpha) + gumbels[-1]).astype(jnp.int32)

    def backward(next_state, inputs):
        # inputs hold step t+1's mask and transition, and step t's alpha and noise
        a_t = inputs.get("transition", a)
        drawn = jnp.argmax(safe_log(inputs["alpha"] * a_t[:, next_state]) + inputs["gumbel"])
        state = keep_real(inputs.get("valid"), drawn.astype(jnp.int32), next_state)
        return state, state

    xs = step_inputs({}, valid, a if a.ndim == 3 else None)
    xs.update(alpha=alphas[:-1], gumbel=gumbels[:-1])
    _, earlier = jax.lax.scan(backward, last, xs, reverse=True)
    path = jnp.concatenate([earlier, last[None]])
    return keep_real(valid, path, -1)


def sample_chain(key, initial, transition, num_steps: int):
    """A path (num_steps,) int32 from a homogeneous chain with log-potentials ι (K,), τ (K, K),
    normalised per row by softmax (so unnormalised potentials are allowed); Gumbel-max
    draws with all noise generated up front."""
    gumbels = jax.random.gumbel(key, (num_steps, initial.shape[-1]), jnp.result_type(initial, float))
    first = jnp.argmax(initial + gumbels[0]).astype(jnp.int32)

    def step(state, gumbel_t):
        new = jnp.argmax(transition[state] + gumbel_t).astype(jnp.int32)
        return new, new

    _, rest = jax.lax.scan(step, first, gumbels[1:])
    return jnp.concatenate([first[None], rest])
