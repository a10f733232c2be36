"""Test configuration: float64 on (reference comparisons at 1e-6 need it); tests
that check float32 build float32 arrays explicitly."""

import jax

jax.config.update("jax_enable_x64", True)
