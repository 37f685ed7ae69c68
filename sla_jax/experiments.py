"""The evidence harness: a grid of trainer runs, resumable, summarised in RESULTS.md.

    python -m sla_jax.experiments --grid configs/grid_digits.py --out results/digits
    python -m sla_jax.experiments --grid configs/grid_cifar_cpu.py:data=/tmp/cifar10 \
        --out results/cifar10_cpu
    python -m sla_jax.experiments --grid ... --out ... --summarize_only
    python -m sla_jax.experiments --grid ... --out ... --runs_only  # no summary

A grid file defines ``get_config(arg)`` returning a ConfigDict with ``title``,
``config`` (a trainer config spec such as ``configs/quickstart.py``), ``runs``
(``"objective/transform"`` pairs), ``seeds`` and ``overrides`` (trainer flags
for every run), and optionally ``program`` (the module each run executes,
default ``sla_jax.main``; few-shot grids set ``sla_jax.fewshot_main``) and
``metrics`` (the test metrics to tabulate, default every objective's that a
finished run reports; e.g.
``5way1shot/acc_ag`` for few-shot) and ``comparisons`` (extra Welch tests
beside those against the baseline, each ``"GROUP:METRIC vs GROUP:METRIC"``,
e.g. ``"sla_sd/rotation:acc_sd vs sla/rotation:acc_ag"``: does the SD head
keep AG's gain?) and ``paired_with`` (the output folder of another grid with
the same groups, relative to the working directory like ``config``, e.g. the same schedule on other data: RESULTS.md then sets
each prediction's gain over the baseline here beside its gain there (in
points, relative to the baseline and as a share of its error), with a test of
their difference). Each run is ``python -m <program>`` in a
subprocess with its own workdir ``OUT/runs/<objective>_<transform>[_<variant>]_seed<k>``. A run
``"objective/transform/variant"`` adds the grid's ``variants[variant]``
(trainer overrides, e.g. the feature-level pretext task) to that run. A run whose
``results.json`` exists is skipped, an interrupted one resumes from its
checkpoint, so rerunning the same command finishes the grid; a SIGTERM to the
harness (or its process group) stops the running trainer at a checkpoint and
the harness with exit status 75. Wall time per run is summed over its
invocations and saved as it runs (every ``WALL_TIME_EVERY_S``), so a harness
killed outright loses at most that much of it. After the runs, ``OUT/RESULTS.md`` gets the
mean ± std (over seeds) of every test metric at the best validation step, the
commands, the machine and the wall times, with two plots beside it:
``curves.png`` (test accuracy vs step) and ``final.png`` (bar chart).
``OUT/analysis.md``, if present, is included verbatim (hand-written reading of
the numbers, kept across regenerations).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import difflib
import json
import os
import pathlib
import platform
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from absl import flags, logging
import ml_collections
from ml_collections import config_flags
import numpy as np

from sla_jax import cli, config_lib, long_tail, objectives, preemption

__all__ = ["Run", "Stopped", "expand", "run_grid", "collect", "metric_names",
           "summarize", "write_results"]



@dataclasses.dataclass(frozen=True)
class Run:
  """One trainer run of a grid."""
  objective: str
  transform: str
  seed: int
  variant: str = ""

  @property
  def name(self) -> str:
    variant = f"_{self.variant}" if self.variant else ""
    return f"{self.objective}_{self.transform}{variant}_seed{self.seed}"

  @property
  def group(self) -> str:
    variant = f"/{self.variant}" if self.variant else ""
    return f"{self.objective}/{self.transform}{variant}"


def _fewshot_objectives() -> tuple[str, ...]:
  from sla_jax import fewshot_train  # pylint: disable=g-import-not-at-top
  return tuple(fewshot_train.OBJECTIVES)


# A grid's program -> the objective names its trainer takes.
_PROGRAM_OBJECTIVES = {"sla_jax.main": objectives.names,
                       "sla_jax.fewshot_main": _fewshot_objectives}


def expand(grid: ml_collections.ConfigDict) -> list[Run]:
  """The grid's runs, seed by seed (every group gets its first seed early)."""
  from sla_jax import transforms  # pylint: disable=g-import-not-at-top
  runs = []
  variants = grid.get("variants") or {}
  for seed in grid.seeds:
    if isinstance(seed, bool) or not isinstance(seed, int) and not (
        isinstance(seed, str) and seed.lstrip("-").isdigit()):
      raise ValueError(f"Grid seeds must be whole numbers; got {seed!r} in "
                       f"seeds={tuple(grid.seeds)!r}.")
    for spec in grid.runs:
      parts = spec.split("/")
      if len(parts) not in (2, 3) or not all(parts):
        raise ValueError(f"Grid run {spec!r} must be 'objective/transform' or "
                         f"'objective/transform/variant', e.g. 'sla/rotation'.")
      known = _PROGRAM_OBJECTIVES.get(grid.get("program", "sla_jax.main"))
      if known is not None and parts[0] not in known():
        raise ValueError(f"Grid run {spec!r}: unknown objective {parts[0]!r}; "
                         f"use one of {', '.join(known())}.")
      try:
        transforms.get(parts[1])
      except ValueError as e:
        raise ValueError(f"Grid run {spec!r}: {e}") from None
      if len(parts) == 3 and parts[2] not in variants:
        raise ValueError(f"Grid run {spec!r}: variant {parts[2]!r} is not in "
                         f"the grid's variants ({', '.join(variants) or 'none'}).")
      runs.append(Run(parts[0], parts[1], int(seed),
                      parts[2] if len(parts) == 3 else ""))
  return runs


def _overrides(grid, run: Run) -> dict:
  overrides = config_lib.dotted(grid.overrides)
  if run.variant:
    overrides.update(config_lib.dotted(grid.variants[run.variant]))
  return overrides


def trainer_command(grid, run: Run, workdir, python=sys.executable) -> list[str]:
  """The trainer command line of ``run`` (``grid.program``, default ``sla_jax.main``)."""
  return [python, "-m", grid.get("program", "sla_jax.main"), "--config",
          grid.config,
          f"--workdir={workdir}", f"--config.objective={run.objective}",
          f"--config.transform={run.transform}", f"--config.seed={run.seed}",
          *[f"--config.{k}={v}" for k, v in sorted(_overrides(grid, run).items())]]


def _is_done(workdir: pathlib.Path) -> bool:
  return (workdir / "results.json").exists()


def _wall_seconds(workdir: pathlib.Path) -> float | None:
  """Wall time summed over a run's invocations (``wall_time.json``), or None."""
  path = workdir / "wall_time.json"
  return json.loads(path.read_text())["s"] if path.exists() else None


def _error_line(log: pathlib.Path) -> str:
  """``": <the trainer's error line>"`` from its log (``""`` if it wrote none)."""
  try:
    lines = log.read_text(errors="replace").splitlines()
  except OSError:
    return ""
  errors = [line.split(": error: ", 1)[1] for line in lines
            if re.match(r"[\w-]+: error: ", line)]  # sla-train, sla-fewshot
  return f": {errors[-1]}" if errors else ""


def check_trainer_config(grid) -> None:
  """ValueError unless the file of ``grid.config`` exists (relative: from the
  cwd) and, for this package's trainers, loads and has every field the grid's
  runs set."""
  path = grid.config.split(":", 1)[0]
  if not os.path.isfile(path):
    where = "" if os.path.isabs(path) else f" in {os.getcwd()}"
    raise ValueError(f"The grid's trainer config {path!r} does not exist{where}; "
                     f"run from the directory its path is relative to (the "
                     f"repository root for configs/grid_*.py).")
  if grid.get("program", "sla_jax.main") not in _PROGRAM_OBJECTIVES:
    return  # another trainer (tests' stand-ins): its config is its own
  try:
    config = config_lib.load_file(grid.config)
  except Exception as e:  # pylint: disable=broad-except  # the file's own error
    raise ValueError(f"The grid's trainer config {grid.config!r} does not "
                     f"load: {e}") from None
  for variant in ("", *(grid.get("variants") or {})):
    for key in ("objective", "transform", "seed",
                *_overrides(grid, Run("", "", 0, variant))):
      missing = config_lib.unknown_field(config, key)
      if missing is not None:
        where = f"variant {variant!r}" if variant else "overrides"
        close = missing[1]
        raise ValueError(f"The grid's {where} set {key!r}, which "
                         f"{grid.config!r} has no field for"
                         + (f"; did you mean {' or '.join(close)}?" if close
                            else "."))


class Stopped(Exception):
  """SIGTERM reached the harness; the running trainers saved what they could."""

  def __init__(self, stopped: Sequence[tuple[Run, int]]):
    names = ", ".join(run.name for run, _ in stopped)
    codes = ", ".join(str(code) for _, code in stopped)
    during = (f"during {names}; exit status {codes} (75: stopped after saving "
              f"a checkpoint; else before its first one)" if stopped else
              "between runs")
    super().__init__(f"stopped (SIGTERM) {during}; rerun the same command to "
                     f"resume.")


# How often the wall time of a running run is saved: a harness killed without
# warning (SIGKILL, the machine or session gone) loses at most this much of it.
WALL_TIME_EVERY_S = 30.0


@dataclasses.dataclass
class _Running:
  """A run's trainer subprocess."""
  run: Run
  workdir: pathlib.Path
  proc: subprocess.Popen
  log_file: Any
  start: float
  earlier_s: float  # wall time of the run's earlier invocations

  def save_wall_time(self) -> None:
    """Writes ``wall_time.json``: earlier invocations plus this one so far."""
    seconds = self.earlier_s + time.perf_counter() - self.start
    path = self.workdir / "wall_time.json"
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps({"s": seconds}) + "\n")
    os.replace(partial, path)  # a kill mid-write keeps the previous value


@contextlib.contextmanager
def _forwarding_sigterm(running: list[_Running]):
  """Passes a SIGTERM on to the ``running`` trainers (each saves a checkpoint
  and stops) instead of ending the harness before them; yields a list that
  holds True once one arrived. A signal sent to the whole process group
  (``timeout``) reaches a trainer twice, which stops it the same way."""
  received = []
  if threading.current_thread() is not threading.main_thread():
    yield received
    return

  def forward(signum, frame):  # pylint: disable=unused-argument
    received.append(True)
    for r in running:
      if r.proc.poll() is None:
        r.proc.send_signal(signal.SIGTERM)

  previous = signal.signal(signal.SIGTERM, forward)
  try:
    yield received
  finally:
    signal.signal(signal.SIGTERM, previous)


def _trainer_env(parallel: int) -> dict[str, str] | None:
  """Several trainers on one accelerator share its memory (XLA preallocates
  75 % per process otherwise); one inherits the harness's environment."""
  if parallel == 1 or "XLA_PYTHON_CLIENT_MEM_FRACTION" in os.environ:
    return None
  return {**os.environ, "XLA_PYTHON_CLIENT_MEM_FRACTION": f"{0.9 / parallel:.2f}"}


def _next_finished(running: list[_Running]) -> _Running:
  """Waits for a trainer to end, saving the wall times every WALL_TIME_EVERY_S."""
  saved = time.perf_counter()
  while True:
    for r in running:
      if r.proc.poll() is not None:
        return r
    if time.perf_counter() - saved >= WALL_TIME_EVERY_S:
      for r in running:
        r.save_wall_time()
      saved = time.perf_counter()
    time.sleep(0.2)


def run_grid(grid, out: pathlib.Path, log=print, parallel: int = 1) -> list[Run]:
  """Runs every unfinished run of ``grid`` under ``out/runs``; returns the runs.

  ``parallel`` trainers at a time, in the grid's order (more than one may pay
  where one run leaves the device idle, as a GPU at small batches; gpu_suite's
  concurrent parts measure whether it does). A failed
  run lets the running ones finish and starts no other; RuntimeError then.
  After a SIGTERM, once the running trainers have stopped and their wall times
  are recorded, raises :class:`Stopped`.
  """
  if parallel < 1:
    raise ValueError(f"parallel must be at least 1; got {parallel}.")
  runs = expand(grid)
  check_trainer_config(grid)
  comparisons(grid)  # a bad entry fails now, not after hours of training
  paired_folder(grid)
  pending = []
  for i, run in enumerate(runs, 1):
    if _is_done(out / "runs" / run.name):
      log(f"[{i}/{len(runs)}] {run.name}: done, skipped")
    else:
      pending.append((i, run))
  env = _trainer_env(parallel)
  running: list[_Running] = []
  failed, stopped_runs = [], []
  with _forwarding_sigterm(running) as stopped:
    while running or (pending and not stopped and not failed):
      while pending and len(running) < parallel and not stopped and not failed:
        i, run = pending.pop(0)
        workdir = out / "runs" / run.name
        workdir.mkdir(parents=True, exist_ok=True)
        command = trainer_command(grid, run, workdir)
        log(f"[{i}/{len(runs)}] {run.name}: {shlex.join(command[1:])}")
        log_file = (workdir / "log.txt").open("a")
        proc = subprocess.Popen(command, stdout=log_file,
                                stderr=subprocess.STDOUT, env=env)
        running.append(_Running(run, workdir, proc, log_file, time.perf_counter(),
                                _wall_seconds(workdir) or 0.0))
        if stopped:  # arrived before the trainer was in the list
          proc.send_signal(signal.SIGTERM)
      done = _next_finished(running)
      running.remove(done)
      done.log_file.close()
      done.save_wall_time()
      if stopped:
        stopped_runs.append((done.run, done.proc.returncode))
      elif done.proc.returncode != 0:
        failed.append(done)
  if stopped:
    raise Stopped(stopped_runs)
  if failed:
    raise RuntimeError(" ".join(
        f"Run {r.run.name} failed (exit {r.proc.returncode}"
        f"{_error_line(r.workdir / 'log.txt')}); see "
        f"{r.workdir / 'log.txt'}." for r in failed) +
                       " Finished runs are kept; rerun the command to resume.")
  return runs


def collect(grid, out: pathlib.Path) -> list[dict]:
  """One record per finished run: its results, curve and wall time."""
  records = []
  for run in expand(grid):
    workdir = out / "runs" / run.name
    if not _is_done(workdir):
      continue
    results = json.loads((workdir / "results.json").read_text())
    curve = []
    metrics_file = workdir / "metrics.jsonl"
    if metrics_file.exists():
      for line in metrics_file.read_text().splitlines():
        row = json.loads(line)
        if any(k.startswith("test/") for k in row):
          curve.append(row)
    wall_s = _wall_seconds(workdir)
    records.append({"run": run, "results": results, "curve": curve,
                    "wall_s": float("nan") if wall_s is None else wall_s})
  return records


def metric_names(grid) -> tuple[str, ...]:
  """The test metrics a grid tabulates: ``grid.metrics``, or every objective's
  (ValueError for a name sla-train never reports, in its grids)."""
  names = tuple(grid.get("metrics") or objectives.metric_names())
  if grid.get("program", "sla_jax.main") == "sla_jax.main":
    known = {*objectives.metric_names(), "loss"}
    known |= {f"{m}_{g}" for m in objectives.metric_names()
              for g in long_tail.GROUPS}  # long-tailed runs' class groups
    for name in names:
      if name not in known:
        close = difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(close)}?" if close else "."
        raise ValueError(f"Grid metric {name!r} is not one sla-train reports "
                         f"({', '.join(objectives.metric_names())}, loss, "
                         f"<metric>_many/_medium/_few){hint}")
  return names


def _tabulated(grid, records: Sequence[dict]) -> tuple[str, ...]:
  """The table's columns: ``grid.metrics`` as given, else every objective's
  metric that some finished run reports (no column of dashes for an objective
  the grid does not run)."""
  names = metric_names(grid)
  if grid.get("metrics"):
    return names
  return tuple(m for m in names
               if any(m in r["results"]["test"] for r in records))


def comparisons(grid) -> list[tuple[tuple[str, str], tuple[str, str]]]:
  """``grid.comparisons`` as ((group, metric), (group, metric)) pairs, checked
  against the grid's runs and metrics (ValueError naming the bad entry)."""
  groups = {run.group for run in expand(grid)}
  names = metric_names(grid)
  entries = grid.get("comparisons") or ()
  if isinstance(entries, str):
    raise ValueError(f"Grid comparisons must be a tuple of strings; got the "
                     f"string {entries!r} (write ({entries!r},)).")
  pairs = []
  for entry in entries:
    sides = [side.strip().rpartition(":") for side in str(entry).split(" vs ")]
    if len(sides) != 2 or not all(g and m for g, _, m in sides):
      raise ValueError(f"Grid comparison {entry!r} must be 'GROUP:METRIC vs "
                       f"GROUP:METRIC', e.g. 'sla_sd/rotation:acc_sd vs "
                       f"sla/rotation:acc_ag'.")
    for group, _, metric in sides:
      if group not in groups:
        raise ValueError(f"Grid comparison {entry!r}: {group!r} is not one of "
                         f"the grid's runs ({', '.join(sorted(groups))}).")
      if metric not in names:
        raise ValueError(f"Grid comparison {entry!r}: {metric!r} is not one of "
                         f"the grid's metrics ({', '.join(names)}).")
    pairs.append(tuple((g, m) for g, _, m in sides))
  return pairs


def paired_folder(grid) -> pathlib.Path | None:
  """``grid.paired_with`` as a path (None if unset; ValueError if not a string)."""
  paired = grid.get("paired_with")
  if paired is None or paired == "":
    return None
  if not isinstance(paired, str):
    raise ValueError(f"Grid paired_with must be one folder as a string (e.g. "
                     f"'results/tinyimagenet100_long_cpu_r20'); got {paired!r}.")
  return pathlib.Path(paired)


def _test_values(records: Sequence[dict],
                 metrics: Sequence[str]) -> dict[str, dict[str, list[float]]]:
  """Group -> {metric: [each seed's test value]} for ``metrics``, in run order."""
  groups: dict[str, dict[str, list[float]]] = {}
  for r in records:
    g = groups.setdefault(r["run"].group, {})
    for metric in metrics:
      if metric in r["results"]["test"]:
        g.setdefault(metric, []).append(r["results"]["test"][metric])
  return groups


def summarize(records: Sequence[dict],
              names: Sequence[str] | None = None) -> dict[str, dict]:
  """Group -> {metric: (mean, std, n)} over seeds, for the test metrics
  ``names`` (default: every objective's)."""
  groups = _test_values(records, tuple(names or objectives.metric_names()) +
                        _group_metric_names())
  return {group: {m: (float(np.mean(v)),
                      float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, len(v))
                  for m, v in metrics.items()}
          for group, metrics in groups.items()}


def _mean_std(mean: float, std: float) -> str:
  """``"12.34 ± 0.56"`` in %, or ``"–"`` for an empty class group (NaN)."""
  return "–" if np.isnan(mean) else f"{mean * 100:.2f} ± {std * 100:.2f}"


def _section(title: str, note: str, header: str, rule: str,
             rows: Sequence[str]) -> list[str]:
  """RESULTS.md lines of a titled table with a note (none without rows)."""
  return [f"## {title}", "", note, "", header, rule, *rows, ""] if rows else []


def _group_metric_names() -> tuple[str, ...]:
  """``<metric>_<group>``: accuracies over the many / medium / few-shot classes."""
  return tuple(f"{m}_{g}" for m in objectives.metric_names()
               for g in long_tail.GROUPS)


def _group_table(summary: dict[str, dict]) -> list[str]:
  """RESULTS.md lines: each run group's accuracy per class group (long-tailed grids)."""
  rows = []
  for group, metrics in summary.items():
    for m in objectives.metric_names():
      if f"{m}_{next(iter(long_tail.GROUPS))}" not in metrics:
        continue
      cells = [_mean_std(*metrics[f"{m}_{g}"][:2]) for g in long_tail.GROUPS]
      rows.append(f"| {group} | {m} | " + " | ".join(cells) + " |")
  return _section(
      "Test accuracy by class group (%, mean ± std over seeds)",
      "Classes with > 100 (many), 20-100 (medium) and < 20 (few) training "
      "images.",
      "| objective/transform | prediction | " + " | ".join(long_tail.GROUPS) +
      " |", "|---|---|" + "---:|" * len(long_tail.GROUPS), rows)


def _reference_group(group: str, groups: Sequence[str]) -> str | None:
  """The baseline group a group is compared with: the baseline of the same
  variant if the grid has one, else the grid's first baseline without one."""
  variant = group.split("/")[2:]
  baselines = [g for g in groups if g.split("/")[0] == "baseline"]
  for candidate in baselines:
    if candidate.split("/")[2:] == variant:
      return candidate
  return next((g for g in baselines if len(g.split("/")) == 2), None)


def _welch_cells(ours: Sequence[float], base: Sequence[float]) -> str:
  """``difference | Welch p | n`` table cells: the difference of the means,
  Welch's two-sided p (``–`` below two seeds a side), the seeds of each side."""
  from scipy import stats  # pylint: disable=g-import-not-at-top
  p = (f"{stats.ttest_ind(ours, base, equal_var=False).pvalue:.3f}"
       if min(len(ours), len(base)) >= 2 else "–")
  return (f"{np.mean(ours) - np.mean(base):+.2f} | {p} | "
          f"{len(ours)} / {len(base)}")


def _percent_values(records: Sequence[dict], names: Sequence[str]):
  """Group -> {metric: [each seed's test value in %]}."""
  return {group: {m: [v * 100 for v in vs] for m, vs in metrics.items()}
          for group, metrics in _test_values(records, names).items()}


def _comparison_table(records: Sequence[dict], grid) -> list[str]:
  """RESULTS.md lines: the grid's ``comparisons`` that have runs on both sides."""
  values = _percent_values(records, metric_names(grid))
  rows = []
  for (group, metric), (other, other_metric) in comparisons(grid):
    ours = values.get(group, {}).get(metric)
    base = values.get(other, {}).get(other_metric)
    if ours and base:
      rows.append(f"| {group} | {metric} | {other} | {other_metric} | "
                  f"{_welch_cells(ours, base)} |")
  return _section(
      "Chosen comparisons (test %, difference of means, Welch's t-test)",
      "The grid's `comparisons`: the first prediction minus the second, as in "
      "the table above.",
      "| objective/transform | prediction | against | its prediction | "
      "difference | Welch p | n |", "|---|---|---|---|---:|---:|---:|", rows)


def _gain_gap_p(here: Sequence[float], here_base: Sequence[float],
                there: Sequence[float], there_base: Sequence[float]) -> str:
  """Two-sided p that two gains (each a difference of independent means) are
  equal: Welch's t over the four samples, Welch-Satterthwaite degrees of
  freedom; ``–`` below two seeds in a sample or with no spread at all."""
  from scipy import stats  # pylint: disable=g-import-not-at-top
  samples = (here, here_base, there, there_base)
  if min(len(s) for s in samples) < 2:
    return "–"
  variances = [np.var(s, ddof=1) / len(s) for s in samples]
  total = sum(variances)
  if total == 0:
    return "–"
  df = total ** 2 / sum(v ** 2 / (len(s) - 1) for v, s in zip(variances, samples))
  gap = (np.mean(there) - np.mean(there_base)) - (np.mean(here) - np.mean(here_base))
  return f"{2 * stats.t.sf(abs(gap) / np.sqrt(total), df):.3f}"


def _gain_cells(gain: float, base: Sequence[float]) -> str:
  """Table cells of a gain in points over a baseline (percent values): the
  points, relative to the baseline's mean, and as a share of its error."""
  mean = np.mean(base)
  of_error = f"{100 * gain / (100 - mean):+.1f} %" if mean < 100 else "–"
  return f"{gain:+.2f} | {100 * gain / mean:+.1f} % | {of_error}"


def _paired_table(records: Sequence[dict], grid) -> list[str]:
  """RESULTS.md lines: each prediction's gain over the baseline's ``acc`` here
  and in ``grid.paired_with`` (that folder's runs of this grid's groups)."""
  paired = paired_folder(grid)
  if paired is None:
    return []
  names = metric_names(grid)
  here, there = (_percent_values(r, names)
                 for r in (records, collect(grid, paired)))
  rows = []
  for group, metrics in here.items():
    reference = _reference_group(group, list(here))
    if (reference in (None, group) or "acc" not in here[reference] or
        "acc" not in there.get(reference, {})):
      continue
    base, other_base = here[reference]["acc"], there[reference]["acc"]
    for metric in names:
      ours, theirs = metrics.get(metric), there.get(group, {}).get(metric)
      if not ours or not theirs:
        continue
      gain, other_gain = (np.mean(a) - np.mean(b)
                          for a, b in ((ours, base), (theirs, other_base)))
      rows.append(
          f"| {group} | {metric} | {_gain_cells(gain, base)} | "
          f"{_gain_cells(other_gain, other_base)} | {other_gain - gain:+.2f} | "
          f"{_gain_gap_p(ours, base, theirs, other_base)} | "
          f"{len(ours)} / {len(base)}, {len(theirs)} / {len(other_base)} |")
  title = f"Gains here and in `{paired}` (test %, against each side's baseline)"
  if not rows:
    return [f"## {title}", "", "No prediction has finished runs and a "
            f"baseline both here and under `{paired}` yet.", ""]
  return _section(
      title, "Each prediction minus the baseline's `acc` of the same side "
      "(points; relative to that baseline's mean, the paper's measure; and as "
      "a share of the error the baseline leaves, 100 minus its mean, which "
      "does not favour the side with the lower baseline); the gap is the gain "
      "there minus the gain here, its p Welch's t over the four samples "
      "(Welch-Satterthwaite degrees of freedom); n = seeds of the prediction "
      "/ of the baseline, here, there.",
      "| objective/transform | prediction | gain here | relative | of the "
      "error | gain there | relative | of the error | gap | p | n |",
      "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|", rows)


def _baseline_table(records: Sequence[dict], names: Sequence[str]) -> list[str]:
  """RESULTS.md lines: each group's predictions against its baseline's ``acc``
  (difference of means in points, Welch's two-sided t-test over the seeds)."""
  values = _percent_values(records, names)
  rows = []
  for group, metrics in values.items():
    reference = _reference_group(group, list(values))
    if reference is None or reference == group or "acc" not in values[reference]:
      continue
    base = values[reference]["acc"]
    for metric in names:
      if metric in metrics:
        rows.append(f"| {group} | {metric} | {reference} | "
                    f"{_welch_cells(metrics[metric], base)} |")
  return _section(
      "Against the baseline (test %, difference of means, Welch's t-test)",
      "Each prediction of a group against the `acc` of the baseline with the "
      "same variant (else the plain baseline): difference of the means in "
      "points, Welch's two-sided p over the seeds "
      "(`scipy.stats.ttest_ind(equal_var=False)`), n = seeds of each side.",
      "| objective/transform | prediction | baseline | difference | Welch p | "
      "n |", "|---|---|---|---:|---:|---:|", rows)


def _machine() -> str:
  import jax  # pylint: disable=g-import-not-at-top
  return (f"{platform.machine()}, {os.cpu_count()} CPU cores, "
          f"{platform.python_implementation()} {platform.python_version()}, "
          f"jax {jax.__version__} ({jax.default_backend()}: {_device_kind()})")


def _machine_line(records: Sequence[dict]) -> str:
  """This machine, or, where runs name their devices (``device_kind`` in
  results.json, e.g. runs made on a GPU and summarised here), those too."""
  kinds = collections.Counter(r["results"]["device_kind"] for r in records
                              if "device_kind" in r["results"])
  if not kinds or set(kinds) == {_device_kind()}:
    return _machine()
  ran = ", ".join(f"{n} on {kind}" for kind, n in sorted(kinds.items()))
  unnamed = len(records) - sum(kinds.values())
  ran += f", {unnamed} not recorded" if unnamed else ""
  return f"runs: {ran}; summarised on {_machine()}"


def _device_kind() -> str:
  import jax  # pylint: disable=g-import-not-at-top
  return jax.devices()[0].device_kind


def _selection(results: dict) -> str:
  """The test metric a run is read by: its selection metric, or, for a run
  without validation (``selection_metric`` null), its first accuracy."""
  if results.get("selection_metric"):
    return results["selection_metric"].split("/", 1)[1]
  names = sorted(n for n in results["test"] if not n.endswith("_ci95"))
  return next((n for n in names if n.split("/")[-1].startswith("acc")),
              names[0] if names else "acc")


def _plot(grid, records, summary, out: pathlib.Path) -> list[str]:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  groups = list(summary)
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for color, group in zip(plt.cm.tab10.colors, groups):
    group_records = [r for r in records if r["run"].group == group]
    selection = _selection(group_records[0]["results"])
    for metric, style in ((selection, "-"), ("acc_ag", "--")):
      rows = [row for r in group_records for row in r["curve"]
              if f"test/{metric}" in row]
      steps = sorted({row["step"] for row in rows})
      if not steps:
        continue
      means = [np.mean([row[f"test/{metric}"] for row in rows
                        if row["step"] == s]) for s in steps]
      ax.plot(steps, np.asarray(means) * 100, style, color=color,
              label=f"{group} {metric}")
  ax.set_xlabel("step")
  ax.set_ylabel("test accuracy (%), mean over seeds")
  ax.set_title(grid.title, fontsize=10)
  ax.legend(fontsize=7, ncol=2)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(out / "curves.png", dpi=110)
  plt.close(fig)

  fig, ax = plt.subplots(figsize=(7, 4))
  names = metric_names(grid)
  width = 0.8 / len(names)
  for k, metric in enumerate(names):
    xs = [i for i, g in enumerate(groups) if metric in summary[g]]
    if not xs:
      continue
    ax.bar(np.asarray(xs) + (k - (len(names) - 1) / 2) * width,
           [summary[groups[i]][metric][0] * 100 for i in xs], width,
           yerr=[summary[groups[i]][metric][1] * 100 for i in xs],
           capsize=2, label=metric)
  ax.set_xticks(range(len(groups)), groups, rotation=20, fontsize=8)
  ax.set_ylabel("test accuracy (%), mean ± std")
  lows = [v[0] - v[1] for s in summary.values() for k, v in s.items()
          if k in names]
  ax.set_ylim(max(0.0, min(lows) * 100 - 5) if lows else 0, 100)
  ax.set_title(grid.title, fontsize=10)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(out / "final.png", dpi=110)
  plt.close(fig)
  return ["curves.png", "final.png"]


def write_results(grid, grid_spec: str, out: pathlib.Path) -> pathlib.Path:
  """Writes ``out/RESULTS.md`` and the plots from the finished runs."""
  records = collect(grid, out)
  if not records:
    raise RuntimeError(f"No finished runs under {out / 'runs'}; nothing to "
                       f"summarize.")
  names = _tabulated(grid, records)
  summary = summarize(records, names)
  plots = _plot(grid, records, summary, out)
  planned = expand(grid)
  lines = [f"# {grid.title}", "",
           "Generated by `sla_jax.experiments` from the runs under `runs/`; "
           "rerun the command to add runs or refresh.", "",
           "```", f"python -m sla_jax.experiments --grid {grid_spec} "
           f"--out {out}", "```", "",
           f"Machine: {_machine_line(records)}.", "",
           f"Runs finished: {len(records)} of {len(planned)} planned "
           f"({len(grid.runs)} objective/transform pairs × seeds "
           f"{', '.join(str(s) for s in grid.seeds)}).", ""]
  if grid.get("description"):
    lines += [grid.description.strip(), ""]
  for name, overrides in (grid.get("variants") or {}).items():
    lines += [f"Variant `{name}`: " + ", ".join(
        f"`--config.{k}={v}`" for k, v in config_lib.dotted(overrides).items()) + ".", ""]
  lines += ["## Test accuracy at the best validation step (%, mean ± std over "
            "seeds, n = seeds)", "",
            "| objective/transform | n | " + " | ".join(names) + " |",
            "|---|---:|" + "---:|" * len(names)]
  for group, metrics in summary.items():
    n = max(v[2] for k, v in metrics.items() if k in names)
    cells = [_mean_std(*metrics[m][:2]) if m in metrics else "–"
             for m in names]
    lines.append(f"| {group} | {n} | " + " | ".join(cells) + " |")
  lines += ["", grid.get("metrics_note") or (
      "`acc`: the class head on the original image (baseline, DA, "
      "MT); `acc_si`: SLA's single inference (identity view's joint "
      "logits); `acc_ag`: aggregated over the M views; `acc_sd`: the "
      "self-distilled single head."), ""]
  lines += _baseline_table(records, names)
  lines += _comparison_table(records, grid)
  lines += _paired_table(records, grid)
  lines += _group_table(summary)
  lines += [f"![test accuracy vs step]({plots[0]})", "",
            f"![final test accuracy]({plots[1]})", ""]
  template = Run("O", "T", "S")  # type: ignore[arg-type]
  lines += ["## Runs", "", "Each run: `" + shlex.join(
      trainer_command(grid, template, "runs/NAME", python="python")) + "`", "",
            "| run | best step / final | selection metric | test "
            "(selection) | wall time |", "|---|---|---|---:|---:|"]
  for r in records:
    res = r["results"]
    metric = _selection(res)
    chosen = res.get("selection_metric") or "none (the last step)"
    lines.append(f"| {r['run'].name} | {res['best_step']} / "
                 f"{res['final_step']} | {chosen} | "
                 f"{res['test'].get(metric, float('nan')) * 100:.2f} | "
                 f"{r['wall_s']:.0f} s |")
  analysis = out / "analysis.md"
  if analysis.exists():
    lines += ["", analysis.read_text().strip()]
  path = out / "RESULTS.md"
  path.write_text("\n".join(lines) + "\n")
  return path


_GRID = config_flags.DEFINE_config_file("grid", None, "Grid file (configs/grid_*.py).",
                                        lock_config=True)
_OUT = flags.DEFINE_string("out", None, "Output directory (runs/, RESULTS.md, plots).")
_SUMMARIZE_ONLY = flags.DEFINE_bool("summarize_only", False,
                                    "Only rewrite RESULTS.md from finished runs.")
_PARALLEL = flags.DEFINE_integer(
    "parallel", 1, "Trainer runs at a time (e.g. on one GPU, which one "
    "small-batch run leaves mostly idle; each gets 0.9/N of its memory).")
_RUNS_ONLY = flags.DEFINE_bool(
    "runs_only", False, "Only run the runs; write no RESULTS.md (summarise "
    "elsewhere with --summarize_only, e.g. runs made on a lent GPU).")


def main(argv):
  del argv  # cli.run refuses surplus arguments
  logging.set_verbosity(logging.WARNING)
  out = pathlib.Path(_OUT.value)
  spec = flags.FLAGS["grid"].serialize().split("=", 1)[1]
  try:
    if _SUMMARIZE_ONLY.value and _RUNS_ONLY.value:
      raise ValueError("--summarize_only and --runs_only exclude each other; "
                       "pass one.")
    if not _SUMMARIZE_ONLY.value:
      run_grid(_GRID.value, out, parallel=_PARALLEL.value)
    if _RUNS_ONLY.value:
      print(f"Finished the runs of {out / 'runs'}")
      return
    path = write_results(_GRID.value, spec, out)
  except Stopped as e:
    print(f"sla-experiments: {e}", file=sys.stderr)
    sys.exit(preemption.EXIT_CODE)
  except (RuntimeError, ValueError) as e:
    print(f"sla-experiments: error: {e}", file=sys.stderr)
    sys.exit(2)
  print(f"Wrote {path}")


def run():
  """Console-script entry point: bad flags or grid files are one line, exit 2."""
  flags.mark_flags_as_required(["grid", "out"])
  cli.run(main, "sla-experiments",
          ("grid", "out", "parallel", "summarize_only", "runs_only"), __doc__)


if __name__ == "__main__":
  run()
