"""The SLA trainer: ``train_and_evaluate(config, workdir)``.

Data path, one straight line: uint8 dataset resident on the devices -> per-step
batch drawn on device from ``fold_in(seed, step)`` (B distinct images, as the
original's ``random.sample``; :mod:`sla_jax.input_pipeline`) -> random crop +
flip -> [-1, 1] -> the M views -> model -> objective loss -> SGD. All of it is
one ``jax.jit`` step over a ``('data',)`` mesh: the batch is sharded,
parameters and optimiser state are replicated, the state is donated. The host
does no per-step work.

With ``data_on_device=False`` (datasets too large for that) a grain pipeline
on the host reads each process's share of every batch (indices a pure function
of seed and step) in background threads and assembles the global batch;
everything from the crop on is the same jitted code.

BatchNorm statistics are those of the *global* batch (all B*M views across all
devices): under ``jit`` with a sharded batch, XLA reduces the moments across
devices, so the result does not depend on the number of devices.

Every jitted call runs ``k`` steps: ``k`` is up to ``steps_per_call = K``
(on-device data) and stops early at the next log, evaluation or checkpoint
step, so the host dispatches once per K steps, and lets at most
:data:`MAX_CALLS_IN_FLIGHT` calls run ahead of it (it waits for the oldest,
never for the newest, so the device stays busy; several CPU devices deadlock
when too many queue up, :mod:`sla_jax.xla_env`). With K > 1 the steps run in a
``while_loop``: a call of K steps with its trip count fixed at compile time
(XLA:GPU then queues the K steps without a host round-trip each), a shorter
call with a run-time trip count; both loops have the same body, so the
results are bit for bit the same however the steps fall into calls, across
resumption too (tested). K = 1
calls the step directly; on the CPU that too is the same run bit for bit
(tested with one and two devices; XLA gives no such promise, so re-check on
other backends).
On the CPU the loop needs the default ``model.conv_weight_grad``: XLA's own
backward convolutions run slowly inside loop bodies (BENCHMARKS.md).

The config is resolved once (:func:`sla_jax.spec.resolve`) into the objective
and the model; evaluation is :mod:`sla_jax.evaluation`'s.

Outputs in ``workdir``: ``config.json``, ``metrics.jsonl`` and TensorBoard
events, Orbax checkpoints in ``checkpoints/`` (latest, to resume) and ``best/``
(best validation accuracy), and ``results.json`` at the end.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from etils import epath
from jax.sharding import NamedSharding, PartitionSpec as P

from sla_jax import augment as augment_lib
from sla_jax import checkpointing, config_lib, distributed, evaluation
from sla_jax import input_pipeline
from sla_jax import data as data_lib
from sla_jax import long_tail, losses, metric_writers, optim, preemption
from sla_jax import preprocess
from sla_jax import spec as spec_lib

__all__ = ["ConfigError", "MAX_CALLS_IN_FLIGHT", "TrainState", "LoopState",
           "check_against_data", "check_workdir", "save_config",
           "make_optimizer", "make_init", "jit_init", "make_train_step", "make_multi_step",
           "MultiStep", "jit_multi_step",
           "variables_of", "workdir_path", "train_and_evaluate"]

ConfigError = spec_lib.ConfigError
# Calls the loop lets run ahead of the host before it waits for the oldest.
# Enough to keep a device fed; far below XLA:CPU's 32 queued programs per
# device, past which several CPU devices deadlock in their collectives
# (sla_jax.xla_env, benchmarks/cpu_collective_deadlock.py).
MAX_CALLS_IN_FLIGHT = 4
# Fields that may change between an interrupted run and its resumption.
_RESUMABLE_CHANGES = ("num_devices", "log_every", "steps_per_call")
# Config fields added after runs were recorded, with the value that behaves as
# the code did before them: a saved config without one reads as having it.
_ADDED_FIELDS = {("model", "fused_batch_norm"): False,
                 ("augment", "autoaugment"): {"policy": "cifar10", "fill": 0.5}}


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any


def variables_of(state: TrainState) -> dict[str, Any]:
  """The Flax variables (params, batch_stats) of a train state."""
  return {"params": state.params, "batch_stats": state.batch_stats}


@dataclasses.dataclass
class LoopState:
  """The loop's progress, saved (as JSON) with every checkpoint.

  ``best``: ``{"step", "metrics"}`` of the best validation result so far;
  ``losses_since_log``: losses of the steps since the last log row, so a run
  resumed between two log steps logs the same mean loss.
  """
  best: dict[str, Any] | None = None
  losses_since_log: list[float] = dataclasses.field(default_factory=list)


# ----------------------------------------------------------------- checks ---
def check_against_data(config, spec: spec_lib.Spec, dataset: data_lib.Dataset,
                       num_devices: int, training: bool = True) -> None:
  """ConfigError unless the config fits this dataset and device count.

  ``training=False`` (evaluation): only the views and the labels; the batch
  and input-pipeline checks concern training.
  """
  objective = spec.objective
  try:
    jax.eval_shape(objective.group.apply,
                   jax.ShapeDtypeStruct((1,) + dataset.image_shape, jnp.float32))
  except ValueError as e:
    raise ConfigError(f"dataset {dataset.name!r} with transform "
                      f"{objective.group.name!r}: {e}") from None
  if spec.augment is not None:  # its parameters' values, before any tracing
    try:
      jax.eval_shape(spec.augment, jax.random.key(0),
                     jax.ShapeDtypeStruct((2,) + dataset.image_shape, jnp.float32),
                     jax.ShapeDtypeStruct((2,), jnp.int32))
    except ValueError as e:
      raise ConfigError(f"augment {config.augment.name!r}: {e}") from None
  for name in ("train", "val", "test"):
    split = getattr(dataset, name)
    if split.labels is not None:
      try:
        losses.check_labels(split.labels, dataset.num_classes,
                            f"dataset {dataset.name!r} {name} labels")
      except ValueError as e:
        raise ConfigError(str(e)) from None
  if not training:
    return
  if config.batch_size % num_devices:
    raise ConfigError(
        f"batch_size={config.batch_size} is not divisible by the "
        f"{num_devices} devices; use a multiple of {num_devices}"
        + (" (or set num_devices)." if jax.process_count() == 1 else "."))
  if dataset.train.size < config.batch_size:
    raise ConfigError(
        f"batch_size={config.batch_size} is larger than the "
        f"{dataset.train.size} training images; lower batch_size.")
  if config.batch_size % jax.process_count():
    raise ConfigError(f"batch_size={config.batch_size} is not divisible by "
                      f"the {jax.process_count()} processes.")
  try:
    input_pipeline.check_draw(config.get("batch_draw", "permutation"))
  except ValueError as e:
    raise ConfigError(str(e)) from None
  if config.get("steps_per_call", 1) < 1:
    raise ConfigError(f"steps_per_call must be >= 1; got {config.steps_per_call}.")
  if config.get("steps_per_call", 1) > 1 and not config.data_on_device:
    raise ConfigError("steps_per_call > 1 needs data_on_device=True (the host "
                      "pipeline feeds one batch per call).")
  if dataset.train.read_train is not None and config.data_on_device:
    raise ConfigError(f"image_size={config.image_size} crops images of any "
                      f"size on the host: set --config.data_on_device=False.")
  if jax.process_count() > 1 and config.data_on_device:
    # The on-device path holds the whole training set on every device; with
    # several processes each one reads only its rows through the host pipeline.
    raise ConfigError(f"data_on_device=True is single-process; with "
                      f"{jax.process_count()} processes set "
                      f"--config.data_on_device=False.")


def check_whole_numbers(config, names) -> None:
  """ConfigError unless each field of ``names`` (absent: fine) is an int >= 1."""
  for name in names:
    value = config.get(name, 1)
    if not isinstance(value, int) or value < 1:
      raise ConfigError(f"{name} must be a whole number >= 1; got {value!r}.")


def check_numbers(config) -> None:
  """ConfigError unless the schedule, optimiser, logging and crop numbers can run."""
  check_whole_numbers(config, ("total_steps", "log_every", "eval_every",
                               "checkpoint_every", "eval_batch_size",
                               "keep_checkpoints"))
  if not config.lr > 0:
    raise ConfigError(f"lr must be > 0; got {config.lr}.")
  if not 0 <= config.momentum < 1:
    raise ConfigError(f"momentum must be in [0, 1); got {config.momentum}.")
  if not config.weight_decay >= 0:
    raise ConfigError(f"weight_decay must be >= 0; got {config.weight_decay}.")
  if config.get("crop_padding", 0) < 0:
    raise ConfigError(f"crop_padding must be >= 0; got {config.crop_padding}.")
  bad = [f for f in config.lr_decay_at if not 0 <= f <= 1]
  if bad:
    raise ConfigError(f"lr_decay_at lists fractions of total_steps in [0, 1]; "
                      f"got {tuple(config.lr_decay_at)}.")


def workdir_path(workdir) -> epath.Path:
  """``workdir`` as an epath (local paths made absolute; ``gs://`` kept)."""
  workdir = os.fspath(workdir)
  return epath.Path(workdir if "://" in workdir else os.path.abspath(workdir))


def _with_added_fields(saved: dict[str, Any]) -> dict[str, Any]:
  """``saved`` (a run's config.json) with the :data:`_ADDED_FIELDS` it predates."""
  for (*parents, name), value in _ADDED_FIELDS.items():
    node = saved
    for parent in parents:
      node = node.get(parent)
      if not isinstance(node, dict):
        break
    else:
      node.setdefault(name, copy.deepcopy(value))
  return saved


def check_workdir(config, workdir: epath.Path,
                  resumable: tuple[str, ...] = _RESUMABLE_CHANGES) -> None:
  """Refuses to resume a run of another config (fields outside ``resumable``).

  Reads only: :func:`save_config` writes the config once every check passed,
  so a start that fails leaves an existing workdir as it was.
  """
  path = workdir / "config.json"
  if path.exists() and (workdir / "checkpoints").exists():
    try:
      saved = _with_added_fields(json.loads(path.read_text()))
    except (json.JSONDecodeError, AttributeError) as e:  # not a JSON object
      raise ConfigError(
          f"{path} is not a config the trainer wrote ({e}); delete it to "
          f"resume the checkpoints beside it with this config, or use a new "
          f"--workdir.") from None
    saved = config_lib.dotted(saved)  # a changed field by its own name
    current = config_lib.dotted(json.loads(config.to_json()))
    changed = sorted(k for k in set(saved) | set(current)
                     if saved.get(k) != current.get(k)
                     and k.split(".")[0] not in resumable)
    if changed:
      raise ConfigError(
          f"{workdir} holds a run with a different config (fields: "
          f"{', '.join(changed)}); resume it with the same config or use a "
          f"new --workdir.")


def save_config(config, workdir: epath.Path) -> None:
  """Creates ``workdir`` and writes its ``config.json`` (process 0, atomically)."""
  workdir.mkdir(parents=True, exist_ok=True)
  if distributed.is_main():
    tmp = workdir / "config.json.tmp"  # atomic: other processes may read it
    tmp.write_text(config.to_json(indent=2))
    tmp.replace(workdir / "config.json")


def check_workdir_shared(config, workdir: epath.Path) -> None:
  """ConfigError on a process that does not see the ``config.json`` process 0
  wrote: each host would otherwise write its own checkpoints and wait at the
  first save for the others."""
  if distributed.is_main():
    return
  path = workdir / "config.json"
  if not path.exists() or path.read_text() != config.to_json(indent=2):
    raise ConfigError(
        f"--workdir {workdir} is not one folder shared by every process: this "
        f"process does not see the config.json process 0 wrote there. Give "
        f"every process the same shared folder (gs://..., or a network file "
        f"system).")


# ------------------------------------------------- optimiser, state, step ---
def make_optimizer(config) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The original's SGD and step-decay schedule for ``config``."""
  schedule = optim.step_decay_schedule(config.lr, config.total_steps,
                                       tuple(config.lr_decay_at))
  return optim.sgd(schedule, config.momentum, config.weight_decay), schedule


# The initial state is computed once: on the CPU, LLVM at -O1 compiles it (the
# random initialisers) about twice as fast as the default -O2 (BENCHMARKS.md),
# to the same bits (tested).
_INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 1}


def jit_init(init: Callable, **jit_kwargs) -> Callable:
  """``jax.jit(init, **jit_kwargs)``, compiled quickly on the CPU (same results)."""
  options = _INIT_COMPILER_OPTIONS if jax.default_backend() == "cpu" else None
  return jax.jit(init, compiler_options=options, **jit_kwargs)


def make_init(model, tx, image_shape) -> Callable[[jax.Array], TrainState]:
  """``init(key) -> TrainState`` at step 0."""

  def init(key):
    dummy = jnp.zeros((1,) + tuple(image_shape), jnp.float32)
    variables = model.init(key, dummy, train=False)
    return TrainState(jnp.zeros((), jnp.int32), variables["params"],
                      variables["batch_stats"], tx.init(variables["params"]))

  return init


def make_train_step(spec: spec_lib.Spec, tx, config, batch_sharding,
                    data_on_device: bool = True) -> Callable:
  """``step(state, images, labels, seed_key) -> (state, loss)`` (unjitted).

  ``data_on_device``: ``images, labels`` are the whole uint8 training set and
  the step draws its batch; otherwise they are the step's global batch. The
  batch and augmentation keys come from ``fold_in(seed_key, step)``.
  """
  model, objective = spec.model, spec.objective
  reduce_images = make_image_reduction(spec)

  def step(state: TrainState, images, labels, seed_key):
    index_key, augment_key = jax.random.split(
        jax.random.fold_in(seed_key, state.step))
    if data_on_device:
      images, labels = input_pipeline.device_batch(
          index_key, images, labels, config.batch_size, batch_sharding,
          config.get("batch_draw", "permutation"))
    images = preprocess.random_crop_and_flip(augment_key, images,
                                             config.crop_padding, config.flip)
    if spec.augment is None:
      images, mixed = preprocess.normalize(images, spec.dtype), None
    else:  # strong augmentation on [0, 1] images, before the views
      images, mixed = spec.augment(jax.random.fold_in(augment_key, 1),
                                   preprocess.to_unit(images), labels)
      images = preprocess.unit_to_normalized(images, spec.dtype)
    views = objective.group.apply(images)

    def loss_fn(params):
      outputs, new = model.apply(
          {"params": params, "batch_stats": state.batch_stats}, views,
          train=True, mutable=["batch_stats"])
      if mixed is None:
        per_image = objective.loss(outputs, labels, reduce=False)
        loss = reduce_images(per_image, labels, state.step)
      else:
        loss = reduce_images(mixed_image_losses(objective, outputs, mixed),
                             mixed, state.step)
      return loss, new["batch_stats"]

    # The batch's mesh in context: library code that splits work per device
    # finds it (conv_ops' weight gradient sums each device's images apart).
    with jax.sharding.use_abstract_mesh(batch_sharding.mesh.abstract_mesh):
      (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
          state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return TrainState(state.step + 1, params, batch_stats, opt_state), loss

  return step


def mixed_image_losses(objective, outputs, mixed: augment_lib.MixedLabels
                       ) -> jax.Array:
  """``[B]``: ``w * L(labels) + (1 - w) * L(partner_labels)`` per image.

  The objective's own per-image loss of each label set, so SLA trains on the
  same mixture of the joint labels ``y * M + j`` of both images.
  """
  w = mixed.weight
  return (w * objective.loss(outputs, mixed.labels, reduce=False) +
          (1.0 - w) * objective.loss(outputs, mixed.partner_labels,
                                     reduce=False))


def make_image_reduction(spec: spec_lib.Spec) -> Callable:
  """``(per_image [B], labels, step) -> loss``: the batch mean, or DRW's weighted mean.

  With deferred re-weighting (``spec.class_weights``) each image's loss is
  weighted by its class's weight from ``spec.reweight_step`` on
  (:func:`sla_jax.long_tail.reweighted_mean`); before it, all weights are 1.
  ``labels``: ``[B]`` ints, or :class:`sla_jax.augment.MixedLabels` (a mix
  weighs ``w * weight(labels) + (1 - w) * weight(partner_labels)``).
  """
  if not spec.class_weights:
    return lambda per_image, labels, step: per_image.mean()
  class_weights = jnp.asarray(spec.class_weights, jnp.float32)

  def reduce(per_image, labels, step):
    if isinstance(labels, augment_lib.MixedLabels):
      w = labels.weight
      image_weights = (w * class_weights[labels.labels] +
                       (1.0 - w) * class_weights[labels.partner_labels])
    else:
      image_weights = class_weights[labels]
    weights = jnp.where(step >= spec.reweight_step, image_weights, 1.0)
    return long_tail.reweighted_mean(per_image, weights)

  return reduce


def make_multi_step(step: Callable, max_steps: int) -> Callable:
  """``(state, images, labels, seed_key, num_steps) -> (state, [max_steps] losses)``.

  ``max_steps == 1``: the step itself. Otherwise ``step`` runs ``num_steps <=
  max_steps`` times in a ``while_loop`` XLA keeps rolled, with losses past
  ``num_steps`` 0. ``num_steps`` a Python int gives the loop a trip count
  known at compile time, which XLA:GPU runs without reading the loop's
  predicate back to the host (no host synchronisation per step); a traced
  int32 gives a run-time trip count (one executable for every count; on a
  GPU the host waits for each step's predicate). The loop body is the same
  computation either way, so a run is bitwise the same however its steps are
  split into calls (tested on the CPU).
  """

  def multi_step(state, images, labels, seed_key, num_steps):
    if max_steps == 1:
      state, loss = step(state, images, labels, seed_key)
      return state, loss[None]

    def body(carry):
      i, state, losses_ = carry
      state, loss = step(state, images, labels, seed_key)
      return i + 1, state, losses_.at[i].set(loss)

    carry = (jnp.int32(0), state, jnp.zeros((max_steps,), jnp.float32))
    _, state, losses_ = jax.lax.while_loop(lambda c: c[0] < num_steps, body,
                                           carry)
    return state, losses_

  return multi_step


@dataclasses.dataclass(frozen=True)
class MultiStep:
  """The jitted :func:`make_multi_step`: ``(state, images, labels, seed_key, k) -> (state, losses)``.

  A call of ``k == max_steps`` steps runs :attr:`full` (trip count known at
  compile time: no host synchronisation per step on a GPU); a shorter call
  (at a log / eval / save boundary that ``max_steps`` does not divide) runs
  :attr:`partial` with a run-time trip count, compiled on first use.
  """
  full: Callable      # jitted (state, images, labels, seed_key)
  partial: Callable   # jitted (state, images, labels, seed_key, k)
  max_steps: int

  def __call__(self, state, images, labels, seed_key, k: int):
    if k == self.max_steps:
      return self.full(state, images, labels, seed_key)
    return self.partial(state, images, labels, seed_key, k)


def warn_if_calls_cut_short(config) -> None:
  """Logs a warning when ``steps_per_call`` does not divide the log / eval / save intervals.

  Legal, but the calls cut short there run :attr:`MultiStep.partial`, whose
  run-time trip count makes a GPU host wait once per step.
  """
  k = config.get("steps_per_call", 1)
  uneven = [name for name in ("log_every", "eval_every", "checkpoint_every")
            if k > 1 and config[name] % k]
  if uneven:
    logging.warning(
        "steps_per_call=%d does not divide %s: the calls cut short there run "
        "a second executable whose loop makes a GPU host wait once per step; "
        "a K dividing them keeps every call full.", k, ", ".join(
            f"{n}={config[n]}" for n in uneven))


def jit_multi_step(step: Callable, max_steps: int, **jit_kwargs) -> MultiStep:
  """:class:`MultiStep` of ``step`` (``jit_kwargs``: shardings, donation) for up to ``max_steps`` steps a call."""
  multi_step = make_multi_step(step, max_steps)
  full = jax.jit(lambda state, images, labels, seed_key: multi_step(
      state, images, labels, seed_key, max_steps), **jit_kwargs)
  return MultiStep(full, jax.jit(multi_step, **jit_kwargs), max_steps)


# ------------------------------------------------------------------ loop ---
@dataclasses.dataclass
class _Loop:
  """The fixed parts of one training run; :meth:`run` steps it to the end."""
  config: ml_collections.ConfigDict
  workdir: epath.Path
  objective: Any
  dataset: data_lib.Dataset
  train_steps: MultiStep  # (state, images, labels, seed_key, k) -> (state, losses)
  batches: Iterator
  seed_key: jax.Array
  evaluate: Callable
  schedule: optax.Schedule
  latest: ocp.CheckpointManager
  best_manager: ocp.CheckpointManager
  writer: Any
  bar: Any
  progress: LoopState

  def evaluate_all(self, state: TrainState, step: int) -> dict[str, float]:
    """Val and test metrics; records (and saves) a new best validation result."""
    metrics = {}
    for name in ("val", "test"):
      split = getattr(self.dataset, name)
      if split.size:
        for k, v in self.evaluate(variables_of(state), split).items():
          metrics[f"{name}/{k}"] = v
    key = (f"val/{self.objective.selection_metric}" if self.dataset.val.size
           else None)
    best = self.progress.best
    if best is None or key is None or metrics[key] > best["metrics"][key]:
      self.progress.best = {"step": step, "metrics": metrics}
      if step not in self.best_manager.all_steps():
        self.best_manager.save(step, args=ocp.args.StandardSave(state))
    return metrics

  def run(self, state: TrainState, watcher) -> tuple[int, TrainState]:
    """Steps to ``total_steps``; logs, evaluates, checkpoints.

    Before every log, evaluation and save the losses since the last check and
    the parameters are checked to be finite, so no checkpoint holds nan/inf.
    """
    config, selection = self.config, self.objective.selection_metric
    # (last step, steps in the call, their losses) not yet fetched.
    unchecked: list[tuple[int, int, jax.Array]] = []
    step = int(jax.device_get(state.step))
    tick, tick_step = time.perf_counter(), step
    while step < config.total_steps:
      k = self._steps_in_call(step)
      images, labels = next(self.batches)
      state, losses_ = self.train_steps(state, images, labels, self.seed_key, k)
      unchecked.append((step + k, k, losses_))
      if len(unchecked) > MAX_CALLS_IN_FLIGHT:  # older calls: waited for already
        jax.block_until_ready(unchecked[-MAX_CALLS_IN_FLIGHT - 1][2])
      step += k
      self.bar.update(k)
      preempted = watcher.reached(step)
      log_now = step % config.log_every == 0 or step == config.total_steps
      eval_now = step % config.eval_every == 0 or step == config.total_steps
      save_now = (step % config.checkpoint_every == 0
                  or step == config.total_steps or preempted)
      if not (log_now or eval_now or save_now):
        continue
      self.progress.losses_since_log += self._checked_losses(unchecked, state)
      unchecked = []
      if log_now or eval_now:
        elapsed = time.perf_counter() - tick
        images_per_s = (step - tick_step) * config.batch_size / elapsed
        tick, tick_step = time.perf_counter(), step
        metrics = {"train/loss": float(np.mean(self.progress.losses_since_log)),
                   "train/lr": float(self.schedule(step - 1)),
                   "train/images_per_s": images_per_s,
                   "train/views_per_s": images_per_s * self.objective.input_views}
        self.progress.losses_since_log = []
        if eval_now:
          metrics.update(self.evaluate_all(state, step))
        self.writer.write(step, {k: v for k, v in metrics.items()
                                 if "/per_class/" not in k})
        self.bar.set_postfix({k.replace("train/", ""): f"{v:.4g}"
                              for k, v in metrics.items()
                              if k in ("train/loss", f"val/{selection}",
                                       f"test/{selection}")})
      if save_now:
        self.latest.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            progress=ocp.args.JsonSave(dataclasses.asdict(self.progress))))
      if preempted:
        self.latest.wait_until_finished()
        raise preemption.Preempted(step, self.workdir / "checkpoints")
    return step, state

  def _steps_in_call(self, step: int) -> int:
    """Up to ``steps_per_call`` steps, ending at the next log / eval / save step."""
    config = self.config
    k = min(config.get("steps_per_call", 1), config.total_steps - step)
    for every in (config.log_every, config.eval_every, config.checkpoint_every):
      k = min(k, every - step % every)
    return k

  def _checked_losses(self, unchecked, state) -> list[float]:
    """The losses as floats; FloatingPointError naming the first non-finite step."""
    steps, values = [], []
    fetched = jax.device_get([l for _, _, l in unchecked])
    for (last, k, _), losses_ in zip(unchecked, fetched):
      steps += range(last - k + 1, last + 1)
      values += [float(v) for v in losses_[:k]]
    bad = checkpointing.first_non_finite(steps, values)
    if bad is None and not bool(checkpointing.all_finite(
        (state.params, state.batch_stats))):
      bad = steps[-1]
    if bad is not None:
      raise FloatingPointError(
          f"non-finite training loss or parameters at step {bad}; stopped "
          f"without saving it. The last good checkpoint is step "
          f"{self.latest.latest_step()} in {self.workdir / 'checkpoints'}. "
          f"Lower lr or check the data.")
    return values


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str | os.PathLike) -> dict[str, Any]:
  """Trains ``config`` in ``workdir`` (resuming if it holds a checkpoint).

  Returns the content of ``results.json``: the config, the step with the best
  validation accuracy, and every validation and test metric at that step.
  Raises ConfigError for a config or dataset that cannot run (before anything
  is trained), ``FloatingPointError`` on a non-finite loss (nothing
  non-finite is saved) and ``preemption.Preempted`` after SIGTERM (a
  checkpoint is saved). With several processes (``jax.distributed``) every
  process calls this; only process 0 writes logs, metrics and results.
  """
  try:  # several processes: one config and workdir, or one error everywhere
    distributed.check_same_everywhere(
        "config or --workdir", f"{config.to_json(sort_keys=True)}\n{workdir}")
  except ValueError as e:
    raise ConfigError(str(e)) from None
  with distributed.agreed_errors(ConfigError):  # not a hang if only some fail
    spec_lib.resolve(config, num_classes=2)  # config errors before any I/O
    check_numbers(config)
    workdir = workdir_path(workdir)
    check_workdir(config, workdir)
    try:
      mesh = distributed.make_mesh(config.num_devices)
      dataset = data_lib.load(config)
    except ValueError as e:
      raise ConfigError(str(e)) from None
    spec = spec_lib.resolve(config, dataset.num_classes, dataset.class_counts)
    check_against_data(config, spec, dataset, mesh.devices.size)
  save_config(config, workdir)  # every check passed: nothing written before
  distributed.sync("sla_train_config_saved")
  with distributed.agreed_errors(ConfigError):
    check_workdir_shared(config, workdir)
  if distributed.is_main():  # what sla-eval / inference.load rebuild from
    (workdir / "dataset.json").write_text(json.dumps(
        {"name": dataset.name, "num_classes": dataset.num_classes,
         "image_shape": list(dataset.image_shape)}) + "\n")
  replicated = NamedSharding(mesh, P())
  batch_sharding = NamedSharding(mesh, P("data"))

  # State: restored from the newest readable checkpoint, or initialised.
  tx, schedule = make_optimizer(config)
  init = make_init(spec.model, tx, dataset.image_shape)
  init_key, seed_key = jax.random.split(jax.random.key(config.seed))
  abstract_state = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
      jax.eval_shape(init, init_key))
  latest, best_manager, step, restored = open_checkpoints(
      workdir, config.keep_checkpoints, abstract_state)
  if step is not None:
    state, progress = restored["state"], LoopState(**restored["progress"])
    logging.info("Resumed from %s at step %d.", workdir / "checkpoints", step)
  else:
    state = jit_init(init, out_shardings=replicated)(init_key)
    progress = LoopState()
  start_step = int(jax.device_get(state.step))

  # Batches and the jitted step.
  if config.data_on_device:
    train_data = jax.device_put(dataset.train.read_all(), replicated)
    batches = iter(lambda: train_data, None)  # the same arrays every step
  else:
    batches = input_pipeline.host_batches(
        dataset.train, config.seed, config.batch_size, start_step,
        config.total_steps, batch_sharding, config.host_threads)
  warn_if_calls_cut_short(config)
  train_steps = jit_multi_step(
      make_train_step(spec, tx, config, batch_sharding, config.data_on_device),
      config.get("steps_per_call", 1), donate_argnums=(0,),
      out_shardings=(replicated, replicated))

  main_process = distributed.is_main()
  from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
  loop = _Loop(
      config=config, workdir=workdir, objective=spec.objective,
      dataset=dataset, train_steps=train_steps, batches=batches,
      seed_key=seed_key,
      evaluate=evaluation.make_evaluator(
          spec.model, spec.objective, spec.dtype, config.eval_batch_size, mesh,
          class_groups=class_groups(config, dataset)),
      schedule=schedule, latest=latest, best_manager=best_manager,
      writer=(metric_writers.MetricWriter(workdir, resume_step=start_step)
              if main_process else metric_writers.NullWriter()),
      bar=tqdm(total=config.total_steps, initial=start_step, unit="step",
               dynamic_ncols=True, disable=None if main_process else True),
      progress=progress)
  try:
    with preemption.Watcher() as watcher:
      step, state = loop.run(state, watcher)
  finally:  # also on interruption: finish in-flight saves, flush the logs
    loop.bar.close()
    latest.close()
    best_manager.close()
    loop.writer.close()

  if progress.best is None:  # resumed at the end: nothing left to run
    progress.best = {"step": step, "metrics": loop.evaluate_all(state, step)}
  results = make_results(config, spec.objective, progress.best, step,
                         dataset.class_counts, mesh.devices.size,
                         mesh.devices.flat[0].device_kind)
  if main_process:
    (workdir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print_results(results)
  distributed.sync("sla_train_end")
  return results


def class_groups(config, dataset: data_lib.Dataset
                 ) -> dict[str, np.ndarray] | None:
  """Many / medium / few-shot class masks for a long-tailed run, else None."""
  if config.get("imbalance_ratio", 1.0) == 1.0 or dataset.class_counts is None:
    return None
  return long_tail.class_groups(dataset.class_counts)


def open_checkpoints(workdir: epath.Path, keep: int, abstract_state):
  """``(latest, best, step, restored)``: the workdir's checkpoint managers and its newest readable checkpoint.

  ``latest`` keeps ``keep`` checkpoints, ``best`` one; ``restored`` holds
  ``state`` (shaped like ``abstract_state``) and ``progress`` (JSON), or
  ``step`` is None. Unreadable or non-finite checkpoints are moved to
  ``checkpoints_unusable/`` (:func:`sla_jax.checkpointing.restore_newest_readable`).
  """
  # Orbax names its multi-process barriers after the step: the two managers
  # saving the same step at once (the final step is often both) would wait on
  # one barrier twice ("already ongoing") unless their names differ.
  def options(name, max_to_keep):
    return ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True,
        multiprocessing_options=ocp.options.MultiprocessingOptions(
            barrier_sync_key_prefix=name))

  latest = ocp.CheckpointManager(workdir / "checkpoints",
                                 options=options("latest", keep))
  best = ocp.CheckpointManager(workdir / "best", options=options("best", 1))
  step, restored = checkpointing.restore_newest_readable(
      latest, ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                 progress=ocp.args.JsonRestore()),
      quarantine=workdir / "checkpoints_unusable",
      is_valid=lambda r: bool(checkpointing.all_finite(r["state"])))
  return latest, best, step, restored


def make_results(config, objective, best: dict[str, Any], final_step: int,
                 class_counts: np.ndarray | None = None,
                 devices: int | None = None,
                 device_kind: str | None = None) -> dict[str, Any]:
  """The content of ``results.json``.

  ``devices``: how many devices the (last part of the) run used, which sets
  the order of its cross-device sums (results agree across counts to float
  rounding); ``device_kind``: what they were (e.g. ``NVIDIA H100 80GB HBM3``),
  so that a run's summary names its machine. Per-class accuracies (long-tailed runs) go to ``per_class``: split ->
  metric -> ``[N]`` list; ``val`` and ``test`` hold the scalar metrics.
  """
  per_class = {split: {k[len(split) + 11:]: v for k, v in best["metrics"].items()
                       if k.startswith(f"{split}/per_class/")}
               for split in ("val", "test")}
  scalars = {k: v for k, v in best["metrics"].items() if "/per_class/" not in k}
  best = {**best, "metrics": scalars}
  extra = {}
  if devices is not None:
    extra["devices"] = devices
  if device_kind is not None:
    extra["device_kind"] = device_kind
  if any(per_class.values()):
    extra["per_class"] = per_class
    if class_counts is not None:
      extra["train_class_counts"] = np.asarray(class_counts).tolist()
  return {
      "config": json.loads(config.to_json()),
      "objective": objective.name,
      "transform": objective.group.name,
      "num_views": objective.num_views,
      "feature_views": objective.feature_views,
      "selection_metric": f"val/{objective.selection_metric}",
      "best_step": best["step"],
      "final_step": final_step,
      "val": {k[4:]: v for k, v in best["metrics"].items() if k.startswith("val/")},
      "test": {k[5:]: v for k, v in best["metrics"].items() if k.startswith("test/")},
      **extra,
  }


def print_results(results: dict[str, Any]) -> None:
  """The results table the CLI prints."""
  names = sorted(set(results["val"]) | set(results["test"]))
  variants = results.get("feature_views", 1)
  views = (f"M={results['num_views']}" if variants == 1 else
           f"M={results['num_views'] // variants} x {variants} feature variants")
  chosen = (f"best {results['selection_metric']} at step" if results["val"]
            else "no validation split: the last evaluation, step")
  print(f"\n{results['objective']} / {results['transform']} ({views}): "
        f"{chosen} {results['best_step']} of {results['final_step']}")
  print(f"{'metric':<10}{'val':>10}{'test':>10}")
  for name in names:
    cells = [f"{results[s][name]:>10.4f}" if name in results[s] else f"{'-':>10}"
             for s in ("val", "test")]
    print(f"{name:<10}{''.join(cells)}")
