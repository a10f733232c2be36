"""After a fit: `observed_information`, `standard_errors` and `fit_direct`.

Oracles: the closed form of Dempster, Laird & Rubin's genetic-linkage model (its observed
information and SE); for the Hasselblad (1969) Poisson mixture, a central-difference Hessian of
the observed log-likelihood written here with SciPy; Louis' identity (enumerating the latent
states) and Meng & Rubin's SEM (I_obs = I_oc (I - DM), DM the Jacobian of the EM map); the
large-sample formulas SE(μ_k) ≈ sqrt(σ²_k / (N π_k)) for well-separated Gaussian components
and SE(A_ij) ≈ sqrt(A_ij (1 - A_ij) / n_i) for an HMM's transitions; and plain EM's optimum
for the direct-gradient fit.
"""

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import LINKAGE, LINKAGE_COUNTS, LINKAGE_THETA_HAT, clustered_data
from scipy.stats import poisson

import jaxem as em
from jaxem.engine.kernel import EMState
from jaxem.models import gaussian_hmm, gaussian_mixture

# --- DLR's genetic linkage ----------------------------------------------------------------------

THETA_HAT = LINKAGE_THETA_HAT


def test_linkage_information_and_standard_error_are_the_closed_form():
    y, t = LINKAGE_COUNTS, THETA_HAT
    params = {"theta": jnp.asarray(t)}
    information = em.observed_information(LINKAGE, jnp.arange(4), params, weights=y)
    exact = y[0] / (2 + t) ** 2 + (y[1] + y[2]) / (1 - t) ** 2 + y[3] / t ** 2
    assert information.shape == (1, 1)
    assert float(information[0, 0]) == pytest.approx(exact, rel=1e-12)
    errors = em.standard_errors(LINKAGE, jnp.arange(4), params, weights=y)
    assert float(errors["theta"]) == pytest.approx(1 / math.sqrt(exact), rel=1e-12)


def sem_information(model, data, params, weights=None):
    """Meng & Rubin: I_oc (I - DM), with DM = ∂T/∂θ at θ̂ and I_oc = -∇²Q(θ | θ̂) at θ̂."""
    kernel = em.em_step(model)
    state = kernel.init(params, data, weights)
    flat, unravel = jax.flatten_util.ravel_pytree(params)

    def em_map(v):
        new = kernel.step(EMState(unravel(v), state.m_step_state), data, weights)[0].params
        return jax.flatten_util.ravel_pytree(new)[0]

    dm = jax.jacobian(em_map)(flat)
    posterior = model.e_step(params, data, weights)
    complete = -jax.hessian(lambda v: model.q(unravel(v), posterior, data))(flat)
    return complete @ (np.eye(flat.size) - dm)


def test_linkage_sem_equals_the_observed_information():
    params = {"theta": jnp.asarray(THETA_HAT)}
    sem = sem_information(LINKAGE, jnp.arange(4), params, LINKAGE_COUNTS)
    direct = em.observed_information(LINKAGE, jnp.arange(4), params, weights=LINKAGE_COUNTS)
    np.testing.assert_allclose(sem, direct, rtol=1e-10)


# --- the Hasselblad Poisson mixture, parameters as plain numbers (w, λ1, λ2) --------------------

DEATHS = np.repeat(np.arange(10), [162, 267, 271, 185, 111, 61, 27, 8, 3, 1]).astype(float)


def poisson_log_joint(params, x, z):
    weights = jnp.stack([params["w"], 1 - params["w"]])
    return jnp.log(weights[z]) + em.families.poisson_logpmf(x, params["rates"][z])


def poisson_maximize(posterior, data, params):
    counts = jnp.sum(posterior.marginals, axis=0)
    return {"w": counts[0] / jnp.sum(counts), "rates": posterior.marginals.T @ data / counts}


POISSON = em.Mixture(poisson_log_joint, 2, m_step=em.ClosedForm(poisson_maximize))


@pytest.fixture(scope="module")
def hasselblad_fit():
    start = {"w": jnp.asarray(0.3), "rates": jnp.array([1.0, 2.5])}
    result = em.fit(POISSON, jnp.asarray(DEATHS), start, max_iter=6000, tol=0.0)
    return result.params


def numpy_log_likelihood(v):
    w, l1, l2 = v
    return float(np.sum(np.logaddexp(np.log(w) + poisson.logpmf(DEATHS, l1),
                                     np.log1p(-w) + poisson.logpmf(DEATHS, l2))))


def numerical_hessian(f, v, h=1e-4):
    v = np.asarray(v, float)
    n = v.size
    hessian = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            def at(di, dj, i=i, j=j):
                shifted = v.copy()
                shifted[i] += di
                shifted[j] += dj
                return f(shifted)
            hessian[i, j] = (at(h, h) - at(h, -h) - at(-h, h) + at(-h, -h)) / (4 * h * h)
    return hessian


def test_hasselblad_standard_errors_match_a_numerical_hessian(hasselblad_fit):
    params = hasselblad_fit
    v = np.array([float(params["w"]), *np.asarray(params["rates"])])
    assert v[0] == pytest.approx(0.3599, abs=1e-3) or v[0] == pytest.approx(0.6401, abs=1e-3)
    covariance = np.linalg.inv(-numerical_hessian(numpy_log_likelihood, v))
    errors = em.standard_errors(POISSON, jnp.asarray(DEATHS), params)
    found = np.array([float(errors["w"]), *np.asarray(errors["rates"])])
    np.testing.assert_allclose(found, np.sqrt(np.diag(covariance)), rtol=1e-4)
    # EM converges slowly here because the standard errors are large: SE(w) is about 0.19.
    assert found[0] > 0.1


def test_hasselblad_information_by_louis_identity_and_by_sem(hasselblad_fit):
    params = hasselblad_fit
    data = jnp.asarray(DEATHS)
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    information = np.asarray(em.observed_information(POISSON, data, params))

    # Louis: I = Σ_n E[-∇² log p(x_n, z)] - Cov[∇ log p(x_n, z)], z ~ p(z | x_n, θ̂), enumerated.
    def complete(v, x, z):
        return poisson_log_joint(unravel(v), x, z)

    states = jnp.arange(2)
    scores = jax.vmap(lambda x: jax.vmap(lambda z: jax.grad(complete)(flat, x, z))(states))(data)
    curvatures = jax.vmap(lambda x: jax.vmap(lambda z: jax.hessian(complete)(flat, x, z))(states))(data)
    r = em.Mixture(poisson_log_joint, 2).e_step(params, data).marginals            # (N, 2)
    mean_score = jnp.einsum("nk,nkp->np", r, scores)
    louis = (-jnp.einsum("nk,nkpq->pq", r, curvatures)
             - jnp.einsum("nk,nkp,nkq->pq", r, scores, scores)
             + jnp.einsum("np,nq->pq", mean_score, mean_score))
    np.testing.assert_allclose(information, louis, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(information, sem_information(POISSON, data, params), rtol=1e-6,
                               atol=1e-6)


def test_a_saddle_point_warns_and_names_the_parameters():
    # Both components at the sample mean with equal weights: a stationary point of ℓ, and
    # a saddle, since the counts are overdispersed (variance > mean).
    mean = float(np.mean(DEATHS))
    saddle = {"w": jnp.asarray(0.5), "rates": jnp.array([mean, mean])}
    with pytest.warns(em.InformationWarning, match="negative eigenvalue") as caught:
        errors = em.standard_errors(POISSON, jnp.asarray(DEATHS), saddle)
    assert "rates" in str(caught[0].message)
    assert np.all(np.isnan(np.asarray(errors["rates"])))


def test_a_parameter_the_likelihood_ignores_is_named_and_only_it_is_nan():
    def log_joint(params, x, z):
        return poisson_log_joint(params, x, z) + 0.0 * params["unused"]

    model = em.Mixture(log_joint, 2)
    params = {"rates": jnp.array([1.2561, 2.6634]), "unused": jnp.asarray(1.0), "w": jnp.asarray(0.3599)}
    with pytest.warns(em.InformationWarning, match="singular") as caught:
        errors = em.standard_errors(model, jnp.asarray(DEATHS), params)
    assert "unused" in str(caught[0].message)
    assert np.isnan(float(errors["unused"]))
    assert np.all(np.isfinite(np.asarray(errors["rates"]))) and np.isfinite(float(errors["w"]))


# --- ready models: the Gaussian mixture and a Gaussian HMM --------------------------------------

def test_gaussian_mixture_standard_errors_of_well_separated_components():
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.normal([-8.0, 0.0], [1.0, 2.0], (600, 2)),
                        rng.normal([8.0, 0.0], [0.5, 1.0], (400, 2))])
    model = gaussian_mixture(2, "full")
    x = jnp.asarray(x)
    result = em.fit(model, x, model.init(jax.random.key(0), x), tol=1e-12, max_iter=300)
    with warnings.catch_warnings():
        warnings.simplefilter("error")    # positive definite: no warning
        errors = em.standard_errors(model, x, result.params)
    assert errors.means.shape == (2, 2) and errors.covariances.shape == (2, 2, 2)
    counts = np.asarray(result.params.weights) * x.shape[0]
    variances = np.diagonal(np.asarray(result.params.covariances), axis1=1, axis2=2)
    np.testing.assert_allclose(errors.means, np.sqrt(variances / counts[:, None]), rtol=0.02)
    # The constraint Σ π = 1: SE(π_2) = SE(π_1) by the delta method; both ≈ sqrt(π(1-π)/N).
    assert float(errors.weights[1]) == pytest.approx(float(errors.weights[0]), rel=1e-8)
    pi = float(result.params.weights[0])
    assert float(errors.weights[0]) == pytest.approx(math.sqrt(pi * (1 - pi) / x.shape[0]), rel=0.02)


def test_gaussian_hmm_transition_standard_errors_are_binomial():
    rng = np.random.default_rng(4)
    transition = np.array([[0.9, 0.1], [0.2, 0.8]])
    states = [0]
    for _ in range(2999):
        states.append(rng.choice(2, p=transition[states[-1]]))
    states = np.array(states)
    y = jnp.asarray(np.array([-4.0, 4.0])[states][:, None] + rng.normal(size=(3000, 1)))
    model = gaussian_hmm(2, "diag")
    result = em.fit(model, y, model.init(jax.random.key(1), y), tol=1e-12, max_iter=300)
    # One sequence says nothing about the initial probabilities (fitted to a vertex): named, NaN.
    with pytest.warns(em.InformationWarning, match=r"initial\[0\], initial\[1\]\.$"):
        errors = em.standard_errors(model, y, result.params)
    assert np.all(np.isnan(np.asarray(errors.initial)))
    assert np.all(np.isfinite(np.asarray(errors.means)))
    fitted = np.asarray(result.params.transition)
    visits = np.asarray(model.e_step(result.params, y).marginals)[:-1].sum(axis=0)   # n_i
    binomial = np.sqrt(fitted * (1 - fitted) / visits[:, None])
    np.testing.assert_allclose(errors.transition, binomial, rtol=0.05)


# --- fit_direct ---------------------------------------------------------------------------------

def test_fit_direct_reaches_the_em_optimum_on_the_poisson_mixture(hasselblad_fit):
    def log_joint(params, x, z):
        return (jax.nn.log_softmax(params["logits"])[z]
                + em.families.poisson_logpmf(x, jnp.exp(params["log_rates"][z])))

    model = em.Mixture(log_joint, 2)
    start = {"logits": jnp.zeros(2), "log_rates": jnp.log(jnp.array([1.0, 2.5]))}
    direct = em.fit_direct(model, jnp.asarray(DEATHS), start, tol=1e-12)
    em_optimum = float(POISSON.log_likelihood(hasselblad_fit, jnp.asarray(DEATHS)))
    assert bool(direct.converged) and bool(direct.finite)
    assert float(direct.log_likelihood) == pytest.approx(em_optimum, abs=1e-8)
    history = np.asarray(direct.history)[: int(direct.num_iters)]
    assert np.all(np.diff(history) >= -1e-12)   # never lower


def test_fit_direct_on_a_ready_model_in_its_unconstrained_coordinates():
    x = jnp.asarray(clustered_data(np.random.default_rng(8), 3, 90, 2, separation=3.0))
    model = gaussian_mixture(3, "full")
    start = model.init(jax.random.key(5), x, method="random")
    by_em = em.fit(model, x, start, tol=1e-12, max_iter=2000)
    direct = em.fit_direct(model, x, start, tol=1e-12, max_iter=2000)
    assert bool(direct.converged)
    assert float(direct.log_likelihood) == pytest.approx(float(by_em.log_likelihood), abs=1e-6)
    model.check_params(direct.params)        # weights on the simplex, covariances positive definite


def test_fit_direct_refuses_a_bad_optimizer_by_name():
    with pytest.raises(TypeError, match="optimizer"):
        em.fit_direct(POISSON, jnp.asarray(DEATHS), {"w": jnp.asarray(0.3), "rates": jnp.ones(2)},
                      optimizer="lbfgs")


def test_structural_zeros_are_held_fixed_with_zero_standard_errors():
    # A left-right HMM: state 1 never leaves (A_10 = 0 exactly), the chain starts in state 0.
    rng = np.random.default_rng(6)
    y = jnp.asarray(np.r_[rng.normal(-3.0, 1.0, 120), rng.normal(3.0, 1.0, 80)][:, None])
    model = gaussian_hmm(2, "diag")
    start = model.init(jax.random.key(0), y)._replace(initial=jnp.array([1.0, 0.0]),
                                                     transition=jnp.array([[0.9, 0.1], [0.0, 1.0]]))
    result = em.fit(model, y, start, tol=1e-12, max_iter=500)
    assert float(result.params.transition[1, 0]) == 0.0
    errors = em.standard_errors(model, y, result.params)
    np.testing.assert_array_equal(errors.transition[1], [0.0, 0.0])
    np.testing.assert_array_equal(errors.initial, [0.0, 0.0])
    # One 0 -> 1 switch in 200 steps: SE(A_01) ≈ sqrt(A_01 (1 - A_01) / n_0), n_0 ≈ 120.
    a01 = float(result.params.transition[0, 1])
    assert float(errors.transition[0, 1]) == pytest.approx(math.sqrt(a01 * (1 - a01) / 120), rel=0.1)
    direct = em.fit_direct(model, y, start, tol=1e-12)
    assert float(direct.params.transition[1, 0]) == 0.0
    assert float(direct.log_likelihood) == pytest.approx(float(result.log_likelihood), abs=1e-6)
