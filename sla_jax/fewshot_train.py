"""Few-shot meta-training with SLA: ``meta_train_and_evaluate(config, workdir)``.

Data path, one straight line: every image of the dataset (train/ and test/
folders together: a class's pool is all its images) in host memory as uint8 ->
each step, ``config.fewshot.episodes_per_step`` episodes drawn from the
meta-train classes by :func:`sla_jax.fewshot.sample_episode` (host numpy, a
pure function of ``(seed, step)``, so a resumed run sees the same episodes) ->
their images to the device -> one jitted step: random crop + flip -> [-1, 1]
-> the M views (SLA) -> model features -> few-shot head -> loss -> optimiser
update. BatchNorm uses the statistics of the step's images (all episodes, all
views), as ProtoNet and MetaOptNet do.

Objectives (:data:`OBJECTIVES`): ``protonet`` trains the head over the ``W``
classes of the identity images; ``sla`` trains the head over the ``W * M``
(class, transformation) pairs of all views
(:func:`sla_jax.fewshot.sla_logits`) and predicts with SI and AG. Heads
(:data:`HEADS`): ``protonet``, ``ridge`` (R2D2), ``svm`` (MetaOptNet; needs
jaxopt and is slow on CPUs).

Evaluation (:class:`Evaluator`): episodes from a fixed stream
(``config.fewshot.val_seed`` / ``test_seed``, independent of the training
seed, so every model sees the same episodes); eval-mode BatchNorm makes an
image's features independent of its episode, so every image the episodes use
is embedded once and the episodes only gather features. Meta-validation every
``eval_every`` steps selects the best checkpoint; the meta-test at that step,
``W``-way with each of ``test_shots``, gives mean accuracy and 95 % interval
per prediction.

Outputs in ``workdir``: ``config.json``, ``metrics.jsonl`` (and TensorBoard
events), Orbax checkpoints in ``checkpoints/`` (latest, to resume) and
``best/`` (best meta-validation accuracy), ``results.json`` at the end.
One device; the step is not sharded.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp

from sla_jax import checkpointing, fewshot, metric_writers, models
from sla_jax import optim, preemption, preprocess, train, transforms
from sla_jax import data as data_lib
from sla_jax import spec as spec_lib

__all__ = ["ConfigError", "Objective", "OBJECTIVES", "HEADS", "OPTIMIZERS",
           "MetaSpec", "resolve", "FewShotData", "load_data", "train_batch",
           "make_train_step", "Evaluator", "meta_train_and_evaluate"]

ConfigError = train.ConfigError
# Fields that may change between an interrupted run and its resumption.
_RESUMABLE_CHANGES = ("log_every",)


# -------------------------------------------------------------- objectives ---
@dataclasses.dataclass(frozen=True)
class Objective:
  """How an episode's features become a training loss and test predictions.

  ``loss(support, support_labels, query, query_labels, ways, views, head)``
  and ``predict(support, support_labels, query, ways, views, head) -> {metric:
  [Q, W] logits}`` take view features laid out as
  :meth:`sla_jax.transforms.TransformGroup.apply` does (row ``b * views + j``
  is view ``j`` of image ``b``). ``uses_views``: False trains and tests on the
  identity images alone (``views = 1``). ``selection``: the metric that picks
  the best meta-validation step.
  """
  name: str
  uses_views: bool
  loss: Callable[..., jax.Array]
  predict: Callable[..., dict[str, jax.Array]]
  selection: str


def _cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  return optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), labels).mean()


def _protonet_loss(support, support_labels, query, query_labels, ways, views,
                   head):
  del views  # always 1
  return _cross_entropy(head(support, support_labels, query, ways),
                        query_labels)


def _protonet_predict(support, support_labels, query, ways, views, head):
  del views  # always 1
  return {"acc": head(support, support_labels, query, ways)}


def _sla_loss(support, support_labels, query, query_labels, ways, views, head):
  joint = fewshot.sla_logits(support, support_labels, query, ways, views,
                             head)["joint"]
  return _cross_entropy(joint, fewshot.joint_episode_labels(query_labels,
                                                            views))


def _sla_predict(support, support_labels, query, ways, views, head):
  out = fewshot.sla_logits(support, support_labels, query, ways, views, head)
  return {"acc_si": out["si"], "acc_ag": out["ag"]}


OBJECTIVES: dict[str, Objective] = {
    "protonet": Objective("protonet", uses_views=False, loss=_protonet_loss,
                          predict=_protonet_predict, selection="acc"),
    "sla": Objective("sla", uses_views=True, loss=_sla_loss,
                     predict=_sla_predict, selection="acc_ag"),
}

HEADS: dict[str, fewshot.Head] = {
    "protonet": fewshot.protonet_logits,
    "ridge": fewshot.ridge_logits,
    "svm": fewshot.svm_logits,
}

OPTIMIZERS: dict[str, Callable[[Any, optax.Schedule],
                               optax.GradientTransformation]] = {
    "sgd": lambda c, lr: optim.sgd(lr, c.momentum, c.weight_decay),
    "adam": lambda c, lr: optax.chain(
        optax.add_decayed_weights(c.weight_decay), optax.adam(lr)),
}


def _lookup(table: dict, kind: str, name: str):
  try:
    return table[name]
  except KeyError:
    raise ConfigError(f"Unknown {kind} {name!r}; valid {kind}s are: "
                      f"{', '.join(table)}.") from None


@dataclasses.dataclass(frozen=True)
class MetaSpec:
  """A few-shot config resolved once (by :func:`resolve`) into what runs."""
  objective: Objective
  head: fewshot.Head
  head_name: str
  group: transforms.TransformGroup
  model: Any
  dtype: Any

  @property
  def num_views(self) -> int:
    """``M``: the views each image becomes (1 unless the objective uses them)."""
    return self.group.num_views if self.objective.uses_views else 1

  def views(self, images: jax.Array) -> jax.Array:
    """``[B, ...] -> [B * M, ...]``, row ``b * M + j`` view ``j`` of image ``b``."""
    return self.group.apply(images) if self.objective.uses_views else images


def resolve(config) -> MetaSpec:
  """The objective, head, transform group and model of ``config`` (ConfigError)."""
  objective = _lookup(OBJECTIVES, "objective", config.objective)
  head = _lookup(HEADS, "head", config.head)
  _lookup(OPTIMIZERS, "optimizer", config.optimizer)
  try:
    group = transforms.get(config.transform)
    kwargs = {k: v for k, v in config.model.to_dict().items() if k != "name"}
    if kwargs.get("dtype", "float32") not in spec_lib.DTYPES:
      raise ValueError(f"model.dtype must be one of {', '.join(spec_lib.DTYPES)}; "
                       f"got {kwargs['dtype']!r}.")
    model = models.get(config.model.name, heads={}, **kwargs)
    dtype = jnp.dtype(config.model.get("dtype", "float32"))
  except (ValueError, TypeError) as e:
    raise ConfigError(str(e)) from None
  fs = config.fewshot
  for name in ("episodes_per_step", "eval_batch_size",
               "eval_episodes_per_call"):
    if fs[name] < 1:
      raise ConfigError(f"fewshot.{name} must be >= 1; got {fs[name]}.")
  if not fs.test_shots:
    raise ConfigError("fewshot.test_shots must list at least one shot count.")
  if fs.test_episodes < 2 or 0 < fs.val_episodes < 2:
    raise ConfigError("A 95 % interval needs >= 2 episodes: set "
                      "fewshot.test_episodes >= 2 and fewshot.val_episodes "
                      ">= 2 (or 0: no meta-validation, the last step is "
                      "tested).")
  train.check_numbers(config)
  return MetaSpec(objective, head, config.head, group, model, dtype)


# -------------------------------------------------------------------- data ---
@dataclasses.dataclass(frozen=True)
class FewShotData:
  """Every image of the dataset in memory and the few-shot class split.

  ``images``: uint8 ``[n, H, W, C]``; ``labels``: ``[n]`` class ids in
  ``[0, num_classes)``; ``classes``: ``{"train" | "val" | "test": class
  ids}`` (disjoint).
  """
  name: str
  num_classes: int
  images: np.ndarray
  labels: np.ndarray
  classes: dict[str, tuple[int, ...]]


def _default_split_file(dataset: str) -> str:
  if not dataset.startswith("folder:"):
    raise ConfigError(f"dataset {dataset!r} has no default class split; set "
                      f"--config.class_split=FILE.json.")
  return os.path.join(os.path.expanduser(dataset[len("folder:"):]),
                      "fewshot_split.json")


def load_data(config) -> FewShotData:
  """All images of ``config.dataset`` (every split pooled) and its class split.

  The split file is ``config.class_split``, by default
  ``<root>/fewshot_split.json`` (:func:`sla_jax.fewshot.load_class_split`).
  """
  root = (os.path.expanduser(config.dataset[len("folder:"):])
          if config.dataset.startswith("folder:") else None)
  if root is not None and not os.path.isdir(root):
    raise FileNotFoundError(f"dataset folder {root} does not exist; pass "
                            f"--config.dataset=folder:ROOT with "
                            f"ROOT/{{train,test}}/<class>/ images.")
  split_file = config.class_split or _default_split_file(config.dataset)
  if not os.path.exists(split_file):
    raise FileNotFoundError(f"Class split {split_file} does not exist; set "
                            f"--config.class_split=FILE.json (keys "
                            f"train/val/test).")
  # Class names map to labels through classes.txt beside the split file, or
  # else the data folder's own.
  classes_file = next((f for f in (
      os.path.join(os.path.dirname(split_file), "classes.txt"),
      root and os.path.join(root, "classes.txt")) if f and os.path.exists(f)),
                      None)
  try:
    classes = fewshot.load_class_split(split_file, classes_file)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  dataset = data_lib.load(ml_collections.ConfigDict({
      "dataset": config.dataset, "val_size": 0, "data_seed": 0,
      "skip_corrupt": config.get("skip_corrupt", False)}))
  parts = [s.read_all() for s in (dataset.train, dataset.test) if s.size]
  images = np.concatenate([p[0] for p in parts])
  labels = np.concatenate([p[1] for p in parts])
  seen = set()
  for split in ("train", "val", "test"):
    if split not in classes:
      raise ConfigError(f"Class split {split_file} has no {split!r} list.")
    bad = [c for c in classes[split] if not 0 <= c < dataset.num_classes]
    if bad:
      raise ConfigError(f"Class split {split_file}: {split} classes {bad} are "
                        f"not in the dataset's {dataset.num_classes} classes.")
    if seen & set(classes[split]):
      raise ConfigError(f"Class split {split_file}: the {split} classes "
                        f"{sorted(seen & set(classes[split]))} are also in an "
                        f"earlier split; meta-train/val/test must be disjoint.")
    seen |= set(classes[split])
  return FewShotData(dataset.name, dataset.num_classes, images, labels,
                     {k: classes[k] for k in ("train", "val", "test")})


def _check_episodes(config, data: FewShotData) -> None:
  """ConfigError unless every episode setting of ``config`` fits the data."""
  fs = config.fewshot
  counts = np.bincount(data.labels, minlength=data.num_classes)
  settings = [("train", fs.ways, fs.shots, fs.queries)]
  settings += [("test", fs.test_ways, s, fs.test_queries) for s in fs.test_shots]
  if fs.val_episodes:
    settings.append(("val", fs.test_ways, fs.val_shots, fs.test_queries))
  for split, ways, shots, queries in settings:
    if min(ways, shots, queries) < 1:
      raise ConfigError(f"{split} episodes need ways, shots and queries >= 1; "
                        f"got {ways}, {shots}, {queries}.")
    pool = data.classes[split]
    if ways > len(pool):
      raise ConfigError(
          f"{ways}-way {split} episodes need {ways} classes; the meta-{split} "
          f"split has {len(pool)}. Lower the ways (fewshot.ways / "
          f"fewshot.test_ways).")
    fewest = int(counts[list(pool)].min())
    if shots + queries > fewest:
      raise ConfigError(
          f"{shots}-shot {queries}-query {split} episodes need "
          f"{shots + queries} images per class; a meta-{split} class has "
          f"{fewest}. Lower the shots or queries.")


def train_batch(config, data: FewShotData, step: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The meta-training episodes of ``step``, stacked for the train step.

  Returns uint8 images ``[E, W * (K + Q), H, W, C]`` (each episode's support
  rows first), support labels ``[E, W * K]`` and query labels ``[E, W * Q]``.
  Episode ``e`` is ``sample_episode(..., seed=config.seed, index=step * E +
  e)`` over the meta-train classes: a pure function of the seed and step.
  """
  fs = config.fewshot
  episodes = [
      fewshot.sample_episode(data.labels, data.classes["train"], fs.ways,
                             fs.shots, fs.queries, seed=config.seed,
                             index=step * fs.episodes_per_step + e)
      for e in range(fs.episodes_per_step)]
  index = np.stack([np.concatenate([ep.support_indices, ep.query_indices])
                    for ep in episodes])
  return (data.images[index], np.stack([ep.support_labels for ep in episodes]),
          np.stack([ep.query_labels for ep in episodes]))


# -------------------------------------------------------------------- step ---
def make_train_step(spec: MetaSpec, tx: optax.GradientTransformation,
                    config) -> Callable:
  """``step(state, images, support_labels, query_labels, seed_key) -> (state, loss)``.

  Unjitted; the augmentation and dropout keys come from ``fold_in(seed_key,
  step)``. The loss is the mean over the step's episodes.
  """
  ways, m = config.fewshot.ways, spec.num_views
  objective = spec.objective

  def step(state: train.TrainState, images, support_labels, query_labels,
           seed_key):
    augment_key, dropout_key = jax.random.split(
        jax.random.fold_in(seed_key, state.step))
    episodes, per_episode = images.shape[:2]
    flat = images.reshape((-1,) + images.shape[2:])
    flat = preprocess.random_crop_and_flip(augment_key, flat,
                                           config.crop_padding, config.flip)
    views = spec.views(preprocess.normalize(flat, spec.dtype))
    num_support = support_labels.shape[1] * m

    def loss_fn(params):
      outputs, new = spec.model.apply(
          {"params": params, "batch_stats": state.batch_stats}, views,
          train=True, mutable=["batch_stats"], rngs={"dropout": dropout_key})
      features = outputs["features"].reshape(episodes, per_episode * m, -1)
      episode_losses = jax.vmap(
          lambda f, sl, ql: objective.loss(f[:num_support], sl,
                                           f[num_support:], ql, ways, m,
                                           spec.head))(
              features, support_labels, query_labels)
      return episode_losses.mean(), new["batch_stats"]

    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return train.TrainState(state.step + 1, params, batch_stats,
                            opt_state), loss

  return step


# -------------------------------------------------------------- evaluation ---
class Evaluator:
  """Few-shot accuracy of a model on fixed episode streams.

  ``evaluate(variables, split, ways, shots_list, queries, episodes, seed)``
  returns ``{"<W>way<K>shot/<metric>": mean, ".../<metric>_ci95": half
  width}`` over ``episodes`` episodes of each shot count. The images the
  episodes use are embedded once (eval-mode BatchNorm) in batches of
  ``batch_size``; the episodes are scored ``episodes_per_call`` at a time
  under ``vmap``.
  """

  def __init__(self, spec: MetaSpec, data: FewShotData, batch_size: int,
               episodes_per_call: int):
    self.spec, self.data = spec, data
    self.batch_size, self.episodes_per_call = batch_size, episodes_per_call
    m = spec.num_views

    @jax.jit
    def embed(variables, images):
      views = spec.views(preprocess.normalize(images, spec.dtype))
      features = spec.model.apply(variables, views, train=False)["features"]
      return features.astype(jnp.float32).reshape(images.shape[0], m, -1)

    @functools.partial(jax.jit, static_argnums=5)
    def accuracies(features, support, support_labels, query, query_labels,
                   ways):
      def one(s, sl, q, ql):
        gather = lambda rows: features[rows].reshape(-1, features.shape[-1])
        logits = spec.objective.predict(gather(s), sl, gather(q), ways, m,
                                        spec.head)
        return {k: jnp.mean(jnp.argmax(v, -1) == ql) for k, v in logits.items()}
      return jax.vmap(one)(support, support_labels, query, query_labels)

    self._embed, self._accuracies = embed, accuracies

  def embed(self, variables, index: np.ndarray) -> jax.Array:
    """``[len(index), M, D]`` float32 features of the images ``index``."""
    chunks = []
    for start in range(0, len(index), self.batch_size):
      rows = _pad_to(index[start:start + self.batch_size], self.batch_size)
      chunks.append(self._embed(variables, self.data.images[rows]))
    return jnp.concatenate(chunks)[:len(index)]

  def evaluate(self, variables, split: str, ways: int, shots_list: Sequence[int],
               queries: int, episodes: int, seed: int) -> dict[str, float]:
    """Accuracy mean and 95 % half width per shot count and prediction."""
    data = self.data
    streams = {
        shots: [fewshot.sample_episode(data.labels, data.classes[split], ways,
                                       shots, queries, seed, i)
                for i in range(episodes)]
        for shots in shots_list}
    used = np.unique(np.concatenate([
        np.concatenate([ep.support_indices, ep.query_indices])
        for eps in streams.values() for ep in eps]))
    features = self.embed(variables, used)
    metrics = {}
    for shots, eps in streams.items():
      fields = [np.stack([np.searchsorted(used, ep.support_indices)
                          for ep in eps]),
                np.stack([ep.support_labels for ep in eps]),
                np.stack([np.searchsorted(used, ep.query_indices)
                          for ep in eps]),
                np.stack([ep.query_labels for ep in eps])]
      per_episode: dict[str, list[np.ndarray]] = {}
      for start in range(0, episodes, self.episodes_per_call):
        chunk = [_pad_to(f[start:start + self.episodes_per_call],
                         self.episodes_per_call) for f in fields]
        for k, v in jax.device_get(self._accuracies(features, *chunk,
                                                    ways)).items():
          per_episode.setdefault(k, []).append(v)
      for k, v in per_episode.items():
        mean, half_width = fewshot.mean_confidence_interval(
            np.concatenate(v)[:episodes])
        metrics[f"{ways}way{shots}shot/{k}"] = mean
        metrics[f"{ways}way{shots}shot/{k}_ci95"] = half_width
    return metrics


def _pad_to(rows: np.ndarray, size: int) -> np.ndarray:
  """``rows`` padded to ``size`` rows by repeating its last one.

  One compiled shape for every chunk; callers drop the padding's results.
  """
  pad = size - len(rows)
  return rows if not pad else np.concatenate([rows, np.repeat(rows[-1:], pad,
                                                              axis=0)])


# -------------------------------------------------------------------- loop ---
def _checked_losses(losses_: list, state, last_good: int | None,
                    first_step: int) -> list[float]:
  """The losses as floats; FloatingPointError naming the first non-finite step."""
  values = [float(v) for v in jax.device_get(losses_)]
  steps = range(first_step, first_step + len(values))
  bad = checkpointing.first_non_finite(steps, values)
  if bad is None and not bool(checkpointing.all_finite(
      (state.params, state.batch_stats))):
    bad = first_step + len(values) - 1
  if bad is not None:
    raise FloatingPointError(
        f"non-finite training loss or parameters at step {bad}; stopped "
        f"without saving it. The last good checkpoint is step {last_good}. "
        f"Lower lr or check the data.")
  return values


@dataclasses.dataclass
class _Loop:
  """The fixed parts of one meta-training run; :meth:`run` steps it to the end."""
  config: ml_collections.ConfigDict
  workdir: Any
  data: FewShotData
  train_step: Callable  # jitted make_train_step
  seed_key: jax.Array
  evaluator: Evaluator
  val_key: str  # the meta-validation metric that selects the best step
  schedule: optax.Schedule
  latest: ocp.CheckpointManager
  best_manager: ocp.CheckpointManager
  writer: metric_writers.MetricWriter
  bar: Any
  progress: train.LoopState

  def validate(self, state: train.TrainState, step: int) -> dict[str, float]:
    """Meta-validation metrics; records (and saves) a new best step."""
    fs = self.config.fewshot
    metrics = {}
    if fs.val_episodes:
      metrics = {f"val/{k}": v for k, v in self.evaluator.evaluate(
          train.variables_of(state), "val", fs.test_ways, (fs.val_shots,),
          fs.test_queries, fs.val_episodes, fs.val_seed).items()}
    best = self.progress.best
    if (best is None or not metrics or
        metrics[self.val_key] > best["metrics"][self.val_key]):
      self.progress.best = {"step": step, "metrics": metrics}
      if step not in self.best_manager.all_steps():
        self.best_manager.save(step, args=ocp.args.StandardSave(state))
    return metrics

  def run(self, state: train.TrainState, watcher) -> tuple[int, train.TrainState]:
    """Steps to ``total_steps``; logs, meta-validates, checkpoints.

    Before every log, evaluation and save the losses since the last check and
    the parameters are checked to be finite, so no checkpoint holds nan/inf.
    """
    config, progress = self.config, self.progress
    pending: list[jax.Array] = []  # losses of steps not yet fetched
    step = int(jax.device_get(state.step))
    tick, tick_step = time.perf_counter(), step
    while step < config.total_steps:
      state, loss = self.train_step(
          state, *train_batch(config, self.data, step), self.seed_key)
      pending.append(loss)
      step += 1
      self.bar.update(1)
      preempted = watcher.reached(step)
      done = step == config.total_steps
      log_now = step % config.log_every == 0 or done
      eval_now = step % config.eval_every == 0 or done
      save_now = step % config.checkpoint_every == 0 or done or preempted
      if not (log_now or eval_now or save_now):
        continue
      progress.losses_since_log += _checked_losses(
          pending, state, self.latest.latest_step(), step - len(pending) + 1)
      pending = []
      if log_now or eval_now:
        elapsed = time.perf_counter() - tick
        metrics = {"train/loss": float(np.mean(progress.losses_since_log)),
                   "train/lr": float(self.schedule(step - 1)),
                   "train/episodes_per_s": (step - tick_step) *
                                           config.fewshot.episodes_per_step /
                                           elapsed}
        progress.losses_since_log = []
        if eval_now:
          metrics.update(self.validate(state, step))
        self.writer.write(step, metrics)
        self.bar.set_postfix({k.split("/")[-1]: f"{v:.4g}"
                              for k, v in metrics.items()
                              if k in ("train/loss", self.val_key)})
        tick, tick_step = time.perf_counter(), step
      if save_now:
        self.latest.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            progress=ocp.args.JsonSave(dataclasses.asdict(progress))))
      if preempted:
        self.latest.wait_until_finished()
        raise preemption.Preempted(step, self.workdir / "checkpoints")
    return step, state


def meta_train_and_evaluate(config: ml_collections.ConfigDict,
                            workdir: str | os.PathLike) -> dict[str, Any]:
  """Meta-trains ``config`` in ``workdir`` (resuming if it holds a checkpoint).

  Returns the content of ``results.json``: the config, the step with the best
  meta-validation accuracy, its meta-validation metrics and the meta-test
  metrics of that step's parameters. Raises ConfigError for a config or
  dataset that cannot run (before anything is trained), FloatingPointError on
  a non-finite loss (nothing non-finite is saved) and
  ``preemption.Preempted`` after SIGTERM (a checkpoint is saved).
  """
  spec = resolve(config)  # config errors before any I/O
  workdir = train.workdir_path(workdir)
  data = load_data(config)
  _check_episodes(config, data)
  image_shape = data.images.shape[1:]
  try:
    jax.eval_shape(spec.views, jax.ShapeDtypeStruct((1,) + image_shape,
                                                    jnp.float32))
  except ValueError as e:
    raise ConfigError(f"dataset {data.name!r} with transform "
                      f"{spec.group.name!r}: {e}") from None
  train.check_workdir(config, workdir, _RESUMABLE_CHANGES)
  train.save_config(config, workdir)
  fs = config.fewshot

  # State: restored from the newest readable checkpoint, or initialised.
  schedule = optim.step_decay_schedule(config.lr, config.total_steps,
                                       tuple(config.lr_decay_at),
                                       config.lr_decay_factor)
  tx = OPTIMIZERS[config.optimizer](config, schedule)
  init = train.make_init(spec.model, tx, image_shape)
  init_key, seed_key = jax.random.split(jax.random.key(config.seed))
  abstract_state = jax.eval_shape(init, init_key)
  latest, best_manager, step, restored = train.open_checkpoints(
      workdir, config.keep_checkpoints, abstract_state)
  if step is not None:
    state, progress = restored["state"], train.LoopState(**restored["progress"])
    logging.info("Resumed from %s at step %d.", workdir / "checkpoints", step)
  else:
    state, progress = train.jit_init(init)(init_key), train.LoopState()
  start_step = int(jax.device_get(state.step))

  from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
  loop = _Loop(
      config=config, workdir=workdir, data=data,
      train_step=jax.jit(make_train_step(spec, tx, config),
                         donate_argnums=(0,)),
      seed_key=seed_key,
      evaluator=Evaluator(spec, data, fs.eval_batch_size,
                          fs.eval_episodes_per_call),
      val_key=(f"val/{fs.test_ways}way{fs.val_shots}shot/"
               f"{spec.objective.selection}"),
      schedule=schedule, latest=latest, best_manager=best_manager,
      writer=metric_writers.MetricWriter(workdir, resume_step=start_step),
      bar=tqdm(total=config.total_steps, initial=start_step, unit="step",
               dynamic_ncols=True, disable=None),
      progress=progress)
  try:
    with preemption.Watcher() as watcher:
      step, state = loop.run(state, watcher)
    if progress.best is None:  # resumed at the end with no evaluation
      loop.validate(state, step)
    best_manager.wait_until_finished()
    best_step = progress.best["step"]
    if best_step != step:
      state = best_manager.restore(
          best_step, args=ocp.args.StandardRestore(abstract_state))
    test = loop.evaluator.evaluate(
        train.variables_of(state), "test", fs.test_ways, tuple(fs.test_shots),
        fs.test_queries, fs.test_episodes, fs.test_seed)
    if start_step < step or not (workdir / "results.json").exists():
      # (a finished run rerun logged this meta-test already)
      loop.writer.write(step, {f"test/{k}": v for k, v in test.items()})
  finally:  # also on interruption: finish in-flight saves, flush the logs
    loop.bar.close()
    latest.close()
    best_manager.close()
    loop.writer.close()

  results = {
      "config": json.loads(config.to_json()),
      "objective": spec.objective.name,
      "head": spec.head_name,
      "transform": spec.group.name if spec.objective.uses_views else "identity",
      "num_views": spec.num_views,
      "selection_metric": loop.val_key if fs.val_episodes else None,
      "best_step": best_step,
      "final_step": step,
      "val": {k[4:]: v for k, v in progress.best["metrics"].items()},
      "test": test,
  }
  (workdir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
  print_results(results)
  return results


def print_results(results: dict[str, Any]) -> None:
  """The meta-test table the CLI prints: accuracy +- 95 % interval in %."""
  print(f"\n{results['objective']} / {results['head']} head / "
        f"{results['transform']} (M={results['num_views']}): meta-test at step "
        f"{results['best_step']} of {results['final_step']}")
  for key, value in results["test"].items():
    if not key.endswith("_ci95"):
      print(f"  {key:<22} {value * 100:6.2f} +- "
            f"{results['test'][key + '_ci95'] * 100:.2f} %")
