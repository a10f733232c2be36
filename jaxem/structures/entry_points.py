"""Per-call entry points of a model (`e_step`, `log_likelihood`, `sample`, `viterbi`, ...),
compiled once and checked on the way in.

Called eagerly, a model method built from dozens of jax operations would run
them one by one (each dispatched, each compiled on first use): seconds for a
single call. `entry_point(method)` wraps the method so that

- called with concrete arguments (outside any `jit`/`vmap`/`grad`), it first runs
  the model's input checks (raising in Python, before anything is traced) and then
  a `jax.jit` of the method with the model as a pytree argument: ONE program,
  compiled once per (model structure, i.e. its static fields; static arguments;
  argument shapes and dtypes) and reused by every later call, whatever the values,
  a model's hyperparameters (its leaves) included;
- called with tracers (inside the user's `jit`, `vmap`, `grad`, or jaxem's own EM
  loop), it runs the structural part of the checks (shapes, dtypes; the value
  checks need concrete numbers and are skipped) and then the plain method, so it
  traces into the caller's program as before;
- called on a model whose static fields are not hashable, it runs the plain
  method eagerly.

Models are pytrees (`jaxem.tree.pytree_dataclass`): models with equal static
fields share the compiled programs.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import jax

from jaxem.validation import all_concrete, check_model_data, check_model_params, check_weights

__all__ = ["check_params_and_data", "check_params_only", "entry_point"]


def check_params_and_data(model: Any, params: Any, data: Any, weights: Any = None, *rest: Any) -> None:
    """The checks of an entry point taking (params, data, weights=None, ...): data, parameters,
    then the sample weights."""
    check_model_data(model, data)
    check_model_params(model, params, data)
    if weights is not None:
        check_weights(weights, model.weights_shape(data))


def check_params_only(model: Any, key: Any, params: Any, *rest: Any) -> None:
    """The checks of an entry point taking (key, params, ...), e.g. `sample`."""
    check_model_params(model, params)


def _hashable(obj: Any) -> bool:
    try:
        hash(obj)
    except TypeError:
        return False
    return True


def entry_point(method: Callable | None = None, *, static: Sequence[str] = (),
                check: Callable | None = check_params_and_data) -> Callable:
    """Decorate a model method `method(self, *args)` as a compiled, checked entry point.

    Args:
      method: the plain method (also usable as `@entry_point(static=...)`).
      static: names of arguments that are Python values fixing shapes (e.g.
        "num_samples"); they are static arguments of the compiled program.
      check: `check(model, *args)` run on concrete arguments before compiling
        (default: `check_params_and_data`; None: no check).

    The wrapper has the method's signature; its attribute `compiled` is the
    underlying `jax.jit` function (`compiled._cache_size()` counts its programs).
    """
    if method is None:
        return functools.partial(entry_point, static=static, check=check)
    signature = inspect.signature(method)
    names = list(signature.parameters)
    static_argnums = tuple(names.index(name) for name in static)
    compiled = jax.jit(method, static_argnums=static_argnums)
    # A model class that is not a registered pytree (e.g. a user's subclass) is a static argument.
    compiled_static = jax.jit(method, static_argnums=(0,) + static_argnums)

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        arguments = bound.args
        if check is not None:
            check(*arguments)  # value checks skip tracers (`jaxem.validation.is_concrete`)
        dynamic = [a for i, a in enumerate(arguments) if i not in static_argnums]
        if not all_concrete(dynamic):
            return method(*arguments)
        treedef = jax.tree_util.tree_structure(self)
        registered = not jax.tree_util.treedef_is_leaf(treedef)
        static_parts = [treedef if registered else self] + [arguments[i] for i in static_argnums]
        if not all(_hashable(part) for part in static_parts):
            return method(*arguments)
        return (compiled if registered else compiled_static)(*arguments)

    wrapper.compiled = compiled
    return wrapper
