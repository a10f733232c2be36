"""`Sequences`: a batch of sequences of different lengths, padded to one length.

A hidden Markov model is fitted to one sequence (any pytree whose leaves share
a leading time axis T) or to many. Many sequences of different lengths are
stored padded to a common length T, with their true lengths:

    Sequences(values, lengths)
      values:  pytree whose leaves have shape (B, T, ...)
      lengths: (B,) integers, 1 <= lengths[b] <= T

Step t of sequence b is real when t < lengths[b] and padding otherwise. Padding
never enters a result: the log-likelihood, the posterior, the M-step and the
Viterbi path of a padded batch equal those of the sequences taken one by one.
Padding values must be finite (they are multiplied by exact zeros); the
constructors below pad with zeros.

`Sequences` is a NamedTuple, hence a pytree: it passes through `jit`, `vmap`
and `jaxem.fit` like any array.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Sequences"]


class Sequences(NamedTuple):
    """B sequences padded to a common length T; see the module docstring.

    Attributes:
      values: pytree of arrays with leading axes (B, T).
      lengths: (B,) integer array of true lengths, each in [1, T].
    """

    values: Any
    lengths: Any

    # --- constructors (Python level, not traced) --------------------------------------------

    @classmethod
    def from_list(cls, sequences: Sequence[Any], max_length: int | None = None) -> Sequences:
        """Pad a list of arrays of shapes (T_b, ...) with zeros to (B, T, ...).

        `max_length` (default: the longest sequence) fixes T, e.g. so that batches
        of different data share compiled code.
        """
        if len(sequences) == 0:
            raise ValueError("sequences: the list is empty; pass at least one array of shape (T, ...).")
        arrays = [np.asarray(s) for s in sequences]
        trailing = {a.shape[1:] for a in arrays}
        if len(trailing) > 1 or any(a.ndim < 1 for a in arrays):
            raise ValueError(
                "sequences: every array must have shape (T_b, ...) with the same trailing shape; "
                f"got shapes {[a.shape for a in arrays]}."
            )
        lengths = np.array([a.shape[0] for a in arrays], dtype=np.int32)
        if lengths.min() < 1:
            raise ValueError("sequences: every sequence needs at least one step; drop empty ones.")
        if max_length is not None and (isinstance(max_length, bool)
                                       or not isinstance(max_length, (int, np.integer))):
            raise TypeError(f"max_length: expected an int or None, got {max_length!r}.")
        size = int(lengths.max()) if max_length is None else int(max_length)
        if size < lengths.max():
            raise ValueError(f"max_length: {size} is shorter than the longest sequence ({lengths.max()}).")
        dtype = np.result_type(*arrays)
        padded = np.zeros((len(arrays), size) + arrays[0].shape[1:], dtype)
        for b, a in enumerate(arrays):
            padded[b, : a.shape[0]] = a
        return cls(jnp.asarray(padded), jnp.asarray(lengths))

    @classmethod
    def from_concatenated(cls, x: Any, lengths: Sequence[int], max_length: int | None = None) -> Sequences:
        """Split the rows of `x` (N, ...) into consecutive sequences of the given
        `lengths` (summing to N; hmmlearn's `fit(X, lengths)` format) and pad them."""
        x = np.asarray(x)
        if x.ndim < 1:
            raise ValueError(f"x: expected an array of shape (N, ...), got shape {x.shape}.")
        raw = np.asarray(lengths)
        if raw.ndim != 1 or raw.size == 0:
            raise ValueError(f"lengths: expected a non-empty 1-D list of integers, got shape {raw.shape}.")
        if raw.dtype.kind not in "iu" and not (raw.dtype.kind == "f" and np.all(raw == np.floor(raw))):
            raise TypeError(f"lengths: expected whole numbers, got {raw.tolist()[:10]} (dtype {raw.dtype}).")
        lengths = raw.astype(np.int64)
        if lengths.min() < 1:
            raise ValueError(
                f"lengths: every length must be >= 1, got {lengths.min()} at position "
                f"{int(np.argmin(lengths))}; drop empty sequences."
            )
        if lengths.sum() != x.shape[0]:
            raise ValueError(
                f"lengths: must be a 1-D list summing to the number of rows of x ({x.shape[0]}), "
                f"got sum {lengths.sum()}."
            )
        bounds = np.concatenate([[0], np.cumsum(lengths)])
        return cls.from_list([x[bounds[i]:bounds[i + 1]] for i in range(len(lengths))], max_length)

    @classmethod
    def from_mask(cls, values: Any, mask: Any) -> Sequences:
        """Build from padded `values` (B, T, ...) and a (B, T) boolean mask that is
        True on real steps. Each row of the mask must be a prefix of Trues (padding
        only at the end); a gap inside a sequence raises `ValueError`."""
        mask_np = np.asarray(mask)
        if mask_np.dtype != bool and not np.all((mask_np == 0) | (mask_np == 1)):
            raise ValueError("mask: expected booleans (or 0/1), True on real steps.")
        mask_np = mask_np.astype(bool)
        if mask_np.ndim != 2:
            raise ValueError(f"mask: expected shape (B, T), got {mask_np.shape}.")
        leading = {tuple(jnp.shape(leaf)[:2]) for leaf in jax.tree_util.tree_leaves(values)}
        if leading != {mask_np.shape}:
            raise ValueError(
                f"mask: has shape {mask_np.shape} but the values' leading axes are "
                f"{sorted(leading)}; the mask needs one entry per (sequence, step)."
            )
        if np.any(mask_np.sum(axis=1) == 0):
            rows = np.flatnonzero(mask_np.sum(axis=1) == 0)
            raise ValueError(f"mask: rows {rows[:10].tolist()} have no real step; drop empty sequences.")
        lengths = mask_np.sum(axis=1)
        prefix = np.arange(mask_np.shape[1])[None, :] < lengths[:, None]
        if not np.array_equal(prefix, mask_np):
            rows = np.flatnonzero((prefix != mask_np).any(axis=1))
            raise ValueError(
                f"mask: rows {rows[:10].tolist()} are not of the form [True, ..., True, False, ...]; "
                "padding must come after the real steps of each sequence."
            )
        return cls(values, jnp.asarray(lengths, jnp.int32))

    # --- views -------------------------------------------------------------------------------

    @property
    def num_sequences(self) -> int:
        """B."""
        return jnp.shape(self.lengths)[0]

    @property
    def max_length(self) -> int:
        """T, the padded length."""
        return jnp.shape(jax.tree_util.tree_leaves(self.values)[0])[1]

    @property
    def mask(self) -> jax.Array:
        """(B, T) booleans, True on real steps."""
        return jnp.arange(self.max_length)[None, :] < jnp.asarray(self.lengths)[:, None]

    def unpadded(self) -> list:
        """The sequences as a list of pytrees with leading axes (T_b, ...) (host-side)."""
        lengths = np.asarray(self.lengths)
        return [jax.tree_util.tree_map(lambda v, n=n, b=b: v[b, :n], self.values)
                for b, n in enumerate(lengths)]


def check_chain_data(data: Any, name: str = "data") -> None:
    """Check one sequence (a pytree with leading time axis T >= 1) or a `Sequences` batch.

    For `Sequences`: every value leaf has leading axes (B, T), `lengths` is a
    (B,) integer array and (when concrete) 1 <= lengths <= T; values, padding
    included, are finite when concrete.
    """
    from jaxem.validation import check_data, is_concrete

    if not isinstance(data, Sequences):
        check_data(data, name)
        return
    check_data(data.values, f"{name}.values")
    leaves = jax.tree_util.tree_leaves(data.values)
    shapes = {tuple(jnp.shape(leaf)[:2]) for leaf in leaves}
    if any(jnp.ndim(leaf) < 2 for leaf in leaves) or len(shapes) > 1:
        raise ValueError(
            f"{name}.values: expected arrays with leading axes (B, T) shared by every leaf, got shapes "
            f"{[jnp.shape(leaf) for leaf in leaves]}; build it with Sequences.from_list(list_of_arrays)."
        )
    num_sequences, max_length = shapes.pop()
    lengths = data.lengths
    dtype = lengths.dtype if hasattr(lengths, "dtype") else np.asarray(lengths).dtype
    if not jnp.issubdtype(dtype, jnp.integer) or jnp.shape(lengths) != (num_sequences,):
        raise ValueError(
            f"{name}.lengths: expected {num_sequences} integers (one per sequence), got "
            f"shape {jnp.shape(lengths)} and dtype {dtype}."
        )
    if is_concrete(lengths):
        values = np.asarray(lengths)
        if values.min() < 1 or values.max() > max_length:
            raise ValueError(
                f"{name}.lengths: every length must be in [1, {max_length}] (the padded length), "
                f"got values from {values.min()} to {values.max()}."
            )
