"""EM (`jaxem.fit`), SQUAREM-accelerated EM and the direct-gradient baseline (`jaxem.fit_direct`).

Each problem is fitted by the three methods from the same starting parameters, in float64, to a
tight tolerance (default 1e-10 per observation, `max_iter` 5000 for both), and reported:

- iterations: EM iterations (one E-step and one M-step each) or optimizer steps (one L-BFGS
  step each, whose zoom line search evaluates ℓ and ∇ℓ one or more times, plus the
  evaluation `fit_direct` makes at the accepted candidate);
- E-steps (`FitResult.num_e_steps`): for EM and SQUAREM the E-steps (each also gives ℓ);
  for `fit_direct` its value-and-gradient evaluations of ℓ (the line search's, as optax
  reports them, plus the start and any candidate the line search did not evaluate);
- seconds to convergence: median of `--repeats` calls, each compiled beforehand (the first
  call is not timed) and finished with `jax.block_until_ready`; and seconds per iteration;
- the final log-likelihood of each, their difference (direct − EM), the converged flag.

SQUAREM: `jaxem.fit(..., acceleration="squarem")` from the same start, same tolerance
(iterations are SQUAREM cycles).

Problems: (a) Hasselblad's (1969) Poisson mixture (deaths per day in The Times, 1096 days)
as in `examples/poisson_mixture_gradient.py` (logits and log-rates, closed-form M-step);
(b) Old Faithful, `gaussian_mixture(2, "full")`; (c) a 16-component full-covariance
mixture on N=20,000 synthetic points in D=8 with overlapping clusters; (d) a Gaussian HMM,
`gaussian_hmm(4, "full")`, on one sequence of T=10,000 steps drawn from a 4-state HMM in
D=2. Starts: (a) the example's; (b)-(d) `model.init(PRNGKey(0), data)` (k-means++).

Run:  python benchmarks/direct_vs_em.py            (all four problems)
      python benchmarks/direct_vs_em.py --quick    (smaller sizes and repeats, a smoke test)
Prints a Markdown table; paste it into benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import platform
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from problems import hasselblad, jaxem_revision, old_faithful  # noqa: E402

import jaxem as em  # noqa: E402


def overlapping_gmm(n, dim, k):
    """N points from K Gaussians whose centres are ~2 standard deviations apart."""
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=1.5, size=(k, dim))
    labels = rng.integers(k, size=n)
    scales = rng.uniform(0.6, 1.2, size=(k, dim))
    data = jnp.asarray(centres[labels] + rng.normal(size=(n, dim)) * scales[labels])
    model = em.models.gaussian_mixture(k, "full")
    return model, data, model.init(jax.random.PRNGKey(0), data), None


def gaussian_hmm(num_steps, radius, k=4, dim=2):
    """One sequence from a sticky 4-state HMM, means on a circle of `radius` (state standard
    deviations 0.77-1.1), started from k-means++."""
    model = em.models.gaussian_hmm(k, "full")
    angles = 2 * np.pi * np.arange(k) / k
    means = radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)[:, :dim]
    transition = np.full((k, k), 0.1 / (k - 1)) + np.eye(k) * (0.9 - 0.1 / (k - 1))
    truth = em.models.GaussianHMMParams(
        initial=jnp.full(k, 1.0 / k), transition=jnp.asarray(transition), means=jnp.asarray(means),
        covariances=jnp.asarray(np.stack([np.eye(dim) * (0.6 + 0.2 * i) for i in range(k)])))
    data, _ = model.sample(jax.random.PRNGKey(1), truth, num_steps)
    return model, data, model.init(jax.random.PRNGKey(0), data), None


def median_seconds(fn, repeats):
    """Median wall time of `repeats` calls `fn(tol)` at the tolerance, after one untimed call at a
    huge tolerance (one iteration; the tolerance is traced, so that call compiles the program)."""
    jax.block_until_ready(fn(1e30))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = jax.block_until_ready(fn(None))
        times.append(time.perf_counter() - start)
    return float(np.median(times)), result


def bench(name, problem, max_iter, tol, repeats):
    model, data, params0, m_step = problem
    runs = {
        "em": lambda t: em.fit(model, data, params0, m_step=m_step, max_iter=max_iter, tol=t or tol,
                               convergence="absolute"),
        "squarem": lambda t: em.fit(model, data, params0, m_step=m_step, max_iter=max_iter, tol=t or tol,
                                    convergence="absolute", acceleration="squarem"),
        "direct": lambda t: em.fit_direct(model, data, params0, max_iter=max_iter, tol=t or tol),
    }
    return dict(name=name, **{key: median_seconds(run, repeats) for key, run in runs.items()})


def report(rows, tol, max_iter, repeats) -> str:
    lines = [
        f"Machine: {platform.processor() or platform.machine()}, jax {jax.__version__} "
        f"({jax.default_backend()}), optax {optax.__version__}, jaxem from {jaxem_revision()}; "
        f"float64, tol {tol:g} per observation, max_iter {max_iter}, "
        f"median of {repeats}",
        "",
        "| problem | EM iters (E-steps) | EM s | EM log-lik | EM conv. "
        "| SQUAREM cycles (E-steps) | SQUAREM s | SQUAREM log-lik | SQUAREM conv. "
        "| direct steps (f+g evals) | direct s | direct log-lik | direct conv. |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def cells(seconds, result):
        return (f"{int(result.num_iters)} ({int(result.num_e_steps)}) | {seconds:.3g} "
                f"| {float(result.log_likelihood):.6f} | {bool(result.converged)}")

    for r in rows:
        lines.append(f"| {r['name']} | {cells(*r['em'])} | {cells(*r['squarem'])} | {cells(*r['direct'])} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--tol", type=float, default=1e-10)
    parser.add_argument("--max-iter", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default="abcd", help="the problems to run, e.g. 'd'")
    parser.add_argument("--hmm-radius", type=float, default=2.0,
                        help="(d): radius of the circle the true state means lie on")
    args = parser.parse_args(argv)
    n, t = (2_000, 1_000) if args.quick else (20_000, 10_000)
    problems = {
        "a": lambda: ("(a) Hasselblad Poisson mixture K=2, N=1096", hasselblad()),
        "b": lambda: ("(b) Old Faithful, GMM K=2 full, N=272", old_faithful()),
        "c": lambda: (f"(c) GMM K=16 full, D=8, N={n:,}", overlapping_gmm(n, 8, 16)),
        "d": lambda: (f"(d) Gaussian HMM K=4 full, D=2, T={t:,}, means on radius {args.hmm_radius:g}",
                      gaussian_hmm(t, args.hmm_radius)),
    }
    repeats = 1 if args.quick else args.repeats
    rows = []
    for key in args.only:
        name, problem = problems[key]()
        rows.append(bench(name, problem, args.max_iter, args.tol, repeats))
        print(f"done: {name}", flush=True)
    print(report(rows, args.tol, args.max_iter, repeats))


if __name__ == "__main__":
    main()
