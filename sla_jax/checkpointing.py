"""Restoring that survives a damaged newest checkpoint; finiteness checks before saving.

Every process calls these (Orbax coordinates multi-process saves and restores);
only process 0 moves files.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from sla_jax import distributed

__all__ = ["restore_newest_readable", "all_finite", "first_non_finite"]


@jax.jit
def all_finite(tree) -> jax.Array:
  """True iff every floating-point leaf of ``tree`` is finite."""
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def first_non_finite(steps, values) -> int | None:
  """The first step whose value is nan or inf, or None."""
  for step, value in zip(steps, values):
    if not np.isfinite(value):
      return int(step)
  return None


def restore_newest_readable(manager: ocp.CheckpointManager, args: Any,
                            quarantine: epath.Path,
                            is_valid: Callable[[Any], bool] = lambda _: True
                            ) -> tuple[int | None, Any]:
  """Restores the newest step that reads back and passes ``is_valid``.

  A step that fails (missing or truncated files, non-finite values) is logged
  with a warning and moved, not deleted, to ``quarantine/<step>`` so that the
  run can save that step again; the next older step is tried. Returns
  ``(step, restored)``, or ``(None, None)`` if no step is usable.
  """
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      restored = manager.restore(step, args=args)
      problem = None if is_valid(restored) else "non-finite values"
    except Exception as e:  # pylint: disable=broad-except  # any read failure
      problem = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    if problem is None:
      return step, restored
    target = quarantine / f"{step}-{int(time.time())}"
    logging.warning(
        "Checkpoint step %d in %s is unusable (%s); moving it to %s and "
        "falling back to the previous checkpoint.", step, manager.directory,
        problem, target)
    if distributed.is_main():
      quarantine.mkdir(parents=True, exist_ok=True)
      (epath.Path(manager.directory) / str(step)).rename(target)
    distributed.sync(f"sla_quarantine_{step}")
    manager.reload()
  return None, None
