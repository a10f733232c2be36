"""HMM-side bad input is refused before anything is traced, with a message that starts with the argument.

Like `tests/test_validation.py` for mixtures: one table drives the HMM entry points (`fit`,
`fit_restarts`, the ready models' `init`, `e_step`, `log_likelihood`, `viterbi`, `sample`, the
`Sequences` constructors, the model constructors) through bad counts, symbols, sequence lengths,
masks, NaN/inf data, wrong ranks, invalid starting parameters and settings, and checks the exception
type, that the message starts with the argument's name, and a detail. No case compiles an EM loop.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxem as em
from jaxem.models import (
    CategoricalHMMParams,
    GaussianHMMParams,
    PoissonHMMParams,
    categorical_hmm,
    gaussian_hmm,
    poisson_hmm,
)

T, D, K, M = 12, 2, 2, 3
RNG = np.random.default_rng(0)
X_GAUSS = RNG.normal(size=(T, D))
X_POIS = RNG.poisson(3.0, size=(T, D)).astype(np.int64)
X_CAT = RNG.integers(0, M, size=T)
GAUSS = gaussian_hmm(K)
DIAG = gaussian_hmm(K, "diag")
POIS = poisson_hmm(K)
CAT = categorical_hmm(K, M)
INITIAL = np.array([0.6, 0.4])
TRANSITION = np.array([[0.9, 0.1], [0.2, 0.8]])
P_GAUSS = GaussianHMMParams(INITIAL, TRANSITION, X_GAUSS[:K].copy(),
                            np.broadcast_to(np.eye(D), (K, D, D)).copy())
P_POIS = PoissonHMMParams(INITIAL, TRANSITION, np.array([[1.0, 2.0], [4.0, 5.0]]))
P_CAT = CategoricalHMMParams(INITIAL, TRANSITION, np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]]))
SEQ_GAUSS = em.Sequences.from_list([X_GAUSS[:7], X_GAUSS[7:]])


def changed(params, **fields):
    return params._replace(**{k: np.asarray(v) for k, v in fields.items()})


def with_value(x, index, value):
    x = np.array(x)
    x[index] = value
    return x


def fit(model, data, params0, **kwargs):
    return lambda: em.fit(model, data, params0, **kwargs)


def identity_initial(params, z):
    return jnp.log(params["initial"][z])


def identity_transition(params, i, j):
    return jnp.log(params["transition"][i, j])


def vector_emission(params, x, z):  # forgot to sum over the step's D coordinates
    return -0.5 * (x - params["loc"][z]) ** 2


USER_VECTOR = em.HMM(identity_initial, identity_transition, vector_emission, K)
USER_PARAMS = {"initial": INITIAL, "transition": TRANSITION, "loc": X_GAUSS[:K].copy()}

NOT_SYMMETRIC = np.array([[[1.0, 0.5], [0.0, 1.0]]] * K)
INDEFINITE = np.array([[[1.0, 2.0], [2.0, 1.0]]] * K)

CASES = [
    # --- data: counts and symbols ---------------------------------------------------------------
    ("poisson-negative-count", fit(POIS, with_value(X_POIS, (3, 1), -1), P_POIS), ValueError, "data",
     "[3, 1]"),
    ("poisson-fractional-count", fit(POIS, with_value(X_POIS.astype(float), (5, 0), 2.5), P_POIS), ValueError,
     "data", "whole numbers"),
    ("poisson-nan", fit(POIS, with_value(X_POIS.astype(float), 4, np.nan), P_POIS), ValueError, "data",
     "rows 4"),
    ("poisson-strings", fit(POIS, np.full((T, D), "a"), P_POIS), TypeError, "data", "dtype"),
    ("poisson-rank-1", fit(POIS, X_POIS[:, 0], P_POIS), ValueError, "data", "x[:, None]"),
    ("categorical-symbol-too-large", fit(CAT, with_value(X_CAT, 2, M), P_CAT), ValueError, "data",
     "num_symbols"),
    ("categorical-negative-symbol", fit(CAT, with_value(X_CAT, 2, -1), P_CAT), ValueError, "data",
     f"[0, {M})"),
    ("categorical-float-symbols", fit(CAT, X_CAT.astype(float), P_CAT), TypeError, "data", "astype(int)"),
    ("categorical-fractional-symbols", fit(CAT, X_CAT + 0.5, P_CAT), TypeError, "data", "integer"),
    ("categorical-rank-2", fit(CAT, X_CAT[:, None], P_CAT), ValueError, "data", "x[:, 0]"),
    # --- data: Gaussian values and ranks ----------------------------------------------------------
    ("gaussian-nan", fit(GAUSS, with_value(X_GAUSS, 6, np.nan), P_GAUSS), ValueError, "data", "rows 6"),
    ("gaussian-inf", fit(GAUSS, with_value(X_GAUSS, 1, np.inf), P_GAUSS), ValueError, "data", "rows 1"),
    ("gaussian-rank-1", fit(GAUSS, X_GAUSS[:, 0], P_GAUSS), ValueError, "data", "x[:, None]"),
    ("gaussian-rank-3", fit(GAUSS, X_GAUSS[:, :, None], P_GAUSS), ValueError, "data", "(T, D)"),
    ("gaussian-integers", fit(GAUSS, X_POIS, P_GAUSS), ValueError, "data", "float"),
    ("gaussian-empty", fit(GAUSS, np.zeros((0, D)), P_GAUSS), ValueError, "data", "empty"),
    ("sequences-nan-in-values", fit(GAUSS, em.Sequences(with_value(SEQ_GAUSS.values, (1, 2), np.nan),
                                                        SEQ_GAUSS.lengths), P_GAUSS),
     ValueError, "data.values", "NaN"),
    # --- sequence lengths ------------------------------------------------------------------------
    ("lengths-sum-too-small", lambda: em.Sequences.from_concatenated(X_GAUSS, [5, 5]), ValueError, "lengths",
     f"({T})"),
    ("lengths-sum-too-large", lambda: em.Sequences.from_concatenated(X_GAUSS, [10, 5]), ValueError,
     "lengths", "sum 15"),
    ("lengths-zero", lambda: em.Sequences.from_concatenated(X_GAUSS, [0, T]), ValueError, "lengths",
     ">= 1"),
    ("lengths-negative", lambda: em.Sequences.from_concatenated(X_GAUSS, [-2, T + 2]), ValueError,
     "lengths", ">= 1"),
    ("lengths-fractional", lambda: em.Sequences.from_concatenated(X_GAUSS, [5.5, 6.5]), TypeError,
     "lengths", "whole numbers"),
    ("lengths-2d", lambda: em.Sequences.from_concatenated(X_GAUSS, [[6, 6]]), ValueError, "lengths",
     "1-D"),
    ("max_length-too-short", lambda: em.Sequences.from_list([X_GAUSS[:7], X_GAUSS[7:]], max_length=5),
     ValueError, "max_length", "shorter"),
    ("max_length-float", lambda: em.Sequences.from_list([X_GAUSS[:7]], max_length=7.5), TypeError,
     "max_length", ""),
    ("from_list-empty", lambda: em.Sequences.from_list([]), ValueError, "sequences", "empty"),
    ("from_list-empty-sequence", lambda: em.Sequences.from_list([X_GAUSS, X_GAUSS[:0]]), ValueError,
     "sequences", "at least one step"),
    ("lengths-longer-than-padded-axis",
     fit(GAUSS, em.Sequences(SEQ_GAUSS.values, jnp.array([7, 9])), P_GAUSS),
     ValueError, "data.lengths", "[1, 7]"),
    ("lengths-zero-in-batch", fit(GAUSS, em.Sequences(SEQ_GAUSS.values, jnp.array([7, 0])), P_GAUSS),
     ValueError, "data.lengths", "[1, 7]"),
    ("lengths-float-in-batch", fit(GAUSS, em.Sequences(SEQ_GAUSS.values, jnp.array([7.0, 5.0])), P_GAUSS),
     ValueError, "data.lengths", "integers"),
    ("lengths-count-wrong", fit(GAUSS, em.Sequences(SEQ_GAUSS.values, jnp.array([7, 5, 1])), P_GAUSS),
     ValueError, "data.lengths", "2 integers"),
    ("e_step-lengths-too-long",
     lambda: GAUSS.e_step(P_GAUSS, em.Sequences(SEQ_GAUSS.values, jnp.array([8, 5]))),
     ValueError, "data.lengths", ""),
    ("mask-not-prefix", lambda: em.Sequences.from_mask(SEQ_GAUSS.values, np.array([[1] * 5 + [0, 1],
                                                                                   [1] * 5 + [0] * 2])),
     ValueError, "mask", "rows [0]"),
    ("mask-wrong-shape", lambda: em.Sequences.from_mask(SEQ_GAUSS.values, np.ones((2, 5), bool)), ValueError,
     "mask", "(2, 5)"),
    ("mask-empty-row", lambda: em.Sequences.from_mask(SEQ_GAUSS.values, np.array([[True] * 7, [False] * 7])),
     ValueError, "mask", "no real step"),
    ("mask-rank-1", lambda: em.Sequences.from_mask(SEQ_GAUSS.values, np.ones(7, bool)), ValueError, "mask",
     "(B, T)"),
    ("mask-not-boolean", lambda: em.Sequences.from_mask(SEQ_GAUSS.values, np.full((2, 7), 2)), ValueError,
     "mask", "booleans"),
    # --- starting parameters ------------------------------------------------------------------------
    ("initial-not-on-simplex", fit(GAUSS, X_GAUSS, changed(P_GAUSS, initial=[0.6, 0.6])), ValueError,
     "params0.initial", "sums to 1.2"),
    ("initial-negative", fit(POIS, X_POIS, changed(P_POIS, initial=[1.5, -0.5])), ValueError,
     "params0.initial", "negative"),
    ("initial-shape", fit(CAT, X_CAT, changed(P_CAT, initial=[1.0])), ValueError, "params0.initial",
     f"({K},)"),
    ("transition-row-sum", fit(GAUSS, X_GAUSS, changed(P_GAUSS, transition=[[0.9, 0.1], [0.5, 0.4]])),
     ValueError, "params0.transition[1]", "sums to 0.9"),
    ("transition-negative", fit(CAT, X_CAT, changed(P_CAT, transition=[[1.1, -0.1], [0.5, 0.5]])),
     ValueError, "params0.transition", "negative"),
    ("transition-shape", fit(POIS, X_POIS, changed(P_POIS, transition=np.full((K, K + 1), 1 / 3))),
     ValueError, "params0.transition", f"({K}, {K})"),
    ("transition-nan", fit(GAUSS, X_GAUSS, changed(P_GAUSS, transition=[[np.nan, 0.5], [0.5, 0.5]])),
     ValueError, "params0", "NaN"),
    ("transition-integer", fit(GAUSS, X_GAUSS, changed(P_GAUSS, transition=np.eye(K, dtype=int))),
     TypeError, "params0.transition", "floating"),
    ("emission-row-sum", fit(CAT, X_CAT, changed(P_CAT, emission=[[0.5, 0.3, 0.3], [0.1, 0.1, 0.8]])),
     ValueError, "params0.emission[0]", "sums to 1.1"),
    ("emission-shape", fit(CAT, X_CAT, changed(P_CAT, emission=np.full((K, M + 1), 0.25))), ValueError,
     "params0.emission", f"({K}, {M})"),
    ("rates-negative", fit(POIS, X_POIS, changed(P_POIS, rates=[[1.0, -2.0], [4.0, 5.0]])), ValueError,
     "params0.rates[0][1]", "negative"),
    ("rates-shape", fit(POIS, X_POIS, changed(P_POIS, rates=np.ones((K, D + 1)))), ValueError,
     "params0.rates", f"({K}, {D})"),
    ("means-shape", fit(GAUSS, X_GAUSS, changed(P_GAUSS, means=np.zeros((K, D + 1)))), ValueError,
     "params0.means", f"({K}, {D})"),
    ("covariances-indefinite", fit(GAUSS, X_GAUSS, changed(P_GAUSS, covariances=INDEFINITE)), ValueError,
     "params0.covariances[0]", "positive definite"),
    ("covariances-not-symmetric", fit(GAUSS, X_GAUSS, changed(P_GAUSS, covariances=NOT_SYMMETRIC)),
     ValueError, "params0.covariances[0]", "symmetric"),
    ("covariances-shape-for-type", fit(DIAG, X_GAUSS, P_GAUSS), ValueError, "params0.covariances (diag)", ""),
    ("diag-variance-zero", fit(DIAG, X_GAUSS, changed(P_GAUSS, covariances=[[1.0, 0.0], [1.0, 1.0]])),
     ValueError, "params0.covariances[0][1]", "> 0"),
    ("params-wrong-type", fit(GAUSS, X_GAUSS, P_POIS), TypeError, "params0", "GaussianHMMParams"),
    ("params-dict", fit(CAT, X_CAT, P_CAT._asdict()), TypeError, "params0", "CategoricalHMMParams"),
    ("restarts-one-bad-start", lambda: em.fit_restarts(
        POIS, X_POIS, jax.tree_util.tree_map(lambda a, b: np.stack([a, b]), P_POIS,
                                             changed(P_POIS, initial=[0.7, 0.7]))),
     ValueError, "params0.initial[1]", "sums to 1.4"),
    ("e_step-params", lambda: GAUSS.e_step(changed(P_GAUSS, covariances=INDEFINITE), X_GAUSS), ValueError,
     "params.covariances[0]", ""),
    ("log_likelihood-params", lambda: CAT.log_likelihood(changed(P_CAT, initial=[0.2, 0.2]), X_CAT),
     ValueError, "params.initial", "sums to 0.4"),
    ("viterbi-data", lambda: POIS.viterbi(P_POIS, -X_POIS), ValueError, "data", "non-negative"),
    ("sample-params", lambda: GAUSS.sample(jax.random.key(0), changed(P_GAUSS, initial=[2.0, -1.0]), 5),
     ValueError, "params.initial", "negative"),
    ("user-hmm-emission-vector", fit(USER_VECTOR, X_GAUSS, USER_PARAMS), ValueError, "log_emission",
     f"shape ({D},)"),
    # --- settings -------------------------------------------------------------------------------------
    ("num_states-zero", lambda: gaussian_hmm(0), ValueError, "num_states", ">= 1"),
    ("num_states-negative", lambda: poisson_hmm(-1), ValueError, "num_states", ">= 1"),
    ("num_states-float", lambda: categorical_hmm(2.0, M), TypeError, "num_states", ""),
    ("num_symbols-zero", lambda: categorical_hmm(K, 0), ValueError, "num_symbols", ">= 1"),
    ("user-num_states-zero", lambda: em.HMM(identity_initial, identity_transition, vector_emission, 0),
     ValueError, "num_states", ""),
    ("covariance_type", lambda: gaussian_hmm(K, "round"), ValueError, "covariance_type", ""),
    ("reg_covar-negative", lambda: gaussian_hmm(K, reg_covar=-1.0), ValueError, "reg_covar", ""),
    ("transition_prior-negative", lambda: poisson_hmm(K, transition_prior=-1.0), ValueError,
     "transition_prior", ""),
    ("algorithm", lambda: categorical_hmm(K, M, algorithm="fast"), ValueError, "algorithm", ""),
    ("max_iter-negative", fit(CAT, X_CAT, P_CAT, max_iter=-1), ValueError, "max_iter", ""),
    ("init-method", lambda: GAUSS.init(jax.random.key(0), X_GAUSS, method="spectral"), ValueError, "method",
     ""),
    ("init-data", lambda: POIS.init(jax.random.key(0), X_POIS + 0.5), ValueError, "data", "whole numbers"),
]


@pytest.mark.parametrize(("call", "error", "argument", "detail"),
                         [pytest.param(*case[1:], id=case[0]) for case in CASES])
def test_bad_hmm_input_is_refused_with_a_message_naming_the_argument(call, error, argument, detail):
    with pytest.raises(error) as info:
        call()
    message = str(info.value)
    assert message.startswith(argument), message
    assert detail in message, message


def test_bad_hmm_input_raises_before_an_em_loop_is_compiled():
    from jaxem.engine.fit import _fit_compiled
    from jaxem.engine.restarts import _restarts_compiled

    before = (_fit_compiled._cache_size(), _restarts_compiled._cache_size())
    for _, call, error, *_ in CASES:
        with pytest.raises(error):
            call()
    assert (_fit_compiled._cache_size(), _restarts_compiled._cache_size()) == before


@pytest.mark.parametrize(("model", "data", "params"), [
    (GAUSS, X_GAUSS, P_GAUSS), (GAUSS, SEQ_GAUSS, P_GAUSS), (POIS, X_POIS, P_POIS),
    (POIS, X_POIS.astype(np.float64), P_POIS), (CAT, X_CAT, P_CAT),
    (CAT, em.Sequences.from_concatenated(X_CAT, [5, 7]), P_CAT),
], ids=["gaussian", "gaussian-sequences", "poisson", "poisson-float-counts", "categorical",
        "categorical-sequences"])
def test_valid_hmm_inputs_pass_every_check(model, data, params):
    """No false alarms: the table's valid inputs (and float32 parameters) pass, and so does what
    `init` returns."""
    from jaxem.engine.fit import check_inputs
    from jaxem.engine.mstep import resolve_m_step

    for p in (params, jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), params),
              model.init(jax.random.key(0), data)):
        model.check_data(data)
        model.check_params(p, data)
        check_inputs(model, data, p, None, resolve_m_step(model, None), None)


def test_structural_hmm_checks_still_run_under_jit():
    """Inside jit the parameters are tracers: shapes are checked, values are not (documented)."""
    wrong = changed(P_GAUSS, means=np.zeros((K, D + 1)))
    with pytest.raises(ValueError, match=r"^params\.means"):
        jax.jit(GAUSS.log_likelihood)(wrong, X_GAUSS)
    not_on_simplex = changed(P_GAUSS, initial=[0.6, 0.6])
    assert np.isfinite(float(jax.jit(GAUSS.log_likelihood)(not_on_simplex, X_GAUSS)))
