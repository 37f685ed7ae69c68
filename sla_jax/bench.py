"""``sla-bench``: time the jit-compiled train and eval steps of any trainer config.

    sla-bench --config configs/cifar.py:objective=sla --steps 20
    sla-bench --config configs/quickstart.py --steps 50 --json

Builds the trainer's own jitted call (:func:`sla_jax.train.make_multi_step`
over :func:`sla_jax.train.make_train_step`, the on-device data path) on all
devices JAX sees, over random uint8 images of the dataset's shape
(``--real_data`` to use the dataset itself), and reports:

* train step: compile time, first call, median / p10 / p90 time per step over
  ``--steps`` calls after ``--warmup`` (each ``block_until_ready``; a call runs
  ``--config.steps_per_call`` steps and its time is divided by that), images/s,
  views/s, XLA's FLOP count of one step (:func:`reference_step_flops`: the
  same on every backend) and the achieved FLOP/s (with the fraction of the
  device's peak on known GPUs/TPUs), the process's minor page faults and
  system CPU seconds per step, peak host memory, and device memory where the
  backend reports it;
* eval step: one forward of ``eval_batch_size`` images, identity view only (what
  SI and the SD head need) and all M views (what AG needs), and their ratio;
* input: host -> device transfer rate of uint8 batches, and the rate of the
  grain host pipeline (the ``data_on_device=False`` path); for configs with
  ``image_size`` (photos of any size) also JPEG decode + random resized crop
  per CPU core on 500 x 375 photos, and the cores the train step's image rate
  needs.

Prints a table; ``--json`` prints one JSON object per measurement instead.
Every row records the machine's load averages before the run and marks a busy
machine (``machine_load_before.busy``); ``--require_quiet`` refuses to time on
one (exit 2).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import resource
import sys
import time
from typing import Any

import jax
import numpy as np
from absl import flags, logging
from jax.sharding import NamedSharding, PartitionSpec as P
from ml_collections import config_flags

from sla_jax import data as data_lib
from sla_jax import distributed, evaluation, input_pipeline, objectives
from sla_jax import preprocess, spec as spec_lib, train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Trainer config file.",
                                          lock_config=True)
_STEPS = flags.DEFINE_integer("steps", 20, "Timed calls of each step.",
                              lower_bound=1)
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed calls after the first.",
                               lower_bound=0)
_JSON = flags.DEFINE_bool("json", False, "Print JSON lines instead of a table.")
_REAL = flags.DEFINE_bool("real_data", False, "Load the config's dataset.")
_IMAGE_SHAPE = flags.DEFINE_list("image_shape", None,
                                 "H,W,C of synthetic images (default: the "
                                 "config's dataset's, else 32,32,3).")
flags.register_validator(
    "image_shape",
    lambda v: v is None or (len(v) == 3 and all(
        x.strip().isdigit() and int(x) >= 1 for x in v)),
    message="--image_shape must be H,W,C: three whole numbers >= 1 "
    "(e.g. 32,32,3).")
_NUM_CLASSES = flags.DEFINE_integer("num_classes", None, "Synthetic classes.",
                                    lower_bound=1)
_REQUIRE_QUIET = flags.DEFINE_bool(
    "require_quiet", False, "Refuse to time on a busy machine (exit 2).")
flags.mark_flags_as_required(["config"])


# Dense bf16 peak FLOP/s per chip, from the vendors' data sheets.
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12,
                   "TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12,
                   "TPU v5p": 459e12, "TPU v6 lite": 918e12, "TPU v6e": 918e12}


def _peak_flops(device) -> float | None:
  kind = getattr(device, "device_kind", "")
  for name, peak in PEAK_BF16_FLOPS.items():
    if name.lower() in kind.lower():
      return peak
  return None


def _time_calls(fn, steps: int, warmup: int) -> dict[str, float]:
  """First call, then ``warmup`` untimed calls, then ``steps`` timed ones.

  Also ``minor_faults`` and ``system_s``: the process's minor page faults and
  system CPU seconds per timed call, like ``median_s`` (``getrusage``); memory
  the kernel maps afresh on every call shows there (:mod:`sla_jax.malloc_env`).
  """
  start = time.perf_counter()
  jax.block_until_ready(fn())
  first = time.perf_counter() - start
  for _ in range(warmup):
    jax.block_until_ready(fn())
  times = []
  before = resource.getrusage(resource.RUSAGE_SELF)
  for _ in range(steps):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  after = resource.getrusage(resource.RUSAGE_SELF)
  return {"first_call_s": first, "median_s": float(np.median(times)),
          "p10_s": float(np.percentile(times, 10)),
          "p90_s": float(np.percentile(times, 90)),
          "minor_faults": (after.ru_minflt - before.ru_minflt) / steps,
          "system_s": (after.ru_stime - before.ru_stime) / steps}


def _flops(lowered) -> float | None:
  """XLA's FLOP count of a lowered (not yet compiled) computation.

  Counted before the backend's passes: XLA:GPU turns convolutions into cuDNN
  custom calls that its compiled cost analysis counts as zero FLOPs. Loop
  bodies count once (a call of K steps reports one step's FLOPs).
  """
  analysis = lowered.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else None
  return float(analysis["flops"]) if analysis and "flops" in analysis else None


def reference_step_flops(config, setup: TrainStepSetup, num_classes: int,
                         state=None) -> float | None:
  """XLA's FLOP count of one train step over the whole batch, as the model's math.

  Counted on the lowered step of ``config`` with ``steps_per_call=1`` and
  XLA's own convolution gradients (``conv_weight_grad="xla"``): the matmul
  weight gradient sums its patches in a loop whose body a cost analysis
  counts once, and K steps per call are one loop too. So the figure is the
  same on every backend, device count and K, and FLOP/s compare across them.
  Lowered (not run) on ``setup``'s inputs; ``state`` replaces ``setup.state``
  once timed calls have donated it.
  """
  reference = config.copy_and_resolve_references()
  with reference.unlocked():
    reference.steps_per_call = 1
    if "conv_weight_grad" in reference.model:
      reference.model.conv_weight_grad = "xla"
  call = _train_call(reference, spec_lib.resolve(reference, num_classes),
                     train.make_optimizer(reference)[0], setup.mesh)
  state = setup.state if state is None else state
  return _flops(call.full.lower(state, *setup.data, setup.seed_key))


def _device_memory() -> int | None:
  stats = jax.local_devices()[0].memory_stats()
  return stats.get("peak_bytes_in_use") if stats else None


@dataclasses.dataclass
class TrainStepSetup:
  """The trainer's jitted on-device train step with its inputs, ready to time."""
  objective: objectives.Objective
  model: Any
  dtype: Any
  state: train.TrainState
  step: train.MultiStep  # (state, images, labels, key, k) -> (state, losses):
                         # k <= steps_per_call steps per call, state donated
  steps_per_call: int
  data: tuple        # (uint8 images, labels), replicated on the mesh
  seed_key: jax.Array
  mesh: jax.sharding.Mesh


def synthetic_data(batch_size: int, image_shape, num_classes: int):
  """Seeded uint8 images and int32 labels: at least a batch, at least 1 024."""
  rng = np.random.default_rng(0)
  n = max(1024, batch_size)
  images = rng.integers(0, 256, (n,) + tuple(image_shape), dtype=np.uint8)
  return images, rng.integers(0, num_classes, n).astype(np.int32)


def benchmark_data(config, real_data: bool = False, image_shape=None,
                   num_classes=None):
  """``(images, labels, image_shape, num_classes)``: the config's dataset or seeded synthetic data.

  Synthetic data takes the config's image size (crop size for photos of any
  size) and class count where the dataset is known, else 32x32x3 and 10.
  """
  if real_data:
    dataset = data_lib.load(config)
    images, labels = dataset.train.read_all()
    return images, labels, dataset.image_shape, dataset.num_classes
  known_shape, known_classes = data_lib.describe(config.dataset,
                                                 config.get("data_dir"))
  crop = config.get("image_size", 0)
  image_shape = tuple(int(x) for x in (
      image_shape or ((crop, crop, 3) if crop else None) or known_shape
      or (32, 32, 3)))
  num_classes = num_classes or known_classes or 10
  images, labels = synthetic_data(config.batch_size, image_shape, num_classes)
  return images, labels, image_shape, num_classes


def build_train_step(config, images, labels, num_classes: int,
                     image_shape) -> TrainStepSetup:
  """Builds what ``sla-train`` runs each step (:func:`train.make_train_step`)."""
  try:
    mesh = distributed.make_mesh(config.num_devices)
  except ValueError as e:
    raise train.ConfigError(str(e)) from None
  replicated = NamedSharding(mesh, P())
  spec = spec_lib.resolve(config, num_classes)
  tx, _ = train.make_optimizer(config)
  init = train.make_init(spec.model, tx, tuple(image_shape))
  init_key, seed_key = jax.random.split(jax.random.key(config.seed))
  state = train.jit_init(init, out_shardings=replicated)(init_key)
  return TrainStepSetup(spec.objective, spec.model, spec.dtype, state,
                        _train_call(config, spec, tx, mesh),
                        config.get("steps_per_call", 1),
                        jax.device_put((images, labels), replicated), seed_key,
                        mesh)


def _train_call(config, spec, tx, mesh) -> train.MultiStep:
  """The trainer's jitted call of ``steps_per_call`` steps, state donated."""
  replicated = NamedSharding(mesh, P())
  return train.jit_multi_step(
      train.make_train_step(spec, tx, config, NamedSharding(mesh, P("data"))),
      config.get("steps_per_call", 1), donate_argnums=(0,),
      out_shardings=(replicated, replicated))


def machine_load() -> dict[str, Any]:
  """The load averages and whether the machine is too busy for timings.

  ``busy``: the 1-minute load average exceeds ``max(0.5, cpus / 4)`` (other
  work is running: a ratio measured now is not a result). Record it before a
  measurement starts; the measurement itself raises the load.
  """
  load_1m, load_5m, load_15m = os.getloadavg()
  cpus = os.cpu_count() or 1
  return {"load_1m": load_1m, "load_5m": load_5m, "load_15m": load_15m,
          "cpu_count": cpus, "busy": load_1m > max(0.5, cpus / 4)}


HOST_CROP_SOURCE = (375, 500)  # a typical ImageNet photo (height, width)
HOST_CROP_BATCH = 16


def synthetic_photos(n: int, height: int, width: int) -> list[bytes]:
  """``n`` seeded smooth random photos of ``height x width``, JPEG quality 90 (4:2:0)."""
  import io  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  photos = []
  for _ in range(n):
    small = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(small).resize((width, height), Image.BICUBIC).save(
        buffer, "JPEG", quality=90)
    photos.append(buffer.getvalue())
  return photos


def host_crop_call(config):
  """``call()``: decode + random-resized-crop ``HOST_CROP_BATCH`` JPEG photos on this thread.

  The host work of one training image of ``config.image_size`` (the trainer
  does it in grain threads): synthetic smooth photos of ``HOST_CROP_SOURCE``
  encoded as JPEG (quality 90), as a folder or TFDS source holds them.
  """
  from sla_jax import image_ops  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  photos = synthetic_photos(HOST_CROP_BATCH, *HOST_CROP_SOURCE)
  scale, ratio = tuple(config.crop_scale), tuple(config.crop_ratio)
  return lambda: [image_ops.train_crop(p, rng, config.image_size, scale, ratio)
                  for p in photos]


def run_benchmark(config, steps: int = 20, warmup: int = 2,
                  real_data: bool = False, image_shape=None,
                  num_classes=None) -> list[dict]:
  """Runs every measurement; returns one dict per row (see module docstring).

  Every row records the machine's load before the run (:func:`machine_load`).
  """
  if steps < 1 or warmup < 0:
    raise ValueError(f"steps must be >= 1 and warmup >= 0; got {steps} and {warmup}.")
  load = machine_load()
  images, labels, image_shape, num_classes = benchmark_data(
      config, real_data, image_shape, num_classes)
  setup = build_train_step(config, images, labels, num_classes, image_shape)
  objective, model, state = setup.objective, setup.model, setup.state
  train_data, seed_key = setup.data, setup.seed_key
  n_dev = setup.mesh.devices.size
  batch_sharding = NamedSharding(setup.mesh, P("data"))
  m = objective.input_views
  common = {"objective": objective.name, "transform": objective.group.name,
            "num_views": m, "feature_variants": objective.feature_views,
            "model": config.model.name, "depth": config.model.get("depth"),
            "dtype": str(setup.dtype), "batch_size": config.batch_size,
            "batch_draw": config.get("batch_draw", "permutation"),
            "use_fast_variance": config.model.get("use_fast_variance", False),
            "fused_batch_norm": config.model.get("fused_batch_norm", False),
            "devices": n_dev, "device_kind": jax.devices()[0].device_kind,
            "backend": jax.default_backend()}
  rows = []

  # Train step.
  start = time.perf_counter()
  k = setup.steps_per_call
  compiled = setup.step.full.lower(state, *train_data, seed_key).compile()
  compile_s = time.perf_counter() - start
  holder = {"state": state}

  def one_call():
    holder["state"], losses_ = compiled(holder["state"], *train_data, seed_key)
    return losses_

  # Per step: each timed call runs k steps.
  timing = {name: value / (1 if name == "first_call_s" else k)
            for name, value in _time_calls(one_call, steps, warmup).items()}
  flops = reference_step_flops(config, setup, num_classes, holder["state"])
  row = {"what": "train_step", **common, "steps_per_call": k,
         "compile_s": compile_s, **timing,
         "images_per_s": config.batch_size / timing["median_s"],
         "views_per_s": config.batch_size * m / timing["median_s"],
         "flops_per_step": flops,
         "flops_per_s": flops / timing["median_s"] if flops else None}
  peak = _peak_flops(jax.devices()[0])
  row["fraction_of_bf16_peak"] = (row["flops_per_s"] / (peak * n_dev)
                                  if peak and flops else None)
  rows.append(row)
  state = holder["state"]
  variables = {"params": state.params, "batch_stats": state.batch_stats}

  # Eval step: identity view only (SI, SD) vs all M views (AG).
  eval_n = evaluation.padded_batch_size(config.eval_batch_size, n_dev,
                                        objective.group.num_views)
  eval_images = jax.device_put(
      np.resize(images, (eval_n,) + image_shape), batch_sharding)
  dtype = setup.dtype

  single = jax.jit(lambda v, x: model.apply(
      v, preprocess.normalize(x, dtype), train=False))
  every = jax.jit(lambda v, x: evaluation.eval_outputs(  # what the evaluator runs
      model, objective.group, v, preprocess.normalize(x, dtype)))
  # XLA's cost analysis counts a loop body once: count the M-view FLOPs on the
  # equivalent single pass over all views.
  one_pass = jax.jit(lambda v, x: model.apply(
      v, objective.group.apply(preprocess.normalize(x, dtype)), train=False))
  all_views_flops = _flops(one_pass.lower(variables, eval_images))
  for name, fn in (("eval_identity_view", single), ("eval_all_views", every)):
    start = time.perf_counter()
    lowered_eval = fn.lower(variables, eval_images)
    compiled_eval = lowered_eval.compile()
    compile_s = time.perf_counter() - start
    timing = _time_calls(lambda c=compiled_eval: c(variables, eval_images),
                         steps, warmup)
    flops = (_flops(lowered_eval) if name == "eval_identity_view"
             else all_views_flops)
    rows.append({"what": name, **common, "eval_batch_size": eval_n,
                 "compile_s": compile_s, **timing,
                 "images_per_s": eval_n / timing["median_s"],
                 "flops_per_step": flops,
                 "flops_per_s": flops / timing["median_s"] if flops else None})
  rows[-1]["cost_vs_identity_view"] = rows[-1]["median_s"] / rows[-2]["median_s"]

  # Input side.
  host_batch = images[:config.batch_size]
  timing = _time_calls(lambda: jax.device_put(host_batch, batch_sharding),
                       steps, warmup)
  rows.append({"what": "input_device_put", **common, **timing,
               "images_per_s": config.batch_size / timing["median_s"]})
  split = data_lib.Split.from_arrays(images, labels)
  batches = input_pipeline.host_batches(split, config.seed, config.batch_size,
                                       0, warmup + steps + 1, batch_sharding,
                                       config.host_threads)
  timing = _time_calls(lambda: next(batches), steps, warmup)
  rows.append({"what": "input_host_pipeline", **common, **timing,
               "images_per_s": config.batch_size / timing["median_s"]})

  if config.get("image_size", 0):  # photos of any size: decode + crop per core
    timing = _time_calls(host_crop_call(config), steps, warmup)
    per_core = HOST_CROP_BATCH / timing["median_s"]
    rows.append({"what": "host_decode_crop", **common, **timing,
                 "images_per_s": per_core,
                 "source_size": list(HOST_CROP_SOURCE),
                 "cores_for_train_step": rows[0]["images_per_s"] / per_core})

  peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  for r in rows:
    r["machine_load_before"] = load
    r["xla_flags"] = os.environ.get("XLA_FLAGS", "")
    r["glibc_tunables"] = os.environ.get("GLIBC_TUNABLES", "")
    r["peak_host_bytes"] = peak_rss
    r["peak_device_bytes"] = _device_memory()
  return rows


def format_table(rows: list[dict]) -> str:
  head = rows[0]
  lines = [f"{head['objective']} / {head['transform']} (M={head['num_views']}), "
           f"{head['model']}"
           f"{'' if head['depth'] is None else ' depth ' + str(head['depth'])} "
           f"{head['dtype']}, batch {head['batch_size']} "
           f"images, {head['devices']} x {head['device_kind']} "
           f"({head['backend']})",
           f"{'measurement':<22}{'compile s':>10}{'first s':>9}{'median s':>10}"
           f"{'p10-p90 s':>16}{'images/s':>11}{'views/s':>10}{'GFLOP/s':>9}"]
  def cell(value, width: int, digits: int, scale: float = 1.0) -> str:
    """``value`` right-aligned, or a dash where it does not apply."""
    return (f"{value / scale:>{width}.{digits}f}" if value is not None
            and math.isfinite(value) else f"{'-':>{width}}")

  for r in rows:
    lines.append(
        f"{r['what']:<22}{cell(r.get('compile_s'), 10, 2)}"
        f"{r['first_call_s']:>9.3f}{r['median_s']:>10.4f}"
        f"{r['p10_s']:>8.4f}-{r['p90_s']:<7.4f}{r['images_per_s']:>11.1f}"
        f"{cell(r.get('views_per_s'), 10, 1)}"
        f"{cell(r.get('flops_per_s'), 9, 1, 1e9)}")
  extra = rows[0].get("fraction_of_bf16_peak")
  if extra:
    lines.append(f"train step at {100 * extra:.1f} % of the devices' bf16 peak")
  lines.append(f"AG (all {head['num_views']} views) costs "
               f"{rows[2]['cost_vs_identity_view']:.2f}x the identity-view "
               f"pass (SI and the SD head need only that pass)")
  host = [r for r in rows if r["what"] == "host_decode_crop"]
  if host:
    lines.append(f"host: JPEG decode + random resized crop of "
                 f"{host[0]['source_size'][1]}x{host[0]['source_size'][0]} "
                 f"photos, {host[0]['images_per_s']:.0f} images/s per core; the "
                 f"train step's rate needs {host[0]['cores_for_train_step']:.1f} "
                 f"cores")
  load = rows[0]["machine_load_before"]
  lines.append(f"load before the run {load['load_1m']:.2f} / {load['load_5m']:.2f}"
               f" / {load['load_15m']:.2f} (1 / 5 / 15 min, {load['cpu_count']} "
               f"CPUs)" + ("  BUSY MACHINE: these timings are not results"
                           if load["busy"] else ""))
  lines.append(f"peak host memory {rows[0]['peak_host_bytes'] / 2**30:.2f} GiB"
               + (f", device {rows[0]['peak_device_bytes'] / 2**30:.2f} GiB"
                  if rows[0]["peak_device_bytes"] else ""))
  return "\n".join(lines)


def main(argv):
  del argv  # cli.run refuses surplus arguments
  logging.set_verbosity(logging.WARNING)
  if _REQUIRE_QUIET.value and machine_load()["busy"]:
    load = machine_load()
    print(f"sla-bench: error: the machine is busy (1-minute load "
          f"{load['load_1m']:.2f} on {load['cpu_count']} CPUs, above "
          f"{max(0.5, load['cpu_count'] / 4):g}); stop other work or drop "
          f"--require_quiet.", file=sys.stderr)
    sys.exit(2)
  try:
    rows = run_benchmark(_CONFIG.value, _STEPS.value, _WARMUP.value,
                         _REAL.value, _IMAGE_SHAPE.value, _NUM_CLASSES.value)
  except (train.ConfigError, ValueError, FileNotFoundError) as e:
    print(f"sla-bench: error: {e}", file=sys.stderr)
    sys.exit(2)
  if _JSON.value:
    for row in rows:
      print(json.dumps(row))
  else:
    print(format_table(rows))


def run():
  """Console-script entry point."""
  from sla_jax import cli  # pylint: disable=g-import-not-at-top
  cli.run(main, "sla-bench", ("config", "steps", "warmup", "json",
                              "real_data", "image_shape", "num_classes",
                              "require_quiet"),
          __doc__)


if __name__ == "__main__":
  run()
