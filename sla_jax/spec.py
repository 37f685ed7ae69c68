"""A trainer config resolved once into typed objects: the objective, the model, the dtype.

:func:`resolve` reads every field that selects code (``objective``,
``transform``, ``feature_transform``, ``model``, ``ldam``, ``drw``,
``augment``) exactly once and validates
it in the constructors of the objects it builds (objective registry, model
registry, :class:`FeatureTransform`); the trainer, ``sla-bench`` and
``sla-eval`` use the result and never re-read those fields. Errors are
:class:`ConfigError` with a message that says what to change.

``config.model`` holds ``name`` (a :mod:`sla_jax.models` registry name) and
the model's keyword arguments (``depth``, ``dtype``, ``conv_weight_grad``,
``use_fast_variance``, ...), passed through unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import ml_collections
import numpy as np

from sla_jax import augment as augment_lib
from sla_jax import feature_transforms, long_tail, models, objectives

__all__ = ["ConfigError", "FeatureTransform", "Spec", "resolve", "DTYPES"]

DTYPES = ("float32", "bfloat16", "float16")


class ConfigError(ValueError):
  """A configuration that cannot run; the message says what to change."""


@dataclasses.dataclass(frozen=True)
class FeatureTransform:
  """The feature-level pretext task (:mod:`sla_jax.feature_transforms`).

  ``groups = 0``: off. Otherwise after model stage ``stage`` each row becomes
  ``views`` variants, each discarding one of ``groups`` channel groups (plus
  the untouched map first if ``identity``).
  """
  groups: int = 0
  stage: int = 2
  identity: bool = True

  def __post_init__(self):
    if self.groups:
      feature_transforms.num_variants(self.groups, self.identity)  # groups >= 2

  @property
  def enabled(self) -> bool:
    return bool(self.groups)

  @property
  def views(self) -> int:
    """Variants per row (1 when off)."""
    return (feature_transforms.num_variants(self.groups, self.identity)
            if self.groups else 1)

  def model_kwargs(self) -> dict[str, Any]:
    """The model arguments that apply it (none when off)."""
    if not self.groups:
      return {}
    return {"feature_groups": self.groups, "feature_stage": self.stage,
            "feature_identity": self.identity}


@dataclasses.dataclass(frozen=True)
class Spec:
  """What a config trains: objective (with its transform group), model, dtype."""
  objective: objectives.Objective
  model: nn.Module
  dtype: jnp.dtype
  feature: FeatureTransform
  # Deferred re-weighting (sla_jax.long_tail): from step ``reweight_step`` on,
  # each image's loss is weighted by its class's weight; () = never.
  class_weights: tuple[float, ...] = ()
  reweight_step: int = 0
  # Strong augmentation (sla_jax.augment.chain): ``(key, [0, 1] images,
  # labels) -> (images, MixedLabels)``; None = none.
  augment: Callable | None = None


def _long_tail(config, num_classes: int, class_counts
               ) -> tuple[tuple[float, ...], tuple[float, ...], int]:
  """(LDAM margins, DRW class weights, DRW start step) from ``config.ldam`` / ``config.drw``."""
  ldam = config.get("ldam") or {"max_margin": 0.0}
  drw = config.get("drw") or {"start": -1.0, "beta": 0.9999}
  if ldam["max_margin"] < 0:
    raise ValueError(f"ldam.max_margin must be >= 0 (0 = cross-entropy); got "
                     f"{ldam['max_margin']}.")
  if not (drw["start"] < 0 or 0 <= drw["start"] <= 1) or not 0 < drw["beta"] < 1:
    raise ValueError(f"drw.start must be a fraction of total_steps in [0, 1] "
                     f"(negative = off) and drw.beta in (0, 1); got "
                     f"start={drw['start']}, beta={drw['beta']}.")
  counts = np.ones(num_classes) if class_counts is None else class_counts
  margins = (tuple(long_tail.ldam_margins(counts, ldam["max_margin"]).tolist())
             if ldam["max_margin"] > 0 else ())
  if drw["start"] < 0:
    return margins, (), 0
  weights = long_tail.effective_number_weights(counts, drw["beta"])
  return (margins, tuple(weights.tolist()),
          int(round(drw["start"] * config.total_steps)))


def resolve(config: ml_collections.ConfigDict, num_classes: int,
            class_counts: np.ndarray | None = None) -> Spec:
  """Builds the objective and the model ``config`` asks for; ConfigError if it cannot.

  ``class_counts`` (training images per class) sets the LDAM margins and DRW
  weights; without it (a config check before the data is read) every class
  counts the same.
  """
  try:
    feature = FeatureTransform(**dict(config.get("feature_transform") or {}))
    margins, weights, reweight_step = _long_tail(config, num_classes,
                                                 class_counts)
    augment_config = config.get("augment") or {"name": "none"}
    augment_fn = augment_lib.chain(
        augment_config["name"],
        {k: dict(v) for k, v in augment_config.items() if k != "name"})
    objective = objectives.make(config.objective, num_classes,
                                config.transform, config.large_loss,
                                config.temperature, feature.views, margins)
    model_kwargs = dict(config.model)
    name = model_kwargs.pop("name")
    if model_kwargs.get("dtype", "float32") not in DTYPES:
      raise ValueError(f"model.dtype must be one of {', '.join(DTYPES)}; got "
                       f"{model_kwargs['dtype']!r}.")
    dtype = jnp.dtype(model_kwargs.pop("dtype", "float32"))
    foreign = sorted(set(model_kwargs) - set(models.arguments(name))
                     - set(models.fixed(name)))
    if foreign:  # e.g. model.name=resnet18 in a config made for cifar_resnet
      raise ValueError(
          f"model.name={name!r} takes no {foreign[0]!r}, which this config's "
          f"model fields carry; start from a config made for it (e.g. "
          f"configs/tinyimagenet100_32.py:model={name}, or "
          f"config_lib.large_image_config({name!r}, IMAGE_SIZE)).")
    model = models.get(name, heads=objective.heads, dtype=dtype,
                       **model_kwargs, **feature.model_kwargs())
  except ValueError as e:
    raise ConfigError(str(e)) from None
  if config.total_steps <= 0 or config.batch_size <= 0:
    raise ConfigError("total_steps and batch_size must be positive.")
  return Spec(objective, model, dtype, feature, weights, reweight_step,
              augment_fn)
