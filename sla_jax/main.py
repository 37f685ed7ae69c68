"""Command line: ``python -m sla_jax.main --config configs/quickstart.py --workdir DIR``.

Also installed as ``sla-train``. ``--config file.py[:args]`` loads
``get_config(args)``; override any field with ``--config.field=value``.
Rerunning the same command resumes from the last checkpoint in ``--workdir``.
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from sla_jax import train

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file (e.g. configs/cifar.py:objective=sla).",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory; rerun to resume.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.WARNING)
  try:
    train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except (train.ConfigError, FileNotFoundError) as e:
    print(f"sla-train: error: {e}", file=sys.stderr)
    sys.exit(2)


def run():
  """Console-script entry point."""
  app.run(main)


if __name__ == "__main__":
  run()
