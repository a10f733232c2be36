"""What a gradient through `jaxem.fit` costs, and GMRES against the fixed-point iteration.

`jax.grad(lambda x: jaxem.fit(model, x, p0, ...).log_likelihood)(x)` differentiates the
fixed point θ* = T(θ*) implicitly (`jaxem/engine/implicit.py`): one linear solve at θ*,
GMRES (restart min(30, dim θ), at most 20 restarts, `solve_method="batched"`, relative
tolerance eps^0.75 ≈ 1.8e-12 in float64) whose operator is a JVP of one EM step.

Part 1, per problem (float64, a tight tolerance), seconds of: a fit (`jaxem.fit` called as a
user would); `jax.grad` of the fitted log-likelihood with respect to the data, called eagerly
and under `jax.jit`; and, under `jax.jit`, the gradient of a function of θ* (a fixed random
linear combination a·θ* of the parameters, whose cotangent into the solve is not ≈ 0 as
∂ℓ/∂θ is at θ*). Each is the median of `--repeats` calls after a first call, blocked until
ready; its compile seconds are the first call minus that median (for the eager gradient the
fit's own loop is already compiled by then, so that is the derivative's part alone). The
last column counts the lines of the lowered StableHLO of the jitted fit and of the jitted
gradient of ℓ*, a rough measure of how much more XLA compiles for the gradient.

Part 2, the solver: at the fitted θ*, with G(θ, η) = T(θ) − θ from
`jaxem.engine.implicit.fixed_point_functions`, the system (∂G/∂θ) v = −b with
b = (∂G/∂η) η̇ for a random direction η̇ of the data, solved (here, not in the library) by
(i) `jax.scipy.sparse.linalg.gmres` called as jaxem calls it, to a relative residual of
1e-10 and to jaxem's own eps^0.75, and (ii) the fixed-point (Neumann) iteration
v ← v + (b − (I − DT) v), i.e. v ← b + DT v, to 1e-10. Reported: operator products (JVPs
of one EM step; counted by a `jax.debug.callback` in a separate, untimed run), seconds
(jitted solve, median), the true relative residual ‖(I − DT) v − b‖ / ‖b‖ at the end; and
the EM rate ρ, the largest |eigenvalue| of DT at θ* (a dense Jacobian), with the products
the fixed-point iteration should need, ln(1e-10) / ln ρ.

Problems: Hasselblad's (1969) Poisson mixture (as `examples/poisson_mixture_gradient.py`,
data as floats so that they can be differentiated); Old Faithful with
`gaussian_mixture(2, "full")`; a mid-size mixture, `gaussian_mixture(8, "full")` on N=5,000
synthetic points in D=4 with overlapping clusters.

Run:  python benchmarks/implicit_gradients.py            (all three problems)
      python benchmarks/implicit_gradients.py --quick    (fewer repeats, a smoke test)
Prints two Markdown tables; paste them into benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import math
import platform
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402
from jax.scipy.sparse.linalg import gmres  # noqa: E402
from problems import hasselblad, jaxem_revision, old_faithful  # noqa: E402

import jaxem as em  # noqa: E402
from jaxem.engine.implicit import fixed_point_functions  # noqa: E402
from jaxem.engine.mstep import resolve_m_step  # noqa: E402

RESTART, MAX_RESTARTS = 30, 20  # jaxem's GMRES settings (jaxem/engine/implicit.py)
TARGET = 1e-10


def mid_gmm(n=5_000, dim=4, k=8):
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=2.0, size=(k, dim))
    labels = rng.integers(k, size=n)
    data = jnp.asarray(centres[labels] + rng.normal(size=(n, dim)) * rng.uniform(0.6, 1.2, (k, dim))[labels])
    model = em.models.gaussian_mixture(k, "full")
    return model, data, model.init(jax.random.PRNGKey(0), data), None


def timings(fn, repeats):
    """(first call, median of `repeats` later calls), seconds, each blocked until ready."""
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return first, float(np.median(times)), out


def gradient_costs(name, problem, max_iter, tol, repeats):
    model, data, params0, m_step = problem
    fit = lambda x: em.fit(model, x, params0, m_step=m_step, max_iter=max_iter, tol=tol,  # noqa: E731
                           convergence="absolute")  # tol per observation, as measured in benchmarks/README.md
    fit_first, fit_s, res = timings(lambda: fit(data), repeats)
    flat, _ = ravel_pytree(res.params)
    direction = jax.random.normal(jax.random.PRNGKey(2), flat.shape, flat.dtype)

    def of_likelihood(x):
        return fit(x).log_likelihood

    def of_params(x):
        return jnp.vdot(direction, ravel_pytree(fit(x).params)[0])

    row = dict(name=name, iters=int(res.num_iters), converged=bool(res.converged), dim=flat.size,
               fit=(fit_s, fit_first - fit_s))
    grad_ll, jit_ll, jit_par = jax.grad(of_likelihood), jax.jit(jax.grad(of_likelihood)), jax.jit(
        jax.grad(of_params))
    for key, fn in (("ll", grad_ll), ("ll_jit", jit_ll), ("par_jit", jit_par)):
        first, steady, _ = timings(lambda fn=fn: fn(data), repeats)
        row[key] = (steady, first - steady)
    row["hlo"] = tuple(hlo_lines(fn, data) for fn in (jax.jit(fit), jit_ll))
    return row, (model, data, res.params, m_step)


def hlo_lines(jitted, *args):
    """Lines of the lowered StableHLO text: a rough size of what XLA has to compile."""
    return jitted.lower(*args).as_text().count("\n")


def linear_system(model, data, params_star, m_step):
    """(matvec v ↦ (I − DT) v on flat vectors, b, DT as a dense matrix) at θ*."""
    residual, _ = fixed_point_functions(resolve_m_step(model, m_step), None)
    eta = (model, data, None)
    flat, unravel = ravel_pytree(params_star)

    def matvec(v):  # (I − DT) v = −(∂G/∂θ) v
        return -ravel_pytree(jax.jvp(lambda p: residual(p, eta), (params_star,), (unravel(v),))[1])[0]

    data_dot = jax.random.normal(jax.random.PRNGKey(3), data.shape, data.dtype)
    _, rhs = jax.jvp(lambda x: residual(params_star, (model, x, None)), (data,), (data_dot,))
    b = ravel_pytree(rhs)[0]  # (∂G/∂θ) v = −b  ⇔  (I − DT) v = b
    jacobian_t = jax.jacfwd(lambda v: v - matvec(v))(flat * 0.0)  # DT = I − (I − DT)
    return matvec, b, jacobian_t


def gmres_solve(matvec, b, tol):
    v, _ = gmres(matvec, b, tol=tol, atol=0.0, restart=min(RESTART, b.size), maxiter=MAX_RESTARTS,
                 solve_method="batched")
    return v


def neumann_solve(matvec, b, tol, max_products):
    """v ← v + (b − (I − DT) v) from v = 0 until the relative residual is below `tol`."""
    threshold = tol * jnp.linalg.norm(b)

    def cond(state):
        _, r, k = state
        return (jnp.linalg.norm(r) > threshold) & (k < max_products)

    def body(state):
        v, r, k = state
        v = v + r
        return v, b - matvec(v), k + 1

    v, _, k = jax.lax.while_loop(cond, body, (jnp.zeros_like(b), b, 0))
    return v, k


class Counter:
    def __init__(self):
        self.count = 0

    def add(self, *_):
        self.count += 1


def solver_costs(name, system_inputs, repeats, max_products):
    model, data, params_star, m_step = system_inputs
    matvec, b, jacobian_t = linear_system(model, data, params_star, m_step)
    rate = float(np.max(np.abs(np.linalg.eigvals(np.asarray(jacobian_t)))))
    counter = Counter()

    def counted(v):
        jax.debug.callback(counter.add)
        return matvec(v)

    eps = float(jnp.finfo(b.dtype).eps)
    solvers = {
        f"GMRES, tol {TARGET:g}": lambda mv: (gmres_solve(mv, b, TARGET), None),
        f"GMRES, jaxem's tol eps^0.75 = {eps ** 0.75:.1e}":
            lambda mv: (gmres_solve(mv, b, eps ** 0.75), None),
        f"fixed-point v ← b + DT v, tol {TARGET:g}": lambda mv: neumann_solve(mv, b, TARGET, max_products),
    }
    rows = []
    for solver, solve in solvers.items():
        _, seconds, (v, _) = timings(jax.jit(lambda solve=solve: solve(matvec)), repeats)
        counter.count = 0
        jax.block_until_ready(jax.jit(lambda solve=solve: solve(counted))())
        jax.effects_barrier()
        rel = float(jnp.linalg.norm(matvec(v) - b) / jnp.linalg.norm(b))
        rows.append(dict(name=name, solver=solver, products=counter.count, seconds=seconds, residual=rel))
    return rows, rate, b.size


def report(grads, solvers, tols, repeats) -> str:
    lines = [
        f"Machine: {platform.processor() or platform.machine()}, jax {jax.__version__} "
        f"({jax.default_backend()}), jaxem from {jaxem_revision()}; float64, "
        f"median of {repeats}; seconds (compile seconds)",
        "",
        "| problem | dim θ | fit tol | EM iters (conv.) | fit | grad of ℓ*, eager | grad of ℓ*, jit "
        "| grad of a·θ*, jit | StableHLO lines, fit / grad of ℓ* |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for g, tol in zip(grads, tols, strict=True):
        cells = " | ".join(f"{g[key][0]:.3g} ({g[key][1]:.2f})" for key in ("fit", "ll", "ll_jit", "par_jit"))
        lines.append(f"| {g['name']} | {g['dim']} | {tol:g} | {g['iters']} ({g['converged']}) | {cells} "
                     f"| {g['hlo'][0]:,} / {g['hlo'][1]:,} |")
    lines += [
        "",
        "| problem | dim θ | EM rate ρ | ln(1e-10)/ln ρ | solver | operator products | seconds "
        "| final relative residual |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for rows, rate, dim in solvers:
        predicted = math.log(TARGET) / math.log(rate) if 0 < rate < 1 else float("nan")
        for r in rows:
            lines.append(
                f"| {r['name']} | {dim} | {rate:.4f} | {predicted:.0f} | {r['solver']} | {r['products']} "
                f"| {r['seconds']:.3g} | {r['residual']:.1e} |"
            )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat (smoke test)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-products", type=int, default=200_000)
    args = parser.parse_args(argv)
    repeats = 1 if args.quick else args.repeats
    problems = [
        ("Hasselblad Poisson mixture K=2, N=1096", hasselblad(), 5000, 1e-12),
        ("Old Faithful, GMM K=2 full, N=272", old_faithful(), 5000, 1e-12),
        ("GMM K=8 full, D=4, N=5,000", mid_gmm(), 5000, 1e-10),
    ]
    grads, solvers = [], []
    for name, problem, max_iter, tol in problems:
        row, system_inputs = gradient_costs(name, problem, max_iter, tol, repeats)
        grads.append(row)
        solvers.append(solver_costs(name, system_inputs, repeats, args.max_products))
        print(f"done: {name}", flush=True)
    print(report(grads, solvers, [p[3] for p in problems], repeats))


if __name__ == "__main__":
    main()
