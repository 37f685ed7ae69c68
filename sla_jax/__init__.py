"""sla_jax: Self-supervised Label Augmentation (Lee, Hwang & Shin, ICML 2020) in JAX.

Public modules:

* :mod:`sla_jax.transforms` -- transformation groups (rotations, colour
  permutations and their products) that make the ``M`` views of each image.
* :mod:`sla_jax.losses` -- joint labels, SLA / SLA+SD / DA / MT losses and the
  SI / AG test-time predictions.
* :mod:`sla_jax.models` -- Flax CIFAR ResNets with objective-specific heads and
  an importer for PyTorch checkpoints of the original code.
* :mod:`sla_jax.optim` -- the original's SGD (PyTorch-coupled weight decay)
  and step-decay schedule in optax.
"""

from sla_jax import losses, models, optim, transforms

__version__ = "0.1.0"
__all__ = ["losses", "models", "optim", "transforms"]
