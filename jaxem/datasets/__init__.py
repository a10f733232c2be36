"""Small data sets shipped with jaxem.

- `old_faithful()`: Old Faithful geyser eruptions, (272, 2) array of
  [eruption duration (min), waiting time to next eruption (min)]; R's
  `datasets::faithful` (Azzalini & Bowman 1990; Härdle 1991). The classic
  two-cluster EM example and the default data of `python -m jaxem`.
"""

from __future__ import annotations

from importlib import resources

import numpy as np

__all__ = ["old_faithful", "OLD_FAITHFUL_COLUMNS"]

OLD_FAITHFUL_COLUMNS = ("eruptions", "waiting")


def old_faithful() -> np.ndarray:
    """The Old Faithful data as a float64 NumPy array of shape (272, 2)."""
    with resources.files(__package__).joinpath("old_faithful.csv").open("r") as f:
        return np.loadtxt(f, delimiter=",", skiprows=1, dtype=np.float64)
