"""Bad input is refused before anything is traced, with a message that starts with the argument's name.

One table drives the entry points (`fit`, `fit_restarts`, `Mixture`, `gaussian_mixture`, `Gradient`,
`model.init`, `model.e_step`, `model.log_likelihood`) through every bad input of issue 5 and checks
the exception type, that the message starts with the argument's name, and (where it matters) that it
carries the detail the user needs (the rows with NaN, the shape `log_joint` returned). The value checks
themselves are tested against independent definitions (eigenvalues, sums) on random inputs, and the
structural checks are shown to run under `jit` and `vmap`. Nothing here compiles an EM loop: every
error is raised in Python, before tracing, and the valid-input checks use
`jaxem.engine.fit.check_inputs` only.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxem as em
from jaxem.engine.fit import check_inputs
from jaxem.engine.mstep import resolve_m_step
from jaxem.models import GaussianMixtureParams, gaussian_mixture
from jaxem.validation import check_positive_definite, check_simplex

N, D, K = 24, 2, 3
COVARIANCE_TYPES = ("full", "diag", "spherical", "tied")
MODELS = {kind: gaussian_mixture(K, kind) for kind in COVARIANCE_TYPES}
FULL = MODELS["full"]
X = np.random.default_rng(0).normal(size=(N, D))


def valid_params(kind="full", dtype=np.float64, data=X):
    """Hand-built valid parameters: equal weights, means on data points, identity covariances."""
    covariances = {"full": np.broadcast_to(np.eye(D), (K, D, D)), "diag": np.ones((K, D)),
                   "spherical": np.ones(K), "tied": np.eye(D)}[kind]
    return GaussianMixtureParams(np.full(K, 1.0 / K, dtype), np.array(data[:K], dtype),
                                 np.array(covariances, dtype))


P0 = valid_params()


def with_field(params=P0, **changes):
    return params._replace(**{k: np.asarray(v) for k, v in changes.items()})


def with_row(data, row, value):
    data = np.array(data)
    data[row] = value
    return data


def batch(*params):
    return jax.tree_util.tree_map(lambda *leaves: np.stack(leaves), *params)


# A user model for the log_joint checks: x is one observation of shape (D,).
def log_joint_ok(params, x, z):
    return jnp.log(params["w"][z]) + jnp.sum(em.distributions.normal_logpdf(x, params["loc"][z], 1.0))


def log_joint_vector(params, x, z):  # forgot to sum over the observation's D coordinates
    return jnp.log(params["w"][z]) + em.distributions.normal_logpdf(x, params["loc"][z], 1.0)


def log_joint_integer(params, x, z):
    return z


USER_PARAMS = {"w": np.full(K, 1.0 / K), "loc": X[:K].copy()}
USER_OK = em.Mixture(log_joint_ok, K)
USER_VECTOR = em.Mixture(log_joint_vector, K)
USER_INTEGER = em.Mixture(log_joint_integer, K)


def vector_prior(params):
    return -0.5 * params["loc"] ** 2


def wrong_structure_m_step(posterior, data, params):
    return {"w": params["w"]}


NOT_SYMMETRIC = np.array([[[1.0, 0.5], [0.0, 1.0]]] * K)
INDEFINITE = np.array([[[1.0, 2.0], [2.0, 1.0]]] * K)  # eigenvalues 3 and -1
ZERO_VARIANCE = np.array([[[1.0, 0.0], [0.0, 0.0]]] * K)


def gradient_with_optimizer(optimizer):
    """A Gradient M-step whose optimizer was swapped after construction (bypassing Gradient's own
    check), so that the check `fit` runs before tracing is the one that must catch it."""
    step = em.Gradient(optax.adam(1e-2), 2)
    object.__setattr__(step, "optimizer", optimizer)
    return step


def fit(data=X, params0=P0, model=FULL, **kwargs):
    return lambda: em.fit(model, data, params0, **kwargs)


def restarts(data=X, params0=None, model=FULL, **kwargs):
    params0 = batch(P0, P0) if params0 is None else params0
    return lambda: em.fit_restarts(model, data, params0, **kwargs)


CASES = [
    # --- data ---------------------------------------------------------------------------------
    ("data-nan", fit(data=with_row(X, [3, 7], np.nan)), ValueError, "data", "rows 3, 7"),
    ("data-inf", fit(data=with_row(X, 5, np.inf)), ValueError, "data", "rows 5"),
    ("data-rank-1", fit(data=X[:, 0]), ValueError, "data", "2-D"),
    ("data-rank-3", fit(data=X[:, :, None]), ValueError, "data", "2-D"),
    ("data-scalar", fit(data=np.float64(1.0)), ValueError, "data", "scalar"),
    ("data-empty", fit(data=np.zeros((0, D))), ValueError, "data", "empty"),
    ("data-no-leaves", fit(model=USER_OK, data={}, params0=USER_PARAMS), ValueError, "data", ""),
    ("data-fewer-than-k", fit(data=X[:K - 1]), ValueError, "data", "num_components"),
    ("data-strings", fit(data=np.array([["a", "b"]] * N)), TypeError, "data", "dtype"),
    ("data-integers", fit(data=X.astype(np.int64)), TypeError, "data", "floating"),
    ("data-overflows-float32", fit(data=with_row(X, 0, 1e19).astype(np.float32),
                                   params0=valid_params(dtype=np.float32)), ValueError, "data", "float64"),
    ("data-leading-axes-differ", fit(model=USER_OK, data={"a": X, "b": X[:-1]}, params0=USER_PARAMS),
     ValueError, "data", "[24, 23]"),
    ("restarts-data-nan", restarts(data=with_row(X, 0, np.nan)), ValueError, "data", "rows 0"),
    ("e_step-data-nan", lambda: FULL.e_step(P0, with_row(X, 2, np.nan)), ValueError, "data", "rows 2"),
    ("log_likelihood-data-rank", lambda: FULL.log_likelihood(P0, X[:, 0]), ValueError, "data", "2-D"),
    ("init-data-nan", lambda: FULL.init(jax.random.key(0), with_row(X, 1, np.nan)), ValueError, "data", ""),
    # --- starting parameters ------------------------------------------------------------------------
    ("weights-sum", fit(params0=with_field(weights=[0.5, 0.3, 0.1])), ValueError, "params0.weights",
     "sums to 0.9"),
    ("weights-negative", fit(params0=with_field(weights=[1.2, -0.1, -0.1])), ValueError,
     "params0.weights", "negative"),
    ("weights-shape", fit(params0=with_field(weights=[0.5, 0.5])), ValueError, "params0", ""),
    ("means-nan", fit(params0=with_field(means=with_row(P0.means, 1, np.nan))), ValueError,
     "params0", "NaN"),
    ("means-shape", fit(params0=with_field(means=np.zeros((K, D + 1)))), ValueError, "params0.means",
     f"({K}, {D})"),
    ("means-integer", fit(params0=with_field(means=np.zeros((K, D), np.int64))), TypeError,
     "params0.means", "floating"),
    ("covariances-not-symmetric", fit(params0=with_field(covariances=NOT_SYMMETRIC)), ValueError,
     "params0.covariances[0]", "symmetric"),
    ("covariances-indefinite", fit(params0=with_field(covariances=INDEFINITE)), ValueError,
     "params0.covariances[0]", "positive definite"),
    ("covariances-zero-variance", fit(params0=with_field(covariances=ZERO_VARIANCE)), ValueError,
     "params0.covariances[0]", "reg_covar"),
    ("covariances-one-bad", fit(params0=with_field(covariances=np.stack([np.eye(D), np.eye(D), -np.eye(D)]))),
     ValueError, "params0.covariances[2]", ""),
    ("covariances-shape-for-type", fit(model=MODELS["diag"], params0=P0), ValueError,
     "params0.covariances (diag)", ""),
    ("diag-variance-negative", fit(model=MODELS["diag"], params0=with_field(
        valid_params("diag"), covariances=[[1.0, 1.0], [1.0, -1.0], [1.0, 1.0]])), ValueError,
     "params0.covariances[1, 1]".replace(", ", "]["), ""),
    ("params-dict-for-gmm", fit(params0=P0._asdict()), TypeError, "params0", "GaussianMixtureParams"),
    ("restarts-axes-differ", restarts(params0=with_field(batch(P0, P0), weights=np.full((3, K), 1 / K))),
     ValueError, "params0", "[2, 3]"),
    ("restarts-one-bad-start", restarts(params0=batch(P0, with_field(covariances=INDEFINITE))),
     ValueError, "params0.covariances[1][0]", ""),
    ("restarts-no-axis", restarts(params0=GaussianMixtureParams(np.float64(1.0), P0.means, P0.covariances)),
     ValueError, "params0", "restart axis"),
    ("log_likelihood-params", lambda: FULL.log_likelihood(with_field(covariances=INDEFINITE), X),
     ValueError, "params.covariances[0]", ""),
    ("user-params-nan", fit(model=USER_OK, params0={**USER_PARAMS, "loc": np.full((K, D), np.nan)}),
     ValueError, "params0['loc']", "NaN"),
    # --- settings -----------------------------------------------------------------------------------
    ("num_states-zero", lambda: em.Mixture(log_joint_ok, 0), ValueError, "num_states", ""),
    ("num_states-float", lambda: em.Mixture(log_joint_ok, 2.0), TypeError, "num_states", ""),
    ("num_components-zero", lambda: gaussian_mixture(0), ValueError, "num_components", ""),
    ("covariance_type", lambda: gaussian_mixture(2, "round"), ValueError, "covariance_type", ""),
    ("reg_covar-negative", lambda: gaussian_mixture(2, reg_covar=-1e-6), ValueError, "reg_covar", ""),
    ("max_iter-negative", fit(max_iter=-1), ValueError, "max_iter", ""),
    ("max_iter-float", fit(max_iter=2.5), TypeError, "max_iter", ""),
    ("restarts-max_iter-negative", restarts(max_iter=-1), ValueError, "max_iter", ""),
    ("tol-negative", fit(tol=-1e-3), ValueError, "tol", ""),
    ("tol-nan", fit(tol=float("nan")), ValueError, "tol", ""),
    ("tol-string", fit(tol="1e-3"), TypeError, "tol", ""),
    ("optimizer-factory", lambda: em.Gradient(optax.adam), TypeError, "Gradient(optimizer)", ""),
    ("optimizer-unknown-name", lambda: em.Gradient("adamx"), ValueError, "Gradient(optimizer)",
     "no optimizer"),
    ("optimizer-name-without-options", lambda: em.Gradient("adam"), TypeError, "Gradient(options)",
     "learning_rate"),
    ("optimizer-swapped-in", fit(model=USER_OK, params0=USER_PARAMS,
                                 m_step=gradient_with_optimizer(optax.sgd)),
     TypeError, "Gradient(optimizer)", "call it"),
    ("num_steps-zero", lambda: em.Gradient(optax.adam(1e-2), 0), ValueError, "Gradient(num_steps)", ""),
    ("m_step-not-a-step", fit(m_step=lambda posterior, data, params: params), TypeError, "m_step", ""),
    ("m_step-wrong-structure", fit(model=USER_OK, params0=USER_PARAMS,
                                   m_step=em.ClosedForm(wrong_structure_m_step)), TypeError, "m_step", ""),
    ("log_joint-not-callable", lambda: em.Mixture("log_joint", K), TypeError, "log_joint", ""),
    ("log_joint-vector", fit(model=USER_VECTOR, params0=USER_PARAMS), ValueError, "log_joint",
     f"shape ({D},)"),
    ("log_joint-integer", fit(model=USER_INTEGER, params0=USER_PARAMS), TypeError, "log_joint", "int32"),
    ("restarts-log_joint-vector", restarts(model=USER_VECTOR, params0=batch(USER_PARAMS, USER_PARAMS)),
     ValueError, "log_joint", f"shape ({D},)"),
    ("log_prior-vector", fit(model=USER_OK, params0=USER_PARAMS, log_prior=vector_prior), ValueError,
     "log_prior", f"shape ({K}, {D})"),
    ("log_prior-not-callable", fit(model=USER_OK, params0=USER_PARAMS, log_prior=1.0), TypeError,
     "log_prior", ""),
    ("strategy", restarts(strategy="best"), ValueError, "strategy", ""),
    ("num_refine-zero", restarts(strategy="emem", num_refine=0), ValueError, "num_refine", ""),
    ("num_refine-too-many", restarts(strategy="emem", num_refine=3), ValueError, "num_refine", ""),
    ("explore_iters-negative", restarts(strategy="emem", explore_iters=-1), ValueError, "explore_iters", ""),
    ("num_refine-without-emem", restarts(num_refine=1), ValueError, "num_refine", ""),
    ("explore_iters-without-emem", restarts(explore_iters=5), ValueError, "explore_iters", ""),
    ("init-key-int", lambda: FULL.init(0, X), TypeError, "key", "jax.random.key"),
    ("init-key-batch", lambda: FULL.init(jax.random.split(jax.random.key(0), 2), X), ValueError, "key", ""),
    ("init-method", lambda: FULL.init(jax.random.key(0), X, method="spectral"), ValueError, "method", ""),
]


@pytest.mark.parametrize(("call", "error", "argument", "detail"),
                         [pytest.param(*case[1:], id=case[0]) for case in CASES])
def test_bad_input_is_refused_with_a_message_naming_the_argument(call, error, argument, detail):
    with pytest.raises(error) as info:
        call()
    message = str(info.value)
    assert message.startswith(argument), message
    assert detail in message, message


def test_every_bad_input_raises_before_anything_is_compiled():
    """The table's EM-loop entry points refuse their input before the loop is traced: no new entry
    appears in the compiled-function caches."""
    from jaxem.engine.fit import _fit_compiled
    from jaxem.engine.restarts import _restarts_compiled

    before = (_fit_compiled._cache_size(), _restarts_compiled._cache_size())
    for _, call, error, *_ in CASES:
        with pytest.raises(error):
            call()
    assert (_fit_compiled._cache_size(), _restarts_compiled._cache_size()) == before


@pytest.mark.parametrize("kind", COVARIANCE_TYPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_valid_inputs_pass_every_check(kind, dtype):
    """No false alarms: hand-built valid parameters, badly scaled features included (variances 1e4
    and 1e-4 are fine, the correlation matrix is what must be well conditioned)."""
    data = (X * np.array([100.0, 0.01])).astype(dtype)
    params = valid_params(kind, dtype, data)
    scale = {"full": np.array([1e4, 1e-4]), "diag": np.array([1e4, 1e-4]), "spherical": 1.0,
             "tied": np.array([1e4, 1e-4])}[kind]
    covariances = params.covariances * (np.diag(scale) if kind in ("full", "tied") else scale)
    params = params._replace(covariances=covariances.astype(dtype))
    model = MODELS[kind]
    check_inputs(model, data, params, None, resolve_m_step(model, None), None)
    check_inputs(model, data, batch(params, params), None, resolve_m_step(model, None), None, batch_ndim=1)
    check_inputs(USER_OK, data, USER_PARAMS, None, resolve_m_step(USER_OK, None), None)


# --- the value checks against their definitions ----------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), dim=st.integers(1, 4), negative=st.booleans(),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_positive_definite_check_agrees_with_eigenvalues(seed, dim, negative, dtype):
    """A symmetric matrix Q diag(λ) Qᵀ, rescaled by a random diagonal spanning 8 decades (which a
    scale-free check must ignore), is refused exactly when one of its eigenvalues λ is negative;
    |λ| >= 0.1 keeps every case far from the rounding threshold."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    eigenvalues = rng.uniform(0.1, 10.0, size=dim)
    if negative:
        eigenvalues[rng.integers(dim)] *= -1
    s = np.diag(10.0 ** rng.uniform(-4, 4, size=dim))
    matrix = s @ (q * eigenvalues) @ q.T @ s
    matrix = (0.5 * (matrix + matrix.T)).astype(dtype)
    assert (np.linalg.eigvalsh(matrix.astype(np.float64)).min() < 0) == negative  # the definition
    if negative:
        with pytest.raises(ValueError, match="^cov"):
            check_positive_definite(matrix, "cov")
    else:
        check_positive_definite(matrix, "cov")
        np.linalg.cholesky(matrix.astype(np.float64))


@settings(max_examples=60, deadline=None)
@given(weights=st.lists(st.floats(-0.5, 2.0), min_size=1, max_size=6),
       dtype=st.sampled_from([np.float32, np.float64]), normalise=st.booleans())
def test_simplex_check_agrees_with_its_definition(weights, dtype, normalise):
    w = np.asarray(weights, np.float64)
    if normalise and w.sum() > 0:
        w = w / w.sum()
    w = w.astype(dtype)
    tolerance = np.sqrt(np.finfo(dtype).eps)
    on_simplex = np.all(w >= 0) and abs(w.astype(np.float64).sum() - 1.0) <= tolerance
    if on_simplex:
        check_simplex(w, "w")
    else:
        with pytest.raises(ValueError, match="^w"):
            check_simplex(w, "w")


# --- under jit and vmap -------------------------------------------------------------------------------

JITTED_FIT = jax.jit(em.fit, static_argnums=0, static_argnames=("m_step", "log_prior", "max_iter"))


def test_structural_checks_still_run_under_jit_and_vmap():
    """Inside jit/vmap the arguments are tracers: shapes, dtypes and what log_joint returns are
    still checked (and raise at trace time); the value checks are documented as skipped."""
    wrong_means = with_field(means=np.zeros((K, D + 1)))
    with pytest.raises(ValueError, match=r"^params0\.means"):
        JITTED_FIT(FULL, X, wrong_means, max_iter=5)
    with pytest.raises(ValueError, match="^data"):
        JITTED_FIT(FULL, X[:, 0], P0, max_iter=5)
    with pytest.raises(ValueError, match=r"^log_joint: .*shape \(2,\)"):
        JITTED_FIT(USER_VECTOR, X, USER_PARAMS, max_iter=5)
    with pytest.raises(ValueError, match=r"^params0\.means"):
        jax.vmap(lambda p: em.fit(FULL, X, p, max_iter=5))(batch(wrong_means, wrong_means))
    with pytest.raises(TypeError, match="^key"):
        jax.vmap(lambda k: FULL.init(k, X))(jnp.zeros((2, 3), jnp.uint32))


def _normal_mixture_log_joint(params, x, z):
    return jnp.log(params["w"][z]) + jax.scipy.stats.norm.logpdf(x[0], params["mu"][z], 1.0)


_SIX = np.array([1.0, 2.0, 3.0, 10.0, 11.0, 12.0])[:, None]
_TWO_STATES = {"w": jnp.array([0.5, 0.5]), "mu": jnp.array([0.0, 5.0])}


def test_mixture_with_more_states_than_its_parameters():
    """Mixture(log_joint, 3) with parameters for 2 states: JAX would clamp z = 2 to 1 and run;
    the check names the out-of-range index (whatever N: the data may be a few weighted classes)."""
    with pytest.raises(ValueError, match=r"log_joint: a state z < num_states=3 indexes an array out of "
                                         r"range .*index 2 is out of bounds"):
        em.fit(em.Mixture(_normal_mixture_log_joint, 3), _SIX, _TWO_STATES)
    with pytest.raises(ValueError, match="num_states=20 indexes an array out of range"):
        em.fit(em.Mixture(_normal_mixture_log_joint, 20), _SIX[:3], _TWO_STATES)
    em.fit(em.Mixture(_normal_mixture_log_joint, 2), _SIX, _TWO_STATES, max_iter=2)  # fine


def test_integer_parameters_are_named():
    with pytest.raises(TypeError, match=r"params0\['mu'\]: has dtype int.*floating point"):
        em.fit(em.Mixture(_normal_mixture_log_joint, 2), _SIX,
               {"w": _TWO_STATES["w"], "mu": jnp.array([0, 5])})


def test_missing_parameter_key_is_named():
    def log_joint(params, x, z):
        return jnp.log(params["w"][z]) + jax.scipy.stats.norm.logpdf(x[0], params["mu"][z], params["sigma"])

    with pytest.raises(ValueError, match=r"log_joint: looking up 'sigma' failed .*params has the keys "
                                         r"\['mu', 'w'\]"):
        em.fit(em.Mixture(log_joint, 2), _SIX, _TWO_STATES)
