"""What every ready hidden Markov model shares: probability-valued initial and
transition parameters, their Dirichlet-MAP M-step, and data flattening.

Initial probabilities π (K,) and the transition matrix A (K, K) (rows sum to 1)
have the closed-form M-step, with a symmetric Dirichlet(α) prior,

    π_k  ∝ max(α_π - 1 + E[#{z_0 = k}], 0),     A_ij ∝ max(α_A - 1 + E[#{i -> j}], 0)

(α = 1 is maximum likelihood; hmmlearn's convention), where the expected
counts are the chain posterior's `initial_counts` and `transition_counts`.
Entries that are exactly 0 in the current parameters are structural zeros and
stay 0 (their expected counts are 0 and a prior must not revive them), and a
row with no expected counts and no prior mass keeps its current values.

`ProbabilityChain` is the base class of the ready HMMs (a `ChainStructure` with
those tables, that M-step and that prior); its expected statistics are a
`ChainStats`: the chain's expected counts plus the emission family's statistics.
The concentrations are leaves of the model pytree (new values compile nothing).

Minimal unconstrained coordinates (for standard errors and direct-gradient fits):
`ProbabilityChain.unconstrain` maps π to its K-1 log-ratios against the last entry and
each row of A to its K-1 (`jaxem.families.simplex`; structural zeros are -inf and map
back to exactly 0), and adds the emission coordinates of the subclass's
`emission_unconstrain`; `constrain` is the inverse, through `emission_constrain`.
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxem.families.simplex import logits_to_simplex, simplex_to_logits
from jaxem.structures.chain import ALGORITHMS, ChainPosterior, ChainStructure
from jaxem.structures.chain_decoding import sample_chain
from jaxem.structures.chain_sequential import safe_log
from jaxem.structures.sequences import Sequences
from jaxem.tree import as_hyperparameters
from jaxem.validation import (
    check_array,
    check_finite_tree,
    check_hyperparameter,
    check_num_states,
    check_simplex,
    is_concrete,
)

__all__ = [
    "ChainStats",
    "ProbabilityChain",
    "ProbabilityTableEmission",
    "check_chain_params",
    "check_concentration",
    "check_count_values",
    "chain_counts_from_responsibilities",
    "dirichlet_log_prior",
    "dirichlet_map",
    "flatten_steps",
    "normalize_rows",
    "step_values",
]


def check_concentration(value: Any, name: str) -> None:
    """A Dirichlet/Gamma hyperparameter: a number (or 0-d array) >= 0."""
    check_hyperparameter(value, name, hint=" (1.0 means no prior)")


def check_state_table(values: Any, name: str, num_states: int, batch: tuple, data: Any = None) -> int:
    """Per-state emission parameters of shape batch + (K, D), D taken from `data` when given;
    returns D."""
    if jnp.ndim(values) != len(batch) + 2:
        raise ValueError(
            f"{name}: expected shape (K, D) = ({num_states}, D), got {jnp.shape(values)}."
        )
    dim = step_values(data)[1][-1] if data is not None else jnp.shape(values)[-1]
    check_array(values, name, batch + (num_states, dim))
    return dim


def check_chain_params(params: Any, params_type: type, num_states: int, batch_ndim: int,
                       name: str) -> tuple:
    """Check the parts every ready HMM's parameters share and return the batch shape.

    `params` must be a `params_type` NamedTuple of floating-point arrays with
    `initial` (K,) on the simplex and `transition` (K, K) whose rows are on the
    simplex (after `batch_ndim` leading batch axes), all finite. Values are
    checked only when concrete (not under jit/vmap)."""
    if not isinstance(params, params_type):
        fields = ", ".join(params_type._fields)
        raise TypeError(
            f"{name}: expected {params_type.__name__}({fields}), got {type(params).__name__}; "
            "build one with that NamedTuple or start from model.init(key, data)."
        )
    for field, value in zip(params._fields, params, strict=True):
        check_array(value, f"{name}.{field}")
    batch = tuple(jnp.shape(params.initial)[:batch_ndim])
    k = num_states
    check_array(params.initial, f"{name}.initial", batch + (k,))
    check_array(params.transition, f"{name}.transition", batch + (k, k))
    check_finite_tree(params, name)
    check_simplex(params.initial, f"{name}.initial")
    check_simplex(params.transition, f"{name}.transition")
    return batch


def normalize_rows(weights: jax.Array, fallback: jax.Array) -> jax.Array:
    """weights / their sum along the last axis; rows summing to 0 become `fallback`'s rows."""
    total = jnp.sum(weights, axis=-1, keepdims=True)
    return jnp.where(total > 0, weights / jnp.where(total > 0, total, 1.0), fallback)


def dirichlet_map(counts: jax.Array, concentration: float, current: jax.Array) -> jax.Array:
    """The Dirichlet-MAP probabilities along the last axis (see the module docstring)."""
    weights = jnp.maximum(concentration - 1.0 + counts, 0.0)
    weights = jnp.where(current == 0, 0.0, weights)
    return normalize_rows(weights, current)


def dirichlet_log_prior(probs: jax.Array, concentration: float) -> jax.Array:
    """Σ (α - 1) log p over entries with p > 0 (the Dirichlet log-density up to a constant;
    structural zeros are excluded; exactly 0 at α = 1)."""
    positive = probs > 0
    log_probs = jnp.log(jnp.where(positive, probs, 1.0))
    return jnp.sum(jnp.where(positive, (concentration - 1.0) * log_probs, 0.0)).astype(probs.dtype)


def flatten_steps(data: Any):
    """(x, valid, unflatten): the time steps of one sequence (T, ...) or of `Sequences`
    (B, T, ...) as rows x (N, ...), which rows are real (N,), and a function
    mapping a per-row table (N, K) back to (T, K) or (B, T, K)."""
    if isinstance(data, Sequences):
        values = jnp.asarray(data.values)
        batch, steps = values.shape[:2]
        flat = values.reshape((batch * steps,) + values.shape[2:])
        valid = data.mask.reshape(-1)
        return flat, valid, lambda table: table.reshape((batch, steps) + table.shape[1:])
    x = jnp.asarray(data)
    return x, jnp.ones(x.shape[:1], bool), lambda table: table


def step_values(data: Any):
    """(values, per-step shape, dtype) of one sequence (T, ...) or of `Sequences` (B, T, ...),
    without computing anything (for input checks before tracing)."""
    values = data.values if isinstance(data, Sequences) else data
    leading = 2 if isinstance(data, Sequences) else 1
    shape = jnp.shape(values)
    dtype = values.dtype if hasattr(values, "dtype") else np.asarray(values).dtype
    return values, shape[leading:], dtype


def check_count_values(values: Any, dtype: Any, name: str = "data", hint: str = "") -> None:
    """Counts: an integer or floating dtype (TypeError otherwise) and, when concrete, every
    value a non-negative whole number (ValueError naming the first bad one and `hint`)."""
    if not (jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.floating)):
        raise TypeError(
            f"{name}: expected integer (or whole-number float) counts, got dtype {dtype}; "
            "convert with np.asarray(x, dtype=int)."
        )
    if is_concrete(values):
        counts = np.asarray(values)
        bad = (counts < 0) | (counts != np.floor(counts))
        if np.any(bad):
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"{name}: counts must be non-negative whole numbers, got {counts[where]!r} at index "
                f"{list(where)}{hint}"
            )


def fill_padding(data: Any) -> jax.Array:
    """The data's rows (N, ...) with each padding step replaced by its sequence's
    first step, so that initialisers that pick data points never pick padding."""
    if isinstance(data, Sequences):
        values = jnp.asarray(data.values)
        mask = data.mask.reshape(data.mask.shape + (1,) * (values.ndim - 2))
        filled = jnp.where(mask, values, values[:, :1])
        return filled.reshape((-1,) + values.shape[2:])
    return jnp.asarray(data)


def chain_counts_from_responsibilities(responsibilities: jax.Array, data: Any):
    """Initial and transition counts (K,), (K, K) of state responsibilities (N, K) over
    the rows of `flatten_steps(data)`, as if they were independent posteriors:
    Σ_b r_{b,0} and Σ_{b,t} r_{b,t} r_{b,t+1}ᵀ over real consecutive pairs."""
    _, valid, unflatten = flatten_steps(data)
    resp = unflatten(responsibilities * valid[:, None])
    if resp.ndim == 2:
        resp = resp[None]
    initial = jnp.sum(resp[:, 0], axis=0)
    transition = jnp.einsum("bti,btj->ij", resp[:, :-1], resp[:, 1:])
    return initial, transition


class ChainStats(NamedTuple):
    """Expected statistics of a ready HMM: initial (K,) and transition (K, K) expected counts
    and the emission family's statistics (each model's own pytree). Additive over batches
    of sequences (padding contributes nothing)."""

    initial: jax.Array
    transition: jax.Array
    emission: Any


class ProbabilityChain(ChainStructure):
    """A chain whose parameters have fields `initial` (K,) and `transition` (K, K) holding
    probabilities, with Dirichlet priors `initial_prior`, `transition_prior` (fields of the
    subclass). Subclasses supply the emission table, `emission_statistics(marginals (N, K)
    over the rows of `flatten_steps(data)`, data, params)`, `maximize_emission(stats,
    params) -> dict of new fields` and `emission_log_prior(params)`; for the unconstrained
    coordinates, the NamedTuple types `params_type` and `coordinates_type` (whose first two
    fields are `initial_logits` and `transition_logits`) and the hooks
    `emission_unconstrain(params) -> dict of coordinate fields` and
    `emission_constrain(coordinates) -> dict of parameter fields`."""

    params_type: ClassVar[type]
    coordinates_type: ClassVar[type]

    def check_settings(self, priors: tuple) -> None:
        """The constructor's checks: K, the prior parameters named in `priors` (stored as Python
        floats, `jaxem.tree.as_hyperparameters`), the algorithm."""
        check_num_states(self.num_states)
        for name in priors:
            check_concentration(getattr(self, name), name)
        as_hyperparameters(self, priors)
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm: expected one of {tuple(ALGORITHMS)}, got {self.algorithm!r}.")

    def initial_table(self, params: Any, data: Any = None) -> jax.Array:
        """ι = log π (K,); -inf for zero probabilities."""
        return safe_log(params.initial)

    def transition_table(self, params: Any, data: Any = None) -> jax.Array:
        """τ = log A (K, K); -inf for structural zeros."""
        return safe_log(params.transition)

    def statistics(self, posterior: ChainPosterior, data: Any, params: Any) -> ChainStats:
        """The chain's expected counts and the emission statistics of the smoothed marginals."""
        marginals = posterior.marginals.reshape(-1, self.num_states)
        return ChainStats(posterior.initial_counts, posterior.transition_counts,
                          self.emission_statistics(marginals, data, params))

    def maximize(self, stats: ChainStats, params: Any):
        """The closed-form M-step: Dirichlet-MAP π and A from the expected counts, and the
        emission parameters from their statistics."""
        initial = dirichlet_map(stats.initial, self.initial_prior, params.initial)
        transition = dirichlet_map(stats.transition, self.transition_prior, params.transition)
        return params._replace(initial=initial, transition=transition,
                               **self.maximize_emission(stats.emission, params))

    def log_prior(self, params: Any) -> jax.Array:
        """The model's log-prior (up to a constant; 0 at the defaults): Dirichlet on π and A
        plus the emission prior. `jaxem.fit` maximises log-likelihood + this by default."""
        return (dirichlet_log_prior(params.initial, self.initial_prior)
                + dirichlet_log_prior(params.transition, self.transition_prior)
                + self.emission_log_prior(params))

    def emission_log_prior(self, params: Any) -> jax.Array:
        return jnp.zeros((), jnp.result_type(params.initial))

    def unconstrain(self, params: Any) -> Any:
        """The parameters in minimal unconstrained coordinates (`coordinates_type`): every
        entry a free real number, `num_parameters` of them in all, so a Hessian there has
        no redundant direction. Inverse: `constrain`.

        initial_logits (K-1,): log π_k - log π_K; transition_logits (K, K-1): the same for
        each row of A (`jaxem.families.simplex.simplex_to_logits`); then the emission fields
        (`emission_unconstrain`). A structural zero (an entry exactly 0, e.g. a left-right
        chain) gives -inf and maps back to exactly 0: code that optimises in these
        coordinates holds non-finite ones fixed. A row whose last entry is 0 takes its last
        positive entry as the reference and marks it +inf (also held fixed), so every zero
        pattern round-trips. Parameters are taken to be valid (`check_params`; not checked
        here). Leading batch axes are carried through; dtypes are kept. Pure; works under
        jit/vmap/grad."""
        return self.coordinates_type(initial_logits=simplex_to_logits(params.initial),
                                     transition_logits=simplex_to_logits(params.transition),
                                     **self.emission_unconstrain(params))

    def constrain(self, coordinates: Any) -> Any:
        """The parameters (`params_type`) from their unconstrained coordinates, the inverse of
        `unconstrain`: π and each row of A by softmax([logits, 0]) (-inf -> exactly 0), the
        emission parameters by `emission_constrain`."""
        return self.params_type(initial=logits_to_simplex(coordinates.initial_logits),
                                transition=logits_to_simplex(coordinates.transition_logits),
                                **self.emission_constrain(coordinates))

    def emission_unconstrain(self, params: Any) -> dict:
        """The emission fields of `coordinates_type` from the parameters (subclasses)."""
        raise NotImplementedError

    def emission_constrain(self, coordinates: Any) -> dict:
        """The emission fields of `params_type` from the coordinates (subclasses)."""
        raise NotImplementedError

    def initial_chain(self, responsibilities: jax.Array, data: Any):
        """(π, A) from state responsibilities (N, K) of the data's rows, smoothed by one
        pseudo-count per entry so that no probability starts at (structural) zero."""
        initial, transition = chain_counts_from_responsibilities(responsibilities, data)
        ones = jnp.ones_like(transition)
        return normalize_rows(initial + 1.0, ones[0]), normalize_rows(transition + 1.0, ones)

    def sample_states(self, key: jax.Array, params: Any, num_steps: int) -> jax.Array:
        """A state path (num_steps,) int32 drawn from the Markov chain (π, A)."""
        return sample_chain(key, self.initial_table(params), self.transition_table(params), num_steps)


class ProbabilityTableEmission:
    """The emission parts of a `ProbabilityChain` whose emission parameter is one table
    `emission` (K, M) of probabilities under a symmetric Dirichlet(`emission_prior`) prior per
    row, with `num_symbols` = M (the categorical and multinomial HMMs): the settings' checks,
    the Dirichlet-MAP M-step from expected counts (K, M), the log-prior and the coordinates
    (each row's M-1 log-ratios against its last entry, `emission_logits`). Put it before
    `ProbabilityChain` in the bases."""

    def __post_init__(self):
        self.check_settings(("initial_prior", "transition_prior", "emission_prior"))
        check_num_states(self.num_symbols, "num_symbols")

    def maximize_emission(self, counts: jax.Array, params: Any) -> dict:
        """B by Dirichlet MAP from the expected symbol counts (a row without counts or prior
        mass keeps its current values)."""
        return {"emission": dirichlet_map(counts, self.emission_prior, params.emission)}

    def emission_log_prior(self, params: Any) -> jax.Array:
        """Dirichlet log-prior of the rows of B (0 at the default α = 1)."""
        return dirichlet_log_prior(params.emission, self.emission_prior)

    def emission_unconstrain(self, params: Any) -> dict:
        """Each row of B as its M-1 log-ratios against the last symbol."""
        return {"emission_logits": simplex_to_logits(params.emission)}

    def emission_constrain(self, coordinates: Any) -> dict:
        """The inverse of `emission_unconstrain` (softmax of [logits, 0] per row)."""
        return {"emission": logits_to_simplex(coordinates.emission_logits)}
