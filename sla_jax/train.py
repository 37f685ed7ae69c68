"""The SLA trainer: ``train_and_evaluate(config, workdir)``.

Data path, one straight line: uint8 dataset resident on the devices -> per-step
batch indices drawn on device from ``fold_in(seed, step)`` (B distinct images,
as the original's ``random.sample``) -> random crop + flip -> [-1, 1] -> the M
views -> model -> objective loss -> SGD. All of it is one ``jax.jit`` step over a
``('data',)`` mesh: the batch is sharded, parameters and optimiser state are
replicated, the state is donated. The host does no per-step work.

With ``data_on_device=False`` (datasets too large for that) a grain pipeline
on the host reads each process's share of every batch (indices a pure function
of seed and step, :func:`host_batch_indices`) in background threads and
assembles the global batch with ``jax.make_array_from_process_local_data``;
everything from the crop on is the same jitted code.

BatchNorm statistics are those of the *global* batch (all B*M views across all
devices): under ``jit`` with a sharded batch, XLA reduces the moments across
devices, so the result does not depend on the number of devices.

Outputs in ``workdir``: ``config.json``, ``metrics.jsonl`` and TensorBoard
events, Orbax checkpoints in ``checkpoints/`` (latest, to resume) and ``best/``
(best validation accuracy), and ``results.json`` at the end.
"""

from __future__ import annotations

import json
import logging
import os
import time
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

from sla_jax import checkpointing, distributed
from sla_jax import data as data_lib
from sla_jax import metric_writers, models, objectives, optim, preemption
from sla_jax import preprocess, transforms

__all__ = ["ConfigError", "TrainState", "train_and_evaluate"]

# Fields that may change between an interrupted run and its resumption.
_RESUMABLE_CHANGES = ("num_devices", "log_every")


class ConfigError(ValueError):
  """A configuration that cannot run; the message says what to change."""


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any


# ----------------------------------------------------------------- checks ---
def _check_config(config: ml_collections.ConfigDict) -> None:
  try:
    models.heads_for_objective(config.objective, 2, 2)
    transforms.get(config.transform)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  if config.model.get("conv_weight_grad", "auto") not in (
      "auto",) + models.cifar_resnet.CONV_WEIGHT_GRADS:
    raise ConfigError(f"model.conv_weight_grad must be auto, xla or matmul; "
                      f"got {config.model.conv_weight_grad!r}.")
  if config.model.dtype not in ("float32", "bfloat16", "float16"):
    raise ConfigError(f"model.dtype must be float32, bfloat16 or float16; got "
                      f"{config.model.dtype!r}.")
  if config.total_steps <= 0 or config.batch_size <= 0:
    raise ConfigError("total_steps and batch_size must be positive.")
  feature = config.get("feature_transform")
  if feature and feature.groups:
    if config.objective not in ("sla", "sla_sd"):
      raise ConfigError(f"feature_transform.groups={feature.groups} needs "
                        f"objective sla or sla_sd; got {config.objective!r}.")
    if feature.stage not in range(len(models.STAGE_CHANNELS)):
      raise ConfigError(f"feature_transform.stage must be 0 (after the stem), "
                        f"1, 2 or 3; got {feature.stage}.")
    width = models.STAGE_CHANNELS[feature.stage]
    if feature.groups < 2 or width % feature.groups:
      raise ConfigError(f"feature_transform.groups={feature.groups} must be "
                        f">= 2 and divide the {width} channels after stage "
                        f"{feature.stage}.")


def _check_against_data(config, objective, dataset, num_devices) -> None:
  try:
    jax.eval_shape(objective.group.apply,
                   jax.ShapeDtypeStruct((1,) + dataset.image_shape, jnp.float32))
  except ValueError as e:
    raise ConfigError(f"dataset {dataset.name!r} with transform "
                      f"{objective.group.name!r}: {e}") from None
  if config.batch_size % num_devices:
    raise ConfigError(
        f"batch_size={config.batch_size} is not divisible by the "
        f"{num_devices} devices; use a multiple of {num_devices} (or set "
        f"num_devices).")
  if dataset.train.size < config.batch_size:
    raise ConfigError(
        f"batch_size={config.batch_size} is larger than the "
        f"{dataset.train.size} training images; lower batch_size.")
  if config.batch_size % jax.process_count():
    raise ConfigError(f"batch_size={config.batch_size} is not divisible by "
                      f"the {jax.process_count()} processes.")
  if jax.process_count() > 1 and config.data_on_device:
    # The on-device path holds the whole training set on every device; with
    # several processes each one reads only its rows through the host pipeline.
    raise ConfigError(f"data_on_device=True is single-process; with "
                      f"{jax.process_count()} processes set "
                      f"--config.data_on_device=False.")


def _workdir_path(workdir) -> epath.Path:
  """``workdir`` as an epath (local paths made absolute; ``gs://`` kept)."""
  workdir = os.fspath(workdir)
  return epath.Path(workdir if "://" in workdir else os.path.abspath(workdir))


def _check_workdir(config, workdir: epath.Path) -> None:
  """Refuses to resume a run of another config; writes config.json otherwise."""
  path = workdir / "config.json"
  if path.exists() and (workdir / "checkpoints").exists():
    saved = json.loads(path.read_text())
    current = json.loads(config.to_json())
    changed = sorted(k for k in set(saved) | set(current)
                     if saved.get(k) != current.get(k)
                     and k not in _RESUMABLE_CHANGES)
    if changed:
      raise ConfigError(
          f"{workdir} holds a run with a different config (fields: "
          f"{', '.join(changed)}); resume it with the same config or use a "
          f"new --workdir.")
  if distributed.is_main():
    tmp = workdir / "config.json.tmp"  # atomic: other processes may read it
    tmp.write_text(config.to_json(indent=2))
    tmp.replace(path)


# ------------------------------------------------------------------- mesh ---
def _make_mesh(num_devices: int) -> jax.sharding.Mesh:
  devices = jax.devices()
  n = len(devices) if num_devices in (-1, None) else num_devices
  if not 1 <= n <= len(devices):
    raise ConfigError(f"num_devices={num_devices} but JAX sees {len(devices)} "
                      f"devices.")
  if jax.process_count() > 1 and n != len(devices):
    raise ConfigError(f"num_devices={num_devices}: with {jax.process_count()} "
                      f"processes the mesh spans all {len(devices)} devices; "
                      f"use num_devices=-1.")
  # Auto axes: XLA propagates the batch sharding (sharding "in types" is opt-in).
  return jax.make_mesh((n,), ("data",), devices=devices[:n],
                       axis_types=(jax.sharding.AxisType.Auto,))


# ------------------------------------------------------- model, optimiser ---
def build_model_and_optimizer(config, objective, image_shape):
  """Returns ``(model, tx, schedule, init)``; ``init(key)`` makes a TrainState."""
  conv_weight_grad = config.model.get("conv_weight_grad", "auto")
  if conv_weight_grad == "auto":
    conv_weight_grad = "matmul" if jax.default_backend() == "cpu" else "xla"
  feature = config.get("feature_transform")
  model = models.CifarResNet(depth=config.model.depth, heads=objective.heads,
                             dtype=jnp.dtype(config.model.dtype),
                             feature_groups=feature.groups if feature else 0,
                             feature_stage=feature.stage if feature else 2,
                             feature_identity=(feature.identity if feature
                                               else True),
                             conv_weight_grad=conv_weight_grad,
                             use_fast_variance=config.model.get("fast_variance",
                                                                False))
  schedule = optim.step_decay_schedule(config.lr, config.total_steps,
                                       tuple(config.lr_decay_at))
  tx = optim.sgd(schedule, config.momentum, config.weight_decay)

  def init(key):
    dummy = jnp.zeros((1,) + tuple(image_shape), jnp.float32)
    variables = model.init(key, dummy, train=False)
    return TrainState(jnp.zeros((), jnp.int32), variables["params"],
                      variables["batch_stats"], tx.init(variables["params"]))

  return model, tx, schedule, init


# ------------------------------------------------------------ train step ---
def make_train_steps(model, objective, tx, config, num_train, batch_sharding):
  """Returns (device_step, host_step), both ``(state, images, labels, key)``.

  ``device_step`` takes the whole uint8 training set and draws the batch
  itself; ``host_step`` takes a global batch built by the host pipeline. Both
  derive the augmentation from ``fold_in(seed_key, step)``.
  """
  dtype = jnp.dtype(config.model.dtype)

  def step_on_batch(state: TrainState, images, labels, augment_key):
    images = preprocess.random_crop_and_flip(augment_key, images,
                                             config.crop_padding, config.flip)
    views = objective.group.apply(preprocess.normalize(images, dtype))

    def loss_fn(params):
      outputs, new = model.apply(
          {"params": params, "batch_stats": state.batch_stats}, views,
          train=True, mutable=["batch_stats"])
      return objective.loss(outputs, labels), new["batch_stats"]

    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return TrainState(state.step + 1, params, batch_stats, opt_state), loss

  def device_step(state, images_all, labels_all, seed_key):
    index_key, augment_key = jax.random.split(
        jax.random.fold_in(seed_key, state.step))
    index = jax.random.choice(index_key, num_train, (config.batch_size,),
                              replace=False)
    images = jax.lax.with_sharding_constraint(images_all[index], batch_sharding)
    labels = jax.lax.with_sharding_constraint(labels_all[index], batch_sharding)
    return step_on_batch(state, images, labels, augment_key)

  def host_step(state, images, labels, seed_key):
    _, augment_key = jax.random.split(jax.random.fold_in(seed_key, state.step))
    return step_on_batch(state, images, labels, augment_key)

  return device_step, host_step


def host_batch_indices(seed: int, step: int, num_train: int, batch_size: int,
                       process_index: int = 0, process_count: int = 1
                       ) -> np.ndarray:
  """This process's share of step ``step``'s batch: B distinct random images.

  A pure function of (seed, step), so a resumed run reads the same batches.
  """
  rng = np.random.default_rng([seed, step])
  index = rng.choice(num_train, batch_size, replace=False)
  share = batch_size // process_count
  return index[process_index * share:(process_index + 1) * share]


def _host_batches(split: data_lib.Split, config, start_step: int,
                  batch_sharding):
  """grain pipeline: per step, read this process's images; prefetch in threads."""
  import grain  # pylint: disable=g-import-not-at-top

  def read(step):
    return split.read(host_batch_indices(
        config.seed, step, split.size, config.batch_size,
        jax.process_index(), jax.process_count()))

  batches = grain.MapDataset.range(start_step, config.total_steps).map(read)
  batches = batches.to_iter_dataset(grain.ReadOptions(
      num_threads=config.host_threads, prefetch_buffer_size=2 * config.host_threads))
  for images, labels in batches:
    yield (jax.make_array_from_process_local_data(batch_sharding, images),
           jax.make_array_from_process_local_data(batch_sharding, labels))


# ------------------------------------------------------------ evaluation ---
def eval_outputs(model, group, variables, x):
  """Eval-mode model outputs for all ``M`` views of ``x`` (rows ``b*M + j``).

  Runs as ``M`` sequential passes of ``len(x)`` views each (images ``j, j+M,
  ...`` with their views), so aggregated inference costs ``M`` identity-view
  passes over ``x`` rather than one pass of an M-times larger batch.
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


def make_eval_step(model, objective, dtype):
  """``(variables, uint8 images, labels, mask) -> {metric: masked sum}`` (unjitted)."""

  def eval_batch(variables, images, labels, mask):
    outputs = eval_outputs(model, objective.group, variables,
                           preprocess.normalize(images, dtype))
    sums = {name: jnp.sum((jnp.argmax(logits, -1) == labels) * mask)
            for name, logits in objective.predictions(outputs).items()}
    sums["loss"] = jnp.sum(objective.loss(outputs, labels, reduce=False) * mask)
    return sums

  return eval_batch


def _make_evaluator(model, objective, config, mesh):
  n_dev = mesh.devices.size
  batch_size = -(-config.eval_batch_size // n_dev) * n_dev
  local_size = batch_size // jax.process_count()
  batch_sharding = NamedSharding(mesh, P("data"))
  eval_batch = jax.jit(make_eval_step(model, objective,
                                      jnp.dtype(config.model.dtype)),
                       out_shardings=NamedSharding(mesh, P()))

  def evaluate(state: TrainState, split: data_lib.Split):
    """Masked sums over the whole split: every image counted exactly once.

    Each process reads only its rows of every (padded) global batch.
    """
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    totals: dict[str, float] = {}
    for start in range(0, split.size, batch_size):
      rows = start + jax.process_index() * local_size + np.arange(local_size)
      mask = (rows < split.size).astype(np.float32)
      x, y = split.read(np.where(rows < split.size, rows, 0))  # pad: image 0
      put = lambda a: jax.make_array_from_process_local_data(batch_sharding, a)
      sums = eval_batch(variables, put(x), put(y), put(mask))
      for k, v in jax.device_get(sums).items():
        totals[k] = totals.get(k, 0.0) + float(v)
    return {k: v / split.size for k, v in totals.items()}

  return evaluate


# ------------------------------------------------------------------ loop ---
def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str | os.PathLike) -> dict[str, Any]:
  """Trains ``config`` in ``workdir`` (resuming if it holds a checkpoint).

  Returns the content of ``results.json``: the config, the step with the best
  validation accuracy, and every validation and test metric at that step.
  Raises ``FloatingPointError`` on a non-finite loss (nothing non-finite is
  saved) and ``preemption.Preempted`` after SIGTERM (a checkpoint is saved).
  With several processes (``jax.distributed``) every process calls this;
  only process 0 writes logs, metrics and results.
  """
  _check_config(config)
  workdir = _workdir_path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  _check_workdir(config, workdir)
  mesh = _make_mesh(config.num_devices)
  replicated = NamedSharding(mesh, P())
  batch_sharding = NamedSharding(mesh, P("data"))

  # Input.
  try:
    dataset = data_lib.load(config)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  objective = objectives.from_config(config, dataset.num_classes)
  _check_against_data(config, objective, dataset, mesh.devices.size)

  # Model and optimiser.
  model, tx, schedule, init = build_model_and_optimizer(
      config, objective, dataset.image_shape)
  init_key, seed_key = jax.random.split(jax.random.key(config.seed))
  abstract_state = jax.eval_shape(init, init_key)
  abstract_state = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
      abstract_state)

  # Checkpoints.
  latest = ocp.CheckpointManager(
      workdir / "checkpoints",
      options=ocp.CheckpointManagerOptions(max_to_keep=config.keep_checkpoints,
                                           create=True))
  best_manager = ocp.CheckpointManager(
      workdir / "best", options=ocp.CheckpointManagerOptions(max_to_keep=1,
                                                             create=True))
  progress: dict[str, Any] = {"best": None}
  step, restored = checkpointing.restore_newest_readable(
      latest, ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                 progress=ocp.args.JsonRestore()),
      quarantine=workdir / "checkpoints_unusable",
      is_valid=lambda r: bool(checkpointing.all_finite(r["state"])))
  if step is not None:
    state, progress = restored["state"], restored["progress"]
    logging.info("Resumed from %s at step %d.", workdir / "checkpoints", step)
  else:
    state = jax.jit(init, out_shardings=replicated)(init_key)
  start_step = int(jax.device_get(state.step))

  device_step, host_step = make_train_steps(
      model, objective, tx, config, dataset.train.size, batch_sharding)
  if config.data_on_device:
    train_data = jax.device_put(dataset.train.read_all(), replicated)
    batches = iter(lambda: train_data, None)  # the same arrays every step
    step_fn = device_step
  else:
    batches = _host_batches(dataset.train, config, start_step, batch_sharding)
    step_fn = host_step
  train_step = jax.jit(step_fn, donate_argnums=(0,),
                       out_shardings=(replicated, replicated))
  evaluate = _make_evaluator(model, objective, config, mesh)
  main_process = distributed.is_main()
  writer = (metric_writers.MetricWriter(workdir, resume_step=start_step)
            if main_process else metric_writers.NullWriter())
  selection = objective.selection_metric

  def run_evals(state, step):
    metrics = {}
    splits = [("val", dataset.val), ("test", dataset.test)]
    for name, split in splits:
      if split.size:
        for k, v in evaluate(state, split).items():
          metrics[f"{name}/{k}"] = v
    key = f"val/{selection}" if dataset.val.size else None
    best = progress["best"]
    if best is None or key is None or metrics[key] > best["metrics"][key]:
      progress["best"] = {"step": step, "metrics": metrics}
      if step not in best_manager.all_steps():
        best_manager.save(step, args=ocp.args.StandardSave(state))
    return metrics

  # The loop.
  from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
  bar = tqdm(total=config.total_steps, initial=start_step, unit="step",
             dynamic_ncols=True, disable=None if main_process else True)
  try:
    with preemption.Watcher() as watcher:
      step, state = _train_loop(config, state, start_step, train_step,
                                batches, seed_key, run_evals, latest,
                                progress, writer, bar, schedule, objective,
                                workdir, watcher)
  finally:  # also on interruption: finish in-flight saves, flush the logs
    bar.close()
    latest.close()
    best_manager.close()
    writer.close()

  if progress["best"] is None:  # resumed at the end: nothing left to run
    progress["best"] = {"step": step, "metrics": run_evals(state, step)}
  best = progress["best"]
  results = {
      "config": json.loads(config.to_json()),
      "objective": objective.name,
      "transform": objective.group.name,
      "num_views": objective.num_views,
      "selection_metric": f"val/{selection}",
      "best_step": best["step"],
      "final_step": step,
      "val": {k[4:]: v for k, v in best["metrics"].items() if k.startswith("val/")},
      "test": {k[5:]: v for k, v in best["metrics"].items() if k.startswith("test/")},
  }
  if main_process:
    (workdir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    _print_results(results)
  distributed.sync("sla_train_end")
  return results



def _train_loop(config, state, start_step, train_step, batches, seed_key,
                run_evals, latest, progress, writer, bar, schedule, objective,
                workdir, watcher) -> tuple[int, TrainState]:
  """Steps from ``start_step`` to ``total_steps``; logs, evaluates, checkpoints.

  Before every log, evaluation and save the losses since the last check and
  the parameters are checked to be finite, so no checkpoint holds nan/inf.
  """
  selection = objective.selection_metric
  unchecked: list[tuple[int, jax.Array]] = []  # (step, loss) not yet fetched
  # Saved with checkpoints between log steps (preemption), so a resumed run
  # logs the same mean loss.
  losses_since_log: list[float] = list(progress.get("losses_since_log", []))
  tick, tick_step = time.perf_counter(), start_step
  step = start_step
  while step < config.total_steps:
    images, labels = next(batches)
    state, loss = train_step(state, images, labels, seed_key)
    step += 1
    unchecked.append((step, loss))
    bar.update(1)
    preempted = watcher.reached(step)
    log_now = step % config.log_every == 0 or step == config.total_steps
    eval_now = step % config.eval_every == 0 or step == config.total_steps
    save_now = (step % config.checkpoint_every == 0
                or step == config.total_steps or preempted)
    if not (log_now or eval_now or save_now):
      continue
    losses_since_log += _checked_losses(unchecked, state, latest, workdir)
    unchecked = []
    if log_now or eval_now:
      mean_loss = float(np.mean(losses_since_log))
      losses_since_log = []
      elapsed = time.perf_counter() - tick
      images_per_s = (step - tick_step) * config.batch_size / elapsed
      tick, tick_step = time.perf_counter(), step
      metrics = {"train/loss": mean_loss, "train/lr": float(schedule(step - 1)),
                 "train/images_per_s": images_per_s,
                 "train/views_per_s": images_per_s * objective.input_views}
      if eval_now:
        metrics.update(run_evals(state, step))
      writer.write(step, metrics)
      bar.set_postfix({k.replace("train/", ""): f"{v:.4g}"
                       for k, v in metrics.items()
                       if k in ("train/loss", f"val/{selection}",
                                f"test/{selection}")})
    if save_now:
      progress["losses_since_log"] = losses_since_log
      latest.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state),
          progress=ocp.args.JsonSave(progress)))
    if preempted:
      latest.wait_until_finished()
      raise preemption.Preempted(step, workdir / "checkpoints")
  return step, state


def _checked_losses(unchecked, state, latest, workdir) -> list[float]:
  """The losses as floats; FloatingPointError naming the first non-finite step."""
  steps = [s for s, _ in unchecked]
  values = [float(v) for v in jax.device_get([l for _, l in unchecked])]
  bad = checkpointing.first_non_finite(steps, values)
  if bad is None and not bool(checkpointing.all_finite(
      (state.params, state.batch_stats))):
    bad = steps[-1]
  if bad is not None:
    raise FloatingPointError(
        f"non-finite training loss or parameters at step {bad}; stopped "
        f"without saving it. The last good checkpoint is step "
        f"{latest.latest_step()} in {workdir / 'checkpoints'}. Lower lr or "
        f"check the data.")
  return values


def _print_results(results: dict[str, Any]) -> None:
  names = sorted(set(results["val"]) | set(results["test"]))
  print(f"\n{results['objective']} / {results['transform']} "
        f"(M={results['num_views']}): best {results['selection_metric']} at "
        f"step {results['best_step']} of {results['final_step']}")
  print(f"{'metric':<10}{'val':>10}{'test':>10}")
  for name in names:
    cells = [f"{results[s][name]:>10.4f}" if name in results[s] else f"{'-':>10}"
             for s in ("val", "test")]
    print(f"{name:<10}{''.join(cells)}")
