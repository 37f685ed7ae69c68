"""``sla-eval``: evaluate a trained workdir on any split or dataset.

    sla-eval --workdir workdirs/quickstart                       # best checkpoint, test split
    sla-eval --workdir W --checkpoint latest --split val
    sla-eval --workdir W --config.dataset=folder:/data/other --out /tmp/eval_other

Rebuilds the objective and model from ``W/config.json`` (``--config.FIELD=V``
overrides any field, e.g. the dataset or ``eval_batch_size``), restores the
checkpoint (``best``, ``latest`` or a step), and runs the trainer's own
evaluator (:mod:`sla_jax.evaluation`): every prediction of the objective
(``acc`` / ``acc_si`` / ``acc_ag`` / ``acc_sd``) and the eval-mode loss, the
per-class accuracy of each, and their confusion matrices. Writes
``OUT/metrics.json`` and ``OUT/confusion_<metric>.png`` (OUT defaults to
``W/eval/<split>_<checkpoint step>``) and prints a table. On the split and
checkpoint the trainer reported, the numbers equal ``results.json``'s.

Exit status: 0 done; 2 bad arguments, config or workdir.
"""

from __future__ import annotations

import json
import pathlib
import sys

from absl import app, flags, logging

_WORKDIR = flags.DEFINE_string("workdir", None, "A workdir written by sla-train.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", "best",
                                  "best, latest, or a step in checkpoints/.")
_SPLIT = flags.DEFINE_enum("split", "test", ["train", "val", "test"],
                           "Which split of the (possibly overridden) dataset.")
_OUT = flags.DEFINE_string("out", None, "Output folder (default: "
                           "WORKDIR/eval/<split>_<step>).")
_PLOTS = flags.DEFINE_bool("plots", True, "Write confusion-matrix PNGs "
                           "(needs matplotlib).")
flags.mark_flag_as_required("workdir")

_USAGE_FLAGS = ("workdir", "checkpoint", "split", "out", "plots", "config")


def _plot_confusion(counts, title: str, path: pathlib.Path) -> bool:
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
  except ImportError:
    return False
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  counts = np.asarray(counts, float)
  rates = counts / np.maximum(counts.sum(1, keepdims=True), 1)
  n = len(counts)
  fig, ax = plt.subplots(figsize=(min(12, 2 + 0.35 * n),) * 2)
  image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
  ax.set_xlabel("predicted class")
  ax.set_ylabel("true class")
  ax.set_title(title, fontsize=9)
  if n <= 20:
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
  fig.colorbar(image, ax=ax, fraction=0.046)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return True


def _config_overrides(argv: list[str]) -> tuple[list[str], dict[str, str]]:
  """Splits ``--config.FIELD=VALUE`` arguments off ``argv``."""
  rest, overrides = [], {}
  for arg in argv:
    if arg.startswith("--config."):
      key, has_value, value = arg[len("--config."):].partition("=")
      if not has_value:
        raise app.UsageError(f"{arg}: write --config.FIELD=VALUE.")
      overrides[key] = value
    else:
      rest.append(arg)
  return rest, overrides


_OVERRIDES: dict[str, str] = {}


def main(argv):
  del argv  # cli.run refuses surplus arguments
  logging.set_verbosity(logging.WARNING)
  from sla_jax import spec as spec_lib  # pylint: disable=g-import-not-at-top
  try:
    from sla_jax import inference  # pylint: disable=g-import-not-at-top
    result = inference.evaluate_workdir(_WORKDIR.value, _CHECKPOINT.value, _SPLIT.value,
                              _OVERRIDES)
  except (spec_lib.ConfigError, FileNotFoundError, ValueError) as e:
    print(f"sla-eval: error: {e}", file=sys.stderr)
    sys.exit(2)
  out = pathlib.Path(_OUT.value or pathlib.Path(result["workdir"]) / "eval" /
                     f"{result['split']}_{result['step']}")
  try:
    out.mkdir(parents=True, exist_ok=True)
  except OSError as e:  # e.g. a path through a file
    print(f"sla-eval: error: cannot write to --out {out}: {e.strerror}",
          file=sys.stderr)
    sys.exit(2)
  (out / "metrics.json").write_text(json.dumps(result, indent=1) + "\n")
  plots = []
  if _PLOTS.value:
    for name, counts in result["confusion"].items():
      path = out / f"confusion_{name}.png"
      if _plot_confusion(counts, f"{result['objective']} {name}, "
                         f"{result['dataset']} {result['split']}, step "
                         f"{result['step']}", path):
        plots.append(path.name)
  print(f"{result['objective']} at step {result['step']} on "
        f"{result['dataset']} {result['split']} ({result['size']} images)")
  for name, value in result["metrics"].items():
    print(f"{name:<10}{value:>10.4f}")
  print(f"wrote {out / 'metrics.json'}" + (f" and {', '.join(plots)}"
                                            if plots else ""))


def run():
  """Console-script entry point."""
  from sla_jax import cli  # pylint: disable=g-import-not-at-top
  try:
    argv, overrides = _config_overrides(sys.argv)
  except app.UsageError as e:
    print(f"sla-eval: error: {e}", file=sys.stderr)
    sys.exit(2)
  _OVERRIDES.update(overrides)
  cli.run(main, "sla-eval", _USAGE_FLAGS, __doc__, argv)


if __name__ == "__main__":
  run()
