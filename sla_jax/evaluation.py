"""Evaluation: eval-mode outputs of all M views, and an evaluator over whole splits.

:func:`eval_outputs` runs the ``M`` views as ``M`` passes of the identity-view
batch size, so aggregated inference (AG) costs ``M`` identity passes rather
than one pass of an M-times larger batch. :func:`make_evaluator` returns
``evaluate(variables, split) -> {metric: value}``: the accuracy of each of the
objective's predictions (``acc``, ``acc_si``, ``acc_ag``, ``acc_sd``) and its
loss in eval mode, every image of the split counted exactly once, each process
reading only its rows of every batch. ``per_class=True`` adds the confusion
matrices (``confusion/<metric>``: ``[N, N]`` counts, rows = true class).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from sla_jax import data as data_lib
from sla_jax import long_tail, objectives, preprocess, transforms

__all__ = ["eval_outputs", "padded_batch_size", "make_eval_step", "make_evaluator"]


def eval_outputs(model, group: transforms.TransformGroup, variables,
                 x: jax.Array) -> dict[str, jax.Array]:
  """Eval-mode model outputs for all ``M`` views of ``x`` (rows ``b*M + j``).

  Runs as ``M`` sequential passes of ``len(x)`` views each (images ``j, j+M,
  ...`` with their views); the result equals one pass over ``group.apply(x)``.
  """
  m, b = group.num_views, x.shape[0]
  if m == 1 or b % m:
    return model.apply(variables, group.apply(x), train=False)
  # With feature variants each pass returns (b/m) * M * V rows, hence the -1.
  chunks = x.reshape((b // m, m) + x.shape[1:]).swapaxes(0, 1)  # [m, b/m, ...]
  outs = jax.lax.map(
      lambda chunk: model.apply(variables, group.apply(chunk), train=False),
      chunks)  # leaves [m, (b/m)*M, ...]: chunk j holds images k*m + j
  return jax.tree.map(
      lambda o: o.reshape((m, b // m, -1) + o.shape[2:]).swapaxes(0, 1)
      .reshape((-1,) + o.shape[2:]), outs)


def padded_batch_size(batch_size: int, num_devices: int, num_views: int) -> int:
  """``batch_size`` rounded up to a multiple of ``num_devices * num_views``.

  :func:`eval_outputs` runs ``num_views`` passes of ``batch_size /
  num_views`` images each; a pass that the devices cannot split evenly ran
  about twice as slowly on two CPU devices (BENCHMARKS.md, "Evaluation
  batches that split evenly").
  """
  multiple = num_devices * max(1, num_views)
  return -(-batch_size // multiple) * multiple


def make_eval_step(model, objective: objectives.Objective, dtype,
                   per_class: bool = False) -> Callable:
  """``(variables, uint8 images, labels, mask) -> {metric: masked sum}`` (unjitted).

  With ``per_class``, also ``confusion/<metric>``: masked ``[N, N]`` counts.
  """

  def eval_batch(variables, images, labels, mask):
    outputs = eval_outputs(model, objective.group, variables,
                           preprocess.normalize(images, dtype))
    sums = {}
    for name, logits in objective.predictions(outputs).items():
      predicted = jnp.argmax(logits, -1)
      sums[name] = jnp.sum((predicted == labels) * mask)
      if per_class:
        n = objective.num_classes
        sums[f"confusion/{name}"] = jnp.zeros((n, n), jnp.float32).at[
            labels, predicted].add(mask)
    sums["loss"] = jnp.sum(objective.loss(outputs, labels, reduce=False) * mask)
    return sums

  return eval_batch


def make_evaluator(model, objective: objectives.Objective, dtype,
                   batch_size: int, mesh: jax.sharding.Mesh,
                   per_class: bool = False,
                   class_groups: Mapping[str, np.ndarray] | None = None
                   ) -> Callable[[Any, data_lib.Split], dict[str, Any]]:
  """``evaluate(variables, split)``: metric -> mean over the split (see module doc).

  ``batch_size`` is rounded up by :func:`padded_batch_size`; the last batch
  is padded with image 0 and masked out. ``class_groups`` (group name
  -> ``[N]`` bool mask, e.g. :func:`sla_jax.long_tail.class_groups`) adds
  ``<metric>_<group>``: the accuracy over the images of those classes, and
  ``per_class/<metric>``: the ``[N]`` per-class accuracies (a list).
  """
  batch_size = padded_batch_size(batch_size, mesh.devices.size,
                                 objective.group.num_views)
  local_size = batch_size // jax.process_count()
  batch_sharding = NamedSharding(mesh, P("data"))
  eval_batch = jax.jit(make_eval_step(model, objective, dtype,
                                      per_class or class_groups is not None),
                       out_shardings=NamedSharding(mesh, P()))

  def evaluate(variables, split: data_lib.Split) -> dict[str, Any]:
    totals: dict[str, Any] = {}
    for start in range(0, split.size, batch_size):
      rows = start + jax.process_index() * local_size + np.arange(local_size)
      mask = (rows < split.size).astype(np.float32)
      x, y = split.read(np.where(rows < split.size, rows, 0))  # pad: image 0
      put = lambda a: jax.make_array_from_process_local_data(batch_sharding, a)
      sums = eval_batch(variables, put(x), put(y), put(mask))
      for k, v in jax.device_get(sums).items():
        totals[k] = totals.get(k, 0.0) + np.asarray(v, np.float64)
    metrics = {k: (v.astype(np.int64) if k.startswith("confusion/")
                   else float(v) / split.size) for k, v in totals.items()}
    if class_groups is not None:
      metrics.update(_class_metrics(metrics, class_groups))
      if not per_class:
        metrics = {k: v for k, v in metrics.items()
                   if not k.startswith("confusion/")}
    return metrics

  return evaluate


def _class_metrics(metrics: Mapping[str, Any],
                   class_groups: Mapping[str, np.ndarray]) -> dict[str, Any]:
  """Per-class and class-group accuracies from the confusion matrices."""
  out = {}
  for key, confusion in metrics.items():
    if not key.startswith("confusion/"):
      continue
    name = key[len("confusion/"):]
    correct, images = np.diag(confusion), confusion.sum(axis=1)
    out[f"per_class/{name}"] = (correct / np.maximum(images, 1)).tolist()
    for group, acc in long_tail.group_accuracies(correct, images,
                                                 class_groups).items():
      out[f"{name}_{group}"] = acc
  return out
