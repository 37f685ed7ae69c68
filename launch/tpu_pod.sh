#!/usr/bin/env bash
# Cloud TPU VM or pod slice: copy the repo to every worker, install once, train on all
# workers (one process per worker; jax.distributed.initialize() needs no arguments there).
#
#   # ImageNet, ResNet-50, SLA (configs/imagenet.py reads on the host already):
#   TPU=my-v4-32 ZONE=us-central2-b bash launch/tpu_pod.sh \
#     --config configs/imagenet.py:objective=sla --workdir gs://BUCKET/sla/imagenet_sla \
#     --config.data_dir=gs://BUCKET/tensorflow_datasets
#   # CIFAR on a pod slice:
#   TPU=my-v4-32 ZONE=us-central2-b bash launch/tpu_pod.sh \
#     --config configs/cifar.py:objective=sla_sd --workdir gs://BUCKET/sla/c10_sla_sd \
#     --config.data_dir=gs://BUCKET/tensorflow_datasets --config.data_on_device=False
#
# GCLOUD=echo (or any command) replaces gcloud for a dry run.
# The workdir must be shared by all workers (gs://): every worker saves and restores its
# part of each checkpoint. Several workers need --config.data_on_device=False (each reads
# only its rows of every batch). Prepare TFDS data beforehand (`tfds build cifar10
# --file_format=array_record --data_dir=gs://BUCKET/tensorflow_datasets`); nothing is
# downloaded on the workers. Rerun the same command to resume after preemption.
set -euo pipefail
case "${1:-}" in
  -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
esac
if [ $# -eq 0 ]; then
  echo "tpu_pod.sh: error: pass the trainer's arguments, e.g. --config configs/cifar.py:objective=sla --workdir gs://BUCKET/run" >&2
  exit 2
fi
for name in TPU ZONE; do
  if [ -z "${!name:-}" ]; then
    echo "tpu_pod.sh: error: set TPU to the TPU VM name and ZONE to its zone; $name is not set" >&2
    exit 2
  fi
done
DEST=${DEST:-sla_jax}        # directory on each worker
JAX_VERSION=${JAX_VERSION:-0.10.2}
GCLOUD=${GCLOUD:-gcloud}
cd "$(dirname "$0")/.."
$GCLOUD compute tpus tpu-vm ssh "$TPU" --zone "$ZONE" --worker=all --command "mkdir -p ~/$DEST"
$GCLOUD compute tpus tpu-vm scp --recurse --zone "$ZONE" --worker=all \
  setup.py README.md sla_jax configs launch "$TPU:~/$DEST/"
args=$(printf '%q ' "$@")
$GCLOUD compute tpus tpu-vm ssh "$TPU" --zone "$ZONE" --worker=all --command "
  set -e; cd ~/$DEST
  if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv && .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q 'jax[tpu]==$JAX_VERSION' && .venv/bin/pip install -q -e '.[train]'
  fi
  SLA_DISTRIBUTED=1 .venv/bin/python -m sla_jax.main $args"
