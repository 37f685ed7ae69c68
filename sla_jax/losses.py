"""Joint labels, training losses and test-time aggregation for SLA.

Notation: ``B`` images, ``N`` classes, ``M`` views per image (see
:mod:`sla_jax.transforms`), rows laid out as ``b * M + j`` (view ``j`` of image
``b``). The joint head has ``N * M`` outputs; column ``i * M + j`` scores the
joint label (class ``i``, transformation ``j``).

All functions are pure, shape-checked at trace time, and compute in float32
whatever the logits' dtype (bf16 logits are upcast before the softmax).
Labels may be any integer array-like (a list, numpy or jax array of any
integer dtype; other dtypes are refused, under ``jit`` too); joint labels are
int32. Called eagerly, the losses check that every label lies in ``[0, N)``
and raise a ValueError otherwise; under ``jax.jit`` the values are unknown at
trace time, so validate a dataset's labels once with :func:`check_labels` (the
trainer does when it loads one). ``M`` is a Python int (it fixes shapes).
Cross-entropies are means over rows, like PyTorch's ``F.cross_entropy``. Each
loss takes ``reduce=False`` to return its ``[B]`` per-image values instead (the
mean of which is the loss), for masked evaluation.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

# ``(logits [R, K], int labels [R]) -> [R]`` float32 per-row losses; ``None``
# is softmax cross-entropy. E.g. LDAM: ``functools.partial(
# long_tail.margin_cross_entropy, margins=...)``.
RowLoss = Callable[[jax.Array, jax.Array], jax.Array]

__all__ = ["check_labels", "joint_labels", "transform_labels", "cross_entropy", "sla_loss",
           "single_logits", "aggregated_logits", "view_averaged_logits",
           "distillation_kl", "self_distillation_loss", "da_loss", "mt_loss"]


def check_labels(labels, num_classes: int, what: str = "labels") -> None:
  """Raises ValueError unless ``labels`` are integers in ``[0, num_classes)``.

  The dtype is checked under ``jit`` too (it is known at trace time); the range
  only on concrete values: call it on concrete arrays, e.g. once per dataset.
  """
  labels = _integer_labels(labels, what)
  if isinstance(labels, jax.core.Tracer):
    return
  values = np.asarray(labels)
  if values.size and (values.min() < 0 or values.max() >= num_classes):
    bad = values[(values < 0) | (values >= num_classes)]
    raise ValueError(
        f"{what} must lie in [0, {num_classes}) for {num_classes} classes; got "
        f"{bad.size} outside it (e.g. {int(bad[0])}). Drop or remap them (an "
        f"'ignore' value such as -1 is not supported).")


def _integer_labels(labels, what: str = "labels"):
  """``labels`` as an array (a list, of tracers too, becomes one), ValueError
  unless its dtype is an integer one (bool is not; an empty list passes)."""
  if not hasattr(labels, "dtype"):
    labels = jnp.asarray(labels)
  if np.size(labels) and not jnp.issubdtype(labels.dtype, jnp.integer):
    raise ValueError(f"{what} must be integers; got dtype {labels.dtype}.")
  return labels


def _labels(labels, num_classes: int) -> jax.Array:
  """Array-like integer labels -> int32 ``jax.Array``, range-checked when concrete."""
  check_labels(labels, num_classes)
  return jnp.asarray(labels).astype(jnp.int32)


def _check_num_transforms(num_transforms) -> None:
  if (not isinstance(num_transforms, (int, np.integer))
      or isinstance(num_transforms, bool) or num_transforms < 1):
    hint = (" (a Python int: it fixes shapes, so it is static under jit; pass "
            "int(M))" if hasattr(num_transforms, "shape") else "")
    raise ValueError(f"num_transforms (M) must be an integer >= 1 (1 = the "
                     f"identity alone){hint}; got {num_transforms!r}.")


def _check_rows(logits: jax.Array, labels: jax.Array, num_transforms: int,
                what: str) -> None:
  _check_num_transforms(num_transforms)
  if logits.ndim != 2:
    raise ValueError(f"{what} must be 2-D [rows, outputs]; got shape "
                     f"{tuple(logits.shape)}.")
  if labels.ndim != 1:
    raise ValueError(f"labels must be 1-D [B]; got shape {tuple(labels.shape)}.")
  if logits.shape[0] != labels.shape[0] * num_transforms:
    raise ValueError(
        f"{what} has {logits.shape[0]} rows but labels has {labels.shape[0]} "
        f"images x {num_transforms} transforms = "
        f"{labels.shape[0] * num_transforms}; pass the logits of all views, "
        f"laid out as row b*M + j.")


def _check_joint(joint_logits: jax.Array, num_transforms: int) -> None:
  _check_num_transforms(num_transforms)
  if joint_logits.ndim != 2:
    raise ValueError(f"joint_logits must be 2-D [B*M, N*M]; got shape "
                     f"{tuple(joint_logits.shape)}.")
  rows, cols = joint_logits.shape
  if rows % num_transforms or cols % num_transforms:
    raise ValueError(
        f"joint_logits of shape {(rows, cols)} is not [B*M, N*M] for "
        f"M = {num_transforms} transforms: both sizes must be multiples of M.")


def joint_labels(labels: jax.Array, num_transforms: int) -> jax.Array:
  """Joint labels ``y * M + j`` of the ``B * M`` views, shape ``[B * M]``.

  Row ``b * M + j`` (view ``j`` of image ``b``) gets ``labels[b] * M + j``,
  as int32 whatever the labels' integer dtype (uint8 labels would wrap once
  ``N * M > 256``).
  """
  _check_num_transforms(num_transforms)
  labels = _integer_labels(labels)
  if labels.ndim != 1:
    raise ValueError(f"labels must be 1-D [B]; got shape {tuple(labels.shape)}.")
  labels = labels.astype(jnp.int32)
  j = jnp.arange(num_transforms, dtype=jnp.int32)
  return (labels[:, None] * num_transforms + j[None, :]).reshape(-1)


def transform_labels(batch_size: int, num_transforms: int) -> jax.Array:
  """The transformation index ``j`` of each of the ``B * M`` views, ``[B * M]``."""
  _check_num_transforms(num_transforms)
  if (not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool)
      or batch_size < 0):
    raise ValueError(f"batch_size (B) must be an integer >= 0; got {batch_size!r}.")
  return jnp.tile(jnp.arange(num_transforms, dtype=jnp.int32), batch_size)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean over rows of ``-log softmax(logits)[label]`` (float32).

  ``labels``: integer array-like in ``[0, logits.shape[-1])`` (checked when
  concrete, as the other losses).
  """
  labels = _labels(labels, logits.shape[-1])
  if logits.ndim < 1 or labels.shape != logits.shape[:-1]:
    raise ValueError(f"labels must have the logits' shape less its last axis, "
                     f"{tuple(logits.shape[:-1])}; got {tuple(labels.shape)}.")
  return optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), labels).mean()


def _row_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  return optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), labels)


def _per_image_ce(logits: jax.Array, labels: jax.Array, num_transforms: int,
                  row_loss: RowLoss | None = None) -> jax.Array:
  """``[B * M]`` rows -> ``[B]``: each image's cross-entropy averaged over its views."""
  ce = (row_loss or _row_cross_entropy)(logits, labels)
  return ce.reshape(-1, num_transforms).mean(axis=1)


def _reduce(per_image: jax.Array, reduce: bool) -> jax.Array:
  return per_image.mean() if reduce else per_image


def sla_loss(joint_logits: jax.Array, labels: jax.Array, num_transforms: int,
             large_loss: bool = False, *, reduce: bool = True,
             row_loss: RowLoss | None = None) -> jax.Array:
  """SLA joint cross-entropy.

  ``L = (1 / BM) * sum_{b,j} CE(joint_logits[b*M + j], y_b * M + j)``, times
  ``M`` when ``large_loss`` (a sum over views instead of a mean; the original's
  ``--with-large-loss``).

  Args:
    joint_logits: ``[B * M, N * M]`` logits of all views.
    labels: ``[B]`` class labels of the original images.
    num_transforms: ``M``.
    large_loss: Sum the per-view losses over ``M`` instead of averaging.
    reduce: If False, return the ``[B]`` per-image losses (their mean is the
      reduced loss), e.g. for masked evaluation.
    row_loss: The per-row loss of the joint labels instead of cross-entropy
      (e.g. LDAM's margin cross-entropy, :mod:`sla_jax.long_tail`).
  """
  _check_joint(joint_logits, num_transforms)
  labels = _labels(labels, joint_logits.shape[1] // num_transforms)
  _check_rows(joint_logits, labels, num_transforms, "joint_logits")
  loss = _per_image_ce(joint_logits, joint_labels(labels, num_transforms),
                       num_transforms, row_loss)
  return _reduce(loss * num_transforms if large_loss else loss, reduce)


def single_logits(joint_logits: jax.Array, num_transforms: int) -> jax.Array:
  """SI inference: the identity view's logits at columns ``{i * M}``, ``[B, N]``."""
  _check_joint(joint_logits, num_transforms)
  return joint_logits[::num_transforms, ::num_transforms]


def aggregated_logits(joint_logits: jax.Array, num_transforms: int) -> jax.Array:
  """AG inference: ``(1/M) sum_j joint_logits[b*M + j, i*M + j]``, ``[B, N]``.

  Each view votes with the logits at its own transformation's columns; the raw
  logits are averaged (apply the softmax afterwards).
  """
  _check_joint(joint_logits, num_transforms)
  rows, cols = joint_logits.shape
  m = num_transforms
  per_view = joint_logits.reshape(rows // m, m, cols // m, m)  # [B, j, i, k]
  own_columns = jnp.diagonal(per_view, axis1=1, axis2=3)     # [B, i, j]
  return own_columns.mean(axis=-1)


def view_averaged_logits(logits: jax.Array, num_transforms: int) -> jax.Array:
  """Mean over the ``M`` views of each image of ``[B * M, K]`` logits, ``[B, K]``.

  The aggregation for heads that are not joint (DA, MT class head).
  """
  _check_num_transforms(num_transforms)
  if logits.ndim != 2 or logits.shape[0] % num_transforms:
    raise ValueError(f"logits must be [B*M, K] with M = {num_transforms}; got "
                     f"shape {tuple(logits.shape)}.")
  return logits.reshape(-1, num_transforms, logits.shape[-1]).mean(axis=1)


def distillation_kl(teacher_logits: jax.Array, student_logits: jax.Array,
                    temperature: float = 1.0, *, reduce: bool = True) -> jax.Array:
  """``KL(softmax(teacher/T) || softmax(student/T))``, mean over the batch.

  The same quantity as PyTorch's ``F.kl_div(log_softmax(student/T),
  softmax(teacher/T), reduction='batchmean')``. Gradients flow to both inputs;
  stop them on the teacher yourself (as :func:`self_distillation_loss` does).
  """
  if teacher_logits.shape != student_logits.shape:
    raise ValueError(f"teacher_logits and student_logits must have one shape; "
                     f"got {tuple(teacher_logits.shape)} and "
                     f"{tuple(student_logits.shape)}.")
  _check_temperature(temperature)
  t = jnp.float32(temperature)
  log_teacher = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / t)
  log_student = jax.nn.log_softmax(student_logits.astype(jnp.float32) / t)
  return _reduce(optax.losses.kl_divergence_with_log_targets(
      log_student, log_teacher), reduce)


def _check_temperature(temperature) -> None:
  """ValueError unless a concrete temperature is > 0 (a traced one passes)."""
  if isinstance(temperature, jax.core.Tracer):
    return
  if not np.ndim(temperature) == 0 or not float(temperature) > 0:
    raise ValueError(f"temperature (T) must be a number > 0; got {temperature!r}.")


def self_distillation_loss(joint_logits: jax.Array,
                           single_head_logits: jax.Array, labels: jax.Array,
                           num_transforms: int, temperature: float = 1.0,
                           large_loss: bool = False, *,
                           reduce: bool = True,
                           row_loss: RowLoss | None = None) -> jax.Array:
  """SLA+SD objective.

  ``L = sla_loss(joint) + CE(single, y) + T^2 * KL(softmax(AG/T) || softmax(single/T))``
  with ``AG = stop_gradient(aggregated_logits(joint))``, all batch means.

  Args:
    joint_logits: ``[B * M, N * M]`` joint-head logits of all views.
    single_head_logits: ``[B, N]`` logits of the extra N-way head on the
      identity views (rows ``::M`` of its output on all views).
    labels: ``[B]`` class labels.
    num_transforms: ``M``.
    temperature: ``T`` of the distillation term.
    large_loss: Passed to :func:`sla_loss` (only the joint term is scaled).
    reduce: If False, return the ``[B]`` per-image losses.
    row_loss: Replaces cross-entropy in the joint and single terms (not in
      the distillation term, which has no label).
  """
  _check_temperature(temperature)
  labels = _labels(labels, single_head_logits.shape[-1])
  if single_head_logits.shape[0] != labels.shape[0]:
    raise ValueError(
        f"single_head_logits must be [B, N] for the B = {labels.shape[0]} "
        f"identity views; got shape {tuple(single_head_logits.shape)} (take "
        f"rows ::M of the single head's output on all views).")
  _check_joint(joint_logits, num_transforms)
  if joint_logits.shape[1] != single_head_logits.shape[1] * num_transforms:
    raise ValueError(
        f"joint_logits has {joint_logits.shape[1]} columns but the single head "
        f"has N = {single_head_logits.shape[1]} classes x M = {num_transforms} "
        f"transforms = {single_head_logits.shape[1] * num_transforms}: both "
        f"heads must cover the same N classes.")
  joint = sla_loss(joint_logits, labels, num_transforms, large_loss,
                   reduce=False, row_loss=row_loss)
  single = _per_image_ce(single_head_logits, labels, 1, row_loss)
  teacher = jax.lax.stop_gradient(  # float32 before averaging, as documented
      aggregated_logits(joint_logits.astype(jnp.float32), num_transforms))
  kl = distillation_kl(teacher, single_head_logits, temperature, reduce=False)
  return _reduce(joint + single + jnp.float32(temperature) ** 2 * kl, reduce)


def da_loss(logits: jax.Array, labels: jax.Array, num_transforms: int, *,
            reduce: bool = True, row_loss: RowLoss | None = None) -> jax.Array:
  """DA (transformations as plain augmentation): mean CE of ``[B*M, N]`` logits
  against ``y`` repeated for the ``M`` views of each image (``reduce=False``:
  per image, ``[B]``; ``row_loss`` replaces the cross-entropy)."""
  labels = _labels(labels, logits.shape[-1])
  _check_rows(logits, labels, num_transforms, "logits")
  return _reduce(_per_image_ce(logits, jnp.repeat(labels, num_transforms),
                               num_transforms, row_loss), reduce)


def mt_loss(class_logits: jax.Array, transform_logits: jax.Array,
            labels: jax.Array, num_transforms: int, *,
            reduce: bool = True, row_loss: RowLoss | None = None) -> jax.Array:
  """MT (multi-task): mean over the ``B*M`` views of ``CE(class, y) + CE(transform, j)``.

  Args:
    class_logits: ``[B * M, N]`` class-head logits of all views.
    transform_logits: ``[B * M, M]`` transformation-head logits of all views.
    labels: ``[B]`` class labels.
    num_transforms: ``M``.
    reduce: If False, return the ``[B]`` per-image losses.
    row_loss: Replaces the class head's cross-entropy (the transformation
      head keeps it).
  """
  labels = _labels(labels, class_logits.shape[-1])
  _check_rows(class_logits, labels, num_transforms, "class_logits")
  _check_rows(transform_logits, labels, num_transforms, "transform_logits")
  if transform_logits.shape[1] != num_transforms:
    raise ValueError(f"transform_logits must have M = {num_transforms} "
                     f"columns; got {transform_logits.shape[1]}.")
  transform_ce = _per_image_ce(
      transform_logits, transform_labels(labels.shape[0], num_transforms),
      num_transforms)
  return _reduce(da_loss(class_logits, labels, num_transforms, reduce=False,
                         row_loss=row_loss) +
                 transform_ce, reduce)
