"""`python -m jaxem`: the command line (see `jaxem.cli`)."""

import sys

from jaxem.cli import main

if __name__ == "__main__":
    sys.exit(main())
