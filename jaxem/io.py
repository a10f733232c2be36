"""Save a fitted result and its settings to one `.npz` file, and load it back exactly.

    save_result(path, result, settings)      ->  path
    load_result(path)                        ->  (result, settings)

The round trip is exact: every array comes back with the same dtype, shape and
bits (NaN padding of `history` included), NamedTuples as the same class, dicts
with the same keys in the same order, and `settings` equal to what was saved.
Nothing is pickled: the file is read with `np.load(allow_pickle=False)`, so
loading an untrusted file runs no code.

File format (version 1): a NumPy `.npz` archive (a zip of `.npy` files) with

  ``__jaxem_format__``   0-d unicode array, "jaxem.result/1"
  ``__treedef__``        0-d unicode array, JSON describing the result's pytree
  ``__settings__``       0-d unicode array, JSON of the `settings` dict
  ``leaf_0``, ``leaf_1``, ...  the result's array leaves, in the order the
                          tree description numbers them

The tree description is nested JSON objects, one per node:

  {"node": "leaf", "index": i}                     the array ``leaf_i``
  {"node": "none"}                                 None
  {"node": "namedtuple", "class": "module:Qualname",
   "fields": [...], "children": [...]}             e.g. FitResult, GaussianMixtureParams
  {"node": "tuple" | "list", "children": [...]}
  {"node": "dict", "keys": [...], "children": [...]}   string keys, in order

so a result whose params are a `GaussianMixtureParams`, a plain dict, nested
lists/tuples or any mix of these is described without pickle. On loading, a
NamedTuple class is looked up in modules that are already imported (importing
`jaxem` imports its own); a file saved before the class gained trailing fields
with defaults loads as the class with those defaults (a `FitResult` saved before
`stop_reason` existed has stop_reason None); when the class cannot be found, a
`collections.namedtuple` with the same name and fields stands in for it. Leaves load as NumPy arrays
(JAX functions accept them; `jax.numpy.asarray` moves them to a device).

`settings` is a dict with string keys whose values are None, bool, int, float
(including NaN and ±inf), str, or lists and string-keyed dicts of these; NumPy
scalars are stored as the equivalent Python numbers. Anything else (a tuple,
an array, a function) is rejected when saving, so what is saved always loads
back equal.
"""

from __future__ import annotations

import collections
import json
import math
import os
import sys
from typing import Any

import numpy as np

__all__ = ["FORMAT", "load_result", "save_result"]

FORMAT = "jaxem.result/1"
_FORMAT_KEY = "__jaxem_format__"
_TREE_KEY = "__treedef__"
_SETTINGS_KEY = "__settings__"


def save_result(path: str | os.PathLike, result: Any, settings: dict | None = None) -> str:
    """Write `result` (a `FitResult`, `RestartsResult`, or any pytree of arrays built
    from NamedTuples, tuples, lists, string-keyed dicts and None) and `settings`
    (a JSON-like dict, e.g. {"max_iter": 100, "tol": 1e-3, "seed": 0}) to one
    `.npz` file; returns the path written (NumPy adds ".npz" when it is missing)."""
    settings = {} if settings is None else settings
    if not isinstance(settings, dict):
        raise TypeError(f"settings: expected a dict, got {type(settings).__name__}.")
    settings_json = json.dumps(_plain_settings(settings, "settings"), allow_nan=True)
    leaves: list[np.ndarray] = []
    tree = _describe(result, leaves, "result")
    arrays = {f"leaf_{i}": leaf for i, leaf in enumerate(leaves)}
    arrays[_FORMAT_KEY] = np.asarray(FORMAT)
    arrays[_TREE_KEY] = np.asarray(json.dumps(tree))
    arrays[_SETTINGS_KEY] = np.asarray(settings_json)
    path = os.fspath(path)
    if not path.endswith(".npz"):
        path += ".npz"
    with open(path, "wb") as file:
        np.savez(file, **arrays)
    return path


def load_result(path: str | os.PathLike) -> tuple[Any, dict]:
    """Read a file written by `save_result`; returns `(result, settings)`."""
    with np.load(os.fspath(path), allow_pickle=False) as archive:
        if _FORMAT_KEY not in archive.files:
            raise ValueError(f"path: {os.fspath(path)!r} is not a jaxem result file (no {_FORMAT_KEY}).")
        version = str(archive[_FORMAT_KEY])
        if version != FORMAT:
            raise ValueError(f"path: file format {version!r} is not supported; expected {FORMAT!r}.")
        tree = json.loads(str(archive[_TREE_KEY]))
        settings = json.loads(str(archive[_SETTINGS_KEY]))
        leaves = {name: archive[name] for name in archive.files if name.startswith("leaf_")}
    return _rebuild(tree, leaves), settings


# --- the tree description ---------------------------------------------------------------------------


def _is_namedtuple(x: Any) -> bool:
    return isinstance(x, tuple) and hasattr(type(x), "_fields")


def _describe(node: Any, leaves: list, where: str) -> dict:
    if node is None:
        return {"node": "none"}
    if _is_namedtuple(node):
        cls = type(node)
        children = [_describe(child, leaves, f"{where}.{field}")
                    for field, child in zip(cls._fields, node, strict=True)]
        return {"node": "namedtuple", "class": f"{cls.__module__}:{cls.__qualname__}",
                "fields": list(cls._fields), "children": children}
    if isinstance(node, (tuple, list)):
        kind = "tuple" if isinstance(node, tuple) else "list"
        children = [_describe(child, leaves, f"{where}[{i}]") for i, child in enumerate(node)]
        return {"node": kind, "children": children}
    if isinstance(node, dict):
        keys = list(node)
        bad = [k for k in keys if not isinstance(k, str)]
        if bad:
            raise TypeError(f"{where}: dict keys must be strings to be saved, got {bad[0]!r}.")
        children = [_describe(node[k], leaves, f"{where}[{k!r}]") for k in keys]
        return {"node": "dict", "keys": keys, "children": children}
    if hasattr(node, "dtype") and hasattr(node, "shape") or isinstance(node, (int, float, bool, complex)):
        array = np.asarray(node)
        if array.dtype == object or array.dtype.kind in "OV":
            raise TypeError(f"{where}: cannot save an array of dtype {array.dtype}.")
        leaves.append(array)
        return {"node": "leaf", "index": len(leaves) - 1}
    raise TypeError(
        f"{where}: cannot save a {type(node).__name__}; save_result handles arrays, NamedTuples, "
        "tuples, lists, string-keyed dicts and None."
    )


def _rebuild(tree: dict, leaves: dict) -> Any:
    kind = tree["node"]
    if kind == "none":
        return None
    if kind == "leaf":
        return leaves[f"leaf_{tree['index']}"]
    children = [_rebuild(child, leaves) for child in tree.get("children", [])]
    if kind == "tuple":
        return tuple(children)
    if kind == "list":
        return children
    if kind == "dict":
        return dict(zip(tree["keys"], children, strict=True))
    if kind == "namedtuple":
        return _namedtuple_class(tree["class"], tree["fields"])(*children)
    raise ValueError(f"path: unknown node type {kind!r} in the file's tree description.")


# Where classes recorded by earlier versions live now (files saved then still load as the class).
_MOVED_MODULES = {"jaxem.fit": "jaxem.engine.fit", "jaxem.restarts": "jaxem.engine.restarts"}


def _namedtuple_class(name: str, fields: list[str]) -> type:
    """The class `module:Qualname` if its module is already imported and it has these
    fields; else a stand-in `collections.namedtuple`. Never imports anything."""
    module_name, _, qualname = name.partition(":")
    module_name = _MOVED_MODULES.get(module_name, module_name)
    obj: Any = sys.modules.get(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    if isinstance(obj, type) and issubclass(obj, tuple):
        own = list(getattr(obj, "_fields", ()))
        # Equal fields; or a file saved before the class gained trailing fields with defaults
        # (a FitResult saved before `stop_reason`: it loads with stop_reason None).
        if own == fields or (own[:len(fields)] == fields
                             and set(own[len(fields):]) <= set(getattr(obj, "_field_defaults", {}))):
            return obj
    return collections.namedtuple(qualname.rsplit(".", 1)[-1], fields)


# --- settings -------------------------------------------------------------------------------------------


def _plain_settings(value: Any, where: str) -> Any:
    """`value` as JSON-ready Python objects that load back equal, or a TypeError."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        number = float(value)
        if isinstance(value, np.floating) and not math.isnan(number) and number != value:
            raise TypeError(f"{where}: {value!r} does not convert to a Python float exactly.")
        return number
    if isinstance(value, list):
        return [_plain_settings(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        bad = [k for k in value if not isinstance(k, str)]
        if bad:
            raise TypeError(f"{where}: keys must be strings, got {bad[0]!r}.")
        return {k: _plain_settings(v, f"{where}[{k!r}]") for k, v in value.items()}
    hint = " (use a list)" if isinstance(value, tuple) else ""
    raise TypeError(
        f"{where}: cannot save a {type(value).__name__}{hint}; settings hold None, bool, int, float, "
        "str, lists and string-keyed dicts."
    )
