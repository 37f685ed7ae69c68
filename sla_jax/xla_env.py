"""XLA flags the command-line tools set by default (``XLA_FLAGS``), and why.

XLA reads ``XLA_FLAGS`` once, when the first backend starts; options passed to
``jax.jit(..., compiler_options=...)`` do not reach the CPU scheduler (checked:
the compiled schedule is unchanged). So the tools (:func:`sla_jax.cli.run`)
add these defaults to the environment before any computation, and the
library never touches the environment: a codebase that imports sla_jax keeps
its own flags. A flag already named in ``XLA_FLAGS`` is left as given;
``SLA_XLA_DEFAULTS=0`` turns the defaults off.

- ``xla_cpu_enable_concurrency_optimized_scheduler=false``: the plain op
  order. XLA:CPU's concurrency-optimised scheduler orders ops so that
  independent ones may run concurrently, which keeps more large activations
  alive at once. Where it was the default (2026-11-23), the ResNet train step
  ran much faster without it. The installed jaxlib 0.10.2 already defaults to
  false (the step compiles to the same program with and without the flag), so
  the flag pins the order in case the default changes back (BENCHMARKS.md).
  Order only: every op computes the same values. Affects CPU programs only
  (accelerator runs unchanged).

- ``xla_cpu_experimental_ynn_fusion_type=-individual_dot``: matrix products
  run in XLA's own (Eigen) dot instead of a YNNPACK call; convolutions stay
  in YNNPACK. The matmul weight gradients (:mod:`sla_jax.models.conv_ops`:
  few output channels, a long sum over pixels) are faster that way, and so is
  the step of the ResNet-32 and ResNet-8 configs measured; the quickstart's,
  whose layers are too small for the matmul, is unchanged (BENCHMARKS.md,
  "Matrix products outside YNNPACK"). Values change in the last bits (another
  summation order), not the math. Affects CPU programs only.

- ``xla_force_host_platform_device_count=D`` (:func:`host_device_count`: one
  CPU device per core, as the largest power of two up to 8): XLA:CPU runs
  each elementwise fusion (BatchNorm, ReLU, the patches of the weight
  gradients) on one thread, so one device leaves the other cores idle for
  much of the step; the trainer's sharded step over D devices runs them on D
  threads (BatchNorm statistics stay those of the whole batch): the protocol
  step 1.23x faster on 2 cores (BENCHMARKS.md). A power of two so that the
  usual batch sizes divide; ``--config.num_devices=1`` (or
  ``JAX_NUM_CPU_DEVICES``, which JAX prefers over this flag) chooses
  otherwise. Results agree with one device to float rounding, not bit for
  bit. Affects the CPU platform only.

Several CPU devices and queued work: XLA:CPU's client runs each device's part
of a multi-device program, and each part's dispatch, on one pool of
max(cores, D) threads. When more than 32 programs per device are queued (a
loop that never waits), a dispatch blocks its pool thread on the device's
in-flight limit and the next collective, which needs D threads at once, never
gets them: a deadlock that XLA ends by aborting after its rendezvous timeout
(``benchmarks/cpu_collective_deadlock.py`` shows it in seconds; it made this
default deadlock under load in 7 of 14 quickstart runs before the trainer
bounded its queue). The trainer waits for the call
:data:`sla_jax.train.MAX_CALLS_IN_FLIGHT` back, far below the limit. A loop
of one's own on several CPU devices should do the same (or run with
``PJRT_NPROC`` = 2·D threads, which also enlarges XLA's intra-op pool).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping

__all__ = ["DEFAULT_FLAGS", "MAX_HOST_DEVICES", "host_device_count",
           "default_flags", "with_defaults", "apply_defaults"]

DEFAULT_FLAGS: Mapping[str, str] = {  # machine-independent defaults
    "xla_cpu_enable_concurrency_optimized_scheduler": "false",
    "xla_cpu_experimental_ynn_fusion_type": "-individual_dot",
}
HOST_DEVICES_FLAG = "xla_force_host_platform_device_count"
MAX_HOST_DEVICES = 8


def _usable_cpus() -> int:
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # not Linux
    return os.cpu_count() or 1


def host_device_count(cpus: int | None = None) -> int:
  """One CPU device per core: the largest power of two <= min(``cpus``, MAX_HOST_DEVICES); ``cpus`` defaults to this process's cores."""
  cpus = _usable_cpus() if cpus is None else cpus
  n = 1
  while n * 2 <= min(max(cpus, 1), MAX_HOST_DEVICES):
    n *= 2
  return n


def default_flags(cpus: int | None = None) -> dict[str, str]:
  """:data:`DEFAULT_FLAGS` plus the CPU device count for a machine with ``cpus`` cores."""
  return {**DEFAULT_FLAGS, HOST_DEVICES_FLAG: str(host_device_count(cpus))}


def with_defaults(xla_flags: str,
                  defaults: Mapping[str, str] | None = None) -> str:
  """``xla_flags`` with each default (:func:`default_flags`) appended unless that flag is already named."""
  defaults = default_flags() if defaults is None else defaults
  named = {token.lstrip("-").split("=", 1)[0] for token in xla_flags.split()}
  extra = [f"--{name}={value}" for name, value in defaults.items()
           if name not in named]
  return " ".join(xla_flags.split() + extra)


def apply_defaults(environ: MutableMapping[str, str] = os.environ,
                   cpus: int | None = None) -> None:
  """Sets ``environ["XLA_FLAGS"]`` to :func:`with_defaults` (unless ``SLA_XLA_DEFAULTS=0``).

  Call before JAX starts a backend (the tools do, before parsing flags).
  """
  if environ.get("SLA_XLA_DEFAULTS", "1").strip().lower() in ("0", "false",
                                                              "no"):
    return
  flags = with_defaults(environ.get("XLA_FLAGS", ""), default_flags(cpus))
  if flags:
    environ["XLA_FLAGS"] = flags
