"""Use a trained model: load a workdir's checkpoint, predict, export for serving.

    model = sla_jax.inference.load("workdirs/quickstart")            # best checkpoint
    logits = model.predict(uint8_images)                             # [B, N], selection head
    ag = model.predict(uint8_images, head="ag")                      # aggregated over the M views
    model.export("model.jax")                                        # single-pass predictor
    served = sla_jax.inference.load_exported("model.jax")            # no sla_jax model code needed
    np.testing.assert_array_equal(served(uint8_images), model.predict(uint8_images))

``head`` is one of the objective's predictions, by metric name or short name:
``acc`` (baseline / DA / MT class head), ``si`` = ``acc_si`` (SLA's identity
view), ``ag`` = ``acc_ag`` (all M views), ``sd`` = ``acc_sd`` (the SLA+SD
head). Images are what the dataset gives: uint8 NHWC of the training size,
scaled to [-1, 1] inside the predictor as in training.

The workdir's ``config.json`` and ``dataset.json`` (written by ``sla-train``)
say which objective, model and data shape to rebuild; the parameters and
BatchNorm statistics come from ``best/`` (the best validation step) or
``checkpoints/`` (``"latest"`` or a step number).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sla_jax import evaluation, preprocess
from sla_jax import spec as spec_lib

__all__ = ["Predictor", "load", "load_exported", "read_workdir",
           "restore_variables", "evaluate_workdir"]

_SHORT_HEADS = {"si": "acc_si", "ag": "acc_ag", "sd": "acc_sd"}


def read_workdir(workdir) -> tuple[Any, Any, dict[str, Any]]:
  """``(workdir path, saved config, dataset info)`` of a workdir written by sla-train."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from sla_jax import train  # pylint: disable=g-import-not-at-top
  workdir = train.workdir_path(workdir)
  for name in ("config.json", "dataset.json"):
    if not (workdir / name).exists():
      older = (" (rerun its command to add dataset.json to an older one)"
               if name == "dataset.json" else "")
      raise FileNotFoundError(
          f"{workdir} has no {name}: pass a workdir written by sla-train"
          f"{older}.")
  loaded = {}
  for name in ("config.json", "dataset.json"):
    try:
      loaded[name] = json.loads((workdir / name).read_text())
    except json.JSONDecodeError as e:
      raise ValueError(f"{workdir / name} is not valid JSON ({e}).") from None
  return (workdir, ml_collections.ConfigDict(loaded["config.json"]),
          loaded["dataset.json"])


def restore_variables(workdir, checkpoint: str | int = "best", mesh=None,
                      config=None
                      ) -> tuple[Any, int, spec_lib.Spec, dict[str, Any]]:
  """``(variables, step, spec, dataset_info)`` of a workdir's checkpoint.

  ``checkpoint``: ``"best"`` (best validation step), ``"latest"``, or a step
  saved in ``checkpoints/``. Variables are replicated over ``mesh`` (default:
  the first device). ``config``: the model's config (default: the workdir's
  ``config.json``); a model that does not match the checkpoint raises
  ConfigError.
  """
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from sla_jax import train  # pylint: disable=g-import-not-at-top

  workdir, saved, info = read_workdir(workdir)
  config = saved if config is None else config
  spec = spec_lib.resolve(config, info["num_classes"])
  tx, _ = train.make_optimizer(config)
  init = train.make_init(spec.model, tx, tuple(info["image_shape"]))
  sharding = (jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
              if mesh is not None
              else jax.sharding.SingleDeviceSharding(jax.devices()[0]))
  abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
      jax.eval_shape(init, jax.random.key(0)))
  folder = "best" if checkpoint == "best" else "checkpoints"
  handler = ocp.StandardCheckpointHandler()
  manager = ocp.CheckpointManager(  # reads only: a missing folder stays missing
      workdir / folder, options=ocp.CheckpointManagerOptions(create=False),
      item_handlers=(handler if folder == "best" else
                     {"state": handler, "progress": ocp.JsonCheckpointHandler()}))
  steps = manager.all_steps()
  if checkpoint in ("best", "latest"):
    step = max(steps) if steps else None
  else:
    try:
      step = int(checkpoint)
    except ValueError:
      raise ValueError(f"checkpoint must be 'best', 'latest' or a step number; "
                       f"got {checkpoint!r}.") from None
    step = step if step in steps else None
  if step is None:
    hint = (" The run's latest checkpoints are in checkpoints/: pass "
            "checkpoint='latest' (sla-eval --checkpoint latest)."
            if folder == "best" else "")
    raise FileNotFoundError(
        f"No checkpoint {checkpoint!r} in {workdir / folder} (saved steps: "
        f"{sorted(steps) or 'none'}).{hint}")
  try:
    _check_fits(abstract, manager.item_metadata(step), folder == "best")
    if folder == "best":
      state = manager.restore(step, args=ocp.args.StandardRestore(abstract))
    else:
      state = manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract)))["state"]
  except (ValueError, KeyError, TypeError) as e:  # Orbax: trees or shapes differ
    raise spec_lib.ConfigError(
        f"the checkpoint of step {step} in {workdir / folder} does not fit the "
        f"model of its config (objective {config.objective!r}, transform "
        f"{config.transform!r}, model {dict(config.model)}): evaluate it with "
        f"the config it was trained with ({type(e).__name__}: "
        f"{str(e).splitlines()[0][:200]})") from None
  finally:
    manager.close()
  return train.variables_of(state), step, spec, info


def _check_fits(abstract, metadata, whole: bool) -> None:
  """ValueError unless the saved arrays have ``abstract``'s paths and shapes.

  Checked on the metadata before restoring: a restore that fails partway
  leaves Orbax's background reads to print tracebacks as the process exits.
  """
  saved = metadata if whole else metadata["state"]
  name = lambda key: str(getattr(key, "key", getattr(key, "name",
                                                     getattr(key, "idx", key))))
  shapes = lambda tree: {"/".join(map(name, path)): tuple(leaf.shape)
                         for path, leaf in
                         jax.tree_util.tree_leaves_with_path(tree)}
  want, have = shapes(abstract), shapes(saved)
  for path in sorted(set(want) | set(have),  # the parameters first
                     key=lambda path: ("params" not in path, path)):
    if want.get(path) != have.get(path):
      raise ValueError(f"{path} is {have.get(path, 'absent')} in the "
                       f"checkpoint and {want.get(path, 'absent')} in the model")


@dataclasses.dataclass(frozen=True)
class Predictor:
  """A trained model ready to predict; see the module docstring."""
  spec: spec_lib.Spec
  variables: Any
  step: int
  image_shape: tuple[int, int, int]
  num_classes: int
  _jitted: dict = dataclasses.field(default_factory=dict, repr=False,
                                    compare=False)

  @property
  def heads(self) -> tuple[str, ...]:
    """The predictions this model makes (metric names)."""
    return self.spec.objective.metric_names

  def _head(self, head: str | None) -> str:
    name = self.spec.objective.selection_metric if head is None else (
        _SHORT_HEADS.get(head, head))
    if name not in self.heads:
      raise ValueError(f"head {head!r} is not one of this "
                       f"{self.spec.objective.name} model's predictions: "
                       f"{', '.join(self.heads)} (or si / ag / sd).")
    return name

  def predict_fn(self, head: str | None = None) -> Callable:
    """Pure ``(variables, uint8 images) -> [B, N] logits`` for ``head``."""
    name = self._head(head)
    objective, model, dtype = (self.spec.objective, self.spec.model,
                               self.spec.dtype)
    single_pass = name != "acc_ag"

    def fn(variables, images):
      x = preprocess.normalize(images, dtype)
      if single_pass:  # identity views only: SI, SD and acc read just these
        logits = objective.single_pass_predictions(
            model.apply(variables, x, train=False))[name]
      else:
        outputs = evaluation.eval_outputs(model, objective.group, variables, x)
        logits = objective.predictions(outputs)[name]
      return logits.astype(jnp.float32)

    return fn

  def predict(self, images, head: str | None = None) -> jax.Array:
    """``[B, N]`` float32 logits of uint8 NHWC ``images`` (jit-compiled)."""
    name = self._head(head)
    if name not in self._jitted:
      self._jitted[name] = jax.jit(self.predict_fn(name))
    images = jnp.asarray(images)
    _check_images(images, self.image_shape)
    return self._jitted[name](self.variables, images)

  def export(self, path: str | os.PathLike, head: str | None = None) -> None:
    """Writes the single-pass predictor (SI / SD / acc) for serving.

    One file: the ``jax.export`` serialisation of ``(variables, uint8 images)
    -> logits`` with a symbolic batch size, and the variables beside it (as
    arguments rather than baked-in constants, so the served logits equal
    :meth:`predict`'s bit for bit). Reload with :func:`load_exported` (no model
    code needed).
    """
    from flax import serialization  # pylint: disable=g-import-not-at-top
    name = self._head(head)
    if name == "acc_ag":
      raise ValueError("export the single-pass heads (si, sd, acc); AG runs "
                       "M passes: serve it with predict().")
    batch = jax.export.symbolic_shape("b")
    images = jax.ShapeDtypeStruct(batch + tuple(self.image_shape), jnp.uint8)
    variables = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                             self.variables)
    exported = jax.export.export(jax.jit(self.predict_fn(name)))(variables,
                                                                 images)
    payload = {"format": "sla_jax.inference/1", "head": name,
               "exported": bytes(exported.serialize()),
               "variables": jax.tree.map(np.asarray,
                                         jax.device_get(self.variables))}
    with open(path, "wb") as f:
      f.write(serialization.msgpack_serialize(payload))


def load(workdir, checkpoint: str | int = "best") -> Predictor:
  """A :class:`Predictor` for a workdir written by ``sla-train``."""
  variables, step, spec, info = restore_variables(workdir, checkpoint)
  return Predictor(spec, variables, step, tuple(info["image_shape"]),
                   info["num_classes"])


def load_exported(path: str | os.PathLike) -> Callable[[Any], jax.Array]:
  """The predictor written by :meth:`Predictor.export`: ``uint8 images -> logits``."""
  from flax import serialization  # pylint: disable=g-import-not-at-top
  with open(path, "rb") as f:
    data = f.read()
  try:
    payload = serialization.msgpack_restore(data)
  except Exception:  # pylint: disable=broad-except  # msgpack: not its format
    payload = None
  if not isinstance(payload, dict) or payload.get(
      "format") != "sla_jax.inference/1":
    raise ValueError(f"{path} is not a file written by Predictor.export.")
  exported = jax.export.deserialize(bytearray(payload["exported"]))
  variables = payload["variables"]

  image_shape = tuple(exported.in_avals[-1].shape[1:])  # fixed at export (images last)
  num_outputs = exported.out_avals[0].shape[-1]

  def served(images):
    """``[B, H, W, C]`` uint8 -> ``[B, N]`` logits; works under ``jax.jit`` (not
    ``vmap``: jax.export has no batching rule; the batch axis is symbolic)."""
    if not hasattr(images, "dtype"):
      images = np.asarray(images)
    _check_images(images, image_shape)
    if images.shape[0] == 0:  # a symbolic batch size is >= 1
      return jnp.zeros((0, num_outputs), exported.out_avals[0].dtype)
    return exported.call(variables, images)

  return served


def _check_images(images, image_shape: tuple[int, ...]) -> None:
  """ValueError unless ``images`` are uint8 ``[B, *image_shape]`` (what the
  predictors read)."""
  if images.dtype != np.uint8:  # floats would be read as [0, 255] pixel values
    raise ValueError(f"images must be uint8 pixel values in [0, 255], as the "
                     f"trainer reads them; got {images.dtype} (for images in "
                     f"[0, 1]: np.round(x * 255).astype(np.uint8)).")
  if images.ndim != 4 or tuple(images.shape[1:]) != tuple(image_shape):
    raise ValueError(f"images must be [B, {', '.join(map(str, image_shape))}] "
                     f"(the training size); got {tuple(images.shape)}.")


def evaluate_workdir(workdir, checkpoint="best", split="test",
                     overrides: dict[str, str] | None = None) -> dict:
  """Metrics of a workdir's checkpoint on ``split``: what ``sla-eval`` reports.

  The trainer's own evaluator on ``config.json`` with ``overrides``
  (``{"dataset": "folder:/x"}``): ``metrics`` (every prediction's accuracy and
  the loss), ``per_class`` accuracies and ``confusion`` counts per prediction.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  from sla_jax import config_lib, distributed, train  # pylint: disable=g-import-not-at-top
  from sla_jax import data as data_lib  # pylint: disable=g-import-not-at-top

  workdir, saved, _ = read_workdir(workdir)
  try:
    config = config_lib.apply_overrides(saved, overrides or {})
    # Only what evaluating reads: a saved run's training numbers are its own.
    train.check_whole_numbers(config, ("eval_batch_size",))
    if split == "test":  # no validation images to set aside from train
      config.val_size = 0
    mesh = distributed.make_mesh(config.num_devices)
  except ValueError as e:
    raise spec_lib.ConfigError(str(e)) from None
  variables, step, spec, info = restore_variables(  # overrides apply to the
      workdir, checkpoint, mesh, config)              # model too: checked here
  try:
    dataset = data_lib.load(config)
  except ValueError as e:
    raise spec_lib.ConfigError(str(e)) from None
  if dataset.num_classes != info["num_classes"]:
    raise spec_lib.ConfigError(
        f"dataset {dataset.name!r} has {dataset.num_classes} classes but the "
        f"model in {workdir} was trained on {info['num_classes']}.")
  if not getattr(dataset, split).size:
    raise spec_lib.ConfigError(
        f"the {split} split of {dataset.name!r} is empty"
        + (" (the run held out no validation images, val_size=0): evaluate "
           "--split test, or hold out some with --config.val_size=N"
           if split == "val" else "") + ".")
  if tuple(dataset.image_shape) != tuple(info["image_shape"]):
    raise spec_lib.ConfigError(
        f"dataset {dataset.name!r} gives images of shape "
        f"{tuple(dataset.image_shape)} but the model in {workdir} was trained "
        f"on {tuple(info['image_shape'])}: evaluate it on images of that shape "
        f"(for photos of any size: --config.image_size and "
        f"--config.data_on_device=False).")
  train.check_against_data(config, spec, dataset, mesh.devices.size,
                           training=False)
  evaluate = evaluation.make_evaluator(spec.model, spec.objective, spec.dtype,
                                       config.eval_batch_size, mesh,
                                       per_class=True)
  metrics = evaluate(variables, getattr(dataset, split))
  result = {"workdir": str(workdir), "checkpoint": checkpoint, "step": step,
            "split": split, "dataset": dataset.name,
            "size": getattr(dataset, split).size,
            "objective": spec.objective.name, "metrics": {}, "per_class": {},
            "confusion": {}}
  for key, value in metrics.items():
    if key.startswith("confusion/"):
      name = key.split("/", 1)[1]
      counts = np.asarray(value)
      totals = counts.sum(1)
      result["confusion"][name] = counts.tolist()
      result["per_class"][name] = [
          float(counts[i, i] / totals[i]) if totals[i] else None
          for i in range(len(counts))]
    else:
      result["metrics"][key] = value
  return result
