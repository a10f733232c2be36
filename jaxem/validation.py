"""Checks of user input, run in Python before anything is traced.

Every check raises `TypeError` (wrong kind of object: dtype, class, not a
function) or `ValueError` (right kind, bad value: NaN, shape, range) with a
message that starts with the offending argument's name and says how to fix it.

Two kinds of check:

- *structural* checks (ranks, shapes, dtypes, pytree structure, the shape a
  user function returns) need only shapes, so they also run when the input is
  a tracer, i.e. when the caller has wrapped an entry point in `jit` or `vmap`;
- *value* checks (NaN/inf in data, weights on the simplex, covariances positive
  definite) need concrete numbers and are skipped for tracers (`is_concrete`).
  Under an outer `jit` nothing can look at the values before the compiled
  program runs; the EM loop then still never returns a non-finite iterate and
  reports one with `FitResult.finite = False`.

Conventions every model follows (the mixture and HMM models alike):

- `model.check_data(data)`: raise on data the model cannot fit (used by
  `check_model_data`; without it `check_data` runs);
- `model.check_params(params, data=None, *, batch_ndim=0, name="params")`:
  raise on invalid parameters. `data`, when given, fixes the dimensions the
  parameters must have; `batch_ndim` leading axes are batch axes (1 for the
  restart axis of `fit_restarts`); `name` prefixes every message (`fit` passes
  "params0"). It is called through `check_model_params`.

The helpers below (`check_simplex`, `check_positive_definite`,
`check_scalar_function`, ...) are the building blocks of those methods.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "abstract",
    "all_concrete",
    "check_array",
    "check_callable",
    "check_data",
    "check_finite_tree",
    "check_floating_params",
    "check_fit_inputs",
    "check_fit_settings",
    "check_hyperparameter",
    "check_int",
    "check_m_step_output",
    "check_model_data",
    "check_model_params",
    "check_num_states",
    "check_optimizer",
    "check_positive",
    "check_positive_definite",
    "check_prng_key",
    "check_restart_batch",
    "check_scalar_function",
    "check_simplex",
    "check_state_indexing",
    "check_tolerance",
    "check_weights",
    "eval_shape_cached",
    "is_concrete",
]


def is_concrete(x: Any) -> bool:
    """True when `x` holds values (not a tracer inside jit/vmap/grad)."""
    return not isinstance(x, jax.core.Tracer)


def all_concrete(tree: Any) -> bool:
    """True when every leaf of `tree` holds values (no tracers)."""
    return all(is_concrete(leaf) for leaf in jax.tree_util.tree_leaves(tree))


def _format_rows(rows: np.ndarray) -> str:
    shown = ", ".join(str(r) for r in rows[:10])
    return shown + (" ..." if len(rows) > 10 else "")


def _first_index(mask: np.ndarray) -> tuple:
    """The index of the first True entry of `mask`."""
    return tuple(int(i) for i in np.argwhere(mask)[0])


def _format_index(index: Sequence[int]) -> str:
    return "".join(f"[{i}]" for i in index)


# --- functions and settings -------------------------------------------------------------------


def check_callable(fn: Any, name: str) -> None:
    if not callable(fn):
        raise TypeError(f"{name}: expected a function, got {type(fn).__name__}.")


def check_num_states(num_states: Any, name: str = "num_states") -> None:
    if isinstance(num_states, bool) or not isinstance(num_states, (int, np.integer)):
        raise TypeError(f"{name}: expected a Python int >= 1, got {num_states!r}.")
    if num_states < 1:
        raise ValueError(f"{name}: must be >= 1, got {num_states}.")


def check_int(value: Any, name: str, minimum: int) -> None:
    """A Python (or NumPy) int >= `minimum`; bools are rejected."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected a Python int >= {minimum}, got {value!r}.")
    if value < minimum:
        raise ValueError(f"{name}: must be >= {minimum}, got {value}.")


def check_hyperparameter(value: Any, name: str, minimum: float = 0.0, hint: str = "") -> None:
    """A model hyperparameter (a leaf of the model pytree): a real number or a 0-d float
    array, >= `minimum`. Tracers (inside jit/vmap/grad) are not checked."""
    if not is_concrete(value):
        return
    if isinstance(value, bool) or not (isinstance(value, (int, float, np.integer, np.floating))
                                       or (hasattr(value, "shape") and jnp.ndim(value) == 0)):
        raise ValueError(f"{name}: expected a number >= {minimum:g}{hint}, got {value!r}.")
    number = float(value)
    if not number >= minimum or not math.isfinite(number):
        raise ValueError(f"{name}: expected a finite number >= {minimum:g}{hint}, got {number!r}.")


def check_weights(weights: Any, shape: tuple, name: str = "weights") -> None:
    """Sample weights: None, or a real array of `shape` (one weight per observation, or per
    sequence), non-negative and finite with a positive total (values checked when concrete)."""
    if weights is None:
        return
    if not hasattr(weights, "shape"):
        weights = np.asarray(weights)
    dtype = weights.dtype
    if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)) \
            or jnp.issubdtype(dtype, jnp.bool_):
        raise TypeError(f"{name}: expected real numbers (one weight per observation), got dtype {dtype}.")
    if tuple(jnp.shape(weights)) != tuple(shape):
        raise ValueError(
            f"{name}: expected shape {tuple(shape)} (one non-negative weight per observation, or per "
            f"sequence for Sequences), got {tuple(jnp.shape(weights))}."
        )
    if not is_concrete(weights):
        return
    values = np.asarray(weights, dtype=np.float64)
    bad = ~np.isfinite(values) | (values < 0)
    if np.any(bad):
        index = _first_index(bad)
        raise ValueError(
            f"{name}{_format_index(index)}: is {float(values[index])!r}; weights must be finite and >= 0 "
            "(a zero weight removes the observation)."
        )
    if values.size and not values.sum() > 0:
        raise ValueError(f"{name}: all weights are zero; at least one observation needs a positive weight.")


def check_fit_settings(max_iter: Any, tol: Any) -> None:
    """max_iter: int >= 0; tol: a real number >= 0 (may be traced, then unchecked)."""
    check_int(max_iter, "max_iter", 0)
    check_tolerance(tol, "tol")


def check_tolerance(value: Any, name: str, example: str = "1e-3") -> None:
    """`value`: a real number >= 0 (may be traced, then unchecked); errors name `name`."""
    if not is_concrete(value):
        return
    if isinstance(value, bool) or not (
        isinstance(value, (int, float, np.integer, np.floating))
        or (hasattr(value, "dtype") and jnp.ndim(value) == 0 and jnp.issubdtype(value.dtype, jnp.number))
    ):
        raise TypeError(f"{name}: expected a number >= 0, got {value!r}.")
    number = float(value)
    if math.isnan(number) or number < 0:
        raise ValueError(f"{name}: must be a number >= 0, got {value!r}; use e.g. {name}={example}.")


def check_prng_key(key: Any, name: str = "key") -> None:
    """A typed key (`jax.random.key(seed)`) or a raw uint32 key of shape (2,)
    (`jax.random.PRNGKey(seed)`); checked from dtype and shape, so also under vmap."""
    dtype = getattr(key, "dtype", None)
    if dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key):
        if jnp.ndim(key) != 0:
            raise ValueError(
                f"{name}: expected ONE key, got an array of keys of shape {jnp.shape(key)}; "
                "vmap over the keys instead."
            )
        return
    if dtype is None or dtype != jnp.uint32 or jnp.shape(key) != (2,):
        shown = f"{type(key).__name__}" + (f" of dtype {dtype} and shape {jnp.shape(key)}" if dtype else "")
        raise TypeError(
            f"{name}: expected a PRNG key, got {shown}; make one with jax.random.key(seed)."
        )


def check_optimizer(optimizer: Any, name: str = "optimizer") -> None:
    """An optax `GradientTransformation`: an object with callable `init` and `update`."""
    if callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None)):
        return
    hint = ""
    if callable(optimizer):
        hint = " It looks like an optimizer factory: call it, e.g. optax.adam(1e-2), not optax.adam."
    raise TypeError(
        f"{name}: expected an optax GradientTransformation such as optax.adam(1e-2), "
        f"got {type(optimizer).__name__}.{hint}"
    )


# --- data ---------------------------------------------------------------------------------------


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
                raise ValueError(
                    f"{name}: contains NaN or inf in {len(rows)} row(s) (rows {_format_rows(rows)}); "
                    "drop or impute those rows first."
                )


def check_model_data(model: Any, data: Any) -> None:
    """The model's own data check (`model.check_data`) when it has one, else `check_data`."""
    model_check = getattr(model, "check_data", None)
    if model_check is None:
        check_data(data)
    else:
        model_check(data)


# --- parameters -----------------------------------------------------------------------------------


def check_array(x: Any, name: str, shape: Sequence[int] | None = None, floating: bool = True) -> None:
    """`x` is an array (numeric; floating when `floating`) of exactly `shape` when given."""
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        raise TypeError(f"{name}: expected an array, got {type(x).__name__}; use jnp.asarray(...).")
    if floating and not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"{name}: expected a floating-point array, got dtype {dtype}; "
            "convert with jnp.asarray(x, dtype=jnp.float32) (or float64)."
        )
    if shape is not None and tuple(jnp.shape(x)) != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {tuple(jnp.shape(x))}.")


def check_finite_tree(tree: Any, name: str) -> None:
    """Every concrete inexact leaf is finite; the message gives the leaf's path."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        if not is_concrete(leaf):
            continue
        values = np.asarray(leaf)
        if np.issubdtype(values.dtype, np.inexact) and not np.all(np.isfinite(values)):
            where = jax.tree_util.keystr(path)
            raise ValueError(f"{name}{where}: contains NaN or inf; start from finite parameters.")


def check_simplex(values: Any, name: str, atol: float | None = None) -> None:
    """Concrete `values` (..., K): finite, >= 0, each last-axis vector summing to 1
    within `atol` (default sqrt(eps) of the dtype: 3e-4 in float32, 1.5e-8 in float64)."""
    if not is_concrete(values):
        return
    v = np.asarray(values)
    if atol is None:
        atol = float(np.sqrt(np.finfo(v.dtype).eps)) if np.issubdtype(v.dtype, np.floating) else 1e-8
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name}: contains NaN or inf; probabilities must be finite.")
    if np.any(v < 0):
        raise ValueError(
            f"{name}: has negative entries (min {v.min():.3g}); probabilities must be >= 0."
        )
    sums = v.astype(np.float64).sum(axis=-1)
    off = np.abs(sums - 1.0) > atol
    if np.any(off):
        index = _first_index(off)
        raise ValueError(
            f"{name}{_format_index(index)}: sums to {sums[index]:.6g} (off by {sums[index] - 1:.2g}), "
            f"not 1 (tolerance {atol:.1g}); "
            "normalise it, e.g. w / w.sum(axis=-1, keepdims=True)."
        )


def check_positive(values: Any, name: str) -> None:
    """Concrete `values` are finite and > 0 (variances)."""
    if not is_concrete(values):
        return
    v = np.asarray(values)
    bad = ~(np.isfinite(v) & (v > 0))
    if np.any(bad):
        index = _first_index(bad)
        raise ValueError(
            f"{name}{_format_index(index)}: must be finite and > 0, got {float(v[index]):.3g}; "
            "variances must be positive (add reg_covar)."
        )


def check_positive_definite(matrices: Any, name: str) -> None:
    """Concrete `matrices` (..., D, D): finite, symmetric (|A - Aᵀ| <= sqrt(eps)·max|A|),
    with positive diagonal, and a correlation matrix C = S⁻¹ A S⁻¹ (S = sqrt diag A)
    whose smallest eigenvalue exceeds D·eps of the dtype: positive definite with
    room for rounding, so the Cholesky factorisation the log-density uses succeeds.
    The test is scale-free: badly scaled features are fine, collinear ones are not."""
    if not is_concrete(matrices):
        return
    a = np.asarray(matrices)
    if a.ndim < 2 or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"{name}: expected square matrices (..., D, D), got shape {a.shape}.")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: contains NaN or inf; covariances must be finite.")
    eps = float(np.finfo(a.dtype).eps) if np.issubdtype(a.dtype, np.floating) else 2.0**-52
    a64 = a.astype(np.float64)
    scale = np.max(np.abs(a64), axis=(-1, -2))
    asym = np.max(np.abs(a64 - np.swapaxes(a64, -1, -2)), axis=(-1, -2))
    bad = asym > math.sqrt(eps) * scale
    if np.any(bad):
        index = _first_index(bad)
        raise ValueError(
            f"{name}{_format_index(index)}: is not symmetric (max |A - Aᵀ| = {asym[index]:.3g}); "
            "symmetrise it with (A + A.T) / 2."
        )
    variances = np.diagonal(a64, axis1=-2, axis2=-1)
    bad = ~np.all(variances > 0, axis=-1)
    if np.any(bad):
        index = _first_index(bad)
        raise ValueError(
            f"{name}{_format_index(index)}: has a diagonal entry <= 0 ({variances[index].min():.3g}); "
            "variances must be positive: add reg_covar to the diagonal."
        )
    inv_sd = 1.0 / np.sqrt(variances)
    correlation = a64 * inv_sd[..., :, None] * inv_sd[..., None, :]
    smallest = np.linalg.eigvalsh(0.5 * (correlation + np.swapaxes(correlation, -1, -2)))[..., 0]
    bad = smallest <= a.shape[-1] * eps
    if np.any(bad):
        index = _first_index(bad)
        raise ValueError(
            f"{name}{_format_index(index)}: is not positive definite in {a.dtype} (smallest eigenvalue "
            f"of its correlation matrix {smallest[index]:.3g}); add a multiple of the identity "
            "(reg_covar) or start from model.init(key, data)."
        )


# --- user functions, checked from shapes alone ---------------------------------------------------------


def abstract(tree: Any, drop_leading: int = 0) -> Any:
    """The tree's leaves as `jax.ShapeDtypeStruct`s, without their first `drop_leading` axes."""
    def leaf(x):
        shape = jnp.shape(x)
        if len(shape) < drop_leading:
            raise ValueError(f"expected at least {drop_leading} leading axes, got shape {shape}.")
        return jax.ShapeDtypeStruct(shape[drop_leading:], jnp.result_type(x))

    return jax.tree_util.tree_map(leaf, tree)


def check_scalar_function(fn: Callable, args: Sequence[Any], name: str, what: str,
                          fix: str = "sum over the observation's own axes (jnp.sum) and index "
                                     "per-state parameters with the state") -> jax.ShapeDtypeStruct:
    """Trace `fn(*args)` on shapes alone (`jax.eval_shape`; `args` may be
    ShapeDtypeStructs) and require a floating scalar. `what` describes the call
    for the message, e.g. "for ONE observation and ONE state", and `fix` says how
    to repair a non-scalar result. The trace is cached per (fn, argument shapes),
    so a repeated call costs no tracing."""
    try:
        out = eval_shape_cached(fn, *args)
    except KeyError as error:  # a parameter (or data field) the function reads is missing
        keys = sorted(map(str, args[0])) if isinstance(args[0], dict) else None
        has = f"; params has the keys {keys}" if keys is not None else ""
        raise ValueError(
            f"{name}: looking up {error} failed while jaxem traced it {what}: the function reads a "
            f"key that params (or the data) lacks{has}. Add it to the starting parameters or fix "
            "the name."
        ) from error
    except Exception as error:  # add context, keep the user's own traceback
        if hasattr(error, "add_note"):
            error.add_note(f"(raised while jaxem checked {name} {what} on shapes alone)")
        raise
    if not isinstance(out, jax.ShapeDtypeStruct):
        kind = type(out).__name__
        raise TypeError(f"{name}: must return one scalar array {what}, but returned a {kind} pytree.")
    if out.shape != ():
        raise ValueError(
            f"{name}: must return a scalar {what}, but returned shape {out.shape} ({out.dtype}); {fix}."
        )
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise TypeError(
            f"{name}: must return a floating-point log-probability {what}, got dtype {out.dtype}."
        )
    return out


def check_floating_params(params: Any, name: str = "params") -> None:
    """Every leaf of `params` has a floating dtype (EM moves parameters continuously, and a
    `Gradient` M-step differentiates them); the message names the first leaf that does not."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(params)
    for path, leaf in leaves:
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.inexact):
            raise TypeError(
                f"{name}{jax.tree_util.keystr(path)}: has dtype {dtype}; parameters must be floating "
                "point (EM updates them continuously): pass jnp.asarray(value, jnp.float32) (or float64)."
            )


def check_state_indexing(log_joint: Callable, params: Any, observation: Any, num_states: int,
                         name: str = "log_joint") -> None:
    """Evaluate `log_joint(params, observation, z)` for every state z with JAX's index checks
    (`jax.experimental.checkify`): JAX clamps an out-of-range index silently, so a model
    declared with more states than its parameters have would run on repeated entries. Raises
    ValueError when some state reads out of range. Needs concrete values; one compiled check
    per function and shapes."""
    error, _ = _index_checked(log_joint)(params, observation, jnp.arange(num_states, dtype=jnp.int32))
    message = error.get()
    if message:
        raise ValueError(
            f"{name}: a state z < num_states={num_states} indexes an array out of range "
            f"({message.strip()}); every per-state parameter needs {num_states} entries along the "
            "axis z indexes (JAX would silently clamp the index)."
        )


@functools.lru_cache(maxsize=64)
def _index_checked(log_joint: Callable) -> Callable:
    from jax.experimental import checkify

    every_state = jax.vmap(log_joint, in_axes=(None, None, 0))
    return jax.jit(checkify.checkify(every_state, errors=checkify.index_checks))


def eval_shape_cached(fn: Callable, *args: Any) -> Any:
    """`jax.eval_shape(fn, *args)`, cached per (fn, argument structure, shapes and dtypes) when
    `fn` is hashable, so that checks repeated on every call trace the function only once."""
    signature = _signature(args)
    try:
        hash((fn, signature))
    except TypeError:
        return jax.eval_shape(fn, *args)
    return _eval_shape_cached(fn, signature)


def _signature(tree: Any):
    """A hashable description of a pytree's structure, shapes and dtypes."""
    return (jax.tree_util.tree_structure(tree), tuple(_leaf_signature(tree)))


def _from_signature(signature) -> Any:
    treedef, leaves = signature
    return jax.tree_util.tree_unflatten(treedef, [jax.ShapeDtypeStruct(s, d) for s, d in leaves])


@functools.lru_cache(maxsize=256)
def _eval_shape_cached(fn, signature):
    return jax.eval_shape(fn, *_from_signature(signature))


def check_model_params(model: Any, params: Any, data: Any = None, *, batch_ndim: int = 0,
                       name: str = "params") -> None:
    """The model's own check (`model.check_params`) when it has one, else a check that
    every concrete leaf is finite. See the module docstring for the convention."""
    model_check = getattr(model, "check_params", None)
    if model_check is None:
        check_finite_tree(params, name)
    else:
        model_check(params, data, batch_ndim=batch_ndim, name=name)


def check_restart_batch(params0: Any, name: str = "params0") -> int:
    """Every leaf has the same leading restart axis R >= 1; returns R."""
    leaves = jax.tree_util.tree_leaves(params0)
    if not leaves or any(jnp.ndim(x) < 1 for x in leaves):
        raise ValueError(
            f"{name}: expected a leading restart axis R on every leaf; build a batch with "
            "jax.vmap(init)(keys) or jax.tree_util.tree_map(jnp.stack, ...)."
        )
    sizes = sorted({int(jnp.shape(x)[0]) for x in leaves})
    if len(sizes) > 1:
        raise ValueError(
            f"{name}: the leaves' leading (restart) axes differ ({sizes}); every leaf needs the "
            "same number of restarts R along axis 0."
        )
    if sizes[0] < 1:
        raise ValueError(f"{name}: has no restarts (R = 0); pass at least one starting point.")
    return sizes[0]


def check_m_step_output(model: Any, m_step: Any, log_prior: Any, params: Any, data: Any,
                        weights: Any, one_step: Callable, name: str = "m_step") -> None:
    """One EM step, `one_step(model, m_step, log_prior, params, data, weights) -> params`,
    traced on shapes alone, must return a pytree with the structure and shapes of
    `params` (the EM loop's carry, which keeps the starting dtypes; anything else
    would fail deep inside `lax.while_loop`). Arguments may be ShapeDtypeStructs.
    Cached per (M-step, prior, model structure and every shape)."""
    arrays = (model, params, data, weights)
    try:
        hash((m_step, log_prior, one_step))
        signature = _signature(arrays)
        hash(signature)
    except TypeError:  # an unhashable M-step or static model field: check without the cache
        message = _m_step_mismatch(m_step, log_prior, one_step, abstract(arrays))
    else:
        message = _m_step_mismatch_cached(m_step, log_prior, one_step, signature)
    if message:
        raise TypeError(f"{name}: {message}")


def _leaf_signature(tree: Any):
    return [(tuple(jnp.shape(x)), str(jnp.result_type(x))) for x in jax.tree_util.tree_leaves(tree)]


@functools.lru_cache(maxsize=256)
def _m_step_mismatch_cached(m_step, log_prior, one_step, signature) -> str:
    return _m_step_mismatch(m_step, log_prior, one_step, _from_signature(signature))


def _m_step_mismatch(m_step, log_prior, one_step, arrays) -> str:
    model, params, data, weights = arrays
    out = jax.eval_shape(lambda *a: one_step(a[0], m_step, log_prior, *a[1:]), model, params, data, weights)
    out_def, in_def = jax.tree_util.tree_structure(out), jax.tree_util.tree_structure(params)
    if out_def != in_def:
        return (f"returned parameters with pytree structure {out_def}, but the starting parameters "
                f"have {in_def}; the M-step must return the same pytree it is given.")
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(params),
                            jax.tree_util.tree_leaves(out), strict=True):
        if a.shape != b.shape:
            return (f"returned parameter{jax.tree_util.keystr(path)} with shape {b.shape}, but the "
                    f"starting value has shape {a.shape}; the M-step must keep every shape.")
    return ""


def check_fit_inputs(model: Any, data: Any, params0: Any, m_step: Any, log_prior: Any, *,
                     one_step: Callable, weights: Any = None, batch_ndim: int = 0,
                     name: str = "params0", own_prior: Callable | None = None) -> None:
    """What `fit` (batch_ndim=0) and `fit_restarts` (batch_ndim=1) check before tracing,
    given the resolved M-step: the data (`model.check_data`), the M-step's optimizer,
    the starting parameters (`model.check_params`), that `log_prior` (else the
    model's own prior `own_prior`) returns a scalar, and that one M-step keeps the
    parameters' structure and shapes (the last two traced on shapes alone, so they
    also run under jit/vmap)."""
    check_model_data(model, data)
    optimizer = getattr(m_step, "optimizer", None)
    if optimizer is not None and not isinstance(optimizer, str):  # names are checked by Gradient
        check_optimizer(optimizer, "Gradient(optimizer)")
    check_model_params(model, params0, data, batch_ndim=batch_ndim, name=name)
    one_start = abstract(params0, batch_ndim)
    if log_prior is not None:
        check_callable(log_prior, "log_prior")
        check_scalar_function(log_prior, (one_start,), "log_prior", "for one set of parameters",
                              fix="sum the log-densities of all parameters (jnp.sum)")
    elif own_prior is not None:
        check_scalar_function(own_prior, (one_start,), "log_prior (the model's own)",
                              "for one set of parameters", fix="sum the log-densities of all parameters")
    check_m_step_output(model, m_step, log_prior, one_start, abstract(data), abstract(weights), one_step)
