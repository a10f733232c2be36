"""Latent structures: how log-potential tables become a log-partition, marginals and Q.

- `mixture`: N independent discrete latents (logsumexp per observation).
"""

from jaxem.structures.mixture import Mixture, MixturePosterior, MixtureStructure

__all__ = ["Mixture", "MixturePosterior", "MixtureStructure"]
