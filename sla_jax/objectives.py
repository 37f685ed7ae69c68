"""The training objectives of the paper, one small class each, in one registry.

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
:mod:`sla_jax.feature_transforms`; objectives with ``joint_labels = True``
only) the model turns each of the M input views into V feature variants inside
the network, and the joint label covers class x input transform x feature
variant: ``num_views = M * V``.

Adding an objective is one subclass decorated with :func:`register` (its
``name``, ``heads``, ``loss``, ``predictions`` and class attributes); the
trainer, ``sla-bench``, ``sla-eval`` and the evidence harness read it from
here::

    objective = objectives.make("sla_sd", num_classes=10, transform="rotation")
    objective.heads            # {"joint": 40, "single": 10}
    loss = objective.loss(model_outputs, labels)
"""

from __future__ import annotations

import dataclasses
import functools
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from sla_jax import long_tail, losses, transforms

__all__ = ["Objective", "Baseline", "DataAugmentation", "MultiTask", "SLA",
           "SLASelfDistillation", "register", "get", "make", "names",
           "metric_names"]

_REGISTRY: dict[str, type["Objective"]] = {}


def register(cls: type["Objective"]) -> type["Objective"]:
  """Class decorator: adds an :class:`Objective` subclass under ``cls.name``."""
  if cls.name in _REGISTRY:
    raise ValueError(f"Objective {cls.name!r} is already registered.")
  _REGISTRY[cls.name] = cls
  return cls


@dataclasses.dataclass(frozen=True)
class Objective:
  """One objective with its transform group and hyper-parameters.

  Subclasses set the class attributes and implement :meth:`heads`,
  :meth:`loss` and :meth:`predictions` on the model's output dict (all B*M
  views, rows ``b * M + j``).
  """
  num_classes: int
  group: transforms.TransformGroup
  large_loss: bool = False
  temperature: float = 1.0
  feature_views: int = 1
  # LDAM (sla_jax.long_tail): per-class margins in logit units subtracted from
  # the true class's logit in every label cross-entropy; () = plain CE.
  class_margins: tuple[float, ...] = ()

  name: ClassVar[str] = ""
  # Every metric the objective can report, in display order; "acc_ag" is
  # dropped when there is a single view.
  all_metrics: ClassVar[tuple[str, ...]] = ()
  selection_metric: ClassVar[str] = "acc"
  # Trains on joint (class, transform) labels: feature variants apply.
  joint_labels: ClassVar[bool] = False
  # Ignores the configured transform (always the identity).
  single_view: ClassVar[bool] = False

  def __post_init__(self):
    if self.feature_views > 1 and not self.joint_labels:
      joint = " or ".join(n for n, c in _REGISTRY.items() if c.joint_labels)
      raise ValueError(f"Feature-level transforms (feature_transform.groups) "
                       f"train on joint labels: needs objective {joint}; got "
                       f"{self.name!r}.")
    if self.class_margins and len(self.class_margins) != self.num_classes:
      raise ValueError(f"class_margins has {len(self.class_margins)} entries "
                       f"for {self.num_classes} classes; give one per class.")

  @property
  def row_loss(self) -> losses.RowLoss | None:
    """The per-row label loss: LDAM's margin cross-entropy, or None (CE)."""
    if not self.class_margins:
      return None
    return functools.partial(long_tail.margin_cross_entropy,
                             margins=jnp.asarray(self.class_margins))

  @property
  def input_views(self) -> int:
    """M: the input transform's views per image (rows the model is fed)."""
    return self.group.num_views

  @property
  def num_views(self) -> int:
    """Rows per image in the model's outputs: ``M * feature_views``."""
    return self.group.num_views * self.feature_views

  @property
  def metric_names(self) -> tuple[str, ...]:
    return tuple(n for n in self.all_metrics
                 if n != "acc_ag" or self.num_views > 1)

  @property
  def heads(self) -> dict[str, int]:
    """Output heads the model needs, name -> size."""
    raise NotImplementedError

  def loss(self, outputs: dict[str, jax.Array], labels: jax.Array, *,
           reduce: bool = True) -> jax.Array:
    """The training loss of ``outputs`` (``reduce=False``: per image, ``[B]``)."""
    raise NotImplementedError

  def _all_predictions(self, outputs) -> dict[str, jax.Array]:
    raise NotImplementedError

  def predictions(self, outputs: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """Metric name -> ``[B, N]`` logits of the original images."""
    preds = self._all_predictions(outputs)
    return {k: preds[k] for k in self.metric_names}

  def single_pass_predictions(self, outputs: dict[str, jax.Array]
                              ) -> dict[str, jax.Array]:
    """The predictions that need only the identity view (all but AG).

    ``outputs``: the model on the original images alone (rows
    ``b * feature_views + v``), one pass instead of M.
    """
    raise NotImplementedError


class _ClassHead(Objective):
  """Objectives with an N-way ``class`` head on every view."""
  all_metrics = ("acc", "acc_ag")

  @property
  def heads(self):
    return {"class": self.num_classes}

  def loss(self, outputs, labels, *, reduce=True):
    return losses.da_loss(outputs["class"], labels, self.num_views,
                          reduce=reduce, row_loss=self.row_loss)

  def _all_predictions(self, outputs):
    m = self.num_views
    return {"acc": outputs["class"][::m],
            "acc_ag": losses.view_averaged_logits(outputs["class"], m)}

  def single_pass_predictions(self, outputs):
    return {"acc": outputs["class"][::self.feature_views]}


@register
@dataclasses.dataclass(frozen=True)
class Baseline(_ClassHead):
  """Plain cross-entropy on the original images (no transformations)."""
  name = "baseline"
  all_metrics = ("acc",)
  single_view = True


@register
@dataclasses.dataclass(frozen=True)
class DataAugmentation(_ClassHead):
  """DA: the M views as augmentation, all with the class label."""
  name = "da"


@register
@dataclasses.dataclass(frozen=True)
class MultiTask(_ClassHead):
  """MT: a class head plus an M-way head predicting the transformation."""
  name = "mt"

  @property
  def heads(self):
    return {"class": self.num_classes, "transform": self.num_views}

  def loss(self, outputs, labels, *, reduce=True):
    return losses.mt_loss(outputs["class"], outputs["transform"], labels,
                          self.num_views, reduce=reduce, row_loss=self.row_loss)


@register
@dataclasses.dataclass(frozen=True)
class SLA(Objective):
  """SLA: one softmax over the N*M joint labels; SI and AG at test time."""
  name = "sla"
  all_metrics = ("acc_si", "acc_ag")
  selection_metric = "acc_si"
  joint_labels = True

  @property
  def heads(self):
    return {"joint": self.num_classes * self.num_views}

  def loss(self, outputs, labels, *, reduce=True):
    return losses.sla_loss(outputs["joint"], labels, self.num_views,
                           self.large_loss, reduce=reduce,
                           row_loss=self.row_loss)

  def _all_predictions(self, outputs):
    m = self.num_views
    return {"acc_si": losses.single_logits(outputs["joint"], m),
            "acc_ag": losses.aggregated_logits(outputs["joint"], m)}

  def single_pass_predictions(self, outputs):
    # Joint column i * num_views is (class i, input view 0, variant 0).
    return {"acc_si": outputs["joint"][::self.feature_views, ::self.num_views]}


@register
@dataclasses.dataclass(frozen=True)
class SLASelfDistillation(SLA):
  """SLA+SD: SLA plus an N-way head distilled from the aggregate (AG)."""
  name = "sla_sd"
  all_metrics = ("acc_si", "acc_ag", "acc_sd")
  selection_metric = "acc_sd"

  @property
  def heads(self):
    return {"joint": self.num_classes * self.num_views,
            "single": self.num_classes}

  def loss(self, outputs, labels, *, reduce=True):
    m = self.num_views
    return losses.self_distillation_loss(
        outputs["joint"], outputs["single"][::m], labels, m, self.temperature,
        self.large_loss, reduce=reduce, row_loss=self.row_loss)

  def _all_predictions(self, outputs):
    return {**super()._all_predictions(outputs),
            "acc_sd": outputs["single"][::self.num_views]}

  def single_pass_predictions(self, outputs):
    return {**super().single_pass_predictions(outputs),
            "acc_sd": outputs["single"][::self.feature_views]}


def names() -> tuple[str, ...]:
  """The registered objective names."""
  return tuple(_REGISTRY)


def metric_names() -> tuple[str, ...]:
  """Every metric a registered objective reports, in display order."""
  return tuple(dict.fromkeys(m for cls in _REGISTRY.values()
                             for m in cls.all_metrics))


def get(name: str) -> type[Objective]:
  """The registered objective class called ``name``."""
  try:
    return _REGISTRY[name]
  except KeyError:
    raise ValueError(f"Unknown objective {name!r}; valid objectives are: "
                     f"{', '.join(_REGISTRY)}.") from None


def make(name: str, num_classes: int, transform: str = "identity",
         large_loss: bool = False, temperature: float = 1.0,
         feature_views: int = 1,
         class_margins: tuple[float, ...] = ()) -> Objective:
  """Builds an objective; single-view ones (``baseline``) ignore ``transform``."""
  cls = get(name)
  for what, value in (("num_classes", num_classes), ("feature_views", feature_views)):
    if (not isinstance(value, (int, np.integer)) or isinstance(value, bool)
        or value < 1):
      raise ValueError(f"{what} must be an integer >= 1; got {value!r}.")
  if not temperature > 0:
    raise ValueError(f"temperature must be > 0; got {temperature}.")
  group = transforms.get("identity" if cls.single_view else transform)
  return cls(num_classes, group, large_loss, temperature, feature_views,
             tuple(float(m) for m in class_margins))
