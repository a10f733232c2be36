"""The Gaussian log-density table and weighted MLE, for fast closed-form EM.

Both are computed for all N observations and K components at once, about a
fixed shift c (the data mean), by one of two paths:

The exponential-family path (float64 always; float32 where it keeps its digits).
With u = x - c the log-density is linear in features of u,

    log N(x | μ, Σ) = ⟨Φ(u), η(μ, Σ)⟩,   Φ(u) = [second-order terms of u, u, 1]

so the (N, K) table is ONE matrix product Φ (N, F) @ η (F, K), and the M-step's
expected statistics are another, Rᵀ Φ for responsibilities R (N, K); the
covariances are then E_k[u uᵀ] - m_k m_kᵀ (one pass). Second-order features:
u_i u_j for i <= j (full, tied; D(D+1)/2 columns), u_i² (diag; D), Σ_i u_i²
(spherical; 1). Φ depends on the data alone, so inside a fit XLA computes it once,
outside the loop. Rounding: each table entry is a sum of terms of size
|u|²·|Σ⁻¹|, so its error is about eps·κ nats with κ = mean_n |u_n|²·max_k tr(Σ_k⁻¹),
and a variance's about eps·κ relative: harmless at float64's eps ~ 1e-16, not
always at float32's ~ 1e-7 (clusters 10 apart with sd 0.01 have κ ~ 1e6 and put the
table off by a nat per point). So float32 (and lower) takes the product only while
eps·κ <= FEATURES_ROUNDING = 1e-3 at the current parameters
(`GaussianFamily.features_are_precise`, a `lax.cond` in every E-step and M-step),
and the centred path otherwise:

The centred path. With the precision's Cholesky factor P_k
(Σ_k⁻¹ = P_k P_kᵀ, P_k = L_k⁻ᵀ for Σ_k = L_k L_kᵀ),

    y_nk = (x_n - c) P_k - (μ_k - c) P_k = (x_n - μ_k) P_k            (D,)
    log N(x_n | μ_k, Σ_k) = -½ |y_nk|² - Σ_i log L_k,ii - ½ D log 2π

full and tied one component at a time (`lax.map`; each an (N, D) @ (D, D)
product); diag and spherical, whose factors are diagonal (P_k = diag(σ_k⁻¹)), as
y_nk = (x_n - μ_k) ⊙ σ_k⁻¹ in one fused elementwise pass. Each entry of y has an
error of about eps·|x - c|·|P_k| (not eps·|x - c|²·|P_k|²). It costs 3-4× the
product per iteration on CPU (N=100k, D=8, K=16 full).

The M-step reads expected sufficient statistics (`GaussianStats`, an additive
pytree): per component k, about a centre c_k that depends on the parameters only
(`centres`),

    n_k = Σ_n r_nk,   s_k = Σ_n r_nk (x_n - c_k),   S_k = Σ_n r_nk (x_n - c_k)(x_n - c_k)ᵀ

(S_k is its diagonal for diag, its trace for spherical, and Σ_k S_k for tied).
float64 takes one shared centre and computes them as ONE matrix product Rᵀ Φ(x - c);
float32 takes c_k = μ_k (each component's current mean), and computes them by the same
product moved exactly to each c_k where it keeps its digits (as for the table), else as
sums of squares of centred values, O(N·K·D²) (or O(N·K·D)) work, with which near
convergence (μ_k new ≈ μ_k old) a variance keeps its relative precision. Then
(`estimate`) with m_k = s_k / n_k,

    μ_k = c_k + m_k,    Σ_k = S_k / n_k - m_k m_kᵀ (+ reg_covar·I)

which is scikit-learn's GaussianMixture estimator: n_k = Σ_n r_nk + 10 eps,
μ_k = Σ_n r_nk x_n / n_k, covariances S_k + reg_covar·I (full), the pooled
Σ_k n_k S_k / Σ_k n_k + reg_covar·I (tied), diag(S_k) + reg_covar (diag),
tr(S_k)/D + reg_covar (spherical), with S_k the scatter about μ_k. Covariance
shapes: full (K, D, D), diag (K, D), spherical (K,), tied (D, D). The family is a
pytree whose covariance type is static and whose `reg_covar` is a leaf.

For standard errors and direct-gradient fits, `unconstrain_covariances` maps the
covariances to minimal unconstrained coordinates (log-Cholesky for full and tied,
log-variances for diag and spherical) and `constrain_covariances` back.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxem.families.scalar import mvn_logpdf, normal_logpdf
from jaxem.tree import all_across_batch, as_hyperparameters, pytree_dataclass, static_field

__all__ = ["COVARIANCE_TYPES", "GaussianEstimate", "GaussianFamily", "GaussianStats"]

COVARIANCE_TYPES = ("full", "diag", "spherical", "tied")
_LOG_2PI = math.log(2.0 * math.pi)
FEATURES_ROUNDING = 1e-3  # float32 takes the feature product when eps·κ is below this


class GaussianStats(NamedTuple):
    """Expected sufficient statistics about per-component centres c_k (module docstring).

    counts (K,) Σ_n r_nk; first (K, D) Σ_n r_nk (x_n - c_k); second Σ_n r_nk (x_n - c_k)(...)ᵀ:
    (K, D, D) full, (D, D) tied (summed over k), (K, D) diag, (K,) spherical (the trace).
    Additive: with the centres a function of the parameters (`GaussianFamily.centres`), the
    statistics of two parts of the data add leaf by leaf to those of the whole.
    """

    counts: jax.Array
    first: jax.Array
    second: jax.Array


class GaussianEstimate(NamedTuple):
    """The weighted MLE and the rounding level of its variances.

    counts (K,) = Σ_n r_nk + 10 eps; means (K, D); covariances of the covariance
    type's shape (reg_covar included); resolution (K, D): per component and
    coordinate, the variance below which the computed value is rounding noise
    (`GaussianFamily.estimate`).
    """

    counts: jax.Array
    means: jax.Array
    covariances: jax.Array
    resolution: jax.Array


def uses_features(dtype) -> bool:
    """True when `dtype` is precise enough for the exponential-family (one matrix
    product) path whatever the data; float32 and lower take it only where it keeps its
    digits (`GaussianFamily.features_are_precise`), the centred path elsewhere."""
    return jnp.finfo(dtype).bits >= 64


@pytree_dataclass
@dataclasses.dataclass(frozen=True)
class GaussianFamily:
    """Log-density tables, statistics and the M-step for one covariance type."""

    covariance_type: str = static_field(default="full")
    reg_covar: float = 1e-6

    def __post_init__(self):
        from jaxem.validation import check_hyperparameter

        if self.covariance_type not in COVARIANCE_TYPES:
            raise ValueError(
                f"covariance_type: expected one of {COVARIANCE_TYPES}, got {self.covariance_type!r}."
            )
        check_hyperparameter(self.reg_covar, "reg_covar")
        as_hyperparameters(self, ("reg_covar",))

    # --- log-densities --------------------------------------------------------------------

    def log_density_table(self, x: jax.Array, means: jax.Array, covariances: jax.Array,
                          shift: jax.Array | None = None) -> jax.Array:
        """[log N(x_n | means[k], Σ_k)]_{n,k}: (N, K) for x (N, D), means (K, D) and
        covariances of this type; `shift` c (D,) defaults to the mean of x. The feature
        product where it keeps its digits (`features_are_precise`), else the centred path."""
        if shift is None:
            shift = jnp.mean(x, axis=0)
        u = x - shift  # (N, D)
        m = means - shift  # (K, D)
        features = self._features(u)  # data alone: XLA computes it once, outside a fit's loop
        precise = self.features_are_precise(u, covariances)
        if precise is True:
            return features @ self._natural_parameters(m, covariances)
        return jax.lax.cond(precise,
                            lambda: features @ self._natural_parameters(m, covariances),
                            lambda: self._centred_table(u, m, covariances))

    def features_are_precise(self, u: jax.Array, covariances: jax.Array):
        """Whether the feature product Φ(u) @ η keeps its digits for data u = x - c (N, D) and
        these covariances: True (a Python bool) in float64; in float32 (and lower) a traced
        bool, eps·κ <= FEATURES_ROUNDING with κ = mean_n |u_n|² · max_k tr(Σ_k⁻¹).

        A table entry is a sum of terms of size |u|²·|Σ_k⁻¹|, so its rounding error is about
        eps·κ nats, and that of a variance from Rᵀ Φ about eps·κ relative: below 1e-3 the
        product is used, above it the centred path (the module docstring). Under `vmap`
        (restarts, HMM states) the decision is taken for the whole batch (`all_across_batch`:
        the product only when every member passes), so that `lax.cond` stays a branch and
        does not compute both paths."""
        dtype = jnp.result_type(u, covariances)
        if uses_features(dtype):
            return True
        kind = self.covariance_type
        if kind in ("full", "tied"):
            chol = jnp.linalg.cholesky(covariances)
            eye = jnp.broadcast_to(jnp.eye(u.shape[-1], dtype=covariances.dtype), covariances.shape)
            inv_chol = jax.scipy.linalg.solve_triangular(chol, eye, lower=True)
            inverse_trace = jnp.sum(inv_chol * inv_chol, axis=(-2, -1))  # tr(Σ⁻¹) = |L⁻¹|_F²
        elif kind == "diag":
            inverse_trace = jnp.sum(1.0 / covariances, axis=-1)
        else:
            inverse_trace = u.shape[-1] / covariances
        spread = jnp.mean(jnp.sum(u * u, axis=-1))
        kappa = spread * jnp.max(inverse_trace)
        passes = jnp.finfo(dtype).eps * kappa <= FEATURES_ROUNDING  # NaN parameters: False
        return all_across_batch(jax.lax.stop_gradient(passes))

    def _centred_table(self, u: jax.Array, m: jax.Array, covariances: jax.Array) -> jax.Array:
        """The centred path of `log_density_table` (module docstring), for u = x - c (N, D) and
        m = μ - c (K, D)."""
        num_components, dim = m.shape
        kind = self.covariance_type
        if kind in ("full", "tied"):
            chol = jnp.linalg.cholesky(covariances)
            eye = jnp.broadcast_to(jnp.eye(dim, dtype=covariances.dtype), covariances.shape)
            inv_chol = jax.scipy.linalg.solve_triangular(chol, eye, lower=True)  # L⁻¹ = Pᵀ
            half_logdet = jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
            if kind == "tied":
                inv_chol = jnp.broadcast_to(inv_chol, (num_components, dim, dim))
                half_logdet = jnp.broadcast_to(half_logdet, (num_components,))

            def transform(v, factor):  # v P_k for rows v (..., D)
                return v @ factor.T
        else:
            variances = covariances if kind == "diag" else covariances[:, None]  # (K, D) or (K, 1)
            inv_chol = jax.lax.rsqrt(variances)
            log_var = jnp.log(variances)
            half_logdet = 0.5 * (jnp.sum(log_var, axis=1) if kind == "diag" else dim * log_var[:, 0])

            def transform(v, factor):
                return v * factor

        def squared_distances(args):  # |y_nk|² for one component k: (N,)
            factor, mean = args
            y = transform(u, factor) - transform(mean, factor)
            return jnp.sum(y * y, axis=-1)

        if kind in ("full", "tied"):
            # One component at a time (lax.map): (N, D) @ (D, D) products; on CPU faster
            # than one (N, D) @ (D, K·D) product and its (N, K·D) intermediate.
            distances = jax.lax.map(squared_distances, (inv_chol, m)).T  # (N, K)
        else:
            # Elementwise: one fused pass over (N, K, D) without storing it.
            distances = jnp.sum(jnp.square((u[:, None, :] - m[None]) * inv_chol[None]), axis=-1)
        return -0.5 * distances - half_logdet - 0.5 * dim * _LOG_2PI

    def log_density(self, x: jax.Array, mean: jax.Array, covariance: jax.Array) -> jax.Array:
        """log N(x | mean, Σ) for ONE observation x (D,) and ONE component, where
        `covariance` has the per-component shape of this type ((D, D), (D,), ())."""
        if self.covariance_type in ("full", "tied"):
            return mvn_logpdf(x, mean, covariance)
        scale = jnp.sqrt(jnp.broadcast_to(covariance, x.shape))
        return jnp.sum(normal_logpdf(x, mean, scale))

    # --- expected statistics and the M-step -----------------------------------------------

    def centres(self, means: jax.Array, mixing: jax.Array | None = None) -> jax.Array:
        """(K, D): the points the statistics of each component are taken about, a function of
        the parameters alone (so statistics of parts of the data add up leaf by leaf).

        float64: one shift for all, c = Σ_k π_k μ_k (`mixing` π; the mean of the means when
        None), which equals the data mean after any M-step of a mixture, so the moments
        Rᵀ Φ(x - c) are one matrix product. float32: each component's current mean μ_k, so
        near convergence a variance is a sum of squares of centred values and keeps its
        digits."""
        if not uses_features(means.dtype):
            return means
        shift = jnp.mean(means, axis=0) if mixing is None else mixing @ means / jnp.sum(mixing)
        return jnp.broadcast_to(shift, means.shape)

    def statistics(self, responsibilities: jax.Array, x: jax.Array, centres: jax.Array,
                   shift: jax.Array | None = None, covariances: jax.Array | None = None) -> GaussianStats:
        """Σ_n r_nk [1, x_n - c_k, (x_n - c_k)(x_n - c_k)ᵀ] (`GaussianStats`) for
        responsibilities (N, K) (weighted, zero on padding), data x (N, D) and centres c (K, D).

        float64: ONE matrix product Rᵀ Φ(x - s) about a shift s of the data alone (`shift`,
        default the mean of x), so that inside a fit XLA computes the features Φ once,
        outside the loop; the moments are then moved exactly from s to each centre c_k
        (a small correction: c_k is near the data mean). float32: each component about its
        own centre, one component at a time (full, tied) or over blocks of rows (diag,
        spherical) — or, given the `covariances` of the E-step that made R, the product
        where it keeps its digits for them (`features_are_precise`)."""
        r = responsibilities
        dtype = r.dtype
        kind = self.covariance_type
        centres = centres.astype(dtype)
        shift = jnp.mean(x, axis=0) if shift is None else shift
        u = (x - shift).astype(dtype)
        if uses_features(dtype):
            precise = True
        elif covariances is None:
            precise = False
        else:
            # The test's Cholesky and triangular solve start only once R is computed, i.e.
            # after the E-step's own: jaxlib's batched LAPACK kernels (jax 0.10) wait for
            # their share of XLA's intra-op thread pool, and two running at once can take
            # every thread and wait for each other for ever (seen with 32 vmapped restarts
            # on 2 cores: two triangular solves, both blocked).
            covariances, r = jax.lax.optimization_barrier((covariances, r))
            precise = self.features_are_precise(u, covariances)
        if precise is False:
            counts, moved, second = self._moments_centred(r, x, centres)
        else:
            features = self._features(u)  # data alone: computed once, outside a fit's loop
            if precise is True:
                counts, moved, second = self._moments_by_features(r, features, centres - shift)
            else:
                counts, moved, second = jax.lax.cond(
                    precise, lambda: self._moments_by_features(r, features, centres - shift),
                    lambda: self._moments_centred(r, x, centres))
        if kind in ("full", "tied"):
            # Exactly symmetric: the lower triangle is a copy of the upper one.
            second = jnp.triu(second) + jnp.swapaxes(jnp.triu(second, 1), 1, 2)
            if kind == "tied":
                second = jnp.sum(second, axis=0)
        return GaussianStats(counts, moved, second)

    def _moments_by_features(self, r: jax.Array, features: jax.Array, delta: jax.Array):
        """(counts (K,), Σ_n r_nk (x_n - c_k) (K, D), second moments about c_k, per component)
        from ONE product Rᵀ Φ(x - s) of the `features` Φ(x - s) (N, F) about a shift s, moved
        exactly to each centre c_k = s + delta_k (delta (K, D))."""
        dtype = r.dtype
        kind = self.covariance_type
        dim = delta.shape[-1]
        counts = jnp.sum(r, axis=0)
        delta = delta.astype(dtype)
        moments = r.T @ features  # (K, F): [second-order, first, count]
        first, packed = moments[:, -1 - dim:-1], moments[:, :-1 - dim]
        moved = first - counts[:, None] * delta
        if kind in ("full", "tied"):
            rows, cols = np.triu_indices(dim)
            second = jnp.zeros((r.shape[1], dim, dim), dtype).at[:, rows, cols].set(packed)
            second = second.at[:, cols, rows].set(packed)
            cross = first[:, :, None] * delta[:, None, :]
            second = (second - cross - jnp.swapaxes(cross, 1, 2)
                      + counts[:, None, None] * delta[:, :, None] * delta[:, None, :])
        elif kind == "diag":
            second = packed - 2 * delta * first + counts[:, None] * delta * delta
        else:
            second = (packed[:, 0] - 2 * jnp.sum(delta * first, axis=1)
                      + counts * jnp.sum(delta * delta, axis=1))
        return counts, moved, second

    def _moments_centred(self, r: jax.Array, x: jax.Array, centres: jax.Array):
        """`_moments_by_features`'s values from the centred values x_n - c_k themselves:
        O(N·K·D²) (full, tied) or O(N·K·D) work, each variance a sum of squares."""
        dtype = r.dtype
        counts = jnp.sum(r, axis=0)
        shift = jnp.mean(centres, axis=0)
        u = (x - shift).astype(dtype)
        m = centres - shift
        # The centred values d = x_n - c_k summed themselves, not Rᵀu - n·m: that
        # difference cancels, and XLA may compute its rounding noise differently in two
        # fusions (the outer product m mᵀ then came out asymmetric, and on identical
        # points the diagonal fit's objective oscillated).
        if self.covariance_type in ("full", "tied"):
            def moments(args):  # (Σ_n r_nk d, Σ_n r_nk d dᵀ), one component at a time
                weights, mean = args
                weighted = (u - mean) * weights[:, None]
                return jnp.sum(weighted, axis=0), weighted.T @ (u - mean)

            moved, second = jax.lax.map(moments, (r.T, m))  # (K, D), (K, D, D)
        else:
            moved, second = _diagonal_moments(r, u, m)  # (K, D) each
            if self.covariance_type == "spherical":
                second = jnp.sum(second, axis=1)
        return counts, moved, second

    def estimate(self, stats: GaussianStats, centres: jax.Array) -> GaussianEstimate:
        """The weighted MLE from statistics about `centres` (K, D) (scikit-learn's estimator,
        module docstring), before the positive-definite repair. A component without
        responsibility keeps its centre as its mean."""
        dtype = stats.first.dtype
        eps = jnp.finfo(dtype).eps
        dim = stats.first.shape[-1]
        counts = stats.counts + 10 * eps
        m = stats.first / counts[:, None]  # new mean - centre
        means = centres.astype(dtype) + m
        reg = jnp.asarray(self.reg_covar, dtype)
        eye = jnp.eye(dim, dtype=dtype)
        outer = m[:, :, None] * m[:, None, :]
        kind = self.covariance_type
        if kind == "full":
            covariances = stats.second / counts[:, None, None] - outer + reg * eye
            spread = jnp.diagonal(stats.second, axis1=-2, axis2=-1) / counts[:, None]
        elif kind == "tied":
            pooled = stats.second - jnp.einsum("k,kij->ij", counts, outer)
            covariances = pooled / jnp.sum(counts) + reg * eye
            spread = jnp.broadcast_to(jnp.diagonal(stats.second) / jnp.sum(counts), m.shape)
        elif kind == "diag":
            spread = stats.second / counts[:, None]
            covariances = spread - m * m + reg
        else:
            mean_square = stats.second / (dim * counts)
            covariances = mean_square - jnp.sum(m * m, axis=1) / dim + reg
            spread = jnp.broadcast_to(mean_square[:, None], m.shape)
        # The rounding level of a variance E[(x - c)²] - m²: float64 (one shared centre)
        # 10 eps·E[(x - c)²]; float32 (centred at the current means) 10 eps·m² + (10 eps)²·E[(x - c)²].
        if uses_features(dtype):
            resolution = 10 * eps * spread
        else:
            resolution = 10 * eps * m * m + (10 * eps) ** 2 * spread
        return GaussianEstimate(counts, means, covariances, resolution)

    def maximize(self, stats: GaussianStats, centres: jax.Array) -> GaussianEstimate:
        """`estimate`, with covariances made positive definite (`positive_definite`)."""
        estimate = self.estimate(stats, centres)
        return estimate._replace(covariances=self.positive_definite(estimate))

    def weighted_mle(self, responsibilities: jax.Array, x: jax.Array) -> GaussianEstimate:
        """The weighted MLE for responsibilities (N, K) and data x (N, D), where there are no
        parameters yet (`init`): the weighted means first, then the statistics about them
        (float32; the weighted data mean in float64). Rows with zero responsibility
        (padding) contribute nothing."""
        r = responsibilities
        x = x.astype(r.dtype)
        counts = jnp.sum(r, axis=0)
        first_pass = (r.T @ x) / (counts + 10 * jnp.finfo(r.dtype).eps)[:, None]
        centres = self.centres(first_pass, counts)
        total = jnp.sum(r, axis=1)
        shift = total @ x / jnp.sum(total)  # the weighted data mean: padding never shifts it
        return self.maximize(self.statistics(r, x, centres, shift), centres)

    def positive_definite(self, estimate: GaussianEstimate) -> jax.Array:
        """Covariances that are positive definite in their own dtype, whatever the data.

        A constant column or duplicate points with reg_covar = 0 give variances at the
        rounding level (even slightly negative ones), and near-singular full/tied
        matrices can come out indefinite by an ulp. Σ is symmetrised ((Σ + Σᵀ)/2), and
        where the rounding matters, and only there:

        - a variance at or below its resolution (`GaussianEstimate.resolution`) is
          raised to it (and never below sqrt(tiny) of the dtype);
        - full/tied: if the correlation matrix C = S⁻¹ Σ S⁻¹ (S = sqrt diag Σ) has
          an eigenvalue <= 10·D·eps, its eigenvalues are floored at 20·D·eps and Σ
          rebuilt as S C S. The test is scale-free, so badly scaled but
          well-correlated features are never touched.

        So every returned Σ has positive variances and a correlation matrix whose
        eigenvalues exceed D·eps, which is what the models' `check_params` demand.
        The Gaussian mixture and the Gaussian HMM both go through here.
        """
        covariances = estimate.covariances
        dtype = covariances.dtype
        eps = jnp.finfo(dtype).eps
        smallest = jnp.sqrt(jnp.finfo(dtype).tiny)
        counts = estimate.counts
        dim = estimate.means.shape[-1]
        kind = self.covariance_type
        resolution = estimate.resolution  # (K, D)
        if kind in ("diag", "spherical"):
            if kind == "spherical":
                resolution = jnp.mean(resolution, axis=1)
            return jnp.maximum(covariances, jnp.maximum(resolution, smallest))
        if kind == "tied":
            resolution = counts @ resolution / jnp.sum(counts)
        variances = jnp.maximum(jnp.diagonal(covariances, axis1=-2, axis2=-1),
                                jnp.maximum(resolution, smallest))
        diagonal = np.eye(dim, dtype=bool)
        covariances = 0.5 * (covariances + jnp.swapaxes(covariances, -1, -2))
        covariances = jnp.where(diagonal, variances[..., None, :], covariances)
        scale = jnp.sqrt(variances)
        outer_scale = scale[..., :, None] * scale[..., None, :]
        values, vectors = jnp.linalg.eigh(covariances / outer_scale)
        singular = values[..., 0] <= 10 * dim * eps
        values = jnp.maximum(values, 20 * dim * eps)
        rebuilt = (vectors * values[..., None, :]) @ jnp.swapaxes(vectors, -1, -2)
        rebuilt = 0.5 * (rebuilt + jnp.swapaxes(rebuilt, -1, -2)) * outer_scale
        repaired = jnp.where(singular[..., None, None], rebuilt, covariances)
        return repaired

    # --- the exponential-family path (float64, and float32 where it keeps its digits) -------

    def _features(self, u: jax.Array) -> jax.Array:
        """Φ(u) (N, F) = [second-order terms, u, 1]."""
        if self.covariance_type in ("full", "tied"):
            rows, cols = np.triu_indices(u.shape[-1])
            second = u[:, rows] * u[:, cols]
        elif self.covariance_type == "diag":
            second = u * u
        else:
            second = jnp.sum(u * u, axis=1, keepdims=True)
        return jnp.concatenate([second, u, jnp.ones(u.shape[:1] + (1,), u.dtype)], axis=1)

    def _natural_parameters(self, m: jax.Array, covariances: jax.Array) -> jax.Array:
        """η (F, K) with Φ(u) @ η = [log N(u | m_k, Σ_k)]_k, for centred means m (K, D)."""
        num_components, dim = m.shape
        kind = self.covariance_type
        if kind in ("full", "tied"):
            chol = jnp.linalg.cholesky(covariances)
            eye = jnp.broadcast_to(jnp.eye(dim, dtype=covariances.dtype), covariances.shape)
            inv_chol = jax.scipy.linalg.solve_triangular(chol, eye, lower=True)
            precision = jnp.swapaxes(inv_chol, -1, -2) @ inv_chol
            half_logdet = jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
            if kind == "tied":
                precision = jnp.broadcast_to(precision, (num_components, dim, dim))
                half_logdet = jnp.broadcast_to(half_logdet, (num_components,))
            rows, cols = np.triu_indices(dim)
            pair_weight = jnp.asarray(np.where(rows == cols, -0.5, -1.0), precision.dtype)
            second = precision[:, rows, cols] * pair_weight  # (K, P)
            linear = jnp.einsum("kij,kj->ki", precision, m)  # Λ m
            quad_m = jnp.einsum("ki,ki->k", linear, m)
        else:
            variances = covariances if kind == "diag" else covariances[:, None]
            precision = 1.0 / variances  # (K, D) or (K, 1)
            second = -0.5 * precision
            linear = precision * m
            quad_m = jnp.sum(linear * m, axis=1)
            log_var = jnp.log(variances)
            half_logdet = 0.5 * (jnp.sum(log_var, axis=1) if kind == "diag" else dim * log_var[:, 0])
        constant = -0.5 * quad_m - half_logdet - 0.5 * dim * _LOG_2PI
        return jnp.concatenate([second, linear, constant[:, None]], axis=1).T

    # --- checks and sampling (shared by every model with Gaussian components) ---------------

    def check_covariances(self, covariances, name: str, batch: tuple, num_components: int,
                          dim: int) -> None:
        """Covariances of this type's shape (after the `batch` axes), finite floats, symmetric
        positive definite (full, tied) or positive (diag, spherical). Value checks run on
        concrete arrays only (`jaxem.validation`)."""
        from jaxem.validation import check_array, check_positive, check_positive_definite

        check_array(covariances, f"{name} ({self.covariance_type})",
                    batch + self.covariance_shape(num_components, dim))
        if self.covariance_type in ("full", "tied"):
            check_positive_definite(covariances, name)
        else:
            check_positive(covariances, name)

    def sample(self, key: jax.Array, means: jax.Array, covariances: jax.Array, z: jax.Array) -> jax.Array:
        """x_i ~ N(means[z_i], Σ_{z_i}) for components z (M,): (M, D), by the Cholesky factors."""
        num_components, dim = means.shape
        chol = jnp.linalg.cholesky(self.full_covariances(covariances, num_components, dim))[z]
        eps = jax.random.normal(key, z.shape + (dim,), means.dtype)
        return means[z] + jnp.einsum("nij,nj->ni", chol, eps)

    # --- degenerate solutions (`jaxem.engine.degeneracy`) ------------------------------------

    def points_needed(self, dim: int) -> int:
        """Expected points a component needs for its parameters to be determined: D + 1 (full),
        2 (diag, spherical: one point has no spread), 1 (tied: only the mean is its own)."""
        return {"full": dim + 1, "diag": 2, "spherical": 2, "tied": 1}[self.covariance_type]

    def singular_components(self, covariances: jax.Array, data_variances: jax.Array,
                            min_variance_ratio) -> jax.Array:
        """(K,) bool: components with a direction held up only by reg_covar.

        With S² = diag(`data_variances`) (D,), component k is singular when the smallest
        eigenvalue of S⁻¹ (Σ_k - reg_covar·I) S⁻¹ is <= `min_variance_ratio` (diag: the
        smallest (Σ_kd - reg)/S²_d; spherical: (σ²_k - reg)/mean_d S²_d). Features with zero
        data variance are left out (their rows and columns are replaced by the identity's).
        Tied covariances give the same answer for every component. K is read from
        `covariances`, or is 1 for tied (broadcast it)."""
        dtype = covariances.dtype
        varying = data_variances > jnp.finfo(dtype).tiny
        scale = jnp.where(varying, data_variances, 1.0)
        kind = self.covariance_type
        if kind == "spherical":
            spread = jnp.sum(jnp.where(varying, scale, 0.0)) / jnp.maximum(jnp.sum(varying), 1)
            return jnp.any(varying) & ((covariances - self.reg_covar) / spread <= min_variance_ratio)
        if kind == "diag":
            ratios = jnp.where(varying, (covariances - self.reg_covar) / scale, jnp.inf)
            return jnp.min(ratios, axis=-1) <= min_variance_ratio
        dim = data_variances.shape[0]
        eye = jnp.eye(dim, dtype=dtype)
        root = jnp.sqrt(scale)
        scaled = (covariances - self.reg_covar * eye) / (root[:, None] * root[None, :])
        keep = varying[:, None] & varying[None, :]
        scaled = jnp.where(keep, scaled, eye)
        smallest = jnp.linalg.eigvalsh(scaled)[..., 0]
        singular = smallest <= min_variance_ratio
        return singular[None] if kind == "tied" else singular

    # --- shapes ---------------------------------------------------------------------------

    def component_covariance(self, covariances: jax.Array, k) -> jax.Array:
        """Σ_k in this type's per-component shape."""
        return covariances if self.covariance_type == "tied" else covariances[k]

    def num_covariance_parameters(self, num_components: int, dim: int) -> int:
        """Free parameters in the covariances (scikit-learn's `_n_parameters`)."""
        per = {"full": num_components * dim * (dim + 1) // 2, "diag": num_components * dim,
               "spherical": num_components, "tied": dim * (dim + 1) // 2}
        return per[self.covariance_type]

    def full_covariances(self, covariances: jax.Array, num_components: int, dim: int) -> jax.Array:
        """Covariances of this type as (K, D, D) matrices (e.g. for sampling)."""
        eye = jnp.eye(dim, dtype=covariances.dtype)
        kind = self.covariance_type
        if kind == "full":
            return covariances
        if kind == "tied":
            return jnp.broadcast_to(covariances, (num_components, dim, dim))
        if kind == "diag":
            return covariances[:, :, None] * eye
        return covariances[:, None, None] * eye

    def covariance_shape(self, num_components: int, dim: int) -> tuple:
        return {"full": (num_components, dim, dim), "diag": (num_components, dim),
                "spherical": (num_components,), "tied": (dim, dim)}[self.covariance_type]

    # --- minimal unconstrained coordinates ------------------------------------------------

    def unconstrain_covariances(self, covariances: jax.Array) -> jax.Array:
        """The covariances in minimal unconstrained coordinates (every entry a free real
        number, as many as `num_covariance_parameters`); inverse `constrain_covariances`.

        - full (K, D, D) -> (K, D(D+1)/2) and tied (D, D) -> (D(D+1)/2,): the log-Cholesky
          coordinates. With Σ = L Lᵀ (L lower triangular with a positive diagonal), the
          entries L[i, j], i >= j, in row-major order of the lower triangle (the order of
          `numpy.tril_indices(D)`: (0,0), (1,0), (1,1), (2,0), (2,1), (2,2), ...), with
          each diagonal entry L[i, i] stored as log L[i, i].
        - diag (K, D) -> (K, D) and spherical (K,) -> (K,): the log-variances.

        Covariances must be symmetric positive definite (full, tied) or positive (diag,
        spherical); that is not checked (a non-positive-definite matrix gives NaN). Extra
        leading (batch) axes are carried through; the dtype is kept. Pure; works under
        jit/vmap/grad."""
        covariances = jnp.asarray(covariances)
        if self.covariance_type in ("diag", "spherical"):
            return jnp.log(covariances)
        dim = covariances.shape[-1]
        chol = jnp.linalg.cholesky(covariances)
        rows, cols = np.tril_indices(dim)
        packed = chol[..., rows, cols]
        return packed.at[..., np.flatnonzero(rows == cols)].set(
            jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)))

    def constrain_covariances(self, coordinates: jax.Array) -> jax.Array:
        """Covariances of this type from their coordinates (`unconstrain_covariances`):

        - full (K, D(D+1)/2) -> (K, D, D), tied (D(D+1)/2,) -> (D, D): L from the packed
          lower triangle (row-major, `numpy.tril_indices(D)`) with exp of the diagonal
          entries, then Σ = L Lᵀ (made exactly symmetric).
        - diag, spherical: the exponentials (variances).

        Any finite coordinates give a valid covariance (positive definite up to rounding:
        very large or very small coordinates can underflow or overflow the dtype). Extra
        leading axes are carried through; the dtype is kept. Pure; works under
        jit/vmap/grad."""
        coordinates = jnp.asarray(coordinates)
        if self.covariance_type in ("diag", "spherical"):
            return jnp.exp(coordinates)
        size = coordinates.shape[-1]
        dim = (math.isqrt(8 * size + 1) - 1) // 2
        if dim * (dim + 1) // 2 != size:
            raise ValueError(
                f"coordinates: the last axis of {self.covariance_type} covariance coordinates holds "
                f"the D(D+1)/2 entries of a Cholesky factor, got {size} (not a triangular number)."
            )
        rows, cols = np.tril_indices(dim)
        on_diagonal = np.flatnonzero(rows == cols)
        values = coordinates.at[..., on_diagonal].set(jnp.exp(coordinates[..., on_diagonal]))
        chol = jnp.zeros(coordinates.shape[:-1] + (dim, dim), coordinates.dtype)
        chol = chol.at[..., rows, cols].set(values)
        covariances = chol @ jnp.swapaxes(chol, -1, -2)
        return 0.5 * (covariances + jnp.swapaxes(covariances, -1, -2))


def _diagonal_moments(r: jax.Array, u: jax.Array, m: jax.Array, block: int = 2048):
    """(Σ_n r_nk (u_n - m_k), Σ_n r_nk (u_n - m_k)²) per component and coordinate: (K, D) each.

    Over blocks of `block` rows (zero-padded; padded rows have r = 0), so the
    (block, K, D) intermediate stays small: on CPU about 3× faster than one
    component at a time and far faster than one (N, K, D) array.
    """
    num_rows, dim = u.shape
    block = max(1, min(block, num_rows))
    num_blocks = -(-num_rows // block)
    pad = num_blocks * block - num_rows
    u_blocks = jnp.pad(u, ((0, pad), (0, 0))).reshape(num_blocks, block, dim)
    r_blocks = jnp.pad(r, ((0, pad), (0, 0))).reshape(num_blocks, block, r.shape[1])

    def add_block(totals, rows):
        u_b, r_b = rows
        d = u_b[:, None, :] - m[None]
        first = totals[0] + jnp.einsum("nk,nkd->kd", r_b, d)
        return (first, totals[1] + jnp.einsum("nk,nkd->kd", r_b, d * d)), None

    zeros = jnp.zeros(m.shape, u.dtype)
    return jax.lax.scan(add_block, (zeros, zeros), (u_blocks, r_blocks))[0]
