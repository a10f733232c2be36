"""Test configuration: float64 on (reference comparisons at 1e-6 need it); tests
that check float32 build float32 arrays explicitly.

Hypothesis: under CI (the environment variable CI is set, as `.ci/run` runs) the
examples are derandomized, so a CI run is reproducible; locally they are random,
so repeated runs explore more models.

The persistent compilation cache that the command line and the estimators turn on
(`jaxem.compilation_cache`) stays off in this process (JAXEM_CACHE_DIR=""), so no test
depends on programs compiled by an earlier run; the tests of the cache use subprocesses.
"""

import os

import jax
import pytest
from hypothesis import HealthCheck, settings

os.environ["JAXEM_CACHE_DIR"] = ""
jax.config.update("jax_enable_x64", True)

settings.register_profile(
    "ci", derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
if os.environ.get("CI"):
    settings.load_profile("ci")


# --- compiled programs and the kernel's memory-map limit ------------------------------------------
# Each compiled XLA:CPU program keeps a few memory mappings of its machine code (3-10 measured),
# and Linux caps a process at vm.max_map_count of them (65,530 by default). The suite compiles
# thousands of programs; past the cap, mmap fails inside XLA's JIT and the process dies with a
# segmentation fault (it did, in test_inference.py, after about 40% of the suite). So after any
# test that leaves more than half the cap in use, JAX's caches of compiled programs are cleared
# (later tests compile what they need again).


def _memory_maps() -> int | None:
    """Memory mappings this process holds now (None where /proc is not there)."""
    try:
        with open("/proc/self/maps", "rb") as maps:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: maps.read(1 << 20), b""))
    except OSError:
        return None


def _max_memory_maps() -> int:
    try:
        with open("/proc/sys/vm/max_map_count") as limit:
            return int(limit.read())
    except (OSError, ValueError):
        return 65530


MAX_MEMORY_MAPS = _max_memory_maps()


@pytest.fixture(autouse=True)
def release_compiled_programs_near_the_map_limit():
    yield
    used = _memory_maps()
    if used is not None and used > MAX_MEMORY_MAPS // 2:
        jax.clear_caches()
