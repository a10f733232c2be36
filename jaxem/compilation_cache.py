"""JAX's persistent compilation cache, on by default for the command line and the estimators.

A jaxem fit compiles one XLA program per configuration (model, shapes, static
settings), which takes about a second on a CPU. JAX can keep compiled programs
on disk so that a later process loads them instead of compiling again
(https://docs.jax.dev/en/latest/persistent_compilation_cache.html). The command
line (`jaxem ...`) and the scikit-learn/hmmlearn-style estimators
(`jaxem.sklearn`) turn it on, when they first run, in

    $JAXEM_CACHE_DIR, or else $XDG_CACHE_HOME/jaxem/xla, or else ~/.cache/jaxem/xla

with every program cached, however short its compile
(`jax_persistent_cache_min_compile_time_secs = 0`). They leave JAX alone when

- you configured a cache yourself (`jax_compilation_cache_dir` is set: yours is used), or
- `JAXEM_CACHE_DIR` is set to the empty string (the opt-out; the command line
  also has `--no-cache`).

The core functions (`jaxem.fit`, `jaxem.fit_restarts`, ...) never touch it: a library
call should not change global JAX state. Turn the cache on for them as JAX documents,
or with `enable_persistent_cache()`.

The cache is trusted: JAX loads programs from it and runs them, so do not point
`JAXEM_CACHE_DIR` at a folder others can write to.
"""

from __future__ import annotations

import os

import jax

__all__ = ["ENVIRONMENT_VARIABLE", "default_cache_dir", "enable_persistent_cache"]

ENVIRONMENT_VARIABLE = "JAXEM_CACHE_DIR"


def default_cache_dir(environ=os.environ) -> str:
    """The folder jaxem caches in: $JAXEM_CACHE_DIR (the empty string when the user opted
    out), else $XDG_CACHE_HOME/jaxem/xla, else ~/.cache/jaxem/xla."""
    if ENVIRONMENT_VARIABLE in environ:
        return environ[ENVIRONMENT_VARIABLE]
    base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "jaxem", "xla")


def enable_persistent_cache(path: str | None = None, environ=os.environ) -> str | None:
    """Turn on JAX's persistent compilation cache in `path` (default: `default_cache_dir()`)
    unless a cache folder is already configured or the folder is the empty string (the
    opt-out). Returns the folder in use afterwards (None when the cache stays off)."""
    configured = jax.config.jax_compilation_cache_dir
    if configured:
        return configured
    path = default_cache_dir(environ) if path is None else path
    if not path:
        return None
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return path
