"""`jaxem.distributions.scalar`: moved to `jaxem.families.scalar` (re-exported here)."""

from jaxem.families.scalar import *  # noqa: F401,F403
from jaxem.families.scalar import __all__  # noqa: F401
