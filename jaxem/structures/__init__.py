"""Latent structures: how log-potential tables become a log-partition, marginals and Q.

- `mixture`: N independent discrete latents (logsumexp per observation).
- `chain`: Markov chains of discrete latents (HMMs; the forward recursion), with
  `hmm` (the three-function `HMM`), `sequences` (padded batches), sequential and
  parallel log-partitions, and decoding/sampling.
"""

from jaxem.structures.chain import ChainPosterior, ChainStructure, ChainTables
from jaxem.structures.hmm import HMM
from jaxem.structures.mixture import Mixture, MixturePosterior, MixtureStructure
from jaxem.structures.sequences import Sequences

__all__ = [
    "HMM",
    "ChainPosterior",
    "ChainStructure",
    "ChainTables",
    "Mixture",
    "MixturePosterior",
    "MixtureStructure",
    "Sequences",
]
