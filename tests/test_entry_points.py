"""Eager calls of the per-call entry points run ONE compiled program, reused by later calls.

`model.e_step`, `model.log_likelihood`, `model.sample`, `viterbi`, ... are compiled once per
(model, static arguments, shapes) (`jaxem.structures.entry_points`). Shown by counting, never by
timing: how often the model's Python code is traced (a counting `log_joint`), how many programs the
jitted entry point holds, and how many XLA compilations (`jax.monitoring` events) a call triggers.
"""

import jax
import jax.numpy as jnp
import numpy as np

import jaxem as em
from jaxem.models import gaussian_hmm, gaussian_mixture
from jaxem.structures.mixture import MixtureStructure

COMPILES = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, duration, **kwargs: COMPILES.append(event)
    if event == "/jax/core/compile/backend_compile_duration" else None)

TRACES = {"count": 0}


def counting_log_joint(params, x, z):
    TRACES["count"] += 1  # runs in Python only when jax traces it
    return jnp.log(params["w"][z]) + em.distributions.normal_logpdf(x, params["loc"][z], 1.0)


COUNTING = em.Mixture(counting_log_joint, 2)
PARAMS = {"w": jnp.array([0.3, 0.7]), "loc": jnp.array([-1.0, 1.0])}
# Shapes used nowhere else in the suite, so the first call here is a first compilation.
N_FRESH = 37


def compiles_during(call):
    before = len(COMPILES)
    out = jax.block_until_ready(call())
    return len(COMPILES) - before, out


def test_user_model_is_traced_once_for_repeated_eager_calls():
    rng = np.random.default_rng(0)
    x1, x2 = rng.normal(size=N_FRESH), rng.normal(size=N_FRESH)
    programs = MixtureStructure.e_step.compiled._cache_size()
    first = COUNTING.e_step(PARAMS, x1)
    traced = TRACES["count"]
    second = COUNTING.e_step(PARAMS, x2)
    assert TRACES["count"] == traced  # the second call ran the compiled program, no Python tracing
    assert MixtureStructure.e_step.compiled._cache_size() == programs + 1
    # and it computed the right thing for the new values (reference: NumPy)
    for x, posterior in ((x1, first), (x2, second)):
        table = np.log([0.3, 0.7]) - 0.5 * (x[:, None] - np.array([-1.0, 1.0])) ** 2 - 0.5 * np.log(2 * np.pi)
        np.testing.assert_allclose(float(posterior.log_likelihood),
                                   np.sum(np.logaddexp(table[:, 0], table[:, 1])), rtol=1e-12)


def test_ready_models_compile_one_program_per_shape():
    rng = np.random.default_rng(1)
    model = gaussian_mixture(3, "diag")
    x = rng.normal(size=(N_FRESH, 2))
    params = model.init(jax.random.key(0), x)
    for entry in (lambda data: model.e_step(params, data), lambda data: model.log_likelihood(params, data)):
        first, _ = compiles_during(lambda entry=entry: entry(x))
        again, _ = compiles_during(lambda entry=entry: entry(x + 1.0))
        assert first == 1 and again == 0, (first, again)
    first, (samples, _) = compiles_during(lambda: model.sample(jax.random.key(1), params, 11))
    again, (other, _) = compiles_during(lambda: model.sample(jax.random.key(2), params, 11))
    assert first == 1 and again == 0 and samples.shape == (11, 2)
    assert not np.array_equal(np.asarray(samples), np.asarray(other))


def test_hmm_entry_points_compile_once():
    rng = np.random.default_rng(2)
    model = gaussian_hmm(2, "diag")
    x = rng.normal(size=(N_FRESH, 2))
    params = model.init(jax.random.key(0), x)
    for entry in (model.e_step, model.log_likelihood, model.viterbi):
        first, _ = compiles_during(lambda entry=entry: entry(params, x))
        again, _ = compiles_during(lambda entry=entry: entry(params, x * 2.0))
        assert first == 1 and again == 0, (entry, first, again)


def test_entry_points_trace_into_an_outer_jit_and_vmap():
    """Inside jit/vmap the plain method runs, so results equal the eager (compiled) call."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=N_FRESH)
    eager = float(COUNTING.log_likelihood(PARAMS, x))
    jitted = float(jax.jit(COUNTING.log_likelihood)(PARAMS, x))
    batched = jax.vmap(COUNTING.log_likelihood, in_axes=(None, 0))(PARAMS, np.stack([x, x]))
    np.testing.assert_allclose([jitted, *np.asarray(batched)], eager, rtol=1e-13)
