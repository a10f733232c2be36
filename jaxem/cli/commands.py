"""The commands of the command line: `python -m jaxem` (installed as `jaxem`).

    jaxem                      fit a 2-component full-covariance Gaussian mixture to the
                               shipped Old Faithful data (the same as `jaxem fit`)
    jaxem fit [FILE] ...       fit one model (--model gmm|hmm, K, covariance type, restarts, ...)
    jaxem select [FILE] ...    fit every (K, covariance type) and rank them by BIC and ICL

FILE is a CSV file (header optional) or a `.npy` array of shape (N, D); without
it the shipped Old Faithful data (272 × 2) is used. With `--model hmm` the rows
are one sequence in time order. The command line runs in float64 (it is an
application, so it switches on `jax_enable_x64`; the library never does). Each
model configuration is ONE compiled program (`jaxem.cli.fitting`). Compiled
programs are kept in JAX's persistent cache (`jaxem.compilation_cache`: `$JAXEM_CACHE_DIR`,
default `~/.cache/jaxem/xla`; `--no-cache` or an empty `JAXEM_CACHE_DIR` turns it
off), so a second run of the same configuration skips the compile.

Errors are one line on stderr and a non-zero exit code (1 for bad data or a
failed fit, 2 for bad arguments); `--debug` shows the traceback instead.
The pieces (`jaxem.cli`): `data` reads the file, `fitting` fits, `report` prints
and saves, `plot` draws.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import jax

from jaxem.cli.data import DataFileError, Table, read_table
from jaxem.cli.fitting import CommandLineError, ModelFit, fit_model, full_covariances, standard_errors_of
from jaxem.cli.plot import PlotUnavailable
from jaxem.cli.report import (
    data_json,
    fit_to_json,
    format_fit,
    format_selection,
    json_number,
    save_npz,
)
from jaxem.compilation_cache import enable_persistent_cache
from jaxem.engine.fit import CONVERGENCE_RULES, DEFAULT_CONVERGENCE, resolve_tolerances

__all__ = ["main", "build_parser", "parse_components"]

DEFAULT_MAX_COMPONENTS = 8  # `jaxem select` tries K = 1..8 unless told otherwise

COVARIANCE_CHOICES = ("full", "diag", "spherical", "tied")
INIT_CHOICES = ("kmeans++", "kmeans", "random_from_data", "random")
COMMANDS = ("fit", "select")
EXIT_ERROR, EXIT_USAGE = 1, 2


class _UsageError(Exception):
    """Bad arguments (argparse's complaint), printed as one line with exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would print the usage and exit; we print one line
        raise _UsageError(f"{message} (see: {self.prog} --help)")


# --- arguments ------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def _tolerance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not value >= 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def parse_components(text: str) -> list[int]:
    """'3' -> [3]; '1..8' or '1-8' -> [1, ..., 8]; '2,4,6' -> [2, 4, 6] (sorted, unique, >= 1)."""
    try:
        values: set[int] = set()
        for part in text.split(","):
            part = part.strip()
            sep = ".." if ".." in part else "-" if "-" in part.lstrip("-") else None
            if sep:
                low, high = (int(s) for s in part.split(sep, 1))
                if low > high:
                    raise ValueError
                values.update(range(low, high + 1))
            else:
                values.add(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected K, a range LOW..HIGH or a list K1,K2,...; got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"every number of components must be >= 1, got {text!r}")
    return sorted(values)


def _covariance_list(text: str) -> list[str]:
    if text.strip() == "all":
        return list(COVARIANCE_CHOICES)
    kinds = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [k for k in kinds if k not in COVARIANCE_CHOICES]
    if unknown or not kinds:
        raise argparse.ArgumentTypeError(
            f"expected 'all' or a comma list of {', '.join(COVARIANCE_CHOICES)}; got {text!r}"
        )
    return list(dict.fromkeys(kinds))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `jaxem` (subcommands `fit` and `select`)."""
    from jaxem import __version__

    parser = _Parser(
        prog="jaxem",
        description="Expectation-maximization for JAX. Without a command: `jaxem fit` on the shipped "
        "Old Faithful data (2-component full-covariance Gaussian mixture).",
    )
    parser.add_argument("--version", action="version", version=f"jaxem {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    commands = parser.add_subparsers(dest="command", metavar="{fit,select}")

    common = _Parser(add_help=False)
    common.add_argument("file", nargs="?", metavar="FILE",
                        help="CSV (header optional) or .npy file of shape (N, D); "
                        "default: the shipped Old Faithful data")
    common.add_argument("--model", choices=("gmm", "hmm"), default="gmm",
                        help="gmm: Gaussian mixture (default); hmm: Gaussian hidden Markov model, "
                        "the rows of FILE being one sequence in time order")
    common.add_argument("--restarts", type=_positive_int, default=8, metavar="R",
                        help="starting points fitted at once with vmap (default 8)")
    common.add_argument("--seed", type=int, default=0, metavar="S",
                        help="seed of the PRNG key the starting points are drawn from (default 0)")
    common.add_argument("--init", choices=INIT_CHOICES, default="kmeans++",
                        help="how each restart starts (default kmeans++)")
    common.add_argument("--strategy", choices=("exhaustive", "emem"), default="exhaustive",
                        help="exhaustive: every restart to convergence (default); emem: 10 iterations "
                        "each, then the best eighth to convergence (faster on big data)")
    common.add_argument("--max-iter", type=_positive_int, default=100, metavar="N",
                        help="most EM iterations per restart (default 100)")
    common.add_argument("--tol", type=_tolerance, default=None, metavar="T",
                        help="stop when the log-likelihood changes by less than T times max(|ℓ|, N) and "
                        "every parameter by less than √T relative (default 1e-8); with --convergence "
                        "absolute or gain: T per observation (default 1e-3)")
    common.add_argument("--convergence", choices=tuple(CONVERGENCE_RULES), default=DEFAULT_CONVERGENCE,
                        help="the stop rule of jaxem.fit: relative (default), absolute (scikit-learn's "
                        "|Δℓ| < T·N) or gain (hmmlearn's Δℓ < T·N)")
    common.add_argument("--reg-covar", type=_tolerance, default=1e-6, metavar="E",
                        help="added to covariance diagonals (default 1e-6)")
    common.add_argument("--json", action="store_true", help="print machine-readable JSON instead")
    common.add_argument("--plot", metavar="PNG", help="save a figure (needs matplotlib: jaxem[plot])")
    common.add_argument("--no-cache", action="store_true",
                        help="do not use the persistent compilation cache")
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of an error")

    fit = commands.add_parser("fit", parents=[common], help="fit one model",
                              description="Fit a Gaussian mixture or HMM with vmapped restarts.")
    fit.add_argument("--components", "-k", type=_positive_int, default=2, metavar="K",
                     help="number of components (HMM: states) (default 2)")
    fit.add_argument("--covariance", choices=COVARIANCE_CHOICES, default="full",
                     help="covariance type (default full)")
    fit.add_argument("--se", action="store_true",
                     help="also print standard errors of the parameters (observed information, delta "
                     "method); use a small --tol so the fit is at the maximum")
    fit.add_argument("--save", metavar="NPZ",
                     help="save the best fit (parameters, history, settings) to a .npz file; "
                     "read it back with jaxem.io.load_result")
    fit.set_defaults(handler=_run_fit)

    select = commands.add_parser(
        "select", parents=[common], help="rank (K, covariance type) by BIC and ICL",
        description="Fit every (K, covariance type) with restarts and rank them by BIC and ICL.")
    select.add_argument("--components", "-k", type=parse_components, default=None,
                        metavar="KS", help="numbers of components: 2-5 or 2,3,5 (default 1..8, or "
                        "1..N for data with N < 8 rows)")
    select.add_argument("--covariance", type=_covariance_list, default=list(COVARIANCE_CHOICES),
                        metavar="TYPES", help="'all' (default) or a comma list, e.g. full,diag")
    select.add_argument("--progress", choices=("auto", "always", "never"), default="auto",
                        help="progress bar on stderr (auto: when stderr is a terminal)")
    select.set_defaults(handler=_run_select)
    return parser


def _with_default_command(argv: list[str]) -> list[str]:
    """`jaxem` and `jaxem FILE --opts` mean `jaxem fit ...`."""
    for token in argv:
        if token in ("-h", "--help", "--version") or token in COMMANDS:
            return argv
        if not token.startswith("-"):
            break
    flags = [t for t in argv if t == "--debug"]
    return flags + ["fit"] + [t for t in argv if t != "--debug"]


# --- commands -------------------------------------------------------------------------------


def _load(args: argparse.Namespace) -> Table:
    if args.file is None:
        from jaxem.datasets import OLD_FAITHFUL_COLUMNS, old_faithful

        return Table(old_faithful(), OLD_FAITHFUL_COLUMNS, "Old Faithful (shipped with jaxem)")
    return read_table(args.file)


def _check_output_path(path: str, option: str, suffix: str) -> None:
    if not path.lower().endswith(suffix):
        raise CommandLineError(f"{option} {path}: the file name must end in {suffix}.")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise CommandLineError(f"{option} {path}: the folder {folder} does not exist.")


def _check_outputs(args: argparse.Namespace) -> None:
    """Fail before fitting: output names, and matplotlib when a plot is asked for."""
    if args.plot:
        _check_output_path(args.plot, "--plot", ".png")
        from jaxem.cli.plot import require_matplotlib

        require_matplotlib()
    if getattr(args, "save", None):
        _check_output_path(args.save, "--save", ".npz")


def _tol(args: argparse.Namespace) -> float:
    """--tol, or the default of the --convergence rule."""
    return resolve_tolerances(args.convergence, args.tol, None)[0]


def _settings(args: argparse.Namespace) -> dict:
    return {"components": args.components, "covariance": args.covariance, "restarts": args.restarts,
            "seed": args.seed, "init": args.init, "strategy": args.strategy, "max_iter": args.max_iter,
            "tol": _tol(args), "reg_covar": args.reg_covar, "convergence": args.convergence}


def _fit(args: argparse.Namespace, table: Table, num_states: int, covariance_type: str) -> ModelFit:
    return fit_model(table.values, args.model, num_states, covariance_type, restarts=args.restarts,
                     seed=args.seed, init=args.init, strategy=args.strategy, max_iter=args.max_iter,
                     tol=_tol(args), reg_covar=args.reg_covar, convergence=args.convergence)


def _note(args: argparse.Namespace, text: str) -> None:
    """A message for the person: stdout normally, stderr when stdout carries JSON."""
    print(text, file=sys.stderr if args.json else sys.stdout)


def _trajectories(fit: ModelFit) -> list:
    """Each restart's log-likelihood at θ_0, ..., θ_T (the history plus the final value)."""
    import numpy as np

    return [np.append(history[:iters], final) for history, iters, final in
            zip(fit.restart_history, fit.restart_num_iters, fit.restart_log_likelihood, strict=True)]


def _run_fit(args: argparse.Namespace) -> int:
    _check_outputs(args)
    table = _load(args)
    fit = _fit(args, table, args.components, args.covariance)
    settings = _settings(args)
    errors = None
    if args.se:
        errors, problem = standard_errors_of(fit, table.values, args.reg_covar)
        if problem:
            _note(args, f"standard errors: {problem}")
    if args.json:
        print(json.dumps(fit_to_json(fit, table, settings, errors), indent=2))
    else:
        print(format_fit(fit, table, settings, errors))
    if args.save:
        saved = save_npz(args.save, fit, table, settings)
        _note(args, f"saved the parameters to {saved} (read it with jaxem.io.load_result)")
    if args.plot:
        from jaxem.cli.plot import plot_fit

        weights = fit.params.get("weights")
        if weights is None:  # an HMM: the states' overall frequencies under the posterior
            weights = fit.responsibilities.mean(axis=0)
        unit = "component" if fit.model == "gmm" else "state"
        plot_fit(args.plot, table.values, table.columns, fit.responsibilities.argmax(axis=1), weights,
                 fit.means, full_covariances(fit), _trajectories(fit), fit.best_restart,
                 f"{fit.num_states}-{unit} {fit.covariance_type} Gaussian "
                 f"{'mixture' if fit.model == 'gmm' else 'HMM'}: log-likelihood {fit.log_likelihood:.3f}",
                 unit=unit)
        _note(args, f"saved the figure to {args.plot}")
    return 0


class _Progress:
    """A one-line progress bar on stderr."""

    def __init__(self, total: int, enabled: bool, width: int = 30):
        self.total, self.enabled, self.width, self.start = total, enabled, width, time.time()

    def show(self, done: int, label: str) -> None:
        if not self.enabled:
            return
        filled = round(self.width * done / self.total)
        bar = "#" * filled + "-" * (self.width - filled)
        elapsed = time.time() - self.start
        end = "\n" if done == self.total else ""
        sys.stderr.write(f"\rselect [{bar}] {done}/{self.total} {label:<18} {elapsed:6.1f} s{end}")
        sys.stderr.flush()


def rank(values: list[float]) -> list[int]:
    """Ranks from 1 (lowest value); NaN and infinities rank last."""
    def key(i):
        return (not math.isfinite(values[i]), values[i] if math.isfinite(values[i]) else 0.0)

    ranks = [0] * len(values)
    for position, i in enumerate(sorted(range(len(values)), key=key), start=1):
        ranks[i] = position
    return ranks


def _run_select(args: argparse.Namespace) -> int:
    _check_outputs(args)
    table = _load(args)
    n = table.values.shape[0]
    if args.components is None:
        args.components = list(range(1, min(DEFAULT_MAX_COMPONENTS, n) + 1))
        if n < DEFAULT_MAX_COMPONENTS:
            _note(args, f"note: --components defaults to 1..{n}, not 1..{DEFAULT_MAX_COMPONENTS}: the "
                        f"data have {n} observations.")
    too_many = [k for k in args.components if k > n]
    if too_many:
        raise CommandLineError(
            f"--components: {too_many[0]} is more than the {n} observations in the data; use fewer."
        )
    configs = [(k, kind) for kind in args.covariance for k in args.components]
    enabled = args.progress == "always" or (args.progress == "auto" and sys.stderr.isatty())
    progress = _Progress(len(configs), enabled)
    rows = []
    for done, (k, kind) in enumerate(configs):
        progress.show(done, f"K={k} {kind}")
        row = {"components": k, "covariance": kind}
        try:
            fit = _fit(args, table, k, kind)
            row.update(log_likelihood=fit.log_likelihood, num_params=fit.num_params, bic=fit.bic,
                       icl=fit.icl, aic=fit.aic, num_iters=fit.num_iters, converged=fit.converged,
                       stop_reason=fit.stop_reason)
        except CommandLineError:  # every restart failed: ranked last, shown as nan
            row.update(log_likelihood=math.nan, num_params=None, bic=math.nan, icl=math.nan,
                       aic=math.nan, num_iters=0, converged=False, stop_reason="non_finite")
        rows.append(row)
    progress.show(len(configs), "done")
    for criterion in ("bic", "icl"):
        for row, position in zip(rows, rank([r[criterion] for r in rows]), strict=True):
            row[f"rank_{criterion}"] = position
    rows.sort(key=lambda r: r["rank_bic"])
    if not math.isfinite(rows[0]["bic"]):
        raise CommandLineError("every configuration failed (non-finite log-likelihood).")
    settings = _settings(args)
    if args.json:
        best_icl = min(rows, key=lambda r: r["rank_icl"])
        clean = [{key: json_number(v) if isinstance(v, float) else v for key, v in r.items()} for r in rows]
        print(json.dumps({
            "command": "select", "model": args.model, "data": data_json(table), "settings": settings,
            "results": clean,
            "best_bic": {"components": rows[0]["components"], "covariance": rows[0]["covariance"]},
            "best_icl": {"components": best_icl["components"], "covariance": best_icl["covariance"]},
        }, indent=2))
    else:
        print(format_selection(rows, table, settings, args.model))
    if args.plot:
        from jaxem.cli.plot import plot_selection

        plot_selection(args.plot, [{**r, "bic": json_number(r["bic"]), "icl": json_number(r["icl"])}
                                   for r in rows], f"model selection on {table.source}")
        _note(args, f"saved the figure to {args.plot}")
    return 0


# --- entry point ----------------------------------------------------------------------------


def _configure_jax(args: argparse.Namespace) -> None:
    jax.config.update("jax_enable_x64", True)
    if not args.no_cache:
        enable_persistent_cache()


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def main(argv: list[str] | None = None) -> int:
    """Run the command line with `argv` (default: `sys.argv[1:]`); returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    argv = _with_default_command(argv)
    debug = "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
    except _UsageError as err:
        print(f"jaxem: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as exit_:  # --help and --version
        return int(exit_.code or 0)
    try:
        _configure_jax(args)
        return args.handler(args)
    except BrokenPipeError:  # e.g. `jaxem --json | head`: the reader left; stay quiet
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("jaxem: interrupted", file=sys.stderr)
        return 130
    except (CommandLineError, DataFileError, PlotUnavailable, ValueError, TypeError, OSError) as err:
        if debug:
            raise
        print(f"jaxem: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as err:
        if debug:
            raise
        print(f"jaxem: error: unexpected {type(err).__name__}: {_one_line(err)} "
              "(run again with --debug for the traceback)", file=sys.stderr)
        return EXIT_ERROR
