"""Genetic linkage: the first example of Dempster, Laird & Rubin (1977), a multinomial EM problem.

197 animals fall into four phenotype classes with probabilities

    (1/2 + θ/4, (1 - θ)/4, (1 - θ)/4, θ/4),      observed counts y = (125, 18, 20, 34).

EM sees the first class as two hidden cells of probabilities 1/2 and θ/4, so
the complete data has five cells with probabilities

    p(θ) = (1/2, θ/4, (1 - θ)/4, (1 - θ)/4, θ/4),  cell c belonging to class (0, 0, 1, 2, 3)[c].

As a `jaxem.Mixture`: one observation x is the class of one animal, the latent
z is its cell, and

    log p(x, z | θ) = log p_z(θ)  if cell z belongs to class x,  else  -inf.

Closed-form M-step (the complete data is multinomial): with m_c the expected
count of cell c, θ' = (m_1 + m_4) / (m_1 + m_2 + m_3 + m_4).

The exact MLE maximises 125 log(2 + θ) + 38 log(1 - θ) + 34 log θ; setting
the derivative to zero gives 197 θ² - 15 θ - 68 = 0, so

    θ̂ = (15 + √53809) / 394 ≈ 0.6268215.

From θ₀ = 1/2 the first EM step is θ₁ = (25 + 34) / (25 + 18 + 20 + 34) = 59/97.
This script fits θ by the closed form and by `jaxem.Gradient` (L-BFGS on Q)
and checks both against θ̂. θ is stored as a logit so the gradient M-step is
unconstrained. Run: `python examples/genetic_linkage.py`.
"""

from __future__ import annotations

import math

import jax

jax.config.update("jax_enable_x64", True)  # an application may; the library never does

import jax.numpy as jnp  # noqa: E402

import jaxem  # noqa: E402

COUNTS = (125, 18, 20, 34)
CLASS_OF_CELL = jnp.array([0, 0, 1, 2, 3])
THETA_EXACT = (15.0 + math.sqrt(53809.0)) / 394.0


def log_cell_probabilities(params) -> jax.Array:
    """log p(θ) for the five complete-data cells, θ = sigmoid(params["logit"])."""
    log_theta = jax.nn.log_sigmoid(params["logit"])
    log_one_minus = jax.nn.log_sigmoid(-params["logit"])
    log4 = math.log(4.0)
    return jnp.stack([jnp.full_like(log_theta, -math.log(2.0)), log_theta - log4,
                      log_one_minus - log4, log_one_minus - log4, log_theta - log4])


def log_joint(params, x, z):
    """log p(x, z | θ) for one animal of class x and one hidden cell z; -inf if z is not in class x."""
    return jnp.where(CLASS_OF_CELL[z] == x, log_cell_probabilities(params)[z], -jnp.inf)


def closed_form_m_step(posterior, data, params):
    """θ' = (m_1 + m_4) / (m_1 + m_2 + m_3 + m_4) from the expected cell counts m (5,)."""
    del data, params
    m = jnp.sum(posterior.marginals, axis=0)
    theta = (m[1] + m[4]) / (m[1] + m[2] + m[3] + m[4])
    return {"logit": jnp.log(theta) - jnp.log1p(-theta)}


def theta_of(params) -> float:
    return float(jax.nn.sigmoid(params["logit"]))


def observed_log_likelihood(theta: float) -> float:
    """log p(y | θ) without the multinomial coefficient, written out by hand."""
    y1, y2, y3, y4 = COUNTS
    return (y1 * math.log(0.5 + theta / 4) + (y2 + y3) * math.log((1 - theta) / 4)
            + y4 * math.log(theta / 4))


model = jaxem.Mixture(log_joint, num_states=5)
data = jnp.repeat(jnp.arange(4), jnp.array(COUNTS))  # 197 class labels


def main() -> dict:
    params0 = {"logit": jnp.zeros(())}  # θ₀ = 1/2
    closed = jaxem.fit(model, data, params0, m_step=jaxem.ClosedForm(closed_form_m_step),
                       max_iter=100, tol=1e-14)
    gradient = jaxem.fit(model, data, params0, m_step=jaxem.Gradient(), max_iter=100, tol=1e-14)

    em_step = jax.jit(lambda p: closed_form_m_step(model.e_step(p, data), data, p))
    iterates, params = [0.5], params0
    for _ in range(5):
        params = em_step(params)
        iterates.append(theta_of(params))

    result = {
        "theta_exact": THETA_EXACT,
        "theta_closed_form": theta_of(closed.params),
        "theta_gradient": theta_of(gradient.params),
        "iterations_closed_form": int(closed.num_iters),
        "iterations_gradient": int(gradient.num_iters),
        "log_likelihood": float(closed.log_likelihood),
        "first_iterates": iterates,
    }
    print("genetic linkage (Dempster, Laird & Rubin 1977), counts", COUNTS)
    print("  EM iterates from θ₀ = 0.5:", "  ".join(f"{t:.9f}" for t in iterates))
    print(f"  closed-form M-step: θ = {result['theta_closed_form']:.9f}  "
          f"({result['iterations_closed_form']} iterations)")
    print(f"  gradient M-step:    θ = {result['theta_gradient']:.9f}  "
          f"({result['iterations_gradient']} iterations)")
    print(f"  exact MLE:          θ = {THETA_EXACT:.9f}  (197θ² - 15θ - 68 = 0)")

    # The checks: the published first step, the exact optimum, and jaxem's
    # log-likelihood against the one written out by hand above.
    if abs(iterates[1] - 59 / 97) > 1e-12:
        raise RuntimeError(f"first EM step {iterates[1]} != 59/97")
    for name in ("theta_closed_form", "theta_gradient"):
        if abs(result[name] - THETA_EXACT) > 1e-7:
            raise RuntimeError(f"{name} = {result[name]} differs from the exact MLE {THETA_EXACT}")
    by_hand = observed_log_likelihood(result["theta_closed_form"])
    if abs(result["log_likelihood"] - by_hand) > 1e-9:
        raise RuntimeError(f"jaxem's log-likelihood {result['log_likelihood']} != {by_hand} by hand")
    print("  checks passed: θ₁ = 59/97, both fits within 1e-7 of the exact MLE")
    return result


if __name__ == "__main__":
    main()
