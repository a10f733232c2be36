"""fit_restarts: exhaustive equals a loop of fit; emEM finds the exhaustive best on multi-modal data
and its rows are exhaustive rows (refined) or their prefixes (explored only); NaN/-inf restarts are
never best; every row's history is consistent."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    GMM_D,
    GMM_K,
    GMM_MAX_ITER,
    GMM_N,
    MIX1D_K,
    assert_monotone,
    mix1d_log_joint,
    mix1d_maximize,
    random_gmm_params,
    random_mix1d,
)

import jaxem as em
from jaxem.engine.fit import DEFAULT_TOL

MODEL = em.models.gaussian_mixture(GMM_K, "full")  # the same model and shapes as the sklearn tests
NUM_RESTARTS = 16
EXPLORE_ITERS = 3  # short, so that the refine phase has work to do on these data
NAN_START, MINUS_INF_START = 5, 9


def _multimodal_problem():
    """Three tight, far-apart clusters and 16 starts, some with two means in one cluster (bad local
    optima: one component then spans two clusters), all with broad covariances. Two starts pass the
    input checks but have a non-finite objective: NAN_START (a component at 1e200 with covariance
    1e-300 I: its log-density overflows to NaN) and MINUS_INF_START (every component at 1e200: every
    point has density 0)."""
    rng = np.random.default_rng(31)
    centres = np.array([[0.0, 0.0], [12.0, 0.0], [0.0, 12.0]])
    data = centres[np.arange(GMM_N) % 3] + rng.normal(size=(GMM_N, GMM_D))
    starts = [random_gmm_params(rng, "full", GMM_K, GMM_D, data) for _ in range(NUM_RESTARTS)]
    # Broad starting covariances: most restarts need more than EXPLORE_ITERS iterations.
    starts = [start._replace(covariances=20.0 * start.covariances) for start in starts]
    nan = starts[NAN_START]
    starts[NAN_START] = nan._replace(means=nan.means.at[0].set(1e200),
                                     covariances=nan.covariances.at[0].set(1e-300 * jnp.eye(GMM_D)))
    starts[MINUS_INF_START] = starts[MINUS_INF_START]._replace(means=jnp.full((GMM_K, GMM_D), 1e200))
    return jnp.asarray(data), jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *starts)


DATA, STARTS = _multimodal_problem()


def _row(tree, i):
    return jax.tree_util.tree_map(lambda leaf: np.asarray(leaf)[i], tree)


def _assert_tree_close(a, b, rtol=1e-12, atol=1e-12):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def _assert_rows_consistent(restarts):
    for i in range(restarts.num_iters.shape[0]):
        row = _row(restarts, i)
        n = int(row.num_iters)
        history = np.asarray(row.history)
        assert np.all(np.isnan(history[n:]))
        if not bool(row.finite) and n == 0:
            continue
        assert_monotone(history, n)
        if n:
            assert history[n - 1] <= float(row.log_likelihood) + 1e-9 * abs(history[n - 1])


def test_exhaustive_equals_a_loop_of_fit():
    result = em.fit_restarts(MODEL, DATA, STARTS, strategy="exhaustive", max_iter=GMM_MAX_ITER)
    lls = []
    for i in range(NUM_RESTARTS):
        start = jax.tree_util.tree_map(jnp.asarray, _row(STARTS, i))
        alone = em.fit(MODEL, DATA, start, max_iter=GMM_MAX_ITER)
        _assert_tree_close(_row(result.restarts, i), alone, rtol=1e-10, atol=1e-10)
        lls.append(float(alone.log_likelihood) if bool(alone.finite) else -np.inf)
    # The best restart is the loop's best (up to rounding: several restarts reach one optimum, and
    # which of those ties wins may differ in the last digits).
    own = np.where(np.asarray(result.restarts.finite), np.asarray(result.restarts.log_likelihood), -np.inf)
    assert int(result.best_index) == int(np.argmax(own))
    assert float(result.best.log_likelihood) == pytest.approx(max(lls), rel=1e-12)
    assert lls[int(result.best_index)] == pytest.approx(max(lls), rel=1e-12)
    _assert_tree_close(result.best, _row(result.restarts, int(result.best_index)), rtol=0, atol=0)
    _assert_rows_consistent(result.restarts)
    # The non-finite starts: reported, not iterated, never best (argmax alone would pick the NaN).
    restarts = result.restarts
    assert np.isnan(float(restarts.log_likelihood[NAN_START]))
    assert float(restarts.log_likelihood[MINUS_INF_START]) == -np.inf
    for i in (NAN_START, MINUS_INF_START):
        assert not bool(restarts.finite[i]) and int(restarts.num_iters[i]) == 0
    assert bool(result.best.finite) and np.isfinite(float(result.best.log_likelihood))
    # Control: the data are multi-modal for these starts (several distinct optima were reached).
    finite = [v for v in lls if np.isfinite(v)]
    assert max(finite) - min(finite) > 10.0


@pytest.mark.parametrize("tol", [DEFAULT_TOL, 0.0])
def test_emem_finds_the_exhaustive_best_and_its_rows_are_exhaustive_rows(tol):
    """With the default tolerance the refined restarts converge; with tol = 0 they run to max_iter."""
    exhaustive = em.fit_restarts(MODEL, DATA, STARTS, strategy="exhaustive", max_iter=GMM_MAX_ITER, tol=tol)
    emem = em.fit_restarts(MODEL, DATA, STARTS, strategy="emem", max_iter=GMM_MAX_ITER,
                           explore_iters=EXPLORE_ITERS, tol=tol)
    num_refine = max(1, NUM_RESTARTS // 8)  # the documented default

    np.testing.assert_allclose(float(emem.best.log_likelihood), float(exhaustive.best.log_likelihood),
                               rtol=1e-10)
    _assert_rows_consistent(emem.restarts)

    # Which restarts the refine phase continues: the best num_refine by the objective after
    # EXPLORE_ITERS iterations, read off the exhaustive trajectories.
    ex = exhaustive.restarts
    ex_iters = np.asarray(ex.num_iters)
    after_explore = np.where(ex_iters > EXPLORE_ITERS,
                             np.asarray(ex.history)[:, min(EXPLORE_ITERS, GMM_MAX_ITER - 1)],
                             np.asarray(ex.log_likelihood))
    refined = set(np.argsort(-after_explore)[:num_refine].tolist())
    for i in range(NUM_RESTARTS):
        got, full = _row(emem.restarts, i), _row(ex, i)
        if i in refined or ex_iters[i] <= EXPLORE_ITERS:
            # Continued (or finished while exploring): the whole exhaustive result.
            _assert_tree_close(got, full, rtol=1e-10, atol=1e-10)
        else:
            # Stopped after exploring: the exhaustive trajectory cut at EXPLORE_ITERS.
            assert int(got.num_iters) == EXPLORE_ITERS and not bool(got.converged)
            np.testing.assert_allclose(np.asarray(got.history[:EXPLORE_ITERS]),
                                       np.asarray(full.history[:EXPLORE_ITERS]), rtol=1e-10)
            assert np.all(np.isnan(np.asarray(got.history[EXPLORE_ITERS:])))
            np.testing.assert_allclose(float(got.log_likelihood), after_explore[i], rtol=1e-10)
    # Controls: some restarts stopped after exploring, and some refined ones ran on past it.
    assert any(i not in refined and ex_iters[i] > EXPLORE_ITERS for i in range(NUM_RESTARTS))
    assert any(i in refined and ex_iters[i] > EXPLORE_ITERS for i in range(NUM_RESTARTS))


# --- restarts that go non-finite -----------------------------------------------------------------

def poisoned_maximize(posterior, data, params):
    """The exact M-step of the 1-D mixture, except that it returns NaN when params['poison'] > 0."""
    new = mix1d_maximize(posterior, data, params)
    factor = jnp.where(params["poison"] > 0, jnp.nan, 1.0)
    new = {name: value * factor for name, value in new.items()}
    new["poison"] = params["poison"]
    return new


POISONED = em.Mixture(mix1d_log_joint, MIX1D_K, m_step=em.ClosedForm(poisoned_maximize))


def test_restart_whose_m_step_goes_nan_is_never_best():
    """Restart 0 starts at the best point the others reach, but its first M-step returns NaN: it must
    stop there with finite=False and not be chosen, although its recorded objective is the highest
    (it ties with the best other restart, and being first would win the tie)."""
    rng = np.random.default_rng(2)
    _, data = random_mix1d(rng)
    others = [{**random_mix1d(rng)[0], "poison": jnp.zeros(())} for _ in range(3)]
    stack = lambda starts: jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *starts)
    # The best point any of these starts reaches (exhaustive: every row runs to the end).
    clean = em.fit_restarts(POISONED, data, stack([others[0], *others]), strategy="exhaustive", max_iter=20)
    optimum = {**jax.tree_util.tree_map(jnp.asarray, clean.best.params), "poison": jnp.ones(())}
    result = em.fit_restarts(POISONED, data, stack([optimum, *others]), strategy="exhaustive", max_iter=20)
    restarts = result.restarts
    assert not bool(restarts.finite[0]) and int(restarts.num_iters[0]) == 0
    # The NaN iterate is not returned: the row keeps its last finite parameters, its start.
    _assert_tree_close(_row(restarts.params, 0), optimum, rtol=0, atol=0)
    # Precondition that makes the test meaningful: the poisoned restart reports the highest value.
    assert float(restarts.log_likelihood[0]) >= float(jnp.max(restarts.log_likelihood[1:]))
    assert int(result.best_index) != 0 and bool(result.best.finite)
    assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree_util.tree_leaves(result.best.params))
    _assert_rows_consistent(restarts)


def test_an_unknown_option_is_refused_by_name():
    with pytest.raises(TypeError, match=r"^fit_restarts: unexpected keyword argument\(s\) \['max_iters'\]"):
        em.fit_restarts(MODEL, DATA, STARTS, max_iters=3)


def test_the_compaction_ladder_and_that_the_loop_test_exercises_it():
    """Unfinished restarts are compacted to R, then powers of two; the restarts of
    `test_exhaustive_equals_a_loop_of_fit` finish many segments apart (so batches of several
    sizes ran there, and each row still equals its own fit)."""
    from jaxem.engine.restarts import SEGMENT_PASSES, compaction_ladder

    assert compaction_ladder(1) == (1,)
    assert compaction_ladder(5) == (5, 4, 2, 1)
    assert compaction_ladder(16) == (16, 8, 4, 2, 1)
    assert compaction_ladder(17) == (17, 16, 8, 4, 2, 1)
    result = em.fit_restarts(MODEL, DATA, STARTS, strategy="exhaustive", max_iter=GMM_MAX_ITER)
    e_steps = np.asarray(result.restarts.num_e_steps)
    finished = np.ceil(e_steps / SEGMENT_PASSES)
    assert finished.max() - finished.min() >= 3, e_steps
    finite = np.asarray(result.restarts.finite)
    np.testing.assert_array_equal(e_steps[finite], np.asarray(result.restarts.num_iters)[finite] + 1)
