"""Command line: ``python -m sla_jax.main --config configs/quickstart.py --workdir DIR``.

Also installed as ``sla-train``. ``--config file.py[:args]`` loads
``get_config(args)``; override any field with ``--config.field=value``.
Rerunning the same command resumes from the last checkpoint in ``--workdir``.

Multi-process (TPU pod, several GPU hosts): ``--distributed`` (or
``SLA_DISTRIBUTED=1``) calls ``jax.distributed.initialize`` first; on Cloud TPU,
Slurm and Open MPI it needs nothing else, elsewhere give ``--coordinator_address``,
``--num_processes`` and ``--process_id``. Each process waits up to
``--distributed_timeout`` seconds for the others (JAX then ends it). Every
process takes the same flags and one shared ``--workdir`` (checked: else the
same error on every process).

Exit status: 0 done; 2 bad config, flags or input; 3 non-finite loss (the last good
checkpoint is kept); 75 preempted by SIGTERM after saving a checkpoint (rerun
the same command to resume).
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from sla_jax import cli, distributed, train

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file (e.g. configs/cifar.py:objective=sla).",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None,
                               "Output directory (local or gs://); rerun to resume.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", None, "Call jax.distributed.initialize() first (one process "
    "per host). Default: the SLA_DISTRIBUTED environment variable.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None,
    "host:port of process 0 (auto on Cloud TPU, Slurm, Open MPI).")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "Number of processes (auto on Cloud TPU, Slurm, Open MPI).")
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "This process's id (auto on Cloud TPU, Slurm, Open MPI).")
_TIMEOUT = flags.DEFINE_integer(
    "distributed_timeout", 300, "Seconds each process waits at start-up for "
    "the others (JAX then ends it).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv  # cli.run refuses surplus arguments
  logging.set_verbosity(logging.WARNING)  # before JAX logs its backend search
  use_distributed = (_DISTRIBUTED.value if _DISTRIBUTED.value is not None
                     else distributed.requested_by_env())
  if use_distributed:  # before any JAX computation
    try:
      distributed.check_start_flags(_COORDINATOR.value, _NUM_PROCESSES.value,
                                    _PROCESS_ID.value, _TIMEOUT.value)
      if _PROCESS_ID.value == 0 and _COORDINATOR.value:  # before saying it joins
        distributed.check_coordinator_port(_COORDINATOR.value)
      if _PROCESS_ID.value is not None:  # what a silent wait is waiting for
        print(f"sla-train: process {_PROCESS_ID.value} of {_NUM_PROCESSES.value} "
              f"joining the job at {_COORDINATOR.value} (waits up to "
              f"{_TIMEOUT.value} s for the others)", file=sys.stderr, flush=True)
      distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value,
                             _PROCESS_ID.value, _TIMEOUT.value)
    except ValueError as e:
      raise app.UsageError(str(e)) from None
  elif any(f.present for f in (flags.FLAGS["coordinator_address"],
                               flags.FLAGS["num_processes"],
                               flags.FLAGS["process_id"],
                               flags.FLAGS["distributed_timeout"])):
    raise app.UsageError("--coordinator_address/--num_processes/--process_id/"
                         "--distributed_timeout need --distributed.")
  if not distributed.is_main():
    logging.set_verbosity(logging.ERROR)
  cli.exit_on_run_errors("sla-train", lambda: train.train_and_evaluate(
      _CONFIG.value, _WORKDIR.value))


def run():
  """Console-script entry point."""
  cli.run(main, "sla-train", ("config", "workdir", "distributed",
                              "coordinator_address", "num_processes",
                              "process_id", "distributed_timeout"), __doc__)


if __name__ == "__main__":
  run()
