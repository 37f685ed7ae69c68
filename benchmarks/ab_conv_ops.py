"""This checkout's convolutions against another version of them, alternated in one process.

    git show 9c96011:sla_jax/models/conv_ops.py > /tmp/conv_ops_before.py
    python -m benchmarks.ab_conv_ops --other /tmp/conv_ops_before.py \
        --config configs/cifar.py:objective=sla [--rounds 6] [--calls 3] [--json]

Separate processes on a shared VM differ from run to run by more than most
changes to the CPU step's convolutions gain (BENCHMARKS.md, "The weight-gradient
matmul in standard form"); one process that alternates the two steps sees both
under the same conditions. The tool
compiles the trainer's step (:func:`sla_jax.bench.build_train_step`, synthetic
data, any ``--config.*`` override) twice: once as this checkout builds it, once
with ``sla_jax.models.conv_ops.conv_general_dilated`` (what every model's
convolutions call) taken from the module file ``--other``, whose functions use
that file's own helpers and constants. Then ``--rounds`` rounds, each running
a block of ``--calls`` calls of one step and then of the other (the order
flips every round); the first call of each block is not timed. Prints the
median seconds per call of each side and ``other / this`` (above 1: this
checkout is faster), with the machine's load before the run as in sla-bench.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import pathlib
import time
from typing import Any

from absl import app, flags, logging
import jax
import numpy as np

from sla_jax import bench, train
from sla_jax.models import conv_ops


def _define_flags():
  """This tool's flags, defined only when it runs (``--config``, ``--json``: sla-bench's)."""
  return {"config": bench._CONFIG,  # pylint: disable=protected-access
          "json": bench._JSON,  # pylint: disable=protected-access
          "other": flags.DEFINE_string(
              "other", None, "A conv_ops.py to time against this checkout's."),
          "rounds": flags.DEFINE_integer("rounds", 6, "Alternated rounds."),
          "calls": flags.DEFINE_integer(
              "calls", 3, "Calls per block (the first is not timed).")}


def load_module(path: str | os.PathLike):
  """The module in file ``path``; it must define ``conv_general_dilated``."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"--other {path}: no such file")
  spec = importlib.util.spec_from_file_location(f"other_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not callable(getattr(module, "conv_general_dilated", None)):
    raise ValueError(f"--other {path}: defines no conv_general_dilated")
  return module


@contextlib.contextmanager
def convolutions_from(module):
  """Within the block, models trace ``module.conv_general_dilated``."""
  saved = conv_ops.conv_general_dilated
  conv_ops.conv_general_dilated = module.conv_general_dilated
  try:
    yield
  finally:
    conv_ops.conv_general_dilated = saved


def _compiled_step(config, data, module=None):
  images, labels, image_shape, num_classes = data
  with convolutions_from(module) if module else contextlib.nullcontext():
    setup = bench.build_train_step(config, images, labels, num_classes,
                                   image_shape)
    compiled = setup.step.full.lower(setup.state, *setup.data,
                                     setup.seed_key).compile()
  return setup, compiled


def compare(config, other_path, rounds: int = 6, calls: int = 3
            ) -> dict[str, Any]:
  """Alternates this checkout's train step and ``other_path``'s; medians per call."""
  if rounds < 1 or calls < 2:
    raise ValueError(f"need rounds >= 1 and calls >= 2; got {rounds} and {calls}")
  other = load_module(other_path)
  load = bench.machine_load()
  data = bench.benchmark_data(config)
  sides = {"this": _compiled_step(config, data),
           "other": _compiled_step(config, data, other)}
  states = {name: setup.state for name, (setup, _) in sides.items()}
  times = {name: [] for name in sides}
  for r in range(rounds):
    for name in (("this", "other") if r % 2 == 0 else ("other", "this")):
      setup, compiled = sides[name]
      for i in range(calls):
        start = time.perf_counter()
        states[name], losses = compiled(states[name], *setup.data,
                                        setup.seed_key)
        jax.block_until_ready(losses)
        if i:
          times[name].append(time.perf_counter() - start)
  k = sides["this"][0].steps_per_call
  this_s, other_s = (float(np.median(times[n])) / k for n in ("this", "other"))
  return {"what": "ab_conv_ops", "other": str(other_path),
          "other_sha256": hashlib.sha256(
              pathlib.Path(other_path).read_bytes()).hexdigest(),
          "objective": sides["this"][0].objective.name,
          "model": config.model.name, "depth": config.model.get("depth"),
          "batch_size": config.batch_size, "steps_per_call": k,
          "devices": sides["this"][0].mesh.devices.size,
          "backend": jax.default_backend(), "rounds": rounds, "calls": calls,
          "this_median_s": this_s, "other_median_s": other_s,
          "other_over_this": other_s / this_s,
          "this_s": [round(t / k, 4) for t in times["this"]],
          "other_s": [round(t / k, 4) for t in times["other"]],
          "machine_load_before": load,
          "xla_flags": os.environ.get("XLA_FLAGS", ""),
          "glibc_tunables": os.environ.get("GLIBC_TUNABLES", "")}


def main(argv, flag=None):
  del argv  # cli.run refuses surplus arguments
  logging.set_verbosity(logging.WARNING)
  if flag["config"].value is None or not flag["other"].value:
    raise app.UsageError("pass --config (a trainer config) and --other "
                         "(a conv_ops.py file).")
  try:
    result = compare(flag["config"].value, flag["other"].value,
                     flag["rounds"].value, flag["calls"].value)
  except (train.ConfigError, ValueError, FileNotFoundError, SyntaxError,
          ImportError) as e:
    raise app.UsageError(str(e)) from None
  if flag["json"].value:
    print(json.dumps(result))
  else:
    print(f"{result['objective']} {result['model']}, batch "
          f"{result['batch_size']}, {result['devices']} device(s): this "
          f"{result['this_median_s']:.3f} s, other {result['other_median_s']:.3f}"
          f" s per step (median of {len(result['this_s'])}): other / this = "
          f"{result['other_over_this']:.3f} (load before "
          f"{result['machine_load_before']['load_1m']:.2f})")


if __name__ == "__main__":
  from sla_jax import cli  # pylint: disable=g-import-not-at-top
  _flags = _define_flags()
  cli.run(lambda argv: main(argv, _flags), "ab_conv_ops", tuple(_flags),
          __doc__)
