"""Where a first fit's time goes: compile time of one configuration, measured in a fresh process.

For each configuration a new Python process imports jaxem, builds the data, and times

    first  = the first `jaxem.fit` (or face `fit`) call: validation, tracing, lowering, XLA compile, run
    later  = the same call again (everything cached, so: validation and run)

and reports compile = first − later, the issue's measure, with the split JAX reports through
`jax.monitoring` during the first call: seconds tracing to jaxprs, lowering to MLIR, and in the
XLA backend compile, and how many programs were compiled (validation programs included), the
largest first. `--cache DIR` turns on JAX's persistent compilation cache in DIR for every
child (run twice: the second run shows what a second process pays).

    python benchmarks/compile_time.py            # GMM K=16 D=8, HMM K=8 D=4, the faces
    python benchmarks/compile_time.py --cache /tmp/jaxem-xla
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CONFIGS = {
    "gmm": "jaxem.fit, Gaussian mixture K=16 D=8 full, N=20,000, 20 iterations",
    "hmm": "jaxem.fit, Gaussian HMM K=8 D=4 full, T=10,000, 20 iterations",
    "gmm-face": "jaxem.sklearn.GaussianMixture K=16 D=8 full, N=20,000, max_iter=20",
    "hmm-face": "jaxem.sklearn.GaussianHMM K=8 D=4 full, T=10,000, n_iter=20",
}

CHILD = r"""
import collections, json, os, sys, time
import jax
jax.config.update("jax_enable_x64", True)
cache = sys.argv[2]
os.environ["JAXEM_CACHE_DIR"] = ""   # the faces' default cache stays off: only `cache` is used
if cache:
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
import numpy as np
import jax.numpy as jnp
import jaxem as em

events = collections.defaultdict(float)
programs = []
def listener(event, duration, **kwargs):
    events[event] += duration
    if event == "/jax/core/compile/backend_compile_duration":
        programs.append((duration, kwargs.get("fun_name", "?")))
jax.monitoring.register_event_duration_secs_listener(listener)

name = sys.argv[1]
rng = np.random.default_rng(0)
if name.startswith("gmm"):
    from jaxem.sklearn import GaussianMixture
    values = rng.normal(size=(20_000, 8)) + 3 * rng.integers(0, 4, size=(20_000, 1))
    model = em.models.gaussian_mixture(16, "full")
    face = lambda: GaussianMixture(16, max_iter=20, tol=0.0, random_state=0).fit(values)
else:
    from jaxem.sklearn import GaussianHMM
    values = rng.normal(size=(10_000, 4)) + 2 * rng.integers(0, 8, size=(10_000, 1))
    model = em.models.gaussian_hmm(8, "full")
    face = lambda: GaussianHMM(8, "full", n_iter=20, tol=0.0, random_state=0).fit(values)
if name.endswith("-face"):
    call = face
else:
    data = jnp.asarray(values)
    params0 = model.init(jax.random.key(0), data)
    call = lambda: jax.block_until_ready(em.fit(model, data, params0, max_iter=20, tol=0.0))

jax.block_until_ready(jnp.zeros(()))  # the backend is up before the timed call
events.clear(); programs.clear()      # only what the first fit call compiles is reported
start = time.perf_counter(); call(); first = time.perf_counter() - start
seen = dict(events); compiled = sorted(programs, reverse=True)
later = []
for _ in range(3):
    start = time.perf_counter(); call(); later.append(time.perf_counter() - start)
later = sorted(later)[1]
print(json.dumps({
    "first": first, "later": later, "compile": first - later,
    "trace": seen.get("/jax/core/compile/jaxpr_trace_duration", 0.0),
    "lower": seen.get("/jax/core/compile/jaxpr_to_mlir_module_duration", 0.0),
    "backend": seen.get("/jax/core/compile/backend_compile_duration", 0.0),
    "programs": len(compiled),
    "largest": [[round(d, 3), n] for d, n in compiled[:4]],
}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default="", help="persistent compilation cache folder")
    parser.add_argument("--only", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    args = parser.parse_args()
    sys.path.insert(0, os.path.dirname(__file__))
    from problems import jaxem_revision  # noqa: E402 (after the path is set)

    print(f"jaxem: {jaxem_revision()}; persistent cache: {args.cache or 'off'}\n")
    print("| configuration | first call s | later call s | compile s | tracing s | lowering s "
          "| XLA compile s | programs | largest programs (s, name) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in args.only:
        out = subprocess.run([sys.executable, "-c", CHILD, name, args.cache], capture_output=True,
                             text=True, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        largest = "; ".join(f"{d} {n}" for d, n in r["largest"])
        print(f"| {CONFIGS[name]} | {r['first']:.2f} | {r['later']:.3f} | {r['compile']:.2f} "
              f"| {r['trace']:.2f} | {r['lower']:.2f} | {r['backend']:.2f} | {r['programs']} "
              f"| {largest} |")


if __name__ == "__main__":
    main()
