#!/usr/bin/env bash
# GPU hosts: one process per host driving all of its GPUs.
#
# One host (all local GPUs, no jax.distributed needed):
#   bash launch/gpu_host.sh --config configs/cifar.py:objective=sla --workdir workdirs/sla
#
# Several hosts: run this on every host with the same arguments, the address of host 0,
# the number of hosts and this host's index (0..N-1); the workdir must be shared by all
# hosts (gs:// or a network filesystem) and data read through the host pipeline:
#   COORDINATOR=10.0.0.1:12345 NUM_PROCESSES=2 PROCESS_ID=0 bash launch/gpu_host.sh \
#     --config configs/cifar.py:objective=sla --workdir gs://BUCKET/sla \
#     --config.data_on_device=False
# (Under Slurm or Open MPI set only SLA_DISTRIBUTED=1: JAX detects the rest.)
#
# JAX_EXTRA picks the CUDA build installed on the first run (default cuda12).
set -euo pipefail
flags=()
if [ -n "${COORDINATOR:-}${NUM_PROCESSES:-}${PROCESS_ID:-}" ]; then  # all three or none
  for name in COORDINATOR NUM_PROCESSES PROCESS_ID; do
    if [ -z "${!name:-}" ]; then
      echo "gpu_host.sh: several hosts need COORDINATOR=host0:port, NUM_PROCESSES and PROCESS_ID; $name is not set" >&2
      exit 2
    fi
  done
  flags=(--distributed "--coordinator_address=$COORDINATOR"
         "--num_processes=$NUM_PROCESSES" "--process_id=$PROCESS_ID")
fi
# launch/run.sh: the venv (with jax[$JAX_EXTRA] on its first run), then the trainer.
JAX_EXTRA=${JAX_EXTRA:-cuda12} exec bash "$(dirname "$0")/run.sh" "${flags[@]}" "$@"
