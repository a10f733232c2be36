"""`jaxem.distributions`: the name version 1 gave `jaxem.families` (kept as a re-export)."""

from jaxem.families import *  # noqa: F401,F403
from jaxem.families import __all__  # noqa: F401
