"""`ConvergenceMonitor`: hmmlearn's record of a fit's convergence, for the HMM faces.

hmmlearn's loop reports each iteration's log-likelihood to `model.monitor_` and stops when
`monitor_.converged`. The faces run the whole loop compiled (`jaxem.sklearn._hmm`), so they
record the finished fit's log-likelihoods ℓ_0..ℓ_T afterwards (`record`): into a fresh
`ConvergenceMonitor`, or, when the user replaced `monitor_` by another object with hmmlearn's
protocol (`_reset()`, `report(log_prob)`, `converged`; e.g. a subclass of hmmlearn's own
monitor that asserts the log-likelihood never falls), into that object, reading `converged`
after each report as hmmlearn's loop does, so its checks run on the fit's trajectory. Such
a monitor observes the fit; it does not change when the fit stops.
"""

from __future__ import annotations

import collections
import sys

import numpy as np

__all__ = ["ConvergenceMonitor", "record"]


class ConvergenceMonitor:
    """hmmlearn's convergence record of a fit: `history` (every iteration's total
    log-likelihood log p(X | θ_i)), `iter` (iterations run), `tol`, `n_iter`, and
    `converged`: True when n_iter iterations ran or the last gain was below tol.

    The fit's convergence test runs inside the compiled EM loop, so replacing
    `monitor_` by a subclass with another `converged` rule does not change when
    a fit stops (it does in hmmlearn); the subclass sees every iteration (`record`).
    """

    _row = "{iter:>10d} {log_prob:>16.8f} {delta:>+16.8f}"

    def __init__(self, tol, n_iter, verbose):
        self.tol = tol
        self.n_iter = n_iter
        self.verbose = verbose
        self.history = collections.deque()
        self.iter = 0

    def __repr__(self):
        fields = sorted(dict(vars(self), history=list(self.history)).items())
        return f"{type(self).__name__}(" + ", ".join(f"{k}={v!r}" for k, v in fields) + ")"

    def _reset(self):
        self.iter = 0
        self.history.clear()

    def report(self, log_prob) -> None:
        """Record one iteration's log-likelihood (printing a row to stderr when verbose)."""
        if self.verbose:
            delta = log_prob - self.history[-1] if self.history else np.nan
            print(self._row.format(iter=self.iter + 1, log_prob=log_prob, delta=delta), file=sys.stderr)
        self.history.append(float(log_prob))
        self.iter += 1

    @property
    def converged(self) -> bool:
        return (self.iter == self.n_iter
                or (len(self.history) >= 2 and self.history[-1] - self.history[-2] < self.tol))


def record(monitor, tol, n_iter, verbose, log_probs):
    """The monitor a finished fit leaves in `monitor_`: a fresh `ConvergenceMonitor` holding
    `log_probs` when `monitor` is one (or None), else `monitor` itself, reset and given every
    log-likelihood through `report`, with `converged` read after each (hmmlearn's protocol)."""
    if monitor is None or type(monitor) is ConvergenceMonitor:
        monitor = ConvergenceMonitor(tol, n_iter, verbose)
        for log_prob in log_probs:
            monitor.report(log_prob)
        return monitor
    monitor._reset()
    for log_prob in log_probs:
        monitor.report(float(log_prob))
        monitor.converged  # noqa: B018 - read for its checks, as hmmlearn's loop reads it
    return monitor
