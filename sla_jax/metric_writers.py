"""Metrics to ``workdir/metrics.jsonl`` (one JSON object per logged step) and TensorBoard."""

from __future__ import annotations

import json
import math
import os

from etils import epath

__all__ = ["MetricWriter", "NullWriter"]


class MetricWriter:
  """Appends ``{"step": s, **metrics}`` lines; TensorBoard event files beside them.

  On resume from step ``s``, lines of steps after ``s`` (written before the
  interruption, to be recomputed) are dropped so the file reads as one run.
  ``workdir`` may be local or ``gs://`` (object stores cannot append, so
  there the file is rewritten at each write; it is small).
  """

  def __init__(self, workdir: str | os.PathLike, resume_step: int = 0,
               tensorboard: bool = True):
    self.path = epath.Path(workdir) / "metrics.jsonl"
    self._local = "://" not in os.fspath(workdir)
    self._lines: list[str] = []
    if self.path.exists():
      self._lines = [line + "\n" for line in self.path.read_text().splitlines()
                     if line.strip() and json.loads(line)["step"] <= resume_step]
      self.path.write_text("".join(self._lines))
    self._workdir = workdir
    self._tensorboard = tensorboard
    self._tb = None  # opened at the first write: a run with nothing left to
    # do (a finished one rerun) adds no empty event file

  def write(self, step: int, metrics: dict[str, float]) -> None:
    row = {"step": int(step)}
    row.update({k: float(v) for k, v in metrics.items()})
    line = json.dumps({k: (v if not isinstance(v, float) or math.isfinite(v)
                           else str(v)) for k, v in row.items()}) + "\n"
    self._lines.append(line)
    if self._local:
      with self.path.open("a") as f:
        f.write(line)
    else:
      self.path.write_text("".join(self._lines))
    if self._tensorboard and self._tb is None:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._tb = SummaryWriter(os.fspath(self._workdir))
    if self._tb is not None:
      for k, v in metrics.items():
        self._tb.add_scalar(k, float(v), int(step))
      self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


class NullWriter:
  """The writer of processes other than 0: writes nothing."""

  def write(self, step: int, metrics: dict[str, float]) -> None:
    pass

  def close(self) -> None:
    pass
