"""The command line: `python -m jaxem` (installed as `jaxem`, the console script `jaxem.cli:main`).

- `jaxem.cli.commands`: argument parsing and the commands (`jaxem fit`, `jaxem select`); `main`
- `jaxem.cli.data`: reading the input file (CSV or `.npy`) into a `Table`
- `jaxem.cli.fitting`: fitting one model configuration, ONE compiled program (`fit_model`, `ModelFit`)
- `jaxem.cli.report`: what is printed and saved (the text summary, JSON, `.npz`)
- `jaxem.cli.plot`: the figures of `--plot` (matplotlib, an optional extra)

The argument-parsing module is `commands`, not `main`: a submodule named `main` would be hidden
by the function `jaxem.cli.main` that this package exports.
"""

from jaxem.cli.commands import build_parser, main, parse_components

__all__ = ["main", "build_parser", "parse_components"]
