"""After a fit: the observed information, standard errors, and the direct-gradient baseline.

  observed_information(model, data, params)   −∇²ℓ in unconstrained coordinates, (P, P)
  standard_errors(model, data, params)        a pytree like params (delta method)
  fit_direct(model, data, params0)            maximise ℓ itself with optax (L-BFGS)
"""

from jaxem.inference.direct import fit_direct
from jaxem.inference.information import InformationWarning, observed_information, standard_errors

__all__ = ["InformationWarning", "fit_direct", "observed_information", "standard_errors"]
