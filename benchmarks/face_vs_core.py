"""The estimator faces against the core API and the references, side by side in one run.

Same data, same starting parameters, same number of iterations, everything compiled first:

- `jaxem.sklearn.GaussianMixture.fit` vs `jaxem.fit` vs scikit-learn `GaussianMixture.fit`
  (N=20,000, D=8, K=16, full covariances, 20 iterations);
- `jaxem.sklearn.GaussianHMM.fit` vs `jaxem.fit` vs hmmlearn `GaussianHMM.fit`
  (K=8, D=4, full covariances, 10 iterations; one sequence of T=100,000 steps, and
  2,000 sequences of T=100), hmmlearn with both its implementations.

The faces' time includes their validation and conversions (a whole `fit` call); the core's
is one `jaxem.fit` call on JAX arrays. Face and core both run float64. Seconds are the
median of `--repeats` calls (face and core calls alternate: `interleaved_medians`), the
references' of 3 (they take seconds per call).

    python benchmarks/face_vs_core.py [--quick] [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

import jaxem as em  # noqa: E402
from jaxem.sklearn import GaussianHMM, GaussianMixture  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from problems import jaxem_revision  # noqa: E402

REFERENCE_REPEATS = 3


def median_seconds(fn, repeats: int) -> float:
    return interleaved_medians([fn], repeats)[0]


def interleaved_medians(fns, repeats: int) -> list[float]:
    """The median seconds of each of `fns`, all compiled first, then called in turn `repeats`
    times (core, face, core, face, ...), so that a slow spell of the shared machine or a
    cache left cold by the previous call falls on both alike."""
    for fn in fns:
        jax.block_until_ready(fn())   # compile
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, spent in zip(fns, times, strict=True):
            start = time.perf_counter()
            jax.block_until_ready(fn())
            spent.append(time.perf_counter() - start)
    return [float(np.median(spent)) for spent in times]


def gmm_rows(num_obs: int, repeats: int) -> list[str]:
    from sklearn.mixture import GaussianMixture as SkGaussianMixture

    k, dim, iters = 16, 8, 20
    rng = np.random.default_rng(0)
    x = rng.normal(size=(num_obs, dim)) + 4 * rng.normal(size=(k, dim))[rng.integers(0, k, num_obs)]
    model = em.models.gaussian_mixture(k, "full")
    data = jnp.asarray(x)
    params0 = model.init(jax.random.key(0), data)
    weights, means, covs = (np.asarray(a) for a in params0)
    precisions = np.linalg.inv(covs)
    start = dict(weights_init=weights, means_init=means, precisions_init=precisions)

    def core():
        return em.fit(model, data, params0, max_iter=iters, tol=0.0).params

    def face():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # ConvergenceWarning: max_iter is reached on purpose
            return GaussianMixture(k, max_iter=iters, tol=0.0, **start).fit(x).means_

    def sklearn():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return SkGaussianMixture(k, max_iter=iters, tol=0.0, **start).fit(x).means_

    t_core, t_face = interleaved_medians([core, face], repeats)
    t_sk = median_seconds(sklearn, REFERENCE_REPEATS)
    return [f"| GaussianMixture N={num_obs:,} D={dim} K={k} full, {iters} iterations | {t_core:.3f} "
            f"| {t_face:.3f} | {t_face / t_core:.2f} | scikit-learn {t_sk:.3f} | {t_sk / t_face:.1f} |"]


def hmm_rows(lengths: list[int], repeats: int, label: str) -> list[str]:
    from hmmlearn.hmm import GaussianHMM as HmmlearnGaussianHMM

    k, dim, iters = 8, 4, 10
    rng = np.random.default_rng(1)
    total = sum(lengths)
    states = rng.integers(0, k, total)
    y = rng.normal(size=(total, dim)) + 3 * rng.normal(size=(k, dim))[states]
    model = em.models.gaussian_hmm(k, "full", reg_covar=0.0)
    data = (jnp.asarray(y) if len(lengths) == 1
            else em.Sequences.from_concatenated(jnp.asarray(y), np.asarray(lengths)))
    params0 = model.init(jax.random.key(0), jnp.asarray(y))
    start = [np.asarray(a) for a in params0]

    def given(estimator):
        estimator.startprob_, estimator.transmat_, estimator.means_, estimator.covars_ = start
        return estimator

    def core():
        return em.fit(model, data, params0, max_iter=iters, tol=0.0).params

    def face():
        return given(GaussianHMM(k, "full", n_iter=iters, tol=0.0, init_params="")).fit(
            y, lengths).means_

    def reference(implementation):
        def run():
            est = given(HmmlearnGaussianHMM(k, "full", n_iter=iters, tol=-np.inf, init_params="",
                                            implementation=implementation))
            return est.fit(y, lengths).means_
        return run

    t_core, t_face = interleaved_medians([core, face], repeats)
    first = (f"| GaussianHMM {label} K={k} D={dim} full, {iters} iterations | {t_core:.3f} "
             f"| {t_face:.3f} | {t_face / t_core:.2f} |")
    rows = []
    for implementation in ("log", "scaling"):
        t_ref = median_seconds(reference(implementation), REFERENCE_REPEATS)
        lead = first if not rows else "| | | | |"
        rows.append(f"{lead} hmmlearn ({implementation}) {t_ref:.3f} | {t_ref / t_face:.1f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small problems (a smoke test)")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    print(f"jaxem: {jaxem_revision()}; jax {jax.__version__} ({jax.default_backend()}), "
          f"{platform.machine()}, {os.cpu_count()} cores; float64; median of {args.repeats} "
          f"(references: {REFERENCE_REPEATS})\n")
    print("| problem | core s (`jaxem.fit`) | face s (`.fit`) | face / core | reference s | "
          "reference / face |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in gmm_rows(20_000 // scale, args.repeats):
        print(row, flush=True)
    for lengths, label in (([100_000 // scale], f"T={100_000 // scale:,}"),
                           ([100] * (2_000 // scale), f"{2_000 // scale:,} × T=100")):
        for row in hmm_rows(lengths, args.repeats, label):
            print(row, flush=True)


if __name__ == "__main__":
    main()
