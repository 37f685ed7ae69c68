"""Command line: ``python -m sla_jax.fewshot_main --config configs/fewshot.py --workdir DIR``.

Few-shot meta-training and meta-test (:mod:`sla_jax.fewshot_train`); also
installed as ``sla-fewshot``. ``--config file.py[:args]`` loads
``get_config(args)``; override any field with ``--config.field=value``.
Rerunning the same command resumes from the last checkpoint in ``--workdir``.

Exit status: 0 done; 2 bad config or input; 3 non-finite loss (the last good
checkpoint is kept); 75 preempted by SIGTERM after saving a checkpoint (rerun
the same command to resume).
"""


from absl import flags, logging
from ml_collections import config_flags

from sla_jax import cli, fewshot_train

_PROG = "sla-fewshot"
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file (e.g. configs/fewshot.py:objective=sla).",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None,
                               "Output directory (local or gs://); rerun to resume.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv  # cli.run refuses surplus arguments
  logging.set_verbosity(logging.WARNING)  # before JAX logs its backend search
  cli.exit_on_run_errors(_PROG, lambda: fewshot_train.meta_train_and_evaluate(
      _CONFIG.value, _WORKDIR.value))


def run():
  """Console-script entry point."""
  cli.run(main, _PROG, ("config", "workdir"), __doc__)


if __name__ == "__main__":
  run()
