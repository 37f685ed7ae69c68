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
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping

__all__ = ["DEFAULT_FLAGS", "with_defaults", "apply_defaults"]

DEFAULT_FLAGS: Mapping[str, str] = {
    "xla_cpu_enable_concurrency_optimized_scheduler": "false",
}


def with_defaults(xla_flags: str,
                  defaults: Mapping[str, str] = DEFAULT_FLAGS) -> str:
  """``xla_flags`` with each default appended unless that flag is already named."""
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
  flags = with_defaults(environ.get("XLA_FLAGS", ""))
  if flags:
    environ["XLA_FLAGS"] = flags
