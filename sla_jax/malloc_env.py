"""The glibc malloc setting the command-line tools start with (``GLIBC_TUNABLES``), and why.

XLA:CPU allocates each execution's temporary buffer afresh and frees it after
the call (about 0.9 GiB for the protocol step of 256 views per device). glibc
serves an allocation that large with ``mmap`` and returns it with ``munmap``,
so on every step the kernel faults in and zeroes the whole buffer again, 4 KiB
at a time. ``glibc.malloc.hugetlb=1`` makes glibc ask for transparent huge
pages on its mappings (``madvise``): the protocol step on two CPU devices
took a few thousand page faults instead of ~337 000 (BENCHMARKS.md, "Page
faults: the step's temporary buffer"). Allocation only: every value computed is the
same.

glibc reads ``GLIBC_TUNABLES`` only when a process starts, so a tool started
without the setting runs itself again with it (:func:`reexec_with_defaults`:
the console scripts call it before JAX is imported, :mod:`sla_jax.entry_points`;
``python -m`` runs reach it in :func:`sla_jax.cli.start_tool_process`, after
their imports): same interpreter, arguments and process id. It does so only on Linux with glibc 2.35 or newer
(the first with this tunable) and transparent huge pages not turned off
(``/sys/kernel/mm/transparent_hugepage/enabled`` other than ``never``). A
``glibc.malloc.hugetlb`` value already in ``GLIBC_TUNABLES`` is left as given:
``GLIBC_TUNABLES=glibc.malloc.hugetlb=0`` keeps glibc's default. The library
never touches the environment; a JAX program of one's own on CPU gets the same
effect by starting with ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, MutableMapping, Sequence

__all__ = ["HUGETLB_TUNABLE", "with_hugetlb", "wants_reexec",
           "reexec_with_defaults"]

HUGETLB_TUNABLE = "glibc.malloc.hugetlb"
_MIN_GLIBC = (2, 35)
_THP_ENABLED = "/sys/kernel/mm/transparent_hugepage/enabled"
_DETECT = object()  # read this machine's value


def with_hugetlb(tunables: str) -> str:
  """``tunables`` (``GLIBC_TUNABLES``' ``name=value:...``) with ``glibc.malloc.hugetlb=1`` appended unless it names that tunable."""
  items = [item for item in tunables.split(":") if item]
  if any(item.split("=", 1)[0] == HUGETLB_TUNABLE for item in items):
    return tunables
  return ":".join(items + [f"{HUGETLB_TUNABLE}=1"])


def _glibc_version() -> tuple[int, ...] | None:
  """This process's glibc version, e.g. ``(2, 36)`` (None: not glibc)."""
  try:
    name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
  except (AttributeError, ValueError, OSError):
    return None
  if name != "glibc":
    return None
  try:
    return tuple(int(part) for part in version.split(".")[:2])
  except ValueError:
    return None


def _huge_pages_possible(thp_enabled_path: str = _THP_ENABLED) -> bool:
  """Whether the kernel's transparent huge pages are not ``[never]``."""
  try:
    with open(thp_enabled_path) as f:
      return "[never]" not in f.read()
  except OSError:
    return False


def wants_reexec(environ: Mapping[str, str] = os.environ,
                 glibc_version=_DETECT, huge_pages_possible=_DETECT) -> bool:
  """Whether a tool should run itself again with :func:`with_hugetlb` (module doc).

  ``glibc_version`` (None: not glibc) and ``huge_pages_possible`` default to
  this machine's.
  """
  version = _glibc_version() if glibc_version is _DETECT else glibc_version
  if version is None or version < _MIN_GLIBC:
    return False
  tunables = environ.get("GLIBC_TUNABLES", "")
  if with_hugetlb(tunables) == tunables:  # already named: the user's choice
    return False
  return (_huge_pages_possible() if huge_pages_possible is _DETECT
          else huge_pages_possible)


def reexec_with_defaults(environ: MutableMapping[str, str] = os.environ,
                         argv: Sequence[str] | None = None) -> None:
  """Replaces this process by itself with ``glibc.malloc.hugetlb=1`` when :func:`wants_reexec`.

  ``argv``: the command line to run again (default ``sys.orig_argv``, the
  interpreter and its options included). Returns only when nothing is to be
  done; call it first thing in a program's entry point.
  """
  if not wants_reexec(environ):
    return
  argv = list(sys.orig_argv if argv is None else argv)
  environ["GLIBC_TUNABLES"] = with_hugetlb(environ.get("GLIBC_TUNABLES", ""))
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, argv, dict(environ))
