"""The console scripts (``sla-train``, ``sla-bench``, ...; setup.py).

Each first runs the process again with the tools' malloc setting if it lacks
it (:func:`sla_jax.malloc_env.reexec_with_defaults`), before its tool's module
imports JAX, so that the restart costs an interpreter start and not a JAX
import; then it runs the tool. ``python -m sla_jax.main`` and the other
modules reach the same restart in :func:`sla_jax.cli.run`, after their imports.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from sla_jax import malloc_env

__all__ = ["TOOLS", "train", "bench", "evaluate", "experiments", "fewshot"]

# console script -> the module whose run() is the tool
TOOLS = {"sla-train": "sla_jax.main", "sla-bench": "sla_jax.bench",
         "sla-eval": "sla_jax.eval_cli",
         "sla-experiments": "sla_jax.experiments",
         "sla-fewshot": "sla_jax.fewshot_main"}


def _tool(script: str) -> Callable[[], None]:
  def run() -> None:
    malloc_env.reexec_with_defaults()
    importlib.import_module(TOOLS[script]).run()
  run.__doc__ = f"``{script}``: ``{TOOLS[script]}.run()`` (module doc)."
  return run


train = _tool("sla-train")
bench = _tool("sla-bench")
evaluate = _tool("sla-eval")
experiments = _tool("sla-experiments")
fewshot = _tool("sla-fewshot")
