"""Multi-process start-up, the device mesh, and process-0 helpers.

One process per host (TPU VM worker, GPU node) or, for tests, several local CPU
processes. :func:`initialize` must run before any JAX computation; the CLI calls
it when ``--distributed`` (or ``SLA_DISTRIBUTED=1``) is given. On Cloud TPU,
Slurm and Open MPI JAX detects the coordinator, process count and id itself;
elsewhere pass them (or set ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``,
``JAX_PROCESS_ID``, which JAX reads).
"""

from __future__ import annotations

import os

import jax

__all__ = ["initialize", "is_main", "sync", "requested_by_env", "make_mesh"]


def requested_by_env(environ=os.environ) -> bool:
  """True if ``SLA_DISTRIBUTED`` is set to 1/true/yes."""
  return environ.get("SLA_DISTRIBUTED", "").lower() in ("1", "true", "yes")


def initialize(coordinator_address: str | None = None,
               num_processes: int | None = None,
               process_id: int | None = None) -> None:
  """Joins the job; CPU processes talk over gloo. Arguments default to auto-detection."""
  if jax.config.jax_cpu_collectives_implementation in (None, "", "none"):
    # CPU processes need cross-process collectives (gloo is JAX 0.10's default).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes,
                             process_id=process_id)


def is_main() -> bool:
  """True on the process that writes logs, metrics and results (process 0)."""
  return jax.process_index() == 0


def sync(name: str) -> None:
  """Barrier across processes (a no-op with one process)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)


def make_mesh(num_devices: int | None = -1) -> jax.sharding.Mesh:
  """A 1-D ``('data',)`` mesh over the first ``num_devices`` devices (-1: all).

  With several processes the mesh must span every device. ValueError naming
  the fix otherwise.
  """
  devices = jax.devices()
  n = len(devices) if num_devices in (-1, None) else num_devices
  if not 1 <= n <= len(devices):
    raise ValueError(f"num_devices={num_devices} but JAX sees {len(devices)} "
                     f"devices.")
  if jax.process_count() > 1 and n != len(devices):
    raise ValueError(f"num_devices={num_devices}: with {jax.process_count()} "
                     f"processes the mesh spans all {len(devices)} devices; "
                     f"use num_devices=-1.")
  # Auto axes: XLA propagates the batch sharding (sharding "in types" is opt-in).
  return jax.make_mesh((n,), ("data",), devices=devices[:n],
                       axis_types=(jax.sharding.AxisType.Auto,))
