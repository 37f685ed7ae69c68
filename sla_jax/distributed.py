"""Multi-process start-up, the device mesh, and process-0 helpers.

One process per host (TPU VM worker, GPU node) or, for tests, several local CPU
processes. :func:`initialize` must run before any JAX computation; the CLI calls
it when ``--distributed`` (or ``SLA_DISTRIBUTED=1``) is given. On Cloud TPU,
Slurm and Open MPI JAX detects the coordinator, process count and id itself;
elsewhere pass all three (JAX also reads the address from
``JAX_COORDINATOR_ADDRESS``).

Every process must start with the same config and see one shared workdir:
:func:`check_same_everywhere` and :func:`agreed_errors` turn a difference, or
an error only some processes hit, into the same ValueError on every process
(instead of a hang at the next collective).
"""

from __future__ import annotations

import contextlib
import hashlib
import os

import jax
import numpy as np

__all__ = ["initialize", "is_main", "sync", "requested_by_env", "make_mesh",
           "check_start_flags", "check_coordinator_port",
           "check_same_everywhere", "agreed_errors"]

# The longest error message one process passes to the others (bytes of UTF-8).
_MESSAGE_BYTES = 2048


def requested_by_env(environ=os.environ) -> bool:
  """True if ``SLA_DISTRIBUTED`` is set to 1/true/yes."""
  return environ.get("SLA_DISTRIBUTED", "").lower() in ("1", "true", "yes")


def check_start_flags(coordinator_address: str | None,
                      num_processes: int | None, process_id: int | None,
                      timeout_s: int = 300) -> None:
  """ValueError naming the fix for start-up values JAX would crash on (a
  traceback, or a segmentation fault for a port that is not a number)."""
  if timeout_s < 1:
    raise ValueError(f"the start-up timeout must be >= 1 s; got {timeout_s}.")
  if num_processes is not None and num_processes < 1:
    raise ValueError(f"--num_processes must be >= 1; got {num_processes}.")
  if process_id is not None and not (
      0 <= process_id < (num_processes if num_processes is not None else 2**31)):
    raise ValueError(f"--process_id must lie in [0, --num_processes) = [0, "
                     f"{num_processes}); got {process_id}.")
  if coordinator_address is not None:
    host, colon, port = coordinator_address.rpartition(":")
    if not (colon and host and port.isdigit() and 0 < int(port) < 65536):
      raise ValueError(f"--coordinator_address must be host:port of process 0 "
                       f"(e.g. 10.0.0.1:1234); got {coordinator_address!r}.")


def check_coordinator_port(coordinator_address: str) -> None:
  """ValueError if process 0 cannot listen on the address's port (JAX then
  crashes, with a traceback or a segmentation fault)."""
  import socket  # pylint: disable=g-import-not-at-top
  port = int(coordinator_address.rpartition(":")[2])
  with socket.socket(socket.AF_INET6 if ":" in coordinator_address.rpartition(":")[0]
                     else socket.AF_INET) as probe:
    try:
      probe.bind(("", port))
    except OSError as e:
      raise ValueError(f"process 0 cannot listen on port {port} of "
                       f"--coordinator_address={coordinator_address} ({e.strerror}): "
                       f"pick a free port.") from None


def initialize(coordinator_address: str | None = None,
               num_processes: int | None = None,
               process_id: int | None = None,
               timeout_s: int = 300) -> None:
  """Joins the job; CPU processes talk over gloo. Arguments default to auto-detection.

  Waits up to ``timeout_s`` for every process (JAX then ends the process).
  ValueError naming the fix for values JAX refuses or would crash on.
  """
  check_start_flags(coordinator_address, num_processes, process_id, timeout_s)
  if process_id == 0 and coordinator_address:  # process 0 runs the coordinator
    check_coordinator_port(coordinator_address)
  if jax.config.jax_cpu_collectives_implementation in (None, "", "none"):
    # CPU processes need cross-process collectives (gloo is JAX 0.10's default).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  try:
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes,
                               process_id=process_id,
                               initialization_timeout=timeout_s)
  except ValueError as e:  # e.g. nothing given and no cluster detected
    raise ValueError(f"jax.distributed.initialize: {e} Outside Cloud TPU, Slurm "
                     f"and Open MPI give --coordinator_address, --num_processes "
                     f"and --process_id.") from None


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


def _gathered(row: np.ndarray) -> np.ndarray:
  """``[P, ...]``: every process's ``row`` (a uint8 array of one shape)."""
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return np.asarray(multihost_utils.process_allgather(row))


def check_same_everywhere(what: str, text: str) -> None:
  """ValueError on every process unless all processes pass the same ``text``
  (e.g. the config as JSON); a no-op with one process."""
  if jax.process_count() == 1:
    return
  digest = np.frombuffer(hashlib.sha256(text.encode()).digest(), np.uint8)
  digests = _gathered(digest)
  differ = [i for i, d in enumerate(digests) if not np.array_equal(d, digests[0])]
  if differ:
    raise ValueError(
        f"the {what} of process{'es' if len(differ) > 1 else ''} "
        f"{', '.join(map(str, differ))} differs from process 0's: start every "
        f"process with the same flags.")


@contextlib.contextmanager
def agreed_errors(*errors: type[Exception]):
  """Runs the block on every process; if it raised one of ``errors`` on any of
  them, every process raises the first such error (by process id), prefixed by
  that process's id when it is not this one. A no-op with one process.

  Wrap checks whose outcome may differ between processes (a file only some
  hosts see), so that no process waits at a collective for one that has left.
  """
  if jax.process_count() == 1:
    yield
    return
  message, raised = "", None
  try:
    yield
  except errors as e:  # pylint: disable=catching-non-exception
    message, raised = f"{type(e).__name__}\0{e}", e
  row = np.zeros(_MESSAGE_BYTES, np.uint8)
  encoded = message.encode()[:_MESSAGE_BYTES]
  row[:len(encoded)] = np.frombuffer(encoded, np.uint8)
  for i, other in enumerate(_gathered(row)):
    text = bytes(other).rstrip(b"\0").decode(errors="replace")
    if not text:
      continue
    if i == jax.process_index():
      raise raised
    kind, _, detail = text.partition("\0")
    error = next((e for e in errors if e.__name__ == kind), errors[0])
    raise error(f"process {i}: {detail}")
