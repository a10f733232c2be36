"""Test configuration: float64 on (reference comparisons at 1e-6 need it); tests
that check float32 build float32 arrays explicitly.

Hypothesis: under CI (the environment variable CI is set, as `.ci/run` runs) the
examples are derandomized, so a CI run is reproducible; locally they are random,
so repeated runs explore more models.
"""

import os

import jax
from hypothesis import HealthCheck, settings

jax.config.update("jax_enable_x64", True)

settings.register_profile(
    "ci", derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
if os.environ.get("CI"):
    settings.load_profile("ci")
