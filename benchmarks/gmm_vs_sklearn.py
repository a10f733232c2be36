"""Gaussian mixture: jaxem vs scikit-learn's GaussianMixture, side by side in one run.

Both start from the same parameters (jaxem's k-means++ initialisation, handed
to scikit-learn as weights_init / means_init / precisions_init) on the same
synthetic data. Reported per configuration:

- seconds per EM iteration at a fixed iteration count, as the difference of two
  runs of different lengths (so fixed costs — scikit-learn's setup, JAX's
  dispatch — cancel), for jaxem float64 / float32 and scikit-learn float64;
- time to convergence at the default tolerance (1e-3 per sample), iterations;
- jaxem's compile time (first call minus a repeated call), and that a repeated
  call with the same shapes does not compile again;
- the ratios scikit-learn / jaxem.

Restarts: R starting points fitted by one vmapped `jaxem.fit_restarts` vs R
scikit-learn fits from the same points (what `n_init=R` does, one after the
other). "per restart-iteration" divides by R × iterations. "to conv." uses the
default strategy (exhaustive: every restart to convergence, like scikit-learn);
the emEM strategy's time and best log-likelihood are given beside.

Run:  python benchmarks/gmm_vs_sklearn.py            (all three configurations)
      python benchmarks/gmm_vs_sklearn.py --quick    (small sizes, a smoke test)
Prints a Markdown table; paste it into benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

import jaxem as em  # noqa: E402

try:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture
except ImportError as err:  # pragma: no cover
    raise SystemExit("this benchmark needs scikit-learn: pip install scikit-learn") from err


def make_data(seed: int, n: int, dim: int, k: int) -> np.ndarray:
    """N points from K well-spread Gaussians with random covariances."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=4.0, size=(k, dim))
    labels = rng.integers(k, size=n)
    scales = rng.uniform(0.5, 1.5, size=(k, dim))
    return centers[labels] + rng.normal(size=(n, dim)) * scales[labels]


def timed(fn, repeats: int = 1) -> float:
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        jax.block_until_ready(out)
        best = min(best, time.perf_counter() - start)
    return best


def sklearn_precisions(params, covariance_type: str) -> np.ndarray:
    cov = np.asarray(params.covariances, np.float64)
    return np.linalg.inv(cov) if covariance_type in ("full", "tied") else 1.0 / cov


def sklearn_fit(x, params, covariance_type, max_iter, tol):
    gm = GaussianMixture(
        n_components=params.weights.shape[-1], covariance_type=covariance_type, max_iter=max_iter,
        tol=tol, init_params="random_from_data", weights_init=np.asarray(params.weights, np.float64),
        means_init=np.asarray(params.means, np.float64),
        precisions_init=sklearn_precisions(params, covariance_type),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm.fit(x)
    return gm


def per_iteration(run, short: int, long: int, repeats: int) -> float:
    """(time of `long` iterations - time of `short`) / (long - short), compiled beforehand."""
    jax.block_until_ready(run(short)), jax.block_until_ready(run(long))  # compiled one at a time
    return (timed(lambda: run(long), repeats) - timed(lambda: run(short), repeats)) / (long - short)


def cast(x64, params64, dtype):
    return jnp.asarray(x64, dtype), jax.tree_util.tree_map(lambda a: a.astype(dtype), params64)


def jaxem_single(model, x64, params64, dtype, short, long, repeats):
    x, params = cast(x64, params64, dtype)

    def run(max_iter, tol=0.0):
        return em.fit(model, x, params, max_iter=max_iter, tol=tol, convergence="absolute")  # scikit-learn's

    first = timed(lambda: run(long))
    compile_s = first - timed(lambda: run(long))
    it = per_iteration(run, short, long, repeats)
    conv = timed(lambda: run(1000, 1e-3), repeats=2)  # the first call compiles max_iter=1000
    res = run(1000, 1e-3)
    return dict(it=it, compile=compile_s, conv=conv, iters=int(res.num_iters),
                ll=float(res.log_likelihood) / x.shape[0])


def jaxem_restarts(model, x64, params64, dtype, short, long, repeats):
    x, params = cast(x64, params64, dtype)
    restarts = jax.tree_util.tree_leaves(params)[0].shape[0]

    def run(max_iter, tol=0.0, strategy="exhaustive"):
        return em.fit_restarts(model, x, params, max_iter=max_iter, tol=tol, strategy=strategy,
                               convergence="absolute")

    first = timed(lambda: run(long))
    compile_s = first - timed(lambda: run(long))
    it = per_iteration(run, short, long, repeats) / restarts
    conv = timed(lambda: run(1000, 1e-3), repeats=2)  # the default strategy, exhaustive
    res = run(1000, 1e-3)
    emem_conv = timed(lambda: run(1000, 1e-3, "emem"), repeats=2)
    emem = run(1000, 1e-3, "emem")
    n = x.shape[0]
    return dict(it=it, compile=compile_s, conv=conv, best_ll=float(res.best.log_likelihood) / n,
                emem_ll=float(emem.best.log_likelihood) / n, emem_conv=emem_conv,
                iters=int(jnp.sum(res.restarts.num_iters)))


def bench_single(name, n, dim, k, covariance_type, short, long, repeats):
    x64 = make_data(0, n, dim, k)
    model = em.models.gaussian_mixture(k, covariance_type)
    params64 = model.init(jax.random.PRNGKey(0), jnp.asarray(x64))
    rows = {dtype.__name__: jaxem_single(model, x64, params64, dtype, short, long, repeats)
            for dtype in (jnp.float64, jnp.float32)}
    sk_run = lambda m: sklearn_fit(x64, params64, covariance_type, m, 0.0)  # noqa: E731
    sk_it = per_iteration(sk_run, short, long, 1)
    start = time.perf_counter()
    gm = sklearn_fit(x64, params64, covariance_type, 1000, 1e-3)
    sk_conv = time.perf_counter() - start
    return dict(name=name, jax=rows, sk_it=sk_it, sk_conv=sk_conv, sk_iters=gm.n_iter_,
                sk_ll=float(gm.lower_bound_))


def bench_restarts(name, n, dim, k, restarts, short, long, repeats):
    x64 = make_data(1, n, dim, k)
    model = em.models.gaussian_mixture(k, "full")
    keys = jax.random.split(jax.random.PRNGKey(1), restarts)
    params64 = jax.vmap(lambda key: model.init(key, jnp.asarray(x64)))(keys)
    rows = {dtype.__name__: jaxem_restarts(model, x64, params64, dtype, short, long, repeats)
            for dtype in (jnp.float64, jnp.float32)}
    one = lambda i, m, tol: sklearn_fit(  # noqa: E731
        x64, jax.tree_util.tree_map(lambda a: a[i], params64), "full", m, tol)
    sk_it = (timed(lambda: [one(i, long, 0.0) for i in range(restarts)])
             - timed(lambda: [one(i, short, 0.0) for i in range(restarts)])) / (long - short) / restarts
    start = time.perf_counter()
    fits = [one(i, 1000, 1e-3) for i in range(restarts)]
    sk_conv = time.perf_counter() - start
    return dict(name=name, jax=rows, sk_it=sk_it, sk_conv=sk_conv,
                sk_iters=sum(f.n_iter_ for f in fits), sk_ll=max(f.lower_bound_ for f in fits))


def report(results) -> str:
    lines = [
        f"Machine: {platform.processor() or platform.machine()}, jax {jax.__version__} "
        f"({jax.default_backend()}), scikit-learn {__import__('sklearn').__version__}",
        "",
        "| configuration | dtype | jaxem s/iter | sklearn s/iter | ratio/iter | jaxem to conv. (iters) "
        "| sklearn to conv. (iters) | ratio conv. | compile s | ll/N jaxem vs sklearn |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for dtype, j in r["jax"].items():
            ll = j.get("ll", j.get("best_ll"))
            extra = (f" (emEM: {j['emem_ll']:.4f} in {j['emem_conv']:.3g} s)" if "emem_ll" in j else "")
            lines.append(
                f"| {r['name']} | {dtype} | {j['it']:.4g} | {r['sk_it']:.4g} | {r['sk_it'] / j['it']:.1f}x "
                f"| {j['conv']:.3g} s ({j['iters']}) | {r['sk_conv']:.3g} s ({r['sk_iters']}) "
                f"| {r['sk_conv'] / j['conv']:.1f}x | {j['compile']:.2f} "
                f"| {ll:.4f} vs {r['sk_ll']:.4f}{extra} |"
            )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--restarts-only", action="store_true", help="only the restarts row")
    parser.add_argument("--full-only", action="store_true", help="only the full-covariance row")
    args = parser.parse_args(argv)
    if args.quick:
        results = [
            bench_single("full N=5k D=4 K=4", 5_000, 4, 4, "full", 5, 15, 2),
            bench_single("diag N=5k D=4 K=4", 5_000, 4, 4, "diag", 5, 15, 2),
            bench_restarts("4 restarts N=2k D=4 K=4", 2_000, 4, 4, 4, 5, 15, 2),
        ]
    elif args.full_only:
        results = [bench_single("full N=100k D=8 K=16", 100_000, 8, 16, "full", 10, 40, 3)]
    elif args.restarts_only:
        results = [bench_restarts("32 restarts N=20k D=8 K=16", 20_000, 8, 16, 32, 5, 20, 2)]
    else:
        results = [
            bench_single("full N=100k D=8 K=16", 100_000, 8, 16, "full", 10, 40, 3),
            bench_single("diag N=500k D=32 K=32", 500_000, 32, 32, "diag", 5, 20, 2),
            bench_restarts("32 restarts N=20k D=8 K=16", 20_000, 8, 16, 32, 5, 20, 2),
        ]
    print(report(results))


if __name__ == "__main__":
    main()
