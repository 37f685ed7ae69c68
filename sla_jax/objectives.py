"""The five training objectives of the paper as one interface: heads, loss, predictions.

=========  ===============================  ==========================================
objective  heads                            test-time predictions (metric names)
=========  ===============================  ==========================================
baseline   class (N); no transformations    ``acc``
da         class (N)                        ``acc`` (identity view), ``acc_ag``
mt         class (N) + transform (M)        ``acc`` (identity view), ``acc_ag``
sla        joint (N*M)                      ``acc_si``, ``acc_ag``
sla_sd     joint (N*M) + single (N)         ``acc_si``, ``acc_ag``, ``acc_sd``
=========  ===============================  ==========================================

``acc_ag`` averages the class logits of the M views for DA/MT and is the SLA
aggregation (:func:`sla_jax.losses.aggregated_logits`) otherwise; it is only
reported when M > 1. The model-selection metric follows the original
(``single_acc``): ``acc``, ``acc_si`` for SLA, ``acc_sd`` for SLA+SD.

With the feature-level pretext task (``feature_views = V > 1``, see
:mod:`sla_jax.feature_transforms`; SLA and SLA+SD only) the model turns each of
the M input views into V feature variants inside the network, and the joint
label covers class x input transform x feature variant: ``num_views = M * V``.
"""

from __future__ import annotations

import dataclasses

import jax

from sla_jax import feature_transforms, losses, models, transforms

__all__ = ["Objective", "make", "from_config"]


@dataclasses.dataclass(frozen=True)
class Objective:
  """One objective with its transform group and hyper-parameters."""
  name: str
  num_classes: int
  group: transforms.TransformGroup
  large_loss: bool = False
  temperature: float = 1.0
  feature_views: int = 1

  def __post_init__(self):
    if self.feature_views > 1 and self.name not in ("sla", "sla_sd"):
      raise ValueError(f"Feature-level transforms (feature_transform.groups) "
                       f"work with the sla and sla_sd objectives; got "
                       f"{self.name!r}.")

  @property
  def input_views(self) -> int:
    """M: the input transform's views per image (rows the model is fed)."""
    return self.group.num_views

  @property
  def num_views(self) -> int:
    """Rows per image in the model's outputs: ``M * feature_views``."""
    return self.group.num_views * self.feature_views

  @property
  def heads(self) -> dict[str, int]:
    return models.heads_for_objective(self.name, self.num_classes, self.num_views)

  @property
  def selection_metric(self) -> str:
    return {"sla": "acc_si", "sla_sd": "acc_sd"}.get(self.name, "acc")

  @property
  def metric_names(self) -> tuple[str, ...]:
    names = {"baseline": ("acc",), "da": ("acc", "acc_ag"),
             "mt": ("acc", "acc_ag"), "sla": ("acc_si", "acc_ag"),
             "sla_sd": ("acc_si", "acc_ag", "acc_sd")}[self.name]
    return tuple(n for n in names if n != "acc_ag" or self.num_views > 1)

  def loss(self, outputs: dict[str, jax.Array], labels: jax.Array, *,
           reduce: bool = True) -> jax.Array:
    """The training loss of ``outputs`` (the model's dict on all B*M views)."""
    m = self.num_views
    if self.name == "baseline":
      return losses.da_loss(outputs["class"], labels, 1, reduce=reduce)
    if self.name == "da":
      return losses.da_loss(outputs["class"], labels, m, reduce=reduce)
    if self.name == "mt":
      return losses.mt_loss(outputs["class"], outputs["transform"], labels, m,
                            reduce=reduce)
    if self.name == "sla":
      return losses.sla_loss(outputs["joint"], labels, m, self.large_loss,
                             reduce=reduce)
    return losses.self_distillation_loss(
        outputs["joint"], outputs["single"][::m], labels, m, self.temperature,
        self.large_loss, reduce=reduce)

  def predictions(self, outputs: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """Metric name -> ``[B, N]`` logits of the original images."""
    m = self.num_views
    if self.name in ("baseline", "da", "mt"):
      preds = {"acc": outputs["class"][::m],
               "acc_ag": losses.view_averaged_logits(outputs["class"], m)}
    else:
      preds = {"acc_si": losses.single_logits(outputs["joint"], m),
               "acc_ag": losses.aggregated_logits(outputs["joint"], m)}
      if self.name == "sla_sd":
        preds["acc_sd"] = outputs["single"][::m]
    return {k: v for k, v in preds.items() if k in self.metric_names}


def make(name: str, num_classes: int, transform: str,
         large_loss: bool = False, temperature: float = 1.0,
         feature_views: int = 1) -> Objective:
  """Builds an objective; ``baseline`` ignores ``transform`` (one view)."""
  models.heads_for_objective(name, num_classes, 1)  # validates the name
  group = transforms.get("identity" if name == "baseline" else transform)
  return Objective(name, num_classes, group, large_loss, temperature,
                   feature_views)


def from_config(config, num_classes: int) -> Objective:
  """The objective a trainer config asks for (incl. ``feature_transform``)."""
  feature = config.get("feature_transform")
  feature_views = (feature_transforms.num_variants(feature.groups,
                                                   feature.identity)
                   if feature and feature.groups else 1)
  return make(config.objective, num_classes, config.transform,
              config.large_loss, config.temperature, feature_views)
