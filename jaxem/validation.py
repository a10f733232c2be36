"""Checks of user input, run in Python before anything is traced.

Every check raises `TypeError` or `ValueError` with a message that names the
offending argument and says how to fix it. Checks that need concrete values
(NaN in data, say) are skipped when their input is a tracer, i.e. when the
caller has wrapped the entry point in `jit` or `vmap`; the docstrings of the
entry points say which checks those are.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "check_callable",
    "check_data",
    "check_fit_settings",
    "check_model_data",
    "check_num_states",
    "is_concrete",
]


def is_concrete(x: Any) -> bool:
    """True when `x` holds values (not a tracer inside jit/vmap/grad)."""
    return not isinstance(x, jax.core.Tracer)


def check_callable(fn: Any, name: str) -> None:
    if not callable(fn):
        raise TypeError(f"{name}: expected a function, got {type(fn).__name__}.")


def check_num_states(num_states: Any, name: str = "num_states") -> None:
    if isinstance(num_states, bool) or not isinstance(num_states, (int, np.integer)):
        raise TypeError(f"{name}: expected a Python int >= 1, got {num_states!r}.")
    if num_states < 1:
        raise ValueError(f"{name}: must be >= 1, got {num_states}.")


def check_fit_settings(max_iter: Any, tol: Any) -> None:
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)):
        raise TypeError(f"max_iter: expected a Python int >= 0, got {max_iter!r}.")
    if max_iter < 0:
        raise ValueError(f"max_iter: must be >= 0, got {max_iter}.")
    if is_concrete(tol):
        tol_value = float(tol)
        if math.isnan(tol_value) or tol_value < 0:
            raise ValueError(f"tol: must be a number >= 0, got {tol!r}.")


def check_data(data: Any, name: str = "data") -> None:
    """Leaves are numeric arrays with at least one axis, one shared leading
    axis N >= 1, and (when concrete) only finite values."""
    leaves, _ = jax.tree_util.tree_flatten(data)
    if not leaves:
        raise ValueError(f"{name}: no arrays found; pass an array of shape (N, ...).")
    sizes = []
    for leaf in leaves:
        dtype = getattr(leaf, "dtype", None)
        if dtype is None:
            leaf = np.asarray(leaf)
            dtype = leaf.dtype
        if not (jnp.issubdtype(dtype, jnp.number) or jnp.issubdtype(dtype, jnp.bool_)):
            raise TypeError(
                f"{name}: expected numeric arrays, got dtype {dtype}; convert with "
                "np.asarray(data, dtype=float)."
            )
        if jnp.ndim(leaf) < 1:
            raise ValueError(
                f"{name}: expected arrays with a leading observation axis, got a scalar; "
                "pass shape (N, ...)."
            )
        sizes.append(jnp.shape(leaf)[0])
    if len(set(sizes)) > 1:
        raise ValueError(
            f"{name}: the leaves' leading axes differ ({sizes}); every leaf must have the "
            "same number of observations N along axis 0."
        )
    if sizes[0] < 1:
        raise ValueError(f"{name}: is empty (N = 0); pass at least one observation.")
    for leaf in leaves:
        if is_concrete(leaf) and jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.inexact):
            bad = ~np.isfinite(np.asarray(leaf))
            if bad.any():
                rows = np.flatnonzero(bad.reshape(bad.shape[0], -1).any(axis=1))
                shown = ", ".join(str(r) for r in rows[:10]) + (" ..." if len(rows) > 10 else "")
                raise ValueError(
                    f"{name}: contains NaN or inf in {len(rows)} row(s) (rows {shown}); "
                    "drop or impute those rows first."
                )


def check_model_data(model: Any, data: Any) -> None:
    """The model's own data check (`model.check_data`) when it has one, else `check_data`."""
    model_check = getattr(model, "check_data", None)
    if model_check is None:
        check_data(data)
    else:
        model_check(data)
