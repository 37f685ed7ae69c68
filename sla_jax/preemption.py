"""Preemption: on SIGTERM, checkpoint at the next step boundary and stop.

One process: a SIGTERM handler sets a flag that :meth:`Watcher.reached` reads.
Several processes: JAX's preemption sync manager (started by
``jax.distributed.initialize``) catches SIGTERM and makes every process agree
on the same step (``multihost_utils.reached_preemption_sync_point``).
"""

from __future__ import annotations

import signal
import threading

import jax

__all__ = ["Preempted", "Watcher", "EXIT_CODE"]

# The CLI's exit status after a preemption checkpoint (EX_TEMPFAIL: retry).
EXIT_CODE = 75


class Preempted(Exception):
  """Raised after the checkpoint at ``step`` is saved; rerun to resume."""

  def __init__(self, step: int, directory):
    super().__init__(f"preempted (SIGTERM) at step {step}; saved a checkpoint "
                     f"in {directory}; rerun the same command to resume.")
    self.step = step


class Watcher:
  """Context manager: ``reached(step)`` is True once SIGTERM has arrived."""

  def __init__(self):
    self._flag = threading.Event()
    self._previous = None

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    self._flag.set()

  def __enter__(self) -> "Watcher":
    if (jax.process_count() == 1
        and threading.current_thread() is threading.main_thread()):
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None

  def reached(self, step: int) -> bool:
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      try:
        return multihost_utils.reached_preemption_sync_point(step)
      except RuntimeError:  # preemption service disabled
        return False
    return self._flag.is_set()
