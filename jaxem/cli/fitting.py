"""Fitting one model configuration for the command line: `fit_model` and `ModelFit`.

A configuration is (model kind, K, covariance type, restarts, ...). Each is ONE
compiled program: the starting points (`model.init` vmapped over PRNG keys),
`jaxem.fit_restarts`, and the E-step and Q-function at the best fit. The
criteria (lower is better), with ℓ the log-likelihood, p the number of free
parameters and N the number of observations (time steps for an HMM):

    BIC = -2ℓ + p log N       AIC = -2ℓ + 2p       ICL = BIC + 2 H(z | x)

where H(z | x) = ℓ - Q(θ̂ | θ̂) is the entropy of the latent variables'
posterior (E[log p(x, z)] = Q, log p(z | x) = log p(x, z) - ℓ). For a mixture
H = -Σ_{n,k} r_nk log r_nk, the entropy form of ICL (Biernacki, Celeux &
Govaert 2000; McLachlan & Peel 2000, §6.10); for an HMM it is the entropy of
the whole state path, not of the per-step marginals.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxem.engine.fit import DEFAULT_CONVERGENCE, resolve_tolerances
from jaxem.engine.restarts import fit_restarts
from jaxem.models import gaussian_mixture

__all__ = ["CommandLineError", "ModelFit", "PARAM_NAMES", "build_model", "fit_model", "full_covariances"]

# The fields of each model's parameters, in the order they are printed and saved.
PARAM_NAMES = {
    "gmm": ("weights", "means", "covariances"),
    "hmm": ("initial", "transition", "means", "covariances"),
}


class CommandLineError(Exception):
    """A problem the person at the terminal can fix; printed as one line."""


class ModelFit(NamedTuple):
    """The best of R restarts, as NumPy values.

    params: the fitted parameters by name (`PARAM_NAMES[model]`): means (K, D),
      covariances of the covariance type's shape, and weights (K,) for a mixture
      or initial (K,) and transition (K, K) probabilities for an HMM.
    log_likelihood: ℓ, the observed-data log-likelihood at `params`.
    history: (num_iters,) objective before each M-step of the best restart.
    responsibilities: (N, K) posterior marginals p(z_n = k | x) at the fit.
    restart_*: (R,) every restart's final log-likelihood (NaN if it failed),
      iterations and convergence; restart_history (R, max_iter), NaN-padded.
    result: the best restart's `jaxem.FitResult` as NumPy arrays (params as the
      model's NamedTuple, history NaN-padded to max_iter): what `--save` writes
      with `jaxem.io.save_result`. None when the fit was built by hand.
    restart_degenerate: (R,) bool, which restarts' solutions are degenerate
      (`jaxem.engine.degeneracy`); degeneracy: the best restart's, in words ("" if
      none; non-empty only when every restart was degenerate).
    stop_reason: why the best restart stopped, a name from `jaxem.STOP_REASONS`
      ("relative", "max_iter", ...; "" when the fit was built by hand);
      restart_stop_reason: every restart's.
    """

    model: str
    covariance_type: str
    params: dict
    log_likelihood: float
    num_params: int
    bic: float
    aic: float
    icl: float
    num_iters: int
    converged: bool
    history: np.ndarray
    responsibilities: np.ndarray
    best_restart: int
    restart_log_likelihood: np.ndarray
    restart_num_iters: np.ndarray
    restart_converged: np.ndarray
    restart_history: np.ndarray
    result: Any = None
    restart_degenerate: np.ndarray | None = None
    degeneracy: str = ""
    stop_reason: str = ""
    restart_stop_reason: tuple = ()

    @property
    def means(self) -> np.ndarray:
        return self.params["means"]

    @property
    def num_states(self) -> int:
        return self.params["means"].shape[0]


def build_model(kind: str, num_states: int, covariance_type: str, reg_covar: float):
    """`gaussian_mixture` for kind "gmm", `gaussian_hmm` for kind "hmm"."""
    if kind == "gmm":
        return gaussian_mixture(num_states, covariance_type, reg_covar)
    if kind == "hmm":
        try:
            from jaxem.models import gaussian_hmm
        except ImportError:
            raise CommandLineError(
                "--model hmm is not available in this version of jaxem (no jaxem.models.gaussian_hmm); "
                "use --model gmm."
            ) from None
        return gaussian_hmm(num_states, covariance_type, reg_covar=reg_covar)
    raise CommandLineError(f"--model: expected gmm or hmm, got {kind!r}.")


@functools.partial(jax.jit, static_argnames=("init", "max_iter", "strategy", "convergence"))
def _fit_program(keys, x, tol, model, *, init, max_iter, strategy, convergence):
    """ONE compiled program per configuration (the model is a pytree argument: its reg_covar is
    a leaf): starting points, restarts, posterior and Q at the best. The objective includes
    the model's own prior, when it has one."""
    params0 = jax.vmap(lambda key: model.init(key, x, init))(keys)
    result = fit_restarts(model, x, params0, max_iter=max_iter, tol=tol, convergence=convergence,
                          strategy=strategy)
    posterior = model.e_step(result.best.params, x)
    q_value = model.q(result.best.params, posterior, x)
    return result, posterior.marginals, posterior.log_likelihood, q_value


def fit_model(values: np.ndarray, kind: str, num_states: int, covariance_type: str = "full", *,
              restarts: int = 8, seed: int = 0, init: str = "kmeans++", strategy: str = "exhaustive",
              max_iter: int = 100, tol: float | None = None, reg_covar: float = 1e-6,
              convergence: str = DEFAULT_CONVERGENCE) -> ModelFit:
    """Fit a Gaussian mixture ("gmm") or a Gaussian HMM ("hmm", the rows being one
    sequence in time order) to `values` (N, D) from `restarts` starting points.

    The starting points are `model.init(key, x, init)` for `restarts` keys split
    from `PRNGKey(seed)`; `jaxem.fit_restarts` fits them in one vmapped program, stopped
    by `jaxem.fit`'s rule `convergence` at `tol` (None: the rule's default), and the
    restart with the highest finite objective is returned, a non-degenerate one
    when there is one (`jaxem.engine.degeneracy`).
    """
    tol, _ = resolve_tolerances(convergence, tol, None)
    x = np.asarray(values, dtype=np.float64)
    n, dim = x.shape
    if num_states > n:
        raise CommandLineError(
            f"--components {num_states} is more than the {n} observations in the data; use fewer."
        )
    model = build_model(kind, num_states, covariance_type, reg_covar)
    keys = jax.random.split(jax.random.PRNGKey(seed), restarts)
    result, marginals, log_likelihood, q_value = _fit_program(
        keys, jnp.asarray(x), jnp.asarray(tol, x.dtype),
        model=model, init=init, max_iter=max_iter, strategy=strategy, convergence=convergence,
    )
    result = jax.tree_util.tree_map(np.asarray, result)
    best = result.best
    log_likelihood = float(log_likelihood)
    if not (bool(best.finite) and math.isfinite(log_likelihood)):
        raise CommandLineError(
            f"every one of the {restarts} restarts failed (non-finite log-likelihood) for "
            f"K={num_states}, covariance {covariance_type}; try --reg-covar 1e-4 or fewer components."
        )
    num_params = int(model.num_parameters(dim))
    bic = -2.0 * log_likelihood + num_params * math.log(n)
    path_entropy = max(log_likelihood - float(q_value), 0.0)
    num_iters = int(best.num_iters)
    noun = "component" if kind == "gmm" else "state"
    return ModelFit(
        model=kind,
        covariance_type=covariance_type,
        params={name: np.asarray(getattr(best.params, name)) for name in PARAM_NAMES[kind]},
        log_likelihood=log_likelihood,
        num_params=num_params,
        bic=bic,
        aic=-2.0 * log_likelihood + 2.0 * num_params,
        icl=bic + 2.0 * path_entropy,
        num_iters=num_iters,
        converged=bool(best.converged),
        history=np.asarray(best.history[:num_iters]),
        responsibilities=np.asarray(marginals),
        best_restart=int(result.best_index),
        restart_log_likelihood=np.where(result.restarts.finite, result.restarts.log_likelihood, np.nan),
        restart_num_iters=np.asarray(result.restarts.num_iters),
        restart_converged=np.asarray(result.restarts.converged),
        restart_history=np.asarray(result.restarts.history),
        result=best,
        restart_degenerate=np.asarray(result.degenerate),
        degeneracy=result.degeneracy_report(noun)[int(result.best_index)],
        stop_reason=best.stop_reason_name,
        restart_stop_reason=tuple(result.restarts.stop_reason_name),
    )


def standard_errors_of(fit: ModelFit, values: np.ndarray, reg_covar: float) -> tuple[dict, str]:
    """(standard errors by parameter name, "" or the reason some are NaN) at the best fit:
    `jaxem.standard_errors` (observed information in unconstrained coordinates, delta method)."""
    import warnings

    from jaxem.inference import InformationWarning, standard_errors

    model = build_model(fit.model, fit.num_states, fit.covariance_type, reg_covar)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InformationWarning)
        errors = standard_errors(model, jnp.asarray(values, jnp.float64), fit.result.params)
    problem = " ".join(str(w.message).removeprefix("standard_errors: ") for w in caught
                       if issubclass(w.category, InformationWarning))
    return {name: np.asarray(getattr(errors, name)) for name in PARAM_NAMES[fit.model]}, problem


def full_covariances(fit: ModelFit) -> np.ndarray:
    """The covariances of any type as (K, D, D) matrices."""
    k, dim = fit.means.shape
    c = fit.params["covariances"]
    if fit.covariance_type == "full":
        return c
    if fit.covariance_type == "tied":
        return np.broadcast_to(c, (k, dim, dim)).copy()
    if fit.covariance_type == "diag":
        return c[:, :, None] * np.eye(dim)
    return c[:, None, None] * np.eye(dim)
