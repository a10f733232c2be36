"""Where one Baum–Welch iteration and its compile spend their time (Gaussian HMM, one long sequence).

Times each piece of an iteration separately, each compiled on its own, for one
sequence of T steps, K=8 states, D=4, full covariances:

- the log-potential tables (emission Φ(x) @ η, initial, transition);
- the scaled forward scan and the backward scan (`chain_sequential`);
- the whole E-step (`value_and_grad` of the log-partition: both scans and the glue);
- the M-step (expected statistics and the closed form);
- one iteration of `jaxem.fit` (per-iteration time of the compiled loop);
- a scan of the same length that does nothing but one multiply per step (the
  per-step floor of `lax.scan` on this backend).

It also says whether XLA compiled each scan's loop as one kernel (see
`jaxem.xla_flags`), and splits compile time into tracing/lowering and the
XLA compile, with the number of fusions in the compiled loop and the time to load
the same program from a persistent compilation cache.

Run: python benchmarks/profile_hmm_iteration.py [--steps 100000] [--float32]
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import time

import jax
import jax.numpy as jnp

jax.config.update("jax_enable_x64", True)

import jaxem as em  # noqa: E402
from jaxem.engine.fit import run_em  # noqa: E402
from jaxem.engine.mstep import resolve_m_step  # noqa: E402
from jaxem.structures.chain_sequential import _scaled_backward, scaled_forward  # noqa: E402


def best_ms(fn, *args, repeats: int = 15) -> float:
    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def one_kernel(compiled_text: str) -> bool:
    """Whether XLA:CPU compiled the program's while loop as one kernel (a "small call"),
    rather than dispatching the ops of each iteration one by one."""
    return "xla_cpu_small_call" in compiled_text


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--float32", action="store_true")
    args = parser.parse_args(argv)
    dtype = jnp.float32 if args.float32 else jnp.float64
    k, dim, steps = 8, 4, args.steps
    model = em.models.gaussian_hmm(k, "full")
    x = jax.random.normal(jax.random.PRNGKey(0), (steps, dim), dtype)
    params = model.init(jax.random.PRNGKey(1), x)
    tables = jax.jit(model.log_potentials)(params, x)

    forward = jax.jit(lambda i, t, e: scaled_forward(i, t, e, steps))
    _, alphas, cs, a, b = forward(*tables)
    backward = jax.jit(lambda al, c, aa, bb: _scaled_backward(al, c, aa, bb, None))
    e_step = jax.jit(model.e_step)
    posterior = e_step(params, x)
    m_step = resolve_m_step(model, None)
    maximize = jax.jit(lambda p, q, d: m_step.update(model, p, q, d, None))

    def floor_scan(v, rows):
        return jax.lax.scan(lambda c, r: (c * r, None), v, rows)[0]

    def run(n):
        return em.fit(model, x, params, max_iter=n, tol=0.0)

    short, long = 3, 13
    pieces = {
        "log-potential tables": best_ms(jax.jit(model.log_potentials), params, x),
        "forward scan": best_ms(forward, *tables),
        "backward scan": best_ms(backward, alphas, cs, a, b),
        "E-step (both scans + glue)": best_ms(e_step, params, x),
        "M-step": best_ms(maximize, params, posterior, x),
        "one-multiply scan (floor)": best_ms(jax.jit(floor_scan), jnp.ones(k, dtype), b),
    }
    jax.block_until_ready(run(short)), jax.block_until_ready(run(long))  # compiled one at a time
    difference = best_ms(run, long, repeats=5) - best_ms(run, short, repeats=5)
    pieces["fit, per iteration"] = difference / (long - short)

    print(f"Gaussian HMM, T={steps:,}, K={k}, D={dim}, full, {jnp.dtype(dtype).name}, "
          f"jax {jax.__version__} ({jax.default_backend()})\n")
    print("| piece | ms | ns per time step |\n|---|---|---|")
    for name, ms in pieces.items():
        print(f"| {name} | {ms:.2f} | {ms * 1e6 / steps:.0f} |")

    fwd_one = one_kernel(forward.lower(*tables).compile().as_text())
    bwd_one = one_kernel(backward.lower(alphas, cs, a, b).compile().as_text())
    print(f"\nloop compiled as one kernel: forward {fwd_one}, backward {bwd_one} "
          f"(XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r})")

    fit_fn = jax.jit(lambda d, p: run_em(model, d, p, None, m_step, None, 100, 100, 1e-3, "absolute"))
    start = time.perf_counter()
    lowered = fit_fn.lower(x, params)
    traced = time.perf_counter() - start
    start = time.perf_counter()
    compiled = lowered.compile()
    xla = time.perf_counter() - start
    fusions = len(re.findall(r"\bfusion\(", compiled.as_text()))
    print(f"\ncompile of the fit loop: trace+lower {traced:.2f} s, XLA compile {xla:.2f} s, "
          f"{fusions} fusions in the compiled program")

    with tempfile.TemporaryDirectory() as cache:
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
        fresh = jax.jit(lambda d, p: run_em(model, d, p, None, m_step, None, 100, 100, 1e-3, "absolute"))
        start = time.perf_counter()
        fresh.lower(x, params).compile()
        stored = time.perf_counter() - start
        again = jax.jit(lambda d, p: run_em(model, d, p, None, m_step, None, 100, 100, 1e-3, "absolute"))
        start = time.perf_counter()
        again.lower(x, params).compile()
        loaded = time.perf_counter() - start
    print(f"with a persistent compilation cache: first {stored:.2f} s (compiles and stores), "
          f"a new process-equivalent jit {loaded:.2f} s (trace + load from the cache)")


if __name__ == "__main__":
    main()
