"""Metrics to ``workdir/metrics.jsonl`` (one JSON object per logged step) and TensorBoard."""

from __future__ import annotations

import json
import math
import pathlib

__all__ = ["MetricWriter"]


class MetricWriter:
  """Appends ``{"step": s, **metrics}`` lines; TensorBoard event files beside them.

  On resume from step ``s``, lines of steps after ``s`` (written before the
  interruption, to be recomputed) are dropped so the file reads as one run.
  """

  def __init__(self, workdir: str | pathlib.Path, resume_step: int = 0,
               tensorboard: bool = True):
    self.path = pathlib.Path(workdir) / "metrics.jsonl"
    if self.path.exists():
      kept = [line for line in self.path.read_text().splitlines()
              if line.strip() and json.loads(line)["step"] <= resume_step]
      self.path.write_text("".join(line + "\n" for line in kept))
    self._tb = None
    if tensorboard:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._tb = SummaryWriter(str(workdir))

  def write(self, step: int, metrics: dict[str, float]) -> None:
    row = {"step": int(step)}
    row.update({k: float(v) for k, v in metrics.items()})
    with self.path.open("a") as f:
      f.write(json.dumps({k: (v if not isinstance(v, float) or math.isfinite(v)
                              else str(v)) for k, v in row.items()}) + "\n")
    if self._tb is not None:
      for k, v in metrics.items():
        self._tb.add_scalar(k, float(v), int(step))
      self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
