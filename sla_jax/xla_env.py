"""XLA flags the command-line tools set by default (``XLA_FLAGS``), and why.

XLA reads ``XLA_FLAGS`` once, when the first backend starts; options passed to
``jax.jit(..., compiler_options=...)`` do not reach the CPU scheduler (checked:
the compiled schedule is unchanged). So the tools (:func:`sla_jax.cli.run`)
add these defaults to the environment before any computation, and the
library never touches the environment: a codebase that imports sla_jax keeps
its own flags. A flag already named in ``XLA_FLAGS`` is left as given;
``SLA_XLA_DEFAULTS=0`` turns the defaults off.

- ``xla_cpu_enable_concurrency_optimized_scheduler=false``: XLA:CPU's default
  scheduler orders ops so that independent ones may run concurrently, which
  keeps more large activations alive at once; on the ResNet train step the
  plain order is much faster (BENCHMARKS.md). Order only: every op computes
  the same values. Affects CPU programs only (accelerator runs unchanged).

Not a default: splitting the CPU into devices. XLA:CPU runs each elementwise
fusion on one thread, and ``--xla_force_host_platform_device_count=D``
(:func:`host_device_count` gives one device per core, as the largest power of
two up to 8) lets the trainer's sharded step use D threads for them: the
protocol step 1.23x faster on 2 cores (BENCHMARKS.md). It was the tools'
default for one day and was withdrawn: under load (other jobs on the cores) a
2-device quickstart deadlocked in XLA:CPU's collectives in 7 of 14 runs (one
device's execution never starts; XLA aborts after its 40 s rendezvous
timeout). Opt in with ``XLA_FLAGS=--xla_force_host_platform_device_count=2``
on a machine with nothing else running; results agree with one device to
float rounding.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping

__all__ = ["DEFAULT_FLAGS", "MAX_HOST_DEVICES", "host_device_count",
           "default_flags", "with_defaults", "apply_defaults"]

DEFAULT_FLAGS: Mapping[str, str] = {  # machine-independent defaults
    "xla_cpu_enable_concurrency_optimized_scheduler": "false",
}
MAX_HOST_DEVICES = 8


def _usable_cpus() -> int:
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # not Linux
    return os.cpu_count() or 1


def host_device_count(cpus: int | None = None) -> int:
  """One CPU device per core, to opt in with: the largest power of two <= min(``cpus``, MAX_HOST_DEVICES).

  ``cpus`` defaults to this process's cores.
  """
  cpus = _usable_cpus() if cpus is None else cpus
  n = 1
  while n * 2 <= min(max(cpus, 1), MAX_HOST_DEVICES):
    n *= 2
  return n


def default_flags() -> dict[str, str]:
  """The flags the tools add: :data:`DEFAULT_FLAGS` (one CPU device, XLA's own default)."""
  return dict(DEFAULT_FLAGS)


def with_defaults(xla_flags: str,
                  defaults: Mapping[str, str] | None = None) -> str:
  """``xla_flags`` with each default (:func:`default_flags`) appended unless that flag is already named."""
  defaults = default_flags() if defaults is None else defaults
  named = {token.lstrip("-").split("=", 1)[0] for token in xla_flags.split()}
  extra = [f"--{name}={value}" for name, value in defaults.items()
           if name not in named]
  return " ".join(xla_flags.split() + extra)


def apply_defaults(environ: MutableMapping[str, str] = os.environ) -> None:
  """Sets ``environ["XLA_FLAGS"]`` to :func:`with_defaults` (unless ``SLA_XLA_DEFAULTS=0``).

  Call before JAX starts a backend (the tools do, before parsing flags).
  """
  if environ.get("SLA_XLA_DEFAULTS", "1").strip().lower() in ("0", "false",
                                                              "no"):
    return
  flags = with_defaults(environ.get("XLA_FLAGS", ""), default_flags())
  if flags:
    environ["XLA_FLAGS"] = flags
