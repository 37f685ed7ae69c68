"""Where the train step's time goes: ``jax.profiler`` per-op breakdown of the trainer's own step.

    python -m benchmarks.profile_step --config configs/cifar.py:objective=sla \
        --calls 2 --out /tmp/profile_sla [--top 25] [--json]

Builds the step ``sla-train`` runs (:func:`sla_jax.bench.build_train_step`,
synthetic data of the config's shape, any ``--config.*`` override such as
``--config.steps_per_call=16``), compiles it, runs it once untraced, then
traces ``--calls`` calls with ``jax.profiler.trace`` and reads the Perfetto
trace it writes (``OUT/**/perfetto_trace.json.gz``, also viewable at
ui.perfetto.dev). Every event XLA tags with an ``hlo_op`` is one executed HLO
op (a thunk on the CPU, a kernel on a GPU); ops are grouped by category, the
HLO name without its numeric suffix (``transpose_copy_fusion.7`` ->
``transpose_copy_fusion``), per trace process (host threads, each GPU
stream). The table gives each category's time per step, its share of that
process's op time, and how many ops of it run per step, beside the traced wall
time per step. Op times on different threads or streams overlap, so a
process's op time can exceed the wall time (XLA:CPU runs independent thunks
on its threads concurrently). An op that contains others (a ``while`` loop and
its body's ops) counts them in its category's time too.

A second table gives each op's *self* time (its time less that of the ops
running inside it on the same thread) by the JAX operation it came from, read
from the compiled program's metadata: the phase (``forward`` inside
``jvp(...)``, ``backward`` inside ``transpose(...)``, else ``other``) and the
primitive (``conv_general_dilated``, ``dot_general``, ``max``, ...). The
machine's load is recorded as in sla-bench.
"""

from __future__ import annotations

import collections
import gzip
import json
import pathlib
import re
import time
from typing import Any

from absl import app, flags, logging
import jax

from sla_jax import bench, train


def _define_flags():
  """This tool's flags, defined only when it runs (importers keep their own ``--out``).

  ``--config`` and ``--json`` are sla-bench's (same parsing, ``--config.*``
  overrides).
  """
  return {"config": bench._CONFIG,  # pylint: disable=protected-access
          "json": bench._JSON,  # pylint: disable=protected-access
          "calls": flags.DEFINE_integer("calls", 2, "Traced calls of the step."),
          "out": flags.DEFINE_string("out", None, "Directory for the trace."),
          "top": flags.DEFINE_integer("top", 25,
                                      "Categories per process in the table.")}

_SUFFIX = re.compile(r"(\.\d+)+$")


def op_category(hlo_op: str) -> str:
  """``"transpose_copy_fusion.7"`` -> ``"transpose_copy_fusion"``."""
  return _SUFFIX.sub("", hlo_op)


def read_trace(trace_dir: str | pathlib.Path) -> list[dict[str, Any]]:
  """The events of the (newest) Perfetto trace ``jax.profiler.trace`` wrote under ``trace_dir``."""
  paths = sorted(pathlib.Path(trace_dir).glob("**/perfetto_trace.json.gz"),
                 key=lambda p: p.stat().st_mtime)
  if not paths:
    raise FileNotFoundError(f"no perfetto_trace.json.gz under {trace_dir}")
  with gzip.open(paths[-1], "rt") as f:
    trace = json.load(f)
  return trace["traceEvents"] if isinstance(trace, dict) else trace


def _process_names(events: list[dict[str, Any]]) -> dict[Any, str]:
  return {e["pid"]: e["args"]["name"] for e in events
          if e.get("ph") == "M" and e.get("name") == "process_name"}


def _op_events(events: list[dict[str, Any]]):
  """``(event, hlo_op)`` of each complete event (``ph == "X"``) that carries an
  ``hlo_op`` argument (the executed HLO ops)."""
  for e in events:
    op = (e.get("args") or {}).get("hlo_op")
    if e.get("ph") == "X" and op and not e.get("name", "").startswith("end:"):
      yield e, op


def op_breakdown(events: list[dict[str, Any]], steps: int) -> dict[str, Any]:
  """Per process: ``{"op_ms_per_step", "categories": [{name, ms_per_step, share, ops_per_step}]}``.

  Counts the executed HLO ops (:func:`_op_events`).
  """
  process_names = _process_names(events)
  time_us = collections.defaultdict(collections.Counter)
  count = collections.defaultdict(collections.Counter)
  for e, op in _op_events(events):
    process = process_names.get(e.get("pid"), str(e.get("pid")))
    time_us[process][op_category(op)] += float(e.get("dur", 0.0))
    count[process][op_category(op)] += 1
  out = {}
  for process, per_category in time_us.items():
    total = sum(per_category.values())
    out[process] = {
        "op_ms_per_step": total / 1e3 / steps,
        "categories": [
            {"name": name, "ms_per_step": us / 1e3 / steps,
             "share": us / total if total else 0.0,
             "ops_per_step": count[process][name] / steps}
            for name, us in per_category.most_common()]}
  return out


_INSTRUCTION = re.compile(r'^\s*(?:ROOT )?%?([\w.\-]+) = .*?op_name="([^"]*)"')


def source_ops(hlo_text: str) -> dict[str, str]:
  """HLO instruction name -> the JAX ``op_name`` in its metadata."""
  return {m.group(1): m.group(2) for m in map(_INSTRUCTION.match,
                                               hlo_text.splitlines()) if m}


def source_of(op_name: str) -> tuple[str, str]:
  """``(phase, primitive)`` of an ``op_name`` such as
  ``jit(f)/transpose(jvp(CifarResNet))/stage_1_0/conv_a/conv_general_dilated``."""
  phase = ("backward" if "transpose(" in op_name else
           "forward" if "jvp(" in op_name else "other")
  return phase, op_name.rstrip("/").rsplit("/", 1)[-1] or "?"


def _self_times(events: list[dict[str, Any]]) -> dict[tuple[Any, str], float]:
  """``{(pid, hlo_op): microseconds}``: each op's time less that of the ops
  that ran inside it on the same thread."""
  per_thread = collections.defaultdict(list)
  for e, op in _op_events(events):
    per_thread[(e.get("pid"), e.get("tid"))].append(
        (float(e.get("ts", 0.0)), float(e.get("dur", 0.0)), op))
  self_us = collections.Counter()
  for (pid, _), ops in per_thread.items():
    ops.sort(key=lambda o: (o[0], -o[1]))  # an outer op before the ops inside it
    open_ops = []  # (end, op) of the ops that contain the current one
    for start, duration, op in ops:
      while open_ops and open_ops[-1][0] <= start:
        open_ops.pop()
      if open_ops:
        self_us[(pid, open_ops[-1][1])] -= duration
      self_us[(pid, op)] += duration
      open_ops.append((start + duration, op))
  return self_us


def source_breakdown(events: list[dict[str, Any]], steps: int,
                     sources: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
  """Per process: ``[{phase, primitive, ms_per_step, share}]``, self times by
  the JAX operation each op came from (``sources``: :func:`source_ops`)."""
  process_names = _process_names(events)
  grouped = collections.defaultdict(collections.Counter)
  for (pid, op), us in _self_times(events).items():
    process = process_names.get(pid, str(pid))
    grouped[process][source_of(sources.get(op, "?"))] += us
  out = {}
  for process, per_source in grouped.items():
    total = sum(per_source.values())
    out[process] = [{"phase": phase, "primitive": primitive,
                     "ms_per_step": us / 1e3 / steps,
                     "share": us / total if total else 0.0}
                    for (phase, primitive), us in per_source.most_common()]
  return out


def profile(config, calls: int, out_dir: str) -> dict[str, Any]:
  """Traces ``calls`` calls of the trainer's step; returns the breakdown and timings."""
  load = bench.machine_load()
  images, labels, image_shape, num_classes = bench.benchmark_data(config)
  setup = bench.build_train_step(config, images, labels, num_classes,
                                 image_shape)
  k = setup.steps_per_call
  compiled = setup.step.full.lower(setup.state, *setup.data,
                                   setup.seed_key).compile()
  state, losses = compiled(setup.state, *setup.data, setup.seed_key)
  jax.block_until_ready(losses)
  start = time.perf_counter()
  with jax.profiler.trace(out_dir, create_perfetto_trace=True):
    for _ in range(calls):
      state, losses = compiled(state, *setup.data, setup.seed_key)
    jax.block_until_ready(losses)
  traced_s = time.perf_counter() - start
  steps = calls * k
  events = read_trace(out_dir)
  by_source = source_breakdown(events, steps, source_ops(compiled.as_text()))
  processes = op_breakdown(events, steps)
  for process, info in processes.items():
    info["sources"] = by_source.get(process, [])
  return {"config_objective": setup.objective.name,
          "model": config.model.name, "batch_size": config.batch_size,
          "steps_per_call": k, "traced_steps": steps,
          "traced_wall_s_per_step": traced_s / steps,
          "backend": jax.default_backend(),
          "device_kind": jax.devices()[0].device_kind,
          "machine_load_before": load, "trace_dir": out_dir,
          "processes": processes}


def format_table(result: dict[str, Any], top: int) -> str:
  lines = [f"{result['config_objective']} {result['model']}, batch "
           f"{result['batch_size']}, {result['traced_steps']} traced steps on "
           f"{result['device_kind']}: {result['traced_wall_s_per_step'] * 1e3:.1f}"
           f" ms wall per step (traced; load before "
           f"{result['machine_load_before']['load_1m']:.2f})"]
  for process, info in result["processes"].items():
    lines += ["", f"{process}: {info['op_ms_per_step']:.1f} ms of ops per step",
              f"| op category | ms / step | share | ops / step |",
              "|---|---:|---:|---:|"]
    for c in info["categories"][:top]:
      lines.append(f"| {c['name']} | {c['ms_per_step']:.1f} | "
                   f"{100 * c['share']:.1f} % | {c['ops_per_step']:g} |")
    lines += ["", f"{process}: self time by JAX source",
              "| phase | primitive | ms / step | share |", "|---|---|---:|---:|"]
    for s in info.get("sources", [])[:top]:
      lines.append(f"| {s['phase']} | {s['primitive']} | "
                   f"{s['ms_per_step']:.1f} | {100 * s['share']:.1f} % |")
  return "\n".join(lines)


def main(argv, flag=None):
  del argv  # cli.run refuses surplus arguments
  logging.set_verbosity(logging.WARNING)
  if flag["config"].value is None or not flag["out"].value:
    raise app.UsageError("pass --config (a trainer config) and --out "
                         "(a directory for the trace).")
  if flag["calls"].value < 1:
    raise app.UsageError(f"--calls must be >= 1; got {flag['calls'].value}.")
  try:
    result = profile(flag["config"].value, flag["calls"].value,
                     flag["out"].value)
  except (train.ConfigError, ValueError, FileNotFoundError) as e:
    raise app.UsageError(str(e)) from None
  print(json.dumps(result) if flag["json"].value
        else format_table(result, flag["top"].value))


if __name__ == "__main__":
  from sla_jax import cli  # pylint: disable=g-import-not-at-top
  _flags = _define_flags()
  cli.run(lambda argv: main(argv, _flags), "profile_step", tuple(_flags),
          __doc__)
