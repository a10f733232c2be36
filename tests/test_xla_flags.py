"""jaxem's one XLA:CPU setting: appended to XLA_FLAGS on import unless the user set their own,
and it reaches XLA (an HMM scan step compiles to one kernel)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from jaxem.xla_flags import SMALL_LOOP_FLAG, apply_default_xla_flags


@pytest.mark.parametrize("environ, appended, flags", [
    ({}, True, SMALL_LOOP_FLAG),
    ({"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}, True,
     f"--xla_force_host_platform_device_count=2 {SMALL_LOOP_FLAG}"),
    ({"XLA_FLAGS": "--xla_backend_extra_options=xla_cpu_small_while_loop_byte_threshold=0"}, False,
     "--xla_backend_extra_options=xla_cpu_small_while_loop_byte_threshold=0"),
    ({"JAXEM_KEEP_XLA_FLAGS": "1"}, False, None),
])
def test_apply_default_xla_flags(environ, appended, flags):
    environ = dict(environ)
    assert apply_default_xla_flags(environ) is appended
    assert environ.get("XLA_FLAGS") == flags


SCAN_PROGRAM = """
import jaxem, jax, jax.numpy as jnp
jax.config.update("jax_enable_x64", True)
from jaxem.structures.chain_sequential import scaled_forward
tables = (jnp.zeros(8), jnp.zeros((8, 8)), jnp.zeros((50, 8)))
text = jax.jit(lambda *t: scaled_forward(*t, 50)[0]).lower(*tables).compile().as_text()
print("small_call" in text)
"""


@pytest.mark.parametrize("keep, expected", [(False, "True"), (True, "False")])
def test_flag_reaches_xla(keep, expected):
    """In a fresh process: with the flag, the float64 K=8 forward scan's loop is compiled as one
    kernel (XLA marks it `xla_cpu_small_call`); with JAXEM_KEEP_XLA_FLAGS it is not (the control)."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("XLA_FLAGS", "JAXEM_KEEP_XLA_FLAGS")}
    if keep:
        env["JAXEM_KEEP_XLA_FLAGS"] = "1"
    out = subprocess.run([sys.executable, "-c", SCAN_PROGRAM], env=env, capture_output=True, text=True,
                         timeout=300, check=True)
    assert out.stdout.strip().splitlines()[-1] == expected
