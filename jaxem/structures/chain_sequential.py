"""The log-partition of one chain by a sequential scan over time.

A chain of T discrete latents with K states has three log-potential tables

    initial     ι[k]                       (K,)
    transition  τ[i, j]  or  τ[t, i, j]    (K, K) homogeneous, or (T-1, K, K): z_t = i -> z_{t+1} = j
    emission    ε[t, k]                    (T, K)

and log-partition (the forward recursion)

    A(φ) = log Σ_z exp(ι[z_0] + Σ_{t>=1} τ[z_{t-1}, z_t] + Σ_t ε[t, z_t]).

Its gradient is the posterior: ∂A/∂ε = γ (T, K) smoothed marginals, ∂A/∂ι = γ_0,
∂A/∂τ = Σ_t ξ_t (expected transition counts; per step when τ is time-varying).

Only the first `length` steps are real; later steps are padding and contribute
nothing to A, so their gradients are exactly zero.

Two implementations, equal up to rounding:

- `log_partition_scaled` (the default): an exp-normalised (scaled) forward pass.
  Emissions enter as b_t = exp(ε_t - max_k ε_t) computed for all t at once, so
  one step is a broadcast multiply-and-sum and a normalisation:
      α̂_t ∝ (α̂_{t-1} ᵀ A) ⊙ b_t,   c_t = the normaliser,   A(φ) = Σ_t log c_t + shifts.
  Its gradient is an explicit backward pass (`jax.custom_vjp`):
      β̂_{t-1} = A (b_t ⊙ β̂_t) / c_t,  γ_t = α̂_t ⊙ β̂_t,  ξ_t = α̂_t (b_{t+1} ⊙ β̂_{t+1} / c_{t+1})ᵀ ⊙ A,
  which the tests check against `jax.grad` of `log_partition_log`. It is
  finite for any length; it can underflow to -inf only when, at some step,
  every state still reachable has an emission potential more than ~708 nats
  (float64; ~87 in float32) below the best one and the best one is reachable
  with probability below ~1e-308: then use "log".
  Reverse-mode only (no `jax.jvp`/`jax.hessian`); use "log" for those.
- `log_partition_log`: the forward recursion in log space (a guarded logsumexp
  per step), differentiated by JAX; robust for any potentials, slower.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = [
    "finite_max",
    "keep_real",
    "log_partition_log",
    "log_partition_scaled",
    "safe_log",
    "safe_logsumexp",
    "scaled_forward",
    "step_inputs",
    "valid_steps",
]


def safe_log(x: jax.Array) -> jax.Array:
    """log x with log 0 = -inf and a zero (not NaN/inf) gradient at 0 (double `where`)."""
    positive = x > 0
    return jnp.where(positive, jnp.log(jnp.where(positive, x, 1.0)), -jnp.inf)


def finite_max(x: jax.Array, axis=None, keepdims: bool = False) -> jax.Array:
    """max over `axis`, with 0 where that max is not finite (all -inf); no gradient.

    Used as a shift before exponentiating: any finite value is exact, 0 keeps
    an all -inf slice at exp(-inf) = 0 instead of NaN.
    """
    m = jnp.max(x, axis=axis, keepdims=keepdims)
    return jax.lax.stop_gradient(jnp.where(jnp.isfinite(m), m, 0.0))


def safe_logsumexp(x: jax.Array, axis=None) -> jax.Array:
    """log Σ exp(x) over `axis`; -inf for an all -inf slice, with zero gradient there."""
    m = finite_max(x, axis=axis, keepdims=True)
    total = jnp.sum(jnp.exp(x - m), axis=axis, keepdims=True)
    return jnp.squeeze(safe_log(total) + m, axis=axis)


def valid_steps(num_steps: int, length):
    """(T,) booleans marking real steps, or None when `length` is the Python int T
    (an unpadded sequence: then no masking code is generated at all)."""
    if isinstance(length, int) and not isinstance(length, bool) and length == num_steps:
        return None
    return jnp.arange(num_steps) < length


def keep_real(valid_t, new, old):
    """`new` on a real step, `old` on padding (valid_t None: every step is real)."""
    return new if valid_t is None else jnp.where(valid_t, new, old)


def step_inputs(per_step: dict, valid, transition_steps=None) -> dict:
    """The scan inputs of steps 1..T-1: the given (T, ...) arrays from step 1 on, the
    mask when there is padding, and time-varying (T-1, K, K) transitions when given."""
    inputs = {name: value[1:] for name, value in per_step.items()}
    if valid is not None:
        inputs["valid"] = valid[1:]
    if transition_steps is not None:
        inputs["transition"] = transition_steps
    return inputs


def _exp_shifted(initial, transition, emission, valid):
    """Exponentiated tables with their per-factor shifts (so nothing overflows).

    Returns (p0 (K,), a (K, K) or (T-1, K, K), b (T, K), total shift of A(φ)).
    """
    e_shift = finite_max(emission, axis=1)  # (T,)
    b = jnp.exp(emission - e_shift[:, None])
    i_shift = finite_max(initial)
    p0 = jnp.exp(initial - i_shift)
    later = None if valid is None else valid[1:]
    if transition.ndim == 2:
        t_shift = finite_max(transition)
        a = jnp.exp(transition - t_shift)
        trans_total = t_shift * masked_sum(jnp.ones(emission.shape[0] - 1, emission.dtype), later)
    else:
        t_shift = finite_max(transition, axis=(1, 2))  # (T-1,)
        a = jnp.exp(transition - t_shift[:, None, None])
        trans_total = masked_sum(t_shift, later)
    shift = i_shift + masked_sum(e_shift, valid) + trans_total
    return p0, a, b, shift


def masked_sum(values, mask):
    """Σ values over real steps (all of them when `mask` is None)."""
    return jnp.sum(values) if mask is None else jnp.sum(jnp.where(mask, values, 0.0))


def _safe_divide(x, c):
    return x / jnp.where(c > 0, c, 1.0)


def scaled_forward(initial, transition, emission, length):
    """The scaled forward pass of one chain.

    Returns (log_partition, alphas (T, K), normalisers (T,), a, b): α̂_t are the
    filtered probabilities p(z_t | x_{0..t}) and c_t the per-step normalisers on
    real steps, and a, b the exponentiated, shifted transition and emission
    tables. The recursion runs through padding too (so the loop needs no masks);
    α̂_t and c_t there are finite but meaningless, and excluded from A(φ).
    """
    valid = valid_steps(emission.shape[0], length)
    p0, a, b, shift = _exp_shifted(initial, transition, emission, valid)
    if valid is not None:  # finite inputs on padding, whatever the padded data
        b = jnp.where(valid[:, None], b, 1.0)

    def step(predicted, inputs):
        # predicted = p_t (p_0 ∝ the initial distribution, p_t = α̂_{t-1}ᵀ A for t >= 1); only
        # u_t = p_t ⊙ b_t leaves the loop: c_t and α̂_t are recomputed from it outside, at once
        # for all t. The loop covers all T steps (the last step's p_T is unused).
        unnormalised = predicted * inputs["b"]
        alpha = _safe_divide(unnormalised, jnp.sum(unnormalised))
        return jnp.sum(alpha[:, None] * inputs.get("transition", a), axis=0), unnormalised

    xs = {"b": b}
    if a.ndim == 3:  # step t uses the transition t -> t+1; the last step none
        xs["transition"] = jnp.concatenate([a, jnp.zeros_like(a[:1])], axis=0)
    dtype = jnp.result_type(p0, a, b)  # tables of mixed precision: the loop runs in the widest
    _, unnormalised = jax.lax.scan(step, p0.astype(dtype), xs)
    cs = jnp.sum(unnormalised, axis=1)
    alphas = _safe_divide(unnormalised, cs[:, None])
    value = masked_sum(safe_log(cs), valid) + shift
    return value, alphas, cs, a, b


def _scaled_backward(alphas, cs, a, b, valid):
    """The explicit backward pass: (γ (T, K), Σξ (K, K) or ξ (T-1, K, K)).

    With w_t = b_t ⊙ β̂_t / c_t on real steps and 0 on padding, β̂_{t-1} = A w_t
    (+ 1 on padding, so that β̂ = 1 at the last real step); all masking is done
    on the inputs, outside the loop.
    """
    real_c = cs > 0 if valid is None else valid & (cs > 0)
    inverse_c = jnp.where(real_c, 1.0 / jnp.where(real_c, cs, 1.0), 0.0)  # 0 on padding
    per_step = {"b": b, "inverse_c": inverse_c}
    if valid is not None:
        per_step["padding"] = (~valid).astype(b.dtype)

    def step(beta, inputs):
        # beta = β̂_t (β̂_{T-1} = 1); emits it and returns β̂_{t-1} = A w_t (+ 1 on padding). The
        # loop covers all T steps (the last one's β̂_{-1} is unused); w_t is recomputed outside.
        a_t = inputs.get("transition", a)
        previous = jnp.sum(a_t * (inputs["b"] * beta * inputs["inverse_c"])[None, :], axis=1)
        if "padding" in inputs:
            previous = previous + inputs["padding"]
        return previous, beta

    if a.ndim == 3:  # step t uses the transition t-1 -> t; step 0 none
        per_step["transition"] = jnp.concatenate([jnp.zeros_like(a[:1]), a], axis=0)
    _, betas = jax.lax.scan(step, jnp.ones_like(alphas[0]), per_step, reverse=True)  # β̂_0 .. β̂_{T-1}
    ws = (b * betas * inverse_c[:, None])[1:]  # w_1 .. w_{T-1}
    gamma = alphas * betas
    if valid is not None:
        gamma = jnp.where(valid[:, None], gamma, 0.0)
    if a.ndim == 2:
        xi = a * (alphas[:-1].T @ ws)
    else:
        xi = alphas[:-1, :, None] * a * ws[:, None, :]
    return gamma, xi


def log_partition_scaled(initial, transition, emission, length):
    """A(φ) of one chain (see the module docstring); gradient by the explicit backward pass.

    Args:
      initial: (K,) log-potentials ι.
      transition: (K, K) or (T-1, K, K) log-potentials τ.
      emission: (T, K) log-potentials ε.
      length: number of real steps (int scalar, 1 <= length <= T); the rest is
        padding. The Python int T means no padding (and no masking code).
    """
    if valid_steps(emission.shape[0], length) is None:
        return _scaled_unpadded(initial, transition, emission)
    return _scaled_padded(initial, transition, emission, length)


@jax.custom_vjp
def _scaled_unpadded(initial, transition, emission):
    return scaled_forward(initial, transition, emission, emission.shape[0])[0]


def _unpadded_fwd(initial, transition, emission):
    value, alphas, cs, a, b = scaled_forward(initial, transition, emission, emission.shape[0])
    return value, (alphas, cs, a, b)


def _unpadded_bwd(residuals, cotangent):
    gamma, xi = _scaled_backward(*residuals, None)
    return cotangent * gamma[0], cotangent * xi, cotangent * gamma


_scaled_unpadded.defvjp(_unpadded_fwd, _unpadded_bwd)


@jax.custom_vjp
def _scaled_padded(initial, transition, emission, length):
    return scaled_forward(initial, transition, emission, length)[0]


def _padded_fwd(initial, transition, emission, length):
    value, alphas, cs, a, b = scaled_forward(initial, transition, emission, length)
    return value, (alphas, cs, a, b, length)


def _padded_bwd(residuals, cotangent):
    alphas, cs, a, b, length = residuals
    gamma, xi = _scaled_backward(alphas, cs, a, b, jnp.arange(alphas.shape[0]) < length)
    return cotangent * gamma[0], cotangent * xi, cotangent * gamma, None


_scaled_padded.defvjp(_padded_fwd, _padded_bwd)


def log_partition_log(initial, transition, emission, length):
    """A(φ) of one chain by the forward recursion in log space (same arguments as
    `log_partition_scaled`); every logsumexp is guarded, so -inf potentials
    (structural zeros) give zero, not NaN, gradients."""
    valid = valid_steps(emission.shape[0], length)

    def step(log_alpha, inputs):
        tau = inputs.get("transition", transition)
        new = safe_logsumexp(log_alpha[:, None] + tau, axis=0) + inputs["e"]
        return keep_real(inputs.get("valid"), new, log_alpha), None

    xs = step_inputs({"e": emission}, valid, transition if transition.ndim == 3 else None)
    final, _ = jax.lax.scan(step, initial + emission[0], xs)
    return safe_logsumexp(final)
