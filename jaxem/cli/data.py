"""Reading the command line's input file: CSV (header optional) or NumPy `.npy`.

`read_table(path)` returns a `Table`: a float64 array of shape (N, D), one
name per column, and the path it came from. Every problem a person can make
with a file is a `DataFileError` whose message is ONE line that names the file
and, where there is one, the offending line, row or column:

- a missing file, a directory, an unreadable or binary (non-CSV) file;
- a ragged row (a different number of fields than the first row);
- a non-numeric field after the header (the column and the line are named);
- missing or non-finite values (empty field, `NA`, `nan`, `inf`): every such
  row is listed (CSV: file line numbers counting from 1; `.npy`: row indices
  counting from 0), because EM has no model for missing data here.

CSV dialect: the delimiter is the first of `,`, tab or `;` found in the first
data line, else runs of whitespace; blank lines and lines starting with `#`
are skipped; the first line is a header when any of its fields is not a
number. A 1-D `.npy` array or a one-column CSV becomes shape (N, 1).
"""

from __future__ import annotations

import math
import os
from typing import NamedTuple

import numpy as np

__all__ = ["DataFileError", "Table", "read_table", "MISSING_TOKENS"]

MISSING_TOKENS = frozenset({"", "na", "n/a", "nan", "null", "none", "?"})
_NPY_MAGIC = b"\x93NUMPY"
_MAX_LISTED = 10


class DataFileError(ValueError):
    """A problem with the input file; the message is one line meant for a person."""


class Table(NamedTuple):
    """values (N, D) float64; columns: D names; source: where the data came from."""

    values: np.ndarray
    columns: tuple[str, ...]
    source: str


def read_table(path: str) -> Table:
    """Read a CSV or `.npy` file into a finite float64 (N, D) `Table`."""
    if not os.path.exists(path):
        raise DataFileError(f"{path}: no such file.")
    if os.path.isdir(path):
        raise DataFileError(f"{path}: is a directory; pass a CSV or .npy file.")
    try:
        with open(path, "rb") as f:
            head = f.read(len(_NPY_MAGIC))
    except OSError as err:
        raise DataFileError(f"{path}: cannot be read ({err.strerror or err}).") from err
    if head == _NPY_MAGIC or path.lower().endswith(".npy"):
        return _read_npy(path)
    return _read_csv(path)


def _listed(numbers) -> str:
    shown = ", ".join(str(n) for n in numbers[:_MAX_LISTED])
    return shown + (f", ... ({len(numbers)} in all)" if len(numbers) > _MAX_LISTED else "")


def _read_npy(path: str) -> Table:
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise DataFileError(f"{path}: not a readable .npy array ({_one_line(err)}).") from err
    if not isinstance(array, np.ndarray):
        raise DataFileError(f"{path}: holds several arrays (.npz); save one (N, D) array with np.save.")
    if array.dtype.names is not None or not (
        np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.bool_)
    ):
        raise DataFileError(f"{path}: has dtype {array.dtype}; expected a numeric (N, D) array.")
    if np.issubdtype(array.dtype, np.complexfloating):
        raise DataFileError(f"{path}: has complex dtype {array.dtype}; expected real numbers.")
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise DataFileError(f"{path}: has shape {array.shape}; expected (N, D) or (N,).")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise DataFileError(f"{path}: is empty (shape {array.shape}).")
    values = array.astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(values).all(axis=1))
    if bad.size:
        raise DataFileError(
            f"{path}: NaN or infinite values in {bad.size} row(s) (row indices {_listed(bad.tolist())}, "
            "counting from 0); drop or impute those rows."
        )
    columns = tuple(f"x{j + 1}" for j in range(values.shape[1]))
    return Table(values, columns, path)


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


def _split(line: str, delimiter: str | None) -> list[str]:
    fields = line.split(delimiter) if delimiter else line.split()
    return [field.strip().strip('"').strip("'").strip() for field in fields]


def _parse(field: str) -> float | None:
    """The number in `field`, NaN for a missing-value token, None when not a number."""
    if field.lower() in MISSING_TOKENS:
        return math.nan
    try:
        return float(field)
    except ValueError:
        return None


def _read_csv(path: str) -> Table:
    try:
        with open(path, encoding="utf-8-sig") as f:
            text = f.read()
    except UnicodeDecodeError as err:
        raise DataFileError(
            f"{path}: is not a text (UTF-8) CSV file; expected CSV or a .npy array."
        ) from err
    except OSError as err:
        raise DataFileError(f"{path}: cannot be read ({err.strerror or err}).") from err
    lines = [
        (number, line.strip())
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not lines:
        raise DataFileError(f"{path}: has no data rows.")
    first_number, first = lines[0]
    delimiter = next((d for d in (",", "\t", ";") if d in first), None)

    columns: tuple[str, ...] | None = None
    first_fields = _split(first, delimiter)
    if any(_parse(field) is None for field in first_fields):
        columns = tuple(field or f"x{j + 1}" for j, field in enumerate(first_fields))
        lines = lines[1:]
        if not lines:
            raise DataFileError(f"{path}: has a header but no data rows.")
    width = len(first_fields)

    rows, numbers = [], []
    for number, line in lines:
        fields = _split(line, delimiter)
        if len(fields) != width:
            raise DataFileError(
                f"{path}: line {number} has {len(fields)} field(s), expected {width} as on line "
                f"{first_number}."
            )
        row = []
        for j, field in enumerate(fields):
            value = _parse(field)
            if value is None:
                name = f" ({columns[j]!r})" if columns else ""
                raise DataFileError(
                    f"{path}: column {j + 1}{name} is not numeric: line {number} has {field!r}."
                )
            row.append(value)
        rows.append(row)
        numbers.append(number)
    values = np.asarray(rows, dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(values).all(axis=1))
    if bad.size:
        bad_lines = [numbers[i] for i in bad]
        raise DataFileError(
            f"{path}: missing or non-finite values (NaN, NA, inf, empty) in {bad.size} row(s) "
            f"(line(s) {_listed(bad_lines)} of the file); drop or impute those rows."
        )
    if columns is None:
        columns = tuple(f"x{j + 1}" for j in range(width))
    return Table(values, columns, path)

