"""The scripts in examples/ run (their main(), in this process) and reach answers that are
computed here independently: scikit-learn for the Gaussian mixtures, a scalar optimiser of
the observed log-likelihood for the genetic-linkage and Poisson-mixture problems, refits by a
NumPy EM for the gradient through a fit."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize, minimize_scalar
from scipy.special import gammaln, logsumexp
from scipy.stats import multivariate_normal
from sklearn.mixture import GaussianMixture

import jaxem

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(f"jaxem_example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quickstart_reaches_the_sklearn_optimum(capsys):
    result = load_example("quickstart_old_faithful").main()
    assert "checks passed" in capsys.readouterr().out
    x = jaxem.datasets.old_faithful()
    reference = GaussianMixture(2, covariance_type="full", tol=1e-10, max_iter=1000, n_init=4,
                                random_state=0).fit(x)
    order = np.argsort(reference.means_[:, 0])
    assert result["log_likelihood"] == pytest.approx(reference.score(x) * len(x), abs=1e-3)
    np.testing.assert_allclose(result["weights"], reference.weights_[order], atol=1e-3)
    np.testing.assert_allclose(result["means"], reference.means_[order], rtol=1e-3)
    np.testing.assert_allclose(result["covariances"], reference.covariances_[order], rtol=2e-2, atol=1e-3)
    assert result["bic"] == pytest.approx(-2 * result["log_likelihood"] + 11 * math.log(len(x)))


@pytest.fixture(scope="module")
def linkage():
    return load_example("genetic_linkage")


def test_genetic_linkage_reaches_the_mle(linkage, capsys):
    example = linkage
    result = example.main()
    assert "checks passed" in capsys.readouterr().out
    y1, y2, y3, y4 = example.COUNTS

    def negative_log_likelihood(theta):
        return -(y1 * np.log(2 + theta) + (y2 + y3) * np.log(1 - theta) + y4 * np.log(theta))

    optimum = minimize_scalar(negative_log_likelihood, bounds=(1e-6, 1 - 1e-6), method="bounded",
                              options={"xatol": 1e-12}).x
    assert optimum == pytest.approx(0.6268, abs=1e-4)  # the value Dempster, Laird & Rubin report
    assert result["theta_exact"] == pytest.approx(optimum, abs=1e-8)
    assert result["theta_closed_form"] == pytest.approx(optimum, abs=1e-7)
    assert result["theta_gradient"] == pytest.approx(optimum, abs=1e-7)
    # EM's monotone climb from θ₀ = 1/2 towards the optimum.
    iterates = np.asarray(result["first_iterates"])
    assert np.all(np.diff(iterates) > 0) and np.all(iterates < optimum)


def test_genetic_linkage_log_likelihood_against_the_formula(linkage):
    """jaxem's log-likelihood (with -inf for impossible pairs) equals the multinomial
    log-likelihood written out by hand, at several θ."""
    example = linkage
    y1, y2, y3, y4 = example.COUNTS
    e_step = jax.jit(example.model.e_step)
    for theta in (0.1, 0.5, 0.9):
        params = {"logit": jnp.log(theta / (1 - theta))}
        expected = (y1 * math.log(0.5 + theta / 4) + (y2 + y3) * math.log((1 - theta) / 4)
                    + y4 * math.log(theta / 4))
        posterior = e_step(params, example.data)
        assert float(posterior.log_likelihood) == pytest.approx(expected, abs=1e-10)
        marginals = np.asarray(posterior.marginals)
        # Class-0 animals split between cells 0 and 1 in the ratio 1/2 : θ/4; others are certain.
        np.testing.assert_allclose(marginals[0, :2], [2 / (2 + theta), theta / (2 + theta)], rtol=1e-12)
        np.testing.assert_array_equal(marginals[-1], [0, 0, 0, 0, 1])


def test_poisson_mixture_reaches_the_mle(capsys):
    example = load_example("poisson_mixture_gradient")
    result = example.main()
    assert "checks passed" in capsys.readouterr().out
    counts = np.asarray(example.NUM_DAYS)
    k = np.arange(len(counts))

    def negative_log_likelihood(t):
        weight = 1 / (1 + np.exp(-t[0]))
        rates = np.exp(t[1:])
        log_pmf = k[:, None] * np.log(rates) - rates - gammaln(k + 1)[:, None]
        mixture = np.logaddexp(np.log(weight) + log_pmf[:, 0], np.log1p(-weight) + log_pmf[:, 1])
        return -np.sum(counts * mixture)

    optimum = minimize(negative_log_likelihood, [0.0, 0.0, 1.0], method="Nelder-Mead",
                       options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 20000})
    weight = 1 / (1 + np.exp(-optimum.x[0]))
    rates = np.exp(optimum.x[1:])
    for name in ("gradient", "closed_form"):
        found = result[name]
        assert found["weights"][0] == pytest.approx(weight, abs=5e-4)
        np.testing.assert_allclose(found["rates"], rates, atol=5e-4)
        assert found["log_likelihood"] == pytest.approx(-optimum.fun, abs=1e-6)
        assert found["converged"]


def test_restarts_example(capsys):
    result = load_example("restarts_vmap").main()
    assert "checks passed" in capsys.readouterr().out
    np.testing.assert_allclose(result["log_likelihoods"], result["loop_log_likelihoods"], rtol=0, atol=1e-8)
    reference = GaussianMixture(4, covariance_type="full", tol=1e-6, max_iter=1000, n_init=4,
                                random_state=0).fit(result["data"])
    best_sklearn = reference.score(result["data"]) * len(result["data"])
    assert result["best_log_likelihood"] == pytest.approx(best_sklearn, abs=1e-2)
    assert result["best_log_likelihood"] == pytest.approx(np.max(result["log_likelihoods"]))



def numpy_gmm_em(x, weights, means, covariances, reg_covar, tol=1e-13, max_iter=100_000):
    """Plain NumPy EM for a full-covariance Gaussian mixture (Σ_k = S_k + reg_covar·I), stopped when
    the mean log-likelihood changes by less than `tol`; returns (weights, means, covariances)."""
    n, d = x.shape

    def log_table(weights, means, covariances):
        chol = np.linalg.cholesky(covariances)
        centred = x[:, None, :] - means[None]
        solved = np.linalg.solve(chol[None], centred[..., None])[..., 0]
        log_det = 2 * np.sum(np.log(np.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
        return np.log(weights) - 0.5 * (np.sum(solved**2, axis=-1) + log_det + d * np.log(2 * np.pi))

    previous = -np.inf
    for _ in range(max_iter):
        table = log_table(weights, means, covariances)
        total = logsumexp(table, axis=1)
        mean_log_likelihood = np.mean(total)
        if abs(mean_log_likelihood - previous) < tol:
            return weights, means, covariances
        previous = mean_log_likelihood
        r = np.exp(table - total[:, None])
        counts = r.sum(axis=0)
        weights = counts / n
        means = r.T @ x / counts[:, None]
        centred = x[:, None, :] - means[None]
        covariances = (np.einsum("nk,nki,nkj->kij", r, centred, centred) / counts[:, None, None]
                       + reg_covar * np.eye(d))
    raise AssertionError("the NumPy EM did not converge")


def numpy_gmm_mean_log_likelihood(x, weights, means, covariances):
    return float(np.mean(logsumexp(np.stack([np.log(w) + multivariate_normal(m, c).logpdf(x)
                                             for w, m, c in zip(weights, means, covariances, strict=True)],
                                            axis=1), axis=1)))


def test_differentiable_pipeline_against_numpy_refits(capsys):
    """The implicit gradient and the tuned reg_covar against refits by a NumPy EM written here,
    from the same start: its finite difference, its grid values, and its validation optimum
    (a bounded scalar search over ρ = log reg_covar)."""
    result = load_example("differentiable_pipeline").main()
    assert "checks passed" in capsys.readouterr().out
    data = result["data"]
    start = [np.asarray(leaf) for leaf in result["params0"]]

    def validation(rho):
        fitted = numpy_gmm_em(data["train"], *start, reg_covar=math.exp(rho))
        return numpy_gmm_mean_log_likelihood(data["validation"], *fitted)

    h = 1e-4
    finite_difference = (validation(result["rho_check"] + h) - validation(result["rho_check"] - h)) / (2 * h)
    assert result["gradient_check"] == pytest.approx(finite_difference, rel=1e-5)
    assert result["value_check"] == pytest.approx(validation(result["rho_check"]), abs=1e-8)
    for rho, value in list(zip(result["grid"], result["grid_values"], strict=True))[::8]:
        assert value == pytest.approx(validation(rho), abs=1e-8)

    optimum = minimize_scalar(lambda rho: -validation(rho), bounds=(-3.0, 1.0), method="bounded",
                              options={"xatol": 1e-7})
    assert result["rho_tuned"] == pytest.approx(optimum.x, abs=1e-4)
    assert result["validation_tuned"] >= -optimum.fun - 1e-8
    assert result["validation_tuned"] == pytest.approx(validation(result["rho_tuned"]), abs=1e-8)
    assert result["validation_tuned"] > result["validation_start"] + 0.1
    assert result["test"]["tuned"] > result["test"]["start"]


def baum_welch_step(params, rolls: np.ndarray):
    """One Baum–Welch update of a categorical HMM in NumPy (scaled forward-backward)."""
    initial, transition, emission = (np.asarray(a, np.float64) for a in params)
    steps, states = len(rolls), len(initial)
    alpha, beta, scales = np.zeros((steps, states)), np.ones((steps, states)), np.zeros(steps)
    alpha[0] = initial * emission[:, rolls[0]]
    scales[0] = alpha[0].sum()
    alpha[0] /= scales[0]
    for t in range(1, steps):
        alpha[t] = alpha[t - 1] @ transition * emission[:, rolls[t]]
        scales[t] = alpha[t].sum()
        alpha[t] /= scales[t]
    for t in range(steps - 2, -1, -1):
        beta[t] = transition @ (emission[:, rolls[t + 1]] * beta[t + 1]) / scales[t + 1]
    gamma = alpha * beta
    xi = sum(np.outer(alpha[t], emission[:, rolls[t + 1]] * beta[t + 1]) * transition / scales[t + 1]
             for t in range(steps - 1))
    new_emission = np.stack([gamma[rolls == s].sum(axis=0) for s in range(emission.shape[1])], axis=1)
    return (gamma[0], xi / xi.sum(axis=1, keepdims=True),
            new_emission / new_emission.sum(axis=1, keepdims=True))


def test_casino_hmm_is_a_baum_welch_fixed_point(capsys):
    """The dishonest casino: the fitted parameters are (to the fit's tolerance) a fixed point of
    a Baum–Welch step written here in NumPy, and its log-likelihood is the NumPy forward
    recursion's (the example checks that too, and prints "checks passed")."""
    example = load_example("casino_hmm")
    result = example.main(["--rolls", "1000", "--restarts", "4"])
    assert "checks passed" in capsys.readouterr().out
    params, rolls = result["params"], result["rolls"]
    assert example.forward_log_likelihood(params, rolls) == pytest.approx(result["log_likelihood"], rel=1e-10)
    stepped = baum_welch_step(params, rolls)
    np.testing.assert_allclose(stepped[1], params.transition, atol=1e-3)  # the true ones move 8e-3
    np.testing.assert_allclose(stepped[2], params.emission, atol=1e-3)  # and 2.5e-2
