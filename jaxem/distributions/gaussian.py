"""`jaxem.distributions.gaussian`: moved to `jaxem.families.gaussian` (re-exported here)."""

from jaxem.families.gaussian import *  # noqa: F401,F403
from jaxem.families.gaussian import __all__  # noqa: F401
