"""Gaussian HMM (Baum–Welch): jaxem vs hmmlearn and dynamax, side by side in one run.

Gaussian emissions, K=8 states, D=4, full covariances, on data simulated from
a random HMM: one sequence of T=100,000 steps, and 2,000 sequences of T=100.
All three start from the same parameters (jaxem's k-means++ initialisation).

- seconds per Baum–Welch iteration at a fixed count, as the difference of two
  runs of different lengths (fixed costs cancel); jaxem in float64 and float32,
  hmmlearn (implementation="scaling", its faster one) and dynamax `fit_em`
  (float64; its own Python loop over a jitted step), twice: in this process, where
  `import jaxem` has raised XLA:CPU's small-loop threshold (`jaxem.xla_flags`),
  which speeds dynamax's scans up too, and in a fresh process with XLA's default
  flags, as dynamax runs without jaxem;
- time to convergence for jaxem and hmmlearn under the same rule (hmmlearn's
  default tol=1e-2 on the total log-likelihood; jaxem's tol is per observation,
  so it gets 1e-2 / number of steps); dynamax's `fit_em` has no tolerance;
- jaxem's compile time (first call minus a repeated call).

Run (dynamax brings tfp-nightly, so keep it out of your main environment):
    python -m venv /tmp/bench && /tmp/bench/bin/pip install -e ".[bench]"
    /tmp/bench/bin/python benchmarks/hmm_vs_hmmlearn_dynamax.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

import jaxem as em  # noqa: E402

try:
    from hmmlearn import hmm as hmmlearn_hmm
except ImportError as err:  # pragma: no cover
    raise SystemExit("this benchmark needs hmmlearn: pip install -e '.[bench]'") from err
try:
    from dynamax.hidden_markov_model import GaussianHMM as DynamaxGaussianHMM
except ImportError:  # pragma: no cover
    DynamaxGaussianHMM = None


def timed(fn, repeats: int = 1) -> float:
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - start)
    return best


def per_iteration(run, short: int, long: int, repeats: int, warm_up: bool = True) -> float:
    """(time of `long` iterations - time of `short`) / (long - short), compiled beforehand."""
    if warm_up:
        jax.block_until_ready(run(short)), jax.block_until_ready(run(long))  # compiled one at a time
    return (timed(lambda: run(long), repeats) - timed(lambda: run(short), repeats)) / (long - short)


def cast_floats(tree, dtype):
    """Floating leaves to `dtype`; integer leaves (sequence lengths) unchanged."""
    return jax.tree_util.tree_map(
        lambda a: jnp.asarray(a, dtype) if jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating) else a, tree)


def simulate(num_sequences: int, length: int, k: int, dim: int, seed: int = 0) -> np.ndarray:
    """(B, T, D) observations from a random sticky Gaussian HMM."""
    model = em.models.gaussian_hmm(k, "full")
    key = jax.random.PRNGKey(seed)
    kp, ks = jax.random.split(key)
    k1, k2, k3 = jax.random.split(kp, 3)
    transition = 0.8 * jnp.eye(k) + 0.2 * jax.random.dirichlet(k1, jnp.ones(k), (k,))
    means = 3.0 * jax.random.normal(k2, (k, dim))
    a = jax.random.normal(k3, (k, dim, dim)) * 0.3
    covariances = a @ jnp.swapaxes(a, -1, -2) + 0.5 * jnp.eye(dim)
    params = em.models.GaussianHMMParams(jnp.full(k, 1.0 / k), transition, means, covariances)
    keys = jax.random.split(ks, num_sequences)
    x = jax.vmap(lambda kk: model.sample(kk, params, length)[0])(keys)
    return np.asarray(x)


def hmmlearn_model(params, n_iter, tol):
    k = params.means.shape[0]
    model = hmmlearn_hmm.GaussianHMM(n_components=k, covariance_type="full", n_iter=n_iter, tol=tol,
                                     init_params="", params="stmc", implementation="scaling")
    model.startprob_ = np.asarray(params.initial, np.float64)
    model.transmat_ = np.asarray(params.transition, np.float64)
    model.means_ = np.asarray(params.means, np.float64)
    model.covars_ = np.asarray(params.covariances, np.float64)
    return model


def bench(name, x64, short, long, repeats, hmmlearn_lengths=None, hmmlearn_to_convergence=True):
    b, t, dim = x64.shape
    k = 8
    model = em.models.gaussian_hmm(k, "full")
    lengths = np.full(b, t)
    data64 = x64[0] if b == 1 else em.Sequences(jnp.asarray(x64), jnp.asarray(lengths))
    params64 = model.init(jax.random.PRNGKey(0), data64)
    n_steps = b * t
    row = dict(name=name)
    for dtype in (jnp.float64, jnp.float32):
        data, params = cast_floats((data64, params64), dtype)

        def run(max_iter, tol=0.0, data=data, params=params):
            return em.fit(model, data, params, max_iter=max_iter, tol=tol, convergence="absolute")

        first = timed(lambda run=run: run(long))
        compile_s = first - timed(lambda run=run: run(long))
        it = per_iteration(run, short, long, repeats)
        conv = timed(lambda run=run: run(1000, 1e-2 / n_steps), repeats=2)
        res = run(1000, 1e-2 / n_steps)
        row[dtype.__name__] = dict(it=it, compile=compile_s, conv=conv, iters=int(res.num_iters),
                                   ll=float(res.log_likelihood) / n_steps)
    x_flat = x64.reshape(-1, dim)

    def hl(n_iter, tol):
        m = hmmlearn_model(params64, n_iter, tol)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m.fit(x_flat, lengths)
        return m

    hl_short, hl_long = hmmlearn_lengths or (short, long)
    row["hmmlearn_it"] = per_iteration(lambda n: hl(n, -np.inf), hl_short, hl_long, 2, warm_up=False)
    if hmmlearn_to_convergence:
        start = time.perf_counter()
        m = hl(1000, 1e-2)
        row["hmmlearn_conv"] = time.perf_counter() - start
        row["hmmlearn_iters"] = m.monitor_.iter
        row["hmmlearn_ll"] = m.monitor_.history[-1] / n_steps
    else:  # too slow to run here: estimated from jaxem's iteration count (float64)
        row["hmmlearn_iters"] = row["float64"]["iters"]
        row["hmmlearn_conv"] = row["hmmlearn_it"] * row["hmmlearn_iters"]
        row["hmmlearn_ll"] = float("nan")
        row["name"] += " (hmmlearn to conv. estimated: its s/iter × jaxem's iterations)"
    if DynamaxGaussianHMM is not None:
        row["dynamax_it"] = dynamax_per_iteration(x64, params64, short, long, repeats)
        row["dynamax_default_it"] = dynamax_in_fresh_process(x64, params64, short, long, repeats)
    return row


def dynamax_per_iteration(x64, params64, short, long, repeats) -> float:
    """dynamax `fit_em` seconds per iteration, in this process (so under jaxem's XLA flag)."""
    b, _, dim = x64.shape
    dmodel = DynamaxGaussianHMM(params64.means.shape[0], dim)
    dparams, props = dmodel.initialize(
        initial_probs=jnp.asarray(params64.initial), transition_matrix=jnp.asarray(params64.transition),
        emission_means=jnp.asarray(params64.means), emission_covariances=jnp.asarray(params64.covariances))
    emissions = jnp.asarray(x64[0] if b == 1 else x64)

    def dyn(n):
        return dmodel.fit_em(dparams, props, emissions, num_iters=n, verbose=False)[1]

    dyn(short)
    dyn(long)  # compile (fit_em jits one EM step; both lengths share it)
    return per_iteration(dyn, short, long, repeats)


def dynamax_in_fresh_process(x64, params64, short, long, repeats) -> float:
    """The same measurement in a new process with XLA's default flags (JAXEM_KEEP_XLA_FLAGS):
    dynamax as its users run it without jaxem."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "problem.npz")
        np.savez(path, x=x64, **{name: np.asarray(v) for name, v in params64._asdict().items()})
        env = {key: value for key, value in os.environ.items() if key != "XLA_FLAGS"}
        env["JAXEM_KEEP_XLA_FLAGS"] = "1"
        out = subprocess.run([sys.executable, __file__, "--dynamax-only", path, str(short), str(long),
                              str(repeats)], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def dynamax_only(path, short, long, repeats) -> None:
    assert "XLA_FLAGS" not in os.environ or "small_while" not in os.environ["XLA_FLAGS"]
    problem = np.load(path)
    params = em.models.GaussianHMMParams(*(problem[name] for name in em.models.GaussianHMMParams._fields))
    print(dynamax_per_iteration(problem["x"], params, int(short), int(long), int(repeats)))


def report(rows) -> str:
    import hmmlearn

    lines = [
        f"Machine: {platform.machine()}, jax {jax.__version__} ({jax.default_backend()}), "
        f"hmmlearn {hmmlearn.__version__}"
        + (f", dynamax {__import__('dynamax').__version__}" if DynamaxGaussianHMM else ", dynamax missing"),
        "",
        "| configuration | dtype | jaxem s/iter | hmmlearn s/iter | ratio | dynamax s/iter (XLA defaults) "
        "| ratio | dynamax s/iter (jaxem's XLA flag) | ratio "
        "| jaxem to conv. (iters) | hmmlearn to conv. (iters) | ratio | compile s "
        "| ll/step jaxem vs hmmlearn |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        for dtype in ("float64", "float32"):
            j = r[dtype]
            cells = []
            for key in ("dynamax_default_it", "dynamax_it"):
                dyn = r.get(key)
                cells.append(f"{dyn:.4g} | {dyn / j['it']:.1f}x" if dyn else "– | –")
            dyn_cells = " | ".join(cells)
            lines.append(
                f"| {r['name']} | {dtype} | {j['it']:.4g} | {r['hmmlearn_it']:.4g} "
                f"| {r['hmmlearn_it'] / j['it']:.1f}x | {dyn_cells} | {j['conv']:.3g} s ({j['iters']}) "
                f"| {r['hmmlearn_conv']:.3g} s ({r['hmmlearn_iters']}) "
                f"| {r['hmmlearn_conv'] / j['conv']:.1f}x "
                f"| {j['compile']:.2f} | {j['ll']:.5f} vs {r['hmmlearn_ll']:.5f} |"
            )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--dynamax-only", nargs=4, metavar=("NPZ", "SHORT", "LONG", "REPEATS"),
                        help=argparse.SUPPRESS)  # the fresh-process dynamax measurement
    args = parser.parse_args(argv)
    if args.dynamax_only:
        dynamax_only(*args.dynamax_only)
        return
    if args.quick:
        rows = [bench("1 x T=2,000", simulate(1, 2_000, 8, 4), 3, 8, 1),
                bench("50 x T=100", simulate(50, 100, 8, 4), 3, 8, 1)]
    else:
        rows = [bench("1 x T=100,000", simulate(1, 100_000, 8, 4), 5, 20, 2),
                bench("2,000 x T=100", simulate(2_000, 100, 8, 4), 5, 20, 2,
                      hmmlearn_lengths=(1, 3), hmmlearn_to_convergence=False)]
    print(report(rows))


if __name__ == "__main__":
    main()
