"""sla_jax: Self-supervised Label Augmentation (Lee, Hwang & Shin, ICML 2020) in JAX.

The library core (installed by ``pip install sla_jax``; needs only jax, flax,
optax, numpy and dm-pix):

* :mod:`sla_jax.transforms` -- transformation groups (rotations, colour
  permutations and their products) that make the ``M`` views of each image.
* :mod:`sla_jax.feature_transforms` -- the feature-level pretext task
  (discard one of K channel groups of a feature map).
* :mod:`sla_jax.losses` -- joint labels, SLA / SLA+SD / DA / MT losses and the
  SI / AG test-time predictions.
* :mod:`sla_jax.objectives` -- the five objectives (heads, loss, predictions,
  metrics) in one registry.
* :mod:`sla_jax.models` -- Flax models by name (``models.get``) and an
  importer for PyTorch checkpoints of the original code.
* :mod:`sla_jax.optim` -- the original's SGD (PyTorch-coupled weight decay)
  and step-decay schedule in optax.
* :mod:`sla_jax.augment` -- Cutout, CutMix, Mixup and RandAugment on the
  device, with mixed (joint) labels.
* :mod:`sla_jax.long_tail` -- long-tailed subsets, LDAM margins, deferred
  re-weighting, many / medium / few-shot class-group accuracies.
* :mod:`sla_jax.fewshot` -- ProtoNet, ridge (R2D2) and SVM (MetaOptNet) heads,
  an episodic sampler and SLA's SI / AG for episodes.

With the ``train`` extra: :mod:`sla_jax.train` (``sla-train``),
:mod:`sla_jax.inference` (load a trained workdir, predict, export),
``sla-eval``, ``sla-bench``; with ``experiments``: ``sla-experiments``.
"""

import importlib

__version__ = "0.2.0"
__all__ = ["augment", "feature_transforms", "fewshot", "long_tail", "losses",
           "models", "objectives", "optim", "transforms"]


# Public modules that need the ``train`` extra: loaded on use, not by ``*``.
_WITH_TRAIN_EXTRA = ("inference",)


def __getattr__(name: str):
  """Imports the public module ``name`` on first use (``sla_jax.losses``), so
  that ``import sla_jax.<module>`` loads only what that module needs."""
  if name in __all__ or name in _WITH_TRAIN_EXTRA:
    return importlib.import_module(f"{__name__}.{name}")
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
  return sorted(set(globals()) | set(__all__) | set(_WITH_TRAIN_EXTRA))
