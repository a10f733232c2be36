"""Figures for the command line (`--plot`); matplotlib is an optional extra (`pip install "jaxem[plot]"`).

- `plot_fit`: the data coloured by most-probable component with each
  component's 1σ and 2σ covariance ellipses (the first two columns; for one
  column a histogram with the fitted density), beside the log-likelihood of
  every restart against the iteration.
- `plot_selection`: BIC and ICL against the number of components, one line
  per covariance type.

Nothing here imports matplotlib until a figure is asked for, and a missing
matplotlib is a `PlotUnavailable` error with the install command.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["PlotUnavailable", "require_matplotlib", "plot_fit", "plot_selection"]


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed (or cannot be imported)."""


def require_matplotlib():
    """Import matplotlib with the file-only Agg backend and return pyplot."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise PlotUnavailable(
            "--plot needs matplotlib, which is not installed; install it with: pip install 'jaxem[plot]'"
        ) from err
    return plt


def _ellipse(mean: np.ndarray, cov: np.ndarray, radius: float, num_points: int = 100) -> np.ndarray:
    """Points (num_points, 2) of {mean + radius · L u : ‖u‖ = 1} with cov = L Lᵀ (2×2)."""
    angles = np.linspace(0.0, 2.0 * math.pi, num_points)
    circle = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    values, vectors = np.linalg.eigh(cov)
    transform = vectors * np.sqrt(np.maximum(values, 0.0))
    return mean + radius * circle @ transform.T


def _normal_pdf(grid: np.ndarray, mean: float, variance: float) -> np.ndarray:
    return np.exp(-0.5 * (grid - mean) ** 2 / variance) / math.sqrt(2.0 * math.pi * variance)


def plot_fit(path: str, values: np.ndarray, columns, labels: np.ndarray, weights: np.ndarray,
             means: np.ndarray, covariances: np.ndarray, histories, best: int,
             title: str, unit: str = "component") -> None:
    """Save the fit figure to `path`.

    Args:
      values: (N, D) data; labels: (N,) most probable component (or state) of each point.
      weights (K,), means (K, D), covariances (K, D, D): the fitted components (any
        covariance type expanded to full matrices); unit: "component" or "state".
      histories: R sequences, each restart's log-likelihood at every iterate;
        best: the index of the chosen restart.
    """
    plt = require_matplotlib()
    fig, (ax_data, ax_curve) = plt.subplots(1, 2, figsize=(11, 4.5))
    colours = plt.get_cmap("tab10")
    num_components = means.shape[0]
    if values.shape[1] >= 2:
        for k in range(num_components):
            members = labels == k
            ax_data.scatter(values[members, 0], values[members, 1], s=10, alpha=0.6,
                            color=colours(k % 10), label=f"{unit} {k + 1}")
            for radius in (1.0, 2.0):
                ring = _ellipse(means[k, :2], covariances[k, :2, :2], radius)
                ax_data.plot(ring[:, 0], ring[:, 1], color=colours(k % 10), lw=1.5 if radius == 1 else 0.8)
            ax_data.plot(*means[k, :2], marker="x", color="black", ms=8)
        ax_data.set_xlabel(columns[0])
        ax_data.set_ylabel(columns[1])
        shown = "" if values.shape[1] == 2 else f" (first 2 of {values.shape[1]} columns)"
        ax_data.set_title(f"data by most probable {unit}, 1σ and 2σ ellipses{shown}")
    else:
        x = values[:, 0]
        grid = np.linspace(x.min() - 0.1 * np.ptp(x), x.max() + 0.1 * np.ptp(x), 400)
        ax_data.hist(x, bins="auto", density=True, color="lightgrey")
        total = np.zeros_like(grid)
        for k in range(num_components):
            part = weights[k] * _normal_pdf(grid, means[k, 0], covariances[k, 0, 0])
            total += part
            ax_data.plot(grid, part, color=colours(k % 10), label=f"{unit} {k + 1}")
        ax_data.plot(grid, total, color="black", label="mixture")
        ax_data.set_xlabel(columns[0])
        ax_data.set_title("data and fitted density")
    ax_data.legend(fontsize=8)
    for r, history in enumerate(histories):
        ran = np.asarray(history)[np.isfinite(history)]
        if ran.size:
            ax_curve.plot(np.arange(ran.size), ran, color="tab:red" if r == best else "grey",
                          lw=2 if r == best else 0.8, alpha=1.0 if r == best else 0.6,
                          label="best restart" if r == best else None)
    ax_curve.set_xlabel("EM iteration")
    ax_curve.set_ylabel("log-likelihood")
    ax_curve.set_title("log-likelihood of every restart")
    ax_curve.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_selection(path: str, rows, title: str) -> None:
    """Save BIC and ICL against K, one line per covariance type, to `path`.

    `rows` are dicts with keys "components", "covariance", "bic" and "icl".
    """
    plt = require_matplotlib()
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharex=True)
    kinds = sorted({row["covariance"] for row in rows})
    for criterion, ax in zip(("bic", "icl"), axes, strict=True):
        for kind in kinds:
            mine = sorted((r for r in rows if r["covariance"] == kind), key=lambda r: r["components"])
            ks = [r["components"] for r in mine]
            ys = [np.nan if r[criterion] is None else r[criterion] for r in mine]
            ax.plot(ks, ys, marker="o", label=kind)
        finite = [r for r in rows if r[criterion] is not None and np.isfinite(r[criterion])]
        if finite:
            best = min(finite, key=lambda r: r[criterion])
            ax.plot(best["components"], best[criterion], marker="*", ms=16, color="gold",
                    markeredgecolor="black", linestyle="none", label=f"best: K={best['components']} "
                    f"{best['covariance']}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("number of components K")
        ax.set_ylabel(f"{criterion.upper()} (lower is better)")
        ax.set_title(criterion.upper())
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
