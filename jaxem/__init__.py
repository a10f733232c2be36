"""jaxem: expectation–maximization for JAX.

Write the complete-data log-likelihood of a latent-variable model as a pure
function; jaxem derives the E-step, the Q-function and the observed
log-likelihood, runs a closed-form or gradient (optax) M-step, and fits many
restarts at once with `jax.vmap`.

Public names:
  Mixture                      a mixture from `log_joint(params, x, z)`
  HMM, Sequences               a hidden Markov model from three functions; padded batches of sequences
  ClosedForm, Gradient, Statistics   M-step strategies
  em_step, EMKernel, EMState, EMInfo one EM step as a kernel (init, step)
  fit, FitResult               the EM loop (a lax.while_loop over the kernel)
  STOP_REASONS                 why a fit stopped: FitResult.stop_reason indexes it
  fit_restarts, RestartsResult vmapped restarts (exhaustive or emEM)
  Degeneracy, DegenerateSolutionWarning   degenerate restarts, never chosen while others exist
  observed_information, standard_errors, fit_direct   after a fit (jaxem.inference)
  models, families (distributions: its old name), datasets, init

Importing jaxem appends one XLA:CPU setting to XLA_FLAGS (small loop bodies
compiled as one kernel; see `jaxem.xla_flags`, which says how to keep yours).
"""

import jaxem.xla_flags  # noqa: F401  (first: sets XLA_FLAGS before any JAX backend can start)
from jaxem import datasets, distributions, families, init, models
from jaxem.engine.degeneracy import Degeneracy, DegenerateSolutionWarning
from jaxem.engine.fit import STOP_REASONS, FitResult, fit
from jaxem.engine.kernel import EMInfo, EMKernel, EMState, em_step
from jaxem.engine.mstep import ClosedForm, Gradient, Statistics
from jaxem.engine.restarts import RestartsResult, fit_restarts
from jaxem.inference import InformationWarning, fit_direct, observed_information, standard_errors
from jaxem.structures import HMM, ChainPosterior, Mixture, MixturePosterior, Sequences

__version__ = "0.1.0"

__all__ = [
    "HMM",
    "ChainPosterior",
    "Sequences",
    "ClosedForm",
    "Degeneracy",
    "DegenerateSolutionWarning",
    "EMInfo",
    "EMKernel",
    "EMState",
    "FitResult",
    "InformationWarning",
    "Gradient",
    "Mixture",
    "MixturePosterior",
    "RestartsResult",
    "STOP_REASONS",
    "Statistics",
    "datasets",
    "distributions",
    "em_step",
    "families",
    "fit",
    "fit_direct",
    "fit_restarts",
    "init",
    "models",
    "observed_information",
    "standard_errors",
]
