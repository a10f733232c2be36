"""What the command line prints and saves: the text summary, JSON and `.npz`.

JSON has no NaN or infinity: such numbers are written as `null`. The `.npz`
file of `jaxem fit --save` is written by `jaxem.io.save_result`, so
`jaxem.io.load_result(path)` reads it back as `(result, settings)`:

  result     the best restart's `jaxem.FitResult`: `params` (a
             `GaussianMixtureParams` or `GaussianHMMParams`), `log_likelihood`,
             `history` (NaN-padded to --max-iter), `num_iters`, `converged`, `finite`,
             `num_e_steps`, `stop_reason` (an index into `jaxem.STOP_REASONS`)
  settings   the command-line options (`components`, `covariance`, `restarts`,
             `seed`, `init`, `strategy`, `max_iter`, `tol` (the rule's default when
             --tol was not given), `reg_covar`, `convergence`), plus
             `command`, `model`, `data` (source, shape, column names), `criteria`
             (`log_likelihood`, `num_params`, `bic`, `aic`, `icl`), `best_restart`
             and `restart_log_likelihoods` (NaN for a failed restart)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from jaxem.cli.data import Table
from jaxem.cli.fitting import ModelFit
from jaxem.engine.fit import DEFAULT_CONVERGENCE

__all__ = ["describe_stop", "fit_to_json", "format_fit", "format_selection", "json_array", "json_number",
           "save_npz"]

MODEL_TITLES = {"gmm": ("Gaussian mixture", "component"), "hmm": ("Gaussian hidden Markov model", "state")}


def json_number(value: Any):
    """A float, or None for NaN and infinities (JSON has neither)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def json_array(array) -> Any:
    """Nested lists of `json_number`s."""
    array = np.asarray(array, dtype=np.float64)
    return [json_array(a) for a in array] if array.ndim else json_number(array)


def describe_data(table: Table) -> str:
    n, dim = table.values.shape
    return f"{table.source}: {n} observations × {dim} features ({', '.join(table.columns)})"


def data_json(table: Table) -> dict:
    n, dim = table.values.shape
    return {"source": table.source, "num_observations": n, "num_features": dim,
            "columns": list(table.columns)}


def fit_to_json(fit: ModelFit, table: Table, settings: dict, errors: dict | None = None) -> dict:
    """The machine-readable result of `jaxem fit` (with `standard_errors` when `errors` are given)."""
    extra = {} if errors is None else {
        "standard_errors": {name: json_array(value) for name, value in errors.items()}}
    return {
        "command": "fit",
        "model": fit.model,
        "data": data_json(table),
        "settings": settings,
        "params": {name: json_array(value) for name, value in fit.params.items()},
        "log_likelihood": json_number(fit.log_likelihood),
        "num_params": fit.num_params,
        "bic": json_number(fit.bic),
        "aic": json_number(fit.aic),
        "icl": json_number(fit.icl),
        "num_iters": fit.num_iters,
        "converged": fit.converged,
        "stop_reason": fit.stop_reason or None,
        "history": json_array(fit.history),
        "best_restart": fit.best_restart,
        "restarts": {
            "log_likelihood": json_array(fit.restart_log_likelihood),
            "num_iters": [int(i) for i in fit.restart_num_iters],
            "converged": [bool(c) for c in fit.restart_converged],
            "stop_reason": list(fit.restart_stop_reason) or None,
            "degenerate": None if fit.restart_degenerate is None
            else [bool(d) for d in fit.restart_degenerate],
        },
        "degenerate": fit.degeneracy or None,
        **extra,
    }


def _matrix(array, indent: int) -> str:
    return np.array2string(np.asarray(array), precision=5, suppress_small=True,
                           max_line_width=110, prefix=" " * indent)


def _degeneracy_lines(fit: ModelFit, unit: str) -> list[str]:
    """What the report says about degenerate restarts (`jaxem.engine.degeneracy`)."""
    if fit.restart_degenerate is None or not np.any(fit.restart_degenerate):
        return []
    count, total = int(np.sum(fit.restart_degenerate)), len(fit.restart_degenerate)
    if fit.degeneracy:
        return [f"{'degenerate':<16}WARNING: all {total} restarts are degenerate and so is this fit: "
                f"{fit.degeneracy}. Its likelihood is an artefact of the regularisation floor; use "
                f"fewer {unit}s, more restarts or a larger --reg-covar."]
    passed = fit.restart_degenerate & (np.nan_to_num(fit.restart_log_likelihood, nan=-np.inf)
                                       > fit.log_likelihood)
    text = f"{count}/{total} restarts ended degenerate and were not chosen"
    if np.any(passed):
        text += (f" ({int(np.sum(passed))} with a higher log-likelihood, up to "
                 f"{np.nanmax(fit.restart_log_likelihood[passed]):.4f}, held up by the regularisation floor)")
    return [f"{'degenerate':<16}{text}"]


def describe_stop(fit: ModelFit, settings: dict, num_observations: int) -> str:
    """Which rule stopped the best restart (`jaxem.fit`'s `convergence` and `tol` in
    `settings`; "relative" when a hand-made `settings` has no rule), in words."""
    rule = settings.get("convergence", DEFAULT_CONVERGENCE)
    tol = settings["tol"]
    if rule == "relative":
        threshold = tol * max(abs(fit.log_likelihood), num_observations)
        test = (f"relative change of ℓ below {tol:g}, |Δℓ| < {threshold:.4g}, and of every parameter "
                f"below {math.sqrt(tol):.2g}")
    else:
        sign = "|Δℓ|" if rule == "absolute" else "Δℓ"
        test = f"tol {tol:g} per observation, {sign} < {tol * num_observations:.4g}"
    if fit.converged:
        if fit.stop_reason == "unchanged":
            return (f"relative change of ℓ below {tol:g}: ℓ unchanged to rounding while a parameter "
                    "still moved")
        return test
    if fit.stop_reason == "non_finite":
        return f"stopped at the last finite iterate; {test} not reached"
    return f"stopped at --max-iter {settings['max_iter']}; raise it or --tol; {test} not reached"


def format_fit(fit: ModelFit, table: Table, settings: dict, errors: dict | None = None) -> str:
    """The readable summary of `jaxem fit` (standard errors after it when `errors` are given)."""
    k = fit.num_states
    n = table.values.shape[0]
    kind = fit.covariance_type
    title, unit = MODEL_TITLES[fit.model]
    lines = [
        f"{title}: {k} {unit}{'s' if k > 1 else ''}, {kind} covariance{'' if kind == 'tied' else 's'} "
        "(float64)",
        f"data: {describe_data(table)}" + (" as one sequence in row order" if fit.model == "hmm" else ""),
        f"restarts: {settings['restarts']} ({settings['init']} starts, seed {settings['seed']}, "
        f"strategy {settings['strategy']}); best is restart {fit.best_restart}",
        "",
    ]
    if fit.model == "hmm":
        lines.append(f"initial probabilities  {_matrix(fit.params['initial'], 23)}")
        lines.append(f"transition matrix      {_matrix(fit.params['transition'], 23)}")
        lines.append("")
    label = {"full": "covariance", "tied": "covariance", "diag": "variances", "spherical": "variance"}[kind]
    head = "  "
    covariances = fit.params["covariances"]
    for j in range(k):
        weight = f": weight {fit.params['weights'][j]:.5f}" if fit.model == "gmm" else ""
        lines.append(f"{unit} {j + 1}{weight}")
        lines.append(f"{head}{'mean':<12}{_matrix(fit.means[j], len(head) + 12)}")
        if kind != "tied":
            value = covariances[j]
            text = f"{float(value):.5g}" if kind == "spherical" else _matrix(value, len(head) + 12)
            lines.append(f"{head}{label:<12}{text}")
    if kind == "tied":
        lines.append(f"shared {label}: {_matrix(covariances, 19)}")
    finite = fit.restart_log_likelihood[np.isfinite(fit.restart_log_likelihood)]
    spread = ", ".join(f"{v:.4f}" for v in np.sort(finite)[::-1][:8])
    converged = f"{'yes' if fit.converged else 'no'} ({describe_stop(fit, settings, n)})"
    lines += [
        "",
        f"{'log-likelihood':<16}{fit.log_likelihood:.4f}",
        f"{'BIC':<16}{fit.bic:.4f}",
        f"{'AIC':<16}{fit.aic:.4f}",
        f"{'ICL':<16}{fit.icl:.4f}",
        f"{'parameters':<16}{fit.num_params}",
        f"{'iterations':<16}{fit.num_iters}",
        f"{'converged':<16}{converged}",
        f"{'all restarts':<16}{len(finite)}/{len(fit.restart_log_likelihood)} finite, "
        f"{int(np.sum(fit.restart_converged))} converged; best log-likelihoods: {spread}",
    ]
    lines += _degeneracy_lines(fit, unit)
    if errors is not None:
        lines += ["", "standard errors (observed information, delta method; NaN: not determined)"]
        lines += [f"  {name:<14}{_matrix(value, 16)}" for name, value in errors.items()]
    return "\n".join(lines)


def save_npz(path: str, fit: ModelFit, table: Table, settings: dict) -> str:
    """Write the fit to `path` with `jaxem.io.save_result` (contents: the module docstring);
    returns the path written."""
    from jaxem.io import save_result

    if fit.result is None:
        raise ValueError("fit: has no FitResult to save (ModelFit.result is None).")
    saved_settings = {
        "command": "fit",
        "model": fit.model,
        **settings,
        "data": data_json(table),
        "criteria": {"log_likelihood": fit.log_likelihood, "num_params": fit.num_params,
                     "bic": fit.bic, "aic": fit.aic, "icl": fit.icl},
        "best_restart": fit.best_restart,
        "restart_log_likelihoods": [float(v) for v in fit.restart_log_likelihood],
    }
    return save_result(path, fit.result, saved_settings)


def format_selection(rows: list[dict], table: Table, settings: dict, model: str) -> str:
    """The ranking table of `jaxem select`; rows sorted by BIC, each with rank_bic and rank_icl."""
    title, unit = MODEL_TITLES[model]
    out = [
        f"model selection: {title.lower()}s on {describe_data(table)}",
        f"{settings['restarts']} restarts each ({settings['init']} starts, seed {settings['seed']}); "
        "lower BIC and ICL are better",
        "",
    ]
    header = (f"{'rank':>4} {'K':>3} {'covariance':<10} {'log-likelihood':>15} {'params':>6} "
              f"{'BIC':>12} {'ICL':>12} {'ICL rank':>8} {'iters':>5} {'converged':>9}")
    out += [header, "-" * len(header)]
    for r in rows:
        params = "-" if r["num_params"] is None else r["num_params"]
        out.append(f"{r['rank_bic']:>4} {r['components']:>3} {r['covariance']:<10} "
                   f"{r['log_likelihood']:>15.4f} {params:>6} {r['bic']:>12.4f} "
                   f"{r['icl']:>12.4f} {r['rank_icl']:>8} {r['num_iters']:>5} "
                   f"{'yes' if r['converged'] else 'no':>9}")
    best_bic = min(rows, key=lambda r: r["rank_bic"])
    best_icl = min(rows, key=lambda r: r["rank_icl"])
    out += [
        "",
        f"best by BIC: K={best_bic['components']} {unit}s, {best_bic['covariance']} covariance",
        f"best by ICL: K={best_icl['components']} {unit}s, {best_icl['covariance']} covariance",
    ]
    return "\n".join(out)
