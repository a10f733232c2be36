"""A differentiable pipeline: tune a Gaussian mixture's covariance regularisation by gradient.

Data: a two-component Gaussian mixture in D = 5 dimensions (means 5 apart, a shared
covariance with eigenvalues 1 to 2), drawn with a fixed seed and split into
N_train = 60 training points, N_val = 200 validation points and a test set of
5000 that is used only to report how well each fit generalises. With about 30
points per component a full covariance (15 free numbers each) is estimated
noisily, so its smallest eigenvalues come out too small and the fit over-trusts
them. `reg_covar` (r), which the M-step adds to every covariance diagonal
(Σ_k = S_k + r·I), shrinks that noise away: a larger r helps held-out fit.

The pipeline, a function of ρ = log r:

    θ*(ρ) = the EM fixed point on the training data,  θ* = T(θ*, ρ)
            (`jaxem.fit(gaussian_mixture(K, "full", reg_covar=exp(ρ)), x_train, θ₀)`)
    f(ρ)  = (1/N_val) Σ_{n ∈ val} log p(x_n | θ*(ρ))       (`model.log_likelihood`)

and its gradient comes from `jax.value_and_grad(f)`: jaxem differentiates the
fit implicitly at the fixed point,

    dθ*/dρ = (I − ∂T/∂θ)⁻¹ ∂T/∂ρ,      df/dρ = ∇_θ f(θ*) · dθ*/dρ,

one linear solve at θ*; the EM loop itself is never differentiated, and the
derivative with respect to the starting point θ₀ is zero. Every fit starts from
the same θ₀ (a k-means++ start), and f is smooth as long as the fits stay on one
branch of fixed points: here up to r ≈ 1.9, beyond which the components begin to
merge and the fit from θ₀ changes branch (a kink in f). With means 3 apart such
switches already happen near r ≈ 0.1 and f jumps there: a gradient only sees the
branch it is on.

Tuning: at the default r = 1e-6 the objective is flat (df/dρ = r·df/dr, about
1e-6), so Adam, whose steps do not scale with the gradient's size, first walks ρ
off the plateau (30 steps); then plain gradient ascent ρ ← ρ + η f'(ρ) converges
to the stationary point (|f'| < 1e-9). Checks:

  (a) the gradient at ρ = log 0.1 equals the central finite difference
      (f(ρ + h) − f(ρ − h)) / 2h of two whole refits, h = 1e-4 (relative 1e-5);
  (b) the tuned f(ρ*) is at least the best of a grid of 41 refits over
      ρ ∈ [−8, 2] and beats the start;
  (c) the tuned fit also generalises better than the start on the test set.

Everything in float64 with tol = 1e-12, so that the fits are converged and the
implicit gradient is the derivative of what the refits compute.
Run: `python examples/differentiable_pipeline.py` (15-20 s on a 2-core CPU, most of
it compiling the gradient program).
"""

from __future__ import annotations

import math

import jax

jax.config.update("jax_enable_x64", True)  # an application may; the library never does

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import jaxem  # noqa: E402

DIM, NUM_COMPONENTS = 5, 2
NUM_TRAIN, NUM_VALIDATION, NUM_TEST = 60, 200, 5000
SEED = 0
SEPARATION = 5.0  # distance between the two means, along the first axis
FIT_SETTINGS = {"tol": 1e-12, "max_iter": 5000}
RHO_START = math.log(1e-6)  # the default reg_covar
RHO_CHECK = math.log(0.1)  # where the gradient is compared with a finite difference
FD_STEP = 1e-4
GRID = np.linspace(-8.0, 2.0, 41)
ADAM_STEPS, ADAM_RATE = 30, 0.5
ASCENT_STEP, ASCENT_MAX_STEPS, ASCENT_GRADIENT_TOL = 3.0, 40, 1e-9


def make_data(seed: int = SEED) -> dict:
    """Training, validation and test draws from one two-component mixture (numpy float64)."""
    rng = np.random.default_rng(seed)
    means = np.stack([np.zeros(DIM), np.r_[SEPARATION, np.zeros(DIM - 1)]])
    a = 0.3 * rng.normal(size=(DIM, DIM))
    covariance = np.eye(DIM) + a @ a.T  # shared by both components; eigenvalues about 1 to 2

    def draw(n):
        z = rng.integers(0, NUM_COMPONENTS, n)
        return means[z] + rng.multivariate_normal(np.zeros(DIM), covariance, n)

    truth = jaxem.models.GaussianMixtureParams(
        weights=np.full(NUM_COMPONENTS, 1.0 / NUM_COMPONENTS), means=means,
        covariances=np.stack([covariance] * NUM_COMPONENTS))
    return {"train": draw(NUM_TRAIN), "validation": draw(NUM_VALIDATION), "test": draw(NUM_TEST),
            "truth": truth}


def model_for(rho):
    """The mixture with reg_covar = exp(ρ); ρ may be a tracer (reg_covar is a pytree leaf)."""
    return jaxem.models.gaussian_mixture(NUM_COMPONENTS, "full", reg_covar=jnp.exp(rho))


def fit_train(rho, x_train, params0):
    """θ*(ρ): EM on the training data from params0."""
    return jaxem.fit(model_for(rho), x_train, params0, **FIT_SETTINGS)


def held_out(rho, x_train, x_held_out, params0):
    """(f(ρ), θ*(ρ)): the mean log-likelihood of held-out points under the fit on the
    training data, and that fit's parameters."""
    params = fit_train(rho, x_train, params0).params
    return model_for(rho).log_likelihood(params, x_held_out) / x_held_out.shape[0], params


value_and_gradient = jax.jit(jax.value_and_grad(held_out, has_aux=True))  # ((f, θ*), df/dρ)
refit = jax.jit(held_out)  # the same without derivatives: a plain refit


def tune(rho0, args) -> tuple[float, list[float], list[float]]:
    """Adam off the plateau, then gradient ascent to the stationary point:
    (ρ*, the ρ path, the objective along it)."""
    rho = jnp.asarray(rho0, dtype=jnp.float64)
    path, values = [], []
    optimizer = optax.adam(ADAM_RATE)
    state = optimizer.init(rho)
    for _ in range(ADAM_STEPS):
        (value, _), gradient = value_and_gradient(rho, *args)
        path.append(float(rho))
        values.append(float(value))
        updates, state = optimizer.update(-gradient, state)  # optax minimises
        rho = optax.apply_updates(rho, updates)
    for _ in range(ASCENT_MAX_STEPS):
        (value, _), gradient = value_and_gradient(rho, *args)
        path.append(float(rho))
        values.append(float(value))
        if abs(float(gradient)) < ASCENT_GRADIENT_TOL:
            break
        rho = rho + ASCENT_STEP * gradient
    else:
        raise RuntimeError(f"gradient ascent did not converge: df/dρ = {float(gradient):.3g} "
                           f"at ρ = {float(rho)}")
    return float(rho), path, values


def main() -> dict:
    data = make_data()
    x_train, x_val, x_test = (jnp.asarray(data[name]) for name in ("train", "validation", "test"))
    params0 = jaxem.models.gaussian_mixture(NUM_COMPONENTS, "full").init(jax.random.PRNGKey(0), x_train)
    args = (x_train, x_val, params0)

    def f64(rho):
        return jnp.asarray(rho, dtype=jnp.float64)

    print(f"Gaussian mixture K={NUM_COMPONENTS}, D={DIM}, full covariances: "
          f"{NUM_TRAIN} training / {NUM_VALIDATION} validation / {NUM_TEST} test points")

    # (a) the implicit gradient against a finite difference of two refits.
    (value_check, _), gradient_check = value_and_gradient(f64(RHO_CHECK), *args)
    finite_difference = float(refit(f64(RHO_CHECK + FD_STEP), *args)[0]
                              - refit(f64(RHO_CHECK - FD_STEP), *args)[0]) / (2 * FD_STEP)
    relative = abs(float(gradient_check) - finite_difference) / abs(finite_difference)
    print(f"  at reg_covar = {math.exp(RHO_CHECK):.3g}: df/dρ = {float(gradient_check):.10f} (implicit), "
          f"{finite_difference:.10f} (finite difference of refits), relative gap {relative:.1e}")

    # Tuning.
    rho_tuned, path, values = tune(RHO_START, args)
    value_start, value_tuned = values[0], values[-1]
    print(f"  tuned by {ADAM_STEPS} Adam + {len(path) - ADAM_STEPS} gradient-ascent steps: reg_covar "
          f"{math.exp(RHO_START):.0e} -> {math.exp(rho_tuned):.4f} (ρ = {rho_tuned:.6f})")
    print(f"  validation log-likelihood per point: {value_start:.6f} -> {value_tuned:.6f}")

    # (b) a grid of refits.
    grid_values = np.array([float(refit(f64(rho), *args)[0]) for rho in GRID])
    best = int(np.argmax(grid_values))
    print(f"  grid of {len(GRID)} refits: best reg_covar {math.exp(GRID[best]):.4f} (ρ = {GRID[best]:.2f}), "
          f"validation {grid_values[best]:.6f}")

    # (c) generalisation, on points that took no part in fitting or tuning.
    test = {name: float(model_for(rho).log_likelihood(refit(f64(rho), *args)[1], x_test)) / NUM_TEST
            for name, rho in (("start", RHO_START), ("grid_best", GRID[best]), ("tuned", rho_tuned))}
    truth = float(model_for(0.0).log_likelihood(data["truth"], x_test)) / NUM_TEST
    print(f"  test log-likelihood per point: start {test['start']:.4f}, grid best {test['grid_best']:.4f}, "
          f"tuned {test['tuned']:.4f} (true parameters {truth:.4f})")

    if not relative < 1e-5:
        raise RuntimeError(f"implicit gradient {float(gradient_check)} != finite difference "
                           f"{finite_difference}")
    if not value_tuned >= grid_values[best] - 1e-9:
        raise RuntimeError(f"tuned validation {value_tuned} is below the grid's best {grid_values[best]}")
    if not value_tuned > value_start + 0.1:
        raise RuntimeError(f"tuning did not improve on the start: {value_start} -> {value_tuned}")
    if not test["tuned"] > test["start"]:
        raise RuntimeError(f"the tuned fit generalises worse than the start: {test}")
    print("  checks passed: gradient = finite difference of refits; tuned >= every grid refit; "
          "better on the test set")
    return {
        "data": data,
        "params0": params0,
        "rho_check": RHO_CHECK,
        "value_check": float(value_check),
        "gradient_check": float(gradient_check),
        "finite_difference_check": finite_difference,
        "rho_start": RHO_START,
        "rho_tuned": rho_tuned,
        "reg_covar_tuned": math.exp(rho_tuned),
        "validation_start": value_start,
        "validation_tuned": value_tuned,
        "path": path,
        "values": values,
        "grid": GRID,
        "grid_values": grid_values,
        "test": test,
        "test_truth": truth,
    }


if __name__ == "__main__":
    main()
