"""Does keeping L-BFGS's memory across EM iterations help the `Gradient` M-step?

`jaxem.Gradient()` runs `num_steps` L-BFGS steps on each iteration's Q, starting the
optimizer afresh every EM iteration. `GradientWithMemory` below (an M-step written against
the public protocol: `init` gives the memory, `step` carries it in `EMState.m_step_state`)
keeps the optimizer's state across iterations instead: all of it, or only the curvature
pairs (with a fresh line search on each iteration's Q). Each is fitted to convergence from
the same start on three custom models (no closed form used); the table reports EM
iterations, seconds (compiled, best of 3) and the final log-likelihood.

Run: `python benchmarks/gradient_memory.py`.
"""

from __future__ import annotations

import dataclasses
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jaxem as em  # noqa: E402
from jaxem.engine.mstep import negative_q  # noqa: E402


@dataclasses.dataclass(frozen=True)
class GradientWithMemory(em.Gradient):
    """`jaxem.Gradient` whose optimizer state is kept across EM iterations: all of it, or
    (`curvature_only`) L-BFGS's curvature pairs with a fresh line-search state."""

    curvature_only: bool = False

    def init(self, model, params):
        return self.optimizer_state(params)

    def step(self, model, params, posterior, data, log_prior, state):
        if self.curvature_only:  # optax.lbfgs's state: (curvature memory, ..., line search)
            state = (state[0],) + tuple(self.optimizer_state(params)[1:])
        return self.climb(negative_q(model, posterior, data, log_prior), params, state, with_state=True)


def poisson_log_joint(params, x, z):
    rate = jnp.exp(params["log_rates"][z])
    return jax.nn.log_softmax(params["logits"])[z] + em.families.poisson_logpmf(x, rate)


def normal_log_joint(params, x, z):
    scale = jnp.exp(params["log_scale"][z])
    log_density = jnp.sum(em.families.normal_logpdf(x, params["loc"][z], scale))
    return jax.nn.log_softmax(params["logits"])[z] + log_density


def problems():
    rng = np.random.default_rng(0)
    # Hasselblad's deaths per day, the ten counts weighted by their numbers of days
    deaths = (em.Mixture(poisson_log_joint, 2), jnp.arange(10),
              {"logits": jnp.zeros(2), "log_rates": jnp.log(jnp.array([1.0, 3.0]))},
              jnp.array([162.0, 267, 271, 185, 111, 61, 27, 8, 3, 1]))
    centres = np.array([[-3.0, 0.0], [0.0, 2.0], [3.0, -1.0]])
    x = centres[np.arange(3000) % 3] + rng.normal(size=(3000, 2)) * np.array([1.0, 0.6])
    diag = (em.Mixture(normal_log_joint, 3), jnp.asarray(x),
            {"logits": jnp.zeros(3), "loc": jnp.asarray(x[:3] + 0.5), "log_scale": jnp.zeros((3, 2))}, None)
    y = np.r_[rng.normal(-1.0, 1.0, 400), rng.normal(1.5, 0.5, 600)][:, None]
    overlap = (em.Mixture(normal_log_joint, 2), jnp.asarray(y),
               {"logits": jnp.zeros(2), "loc": jnp.array([[-0.5], [0.5]]), "log_scale": jnp.zeros((2, 1))},
               None)
    return {"Poisson mixture (Hasselblad deaths, weighted)": deaths,
            "diagonal Gaussian mixture K=3, N=3000": diag,
            "overlapping 1-D Gaussian mixture K=2, N=1000": overlap}


def best_seconds(fn, repeats=3):
    jax.block_until_ready(fn())
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - start)
    return best


def main():
    print(f"jax {jax.__version__} ({jax.default_backend()})")
    print("| problem | num_steps | memory kept | EM iterations | converged | seconds | log-likelihood |")
    print("|---|---|---|---|---|---|---|")
    variants = {"none": lambda n: em.Gradient(num_steps=n),
                "all": lambda n: GradientWithMemory(num_steps=n),
                "curvature": lambda n: GradientWithMemory(num_steps=n, curvature_only=True)}
    for name, (model, data, start, weights) in problems().items():
        for num_steps in (10, 3):
            for memory, make in variants.items():
                m_step = make(num_steps)

                def run(m_step=m_step, model=model, data=data, start=start, weights=weights):
                    return em.fit(model, data, start, weights=weights, m_step=m_step, max_iter=3000, tol=1e-9,
                                  convergence="absolute")

                result = run()
                seconds = best_seconds(run)
                print(f"| {name} | {num_steps} | {memory} | {int(result.num_iters)} | "
                      f"{bool(result.converged)} | {seconds:.3g} | {float(result.log_likelihood):.6f} |")


if __name__ == "__main__":
    main()
