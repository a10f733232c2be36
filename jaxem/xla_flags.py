"""One XLA:CPU setting jaxem changes on import, and how to keep yours.

XLA:CPU runs a `while_loop`/`scan` body either as one compiled kernel per
iteration or, op by op, as a sequence of separately dispatched kernels. It
chooses one kernel only for bodies that touch fewer bytes per iteration than
`xla_cpu_small_while_loop_byte_threshold` (1 KiB by default in jax 0.10). The
forward and backward scans of an HMM touch a K×K transition matrix and a few
K-vectors per step: 1–2 KiB in float64 for K = 8, so by default each step
dispatches about seven kernels, and the scans run 2–3× slower than the same
code compiled as one kernel (`benchmarks/profile_hmm_iteration.py`).

On import (this module is the first thing `import jaxem` runs), jaxem therefore appends

    --xla_backend_extra_options=xla_cpu_small_while_loop_byte_threshold=65536

to the `XLA_FLAGS` environment variable (64 KiB: a float64 transition matrix up
to K ≈ 80; loop bodies over whole data sets, such as the EM loop itself, stay
far above it). It changes how loops are compiled, not what they compute.

It does nothing when

- `XLA_FLAGS` already contains `xla_backend_extra_options` (yours are kept), or
- the environment variable `JAXEM_KEEP_XLA_FLAGS` is set (to anything), or
- a JAX computation already ran in this process before jaxem was imported: XLA
  reads `XLA_FLAGS` once, when its first backend starts, so import jaxem (or set
  the flag yourself) before computing anything to get the faster scans.
"""

from __future__ import annotations

import os

__all__ = ["SMALL_LOOP_FLAG", "apply_default_xla_flags"]

SMALL_LOOP_FLAG = "--xla_backend_extra_options=xla_cpu_small_while_loop_byte_threshold=65536"


def apply_default_xla_flags(environ=os.environ) -> bool:
    """Append `SMALL_LOOP_FLAG` to `environ["XLA_FLAGS"]` unless the user set their own
    backend options or `JAXEM_KEEP_XLA_FLAGS`; returns whether it was appended."""
    if "JAXEM_KEEP_XLA_FLAGS" in environ:
        return False
    current = environ.get("XLA_FLAGS", "")
    if "xla_backend_extra_options" in current:
        return False
    environ["XLA_FLAGS"] = f"{current} {SMALL_LOOP_FLAG}".strip()
    return True


apply_default_xla_flags()
