"""This checkout's convolutions against another version of them, alternated in one process.

    git show 9c96011:sla_jax/models/conv_ops.py > /tmp/conv_ops_before.py
    python -m benchmarks.ab_conv_ops --other /tmp/conv_ops_before.py \
        --config configs/cifar.py:objective=sla [--rounds 6] [--calls 3] [--json]
    python -m benchmarks.ab_conv_ops --other_plain_residual \
        --config configs/cifar.py:objective=sla

``--other_plain_residual``: the other side also traces
``sla_jax.models.residual.materialize`` as the identity (with ``--other`` or
with this checkout's convolutions), which times the stored residual stream.

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
from sla_jax.models import conv_ops, residual


def _define_flags():
  """This tool's flags, defined only when it runs (``--config``, ``--json``: sla-bench's)."""
  return {"config": bench._CONFIG,  # pylint: disable=protected-access
          "json": bench._JSON,  # pylint: disable=protected-access
          "other": flags.DEFINE_string(
              "other", None, "A conv_ops.py to time against this checkout's."),
          "other_plain_residual": flags.DEFINE_boolean(
              "other_plain_residual", False,
              "The other side traces residual.materialize as the identity."),
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
def _swapped(owner, name: str, value):
  """Within the block, ``owner.name`` is ``value`` (restored after, errors too)."""
  saved = getattr(owner, name)
  setattr(owner, name, value)
  try:
    yield
  finally:
    setattr(owner, name, saved)


def _compiled_step(config, data, module=None, plain_residual=False):
  """The step as models trace it with ``module``'s convolutions (None: this
  checkout's) and, with ``plain_residual``, ``residual.materialize`` as the
  identity."""
  images, labels, image_shape, num_classes = data
  with contextlib.ExitStack() as swaps:
    if module:
      swaps.enter_context(_swapped(conv_ops, "conv_general_dilated",
                                   module.conv_general_dilated))
    if plain_residual:
      swaps.enter_context(_swapped(residual, "materialize", lambda x: x))
    setup = bench.build_train_step(config, images, labels, num_classes,
                                   image_shape)
    compiled = setup.step.full.lower(setup.state, *setup.data,
                                     setup.seed_key).compile()
  return setup, compiled


def compare(config, other_path=None, rounds: int = 6, calls: int = 3,
            plain_residual: bool = False) -> dict[str, Any]:
  """Alternates this checkout's train step and the other one; medians per call.

  The other step traces ``other_path``'s convolutions (None: this checkout's)
  and, with ``plain_residual``, ``residual.materialize`` as the identity.
  """
  if rounds < 1 or calls < 2:
    raise ValueError(f"need rounds >= 1 and calls >= 2; got {rounds} and {calls}")
  if other_path is None and not plain_residual:
    raise ValueError("nothing to compare: give another conv_ops.py, "
                     "plain_residual, or both.")
  other = None if other_path is None else load_module(other_path)
  load = bench.machine_load()
  data = bench.benchmark_data(config)
  sides = {"this": _compiled_step(config, data),
           "other": _compiled_step(config, data, other, plain_residual)}
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
  return {"what": "ab_conv_ops",
          "other": None if other_path is None else str(other_path),
          "other_sha256": None if other_path is None else hashlib.sha256(
              pathlib.Path(other_path).read_bytes()).hexdigest(),
          "other_plain_residual": plain_residual,
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
  if flag["config"].value is None or not (flag["other"].value or
                                          flag["other_plain_residual"].value):
    raise app.UsageError("pass --config (a trainer config) and --other "
                         "(a conv_ops.py file), --other_plain_residual, or both.")
  try:
    result = compare(flag["config"].value, flag["other"].value or None,
                     flag["rounds"].value, flag["calls"].value,
                     flag["other_plain_residual"].value)
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
