"""What the estimator faces, `GaussianMixture` and the HMM faces of `jaxem.sklearn._hmm`, share.

They fit their restarts in one jitted JAX program, compute in float64 and hand
NumPy back to scikit-learn's world. The pieces here, in the order a fit uses them:

- `check_int`: the faces' check of an int setting (n_samples, n_iter, ...).
- `jax_key`: a JAX PRNG key drawn from a NumPy `RandomState`, so that
  `random_state` seeds JAX's draws.
- `jax_context`, `to_jax`, `to_numpy`: the context every JAX call of the faces
  runs in (float64 by `jax.enable_x64(True)`, JAX's global setting left alone;
  the persistent compilation cache of `jaxem.compilation_cache` turned on), and
  pytrees of parameters moved into and out of it.
- `padded_size`, `padded_rows`: shapes padded to a power of two, so that few
  shapes compile.
- `one_more_m_step`: scikit-learn's and hmmlearn's last iteration. Their loop
  runs one M-step more than `jaxem.fit_restarts` does with the same test (see
  each face's module docstring), so each face's jitted fit program ends with it.
- `take`, `check_rows_sum_to_one`, `all_finite`, `is_symmetric_positive_definite`: restart r
  out of a batched parameter NamedTuple, and the checks of a fitted or given one.
- `best_restart`, `warn_degenerate`: the faces' choice of the best restart and their
  warning about degenerate restarts (`jaxem.engine.degeneracy`).
- `draw`: samples of the fitted model in a padded batch.

The fit programs themselves stay in the faces: their starting points, static
arguments and outputs differ (the HMM's stops by hmmlearn's signed rule,
`convergence="gain"` of `jaxem.fit`, with no prior in its objective).
"""

from __future__ import annotations

import functools
import warnings
from numbers import Integral
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxem.compilation_cache import enable_persistent_cache
from jaxem.engine.degeneracy import DegenerateSolutionWarning
from jaxem.engine.mstep import resolve_m_step

__all__ = [
    "all_finite",
    "best_restart",
    "check_int",
    "check_rows_sum_to_one",
    "draw",
    "is_symmetric_positive_definite",
    "jax_context",
    "jax_key",
    "one_more_m_step",
    "padded_rows",
    "padded_size",
    "take",
    "to_jax",
    "to_numpy",
    "warn_degenerate",
]


def check_int(value, name: str, minimum: int) -> int:
    """`value` as an int, or ValueError unless it is an int (not a bool) >= `minimum`. (The
    faces raise ValueError for every bad setting; `jaxem.validation.check_int` raises TypeError
    for a non-int.)"""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value!r}.")
    return int(value)


def jax_key(random_state: np.random.RandomState) -> jax.Array:
    """A JAX PRNG key seeded by one draw of `random_state` (so it advances the RandomState)."""
    return jax.random.key(int(random_state.randint(np.iinfo(np.int32).max)))


# --- float64 JAX ---------------------------------------------------------------------------------


def jax_context():
    """The context the faces compute in: `jax.enable_x64(True)`, float64 without touching JAX's
    global x64 setting (contexts nest, so helpers may enter it again); entering it first turns
    on the persistent compilation cache (`jaxem.compilation_cache.enable_persistent_cache`:
    unless the user configured one or set JAXEM_CACHE_DIR to the empty string)."""
    enable_persistent_cache()
    return jax.enable_x64(True)


def to_jax(tree: Any, dtype=None) -> Any:
    """Every leaf of `tree` as a JAX array (of `dtype` when given); None leaves stay None.
    Call inside `jax_context()`, or float64 leaves become float32."""
    return jax.tree_util.tree_map(lambda leaf: jnp.asarray(leaf, dtype), tree)


def to_numpy(tree: Any) -> Any:
    """Every leaf of `tree` as a NumPy array."""
    return jax.tree_util.tree_map(np.asarray, tree)


def padded_size(n: int, minimum: int) -> int:
    """The smallest power of two >= max(n, minimum)."""
    return max(minimum, 1 << max(n - 1, 0).bit_length())


def padded_rows(X: np.ndarray, num_rows: int) -> np.ndarray:
    """X (N, ...) followed by copies of its first row up to `num_rows` rows (X itself when
    num_rows <= N); the copies are computed with and then dropped."""
    extra = num_rows - X.shape[0]
    return np.concatenate([X, np.repeat(X[:1], extra, axis=0)]) if extra > 0 else X


# --- inside the jitted fit programs ----------------------------------------------------------------


def one_more_m_step(model, params, data, m_step=None, *, degeneracy: bool = False):
    """θ_{T+1} = M(θ_T) for every restart, and ℓ(θ_T) from the same E-step.

    `params` has a leading restart axis R on every leaf; the result is
    (parameters, log-likelihoods (R,)), vmapped over R. `m_step` is an M-step
    strategy (default: the model's own, `jaxem.engine.mstep.resolve_m_step`). With
    `degeneracy`, a third element: `model.degeneracy(θ_T, data)` (leaves (R, ...)) from
    that same E-step, for a model whose `degeneracy` takes the `posterior`. Call it
    inside a jitted program.
    """
    m_step = resolve_m_step(model, m_step)

    def step(theta):
        posterior = model.exact_e_step(theta, data)
        out = (m_step.update(model, theta, posterior, data, None), posterior.log_likelihood)
        if degeneracy:
            out += (model.degeneracy(theta, data, posterior=posterior),)
        return out

    return jax.vmap(step)(params)


# --- NumPy parameters ----------------------------------------------------------------------------


def take(params, r: int):
    """Restart r of a NamedTuple of parameters with a leading restart axis, as NumPy leaves."""
    return type(params)(*[np.asarray(leaf[r]) for leaf in params])


def check_rows_sum_to_one(table: np.ndarray, name: str) -> None:
    """hmmlearn's `_check_sum_1`: ValueError unless every row of `table` (or the vector) sums
    to 1 (to `np.allclose`)."""
    sums = np.asarray(table).sum(axis=-1)
    if not np.allclose(sums, 1):
        raise ValueError(f"{name} must sum to 1 (got {sums:.4f})" if sums.ndim == 0
                         else f"{name} rows must sum to 1 (got row sums of {sums})")


def all_finite(params) -> bool:
    """Whether every leaf of a NamedTuple of NumPy parameters is finite everywhere (a bool)."""
    return all(np.all(np.isfinite(leaf)) for leaf in params)


def is_symmetric_positive_definite(matrix: np.ndarray) -> bool:
    """Whether a (D, D) matrix is symmetric (to `np.allclose`) with no eigenvalue <= 0."""
    return bool(np.allclose(matrix, matrix.T) and not np.any(np.linalg.eigvalsh(matrix) <= 0.0))


def best_restart(scores: np.ndarray, usable: np.ndarray, degenerate: np.ndarray) -> int:
    """The restart with the highest score (first on ties) among the usable non-degenerate
    ones, among all usable ones when every usable restart is degenerate. `scores`,
    `usable`, `degenerate`: (R,); at least one restart must be usable."""
    preferred = usable & ~degenerate if (usable & ~degenerate).any() else usable
    return int(np.argmax(np.where(preferred, scores, -np.inf)))


def warn_degenerate(degenerate: np.ndarray, scores: np.ndarray, best: int, reports: list[str],
                    noun: str, remedy: str = "a larger reg_covar") -> None:
    """Warn (`jaxem.DegenerateSolutionWarning`) when the chosen restart `best` is degenerate
    (every restart was), or when degenerate restarts scored higher than it and were passed
    over. `degenerate` (R,) bool, `scores` (R,) final lower bounds, `reports` R strings,
    `remedy` the face's own setting that regularises."""
    if degenerate[best]:
        warnings.warn(
            f"Every restart's solution is degenerate; the best of them is returned: {reports[best]}. "
            f"Such a {noun} is held up by the regularisation alone and its likelihood means little: "
            f"try fewer {noun}s, more restarts, other starting points, or {remedy}.",
            DegenerateSolutionWarning, stacklevel=4)
        return
    passed = np.flatnonzero(degenerate & (np.nan_to_num(scores, nan=-np.inf) > scores[best]))
    if passed.size:
        warnings.warn(
            f"{passed.size} restart(s) reached a higher likelihood with a degenerate solution "
            f"(restart {passed[0]}: {reports[passed[0]]}) and were passed over for restart {best}, "
            "the best non-degenerate one (scikit-learn and hmmlearn would have kept the highest).",
            DegenerateSolutionWarning, stacklevel=4)


# --- sampling ------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnums=(3,))
def _sample_program(model, key, params, num_samples: int, *args):
    return model.sample(key, params, num_samples, *args)


def draw(model, key: jax.Array, params, num_samples: int, *args) -> tuple[np.ndarray, np.ndarray]:
    """`model.sample(key, params, ·)`'s first `num_samples` draws (x float64, or int64 for
    integer draws; z int64), drawn in a batch of a power-of-two size so that few sizes
    compile. The first n draws of a longer batch are an exact sample of size n: independent
    draws for a mixture, the first n steps of a longer chain for an HMM. `args`: further
    arguments of `model.sample` (traced)."""
    with jax_context():
        x, z = _sample_program(model, key, to_jax(params), padded_size(num_samples, 1), *args)
        x = np.asarray(x)
        x = x.astype(np.int64 if np.issubdtype(x.dtype, np.integer) else np.float64)
        return x[:num_samples], np.asarray(z, np.int64)[:num_samples]
