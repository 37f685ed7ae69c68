#!/bin/bash
# The GPU measurements of BENCHMARKS.md / RESULTS.md in one command.
#
#   SLA_SHARED_DIR=../shared OUT=/tmp/gpu bash benchmarks/gpu_suite.sh bench
#   SLA_SHARED_DIR=../shared OUT=/tmp/gpu bash benchmarks/gpu_suite.sh train \
#       OBJECTIVE STEPS [extra trainer flags...]
#
# bench: environment, `sla-bench` on the protocol config (ResNet-32, 128 images
# x 4 rotations) in float32 and bfloat16, and the PyTorch side by side
# (benchmarks/compare_torch.py) against the original's fp32 default and bf16
# autocast. JSON lines go to $OUT/bench.jsonl and $OUT/compare.jsonl; the
# jax.profiler per-op breakdown (benchmarks/profile_step.py) to $OUT/profile_k{1,16}.json.
# train: the paper protocol (configs/cifar.py) on the shared CIFAR-10 JPEGs in
# workdir $RUNS/OBJECTIVE (resumes from $RUNS/OBJECTIVE.tgz if present); leaves
# OBJECTIVE.{metrics.jsonl,results.json,tgz} in $OUT.
set -u
OUT=${OUT:-/tmp/gpu_suite}
SHARED=${SLA_SHARED_DIR:-../shared}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
mode=${1:-bench}; shift || true

if [ "$mode" = bench ]; then
  { nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm \
      --format=csv,noheader
    python3 -c "import sys, jax, flax, optax, torch; print(sys.version.split()[0], \
'jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, \
'torch', torch.__version__, jax.devices())"; } 2>&1 | tee "$OUT/env.txt"
  for spec in "sla float32" "sla bfloat16" "sla_sd bfloat16" "baseline bfloat16"; do
    set -- $spec
    python3 -m sla_jax.bench --config "configs/cifar.py:objective=$1" \
      --config.model.dtype="$2" --steps 100 --warmup 5 --json \
      | tee -a "$OUT/bench.jsonl"
  done
  for spec in "float32 fp32" "bfloat16 fp32" "bfloat16 bf16" \
              "bfloat16 bf16_channels_last"; do
    set -- $spec
    python3 -m benchmarks.compare_torch --batch_size 128 --rounds 100 \
      --jax_dtype "$1" --torch_variant "$2" --json | tee -a "$OUT/compare.jsonl"
  done
  # The sort-free batch draw (config.batch_draw=top_k): alone, then in the step.
  python3 -m benchmarks.batch_draw | tee "$OUT/batch_draw.jsonl"
  python3 -m sla_jax.bench --config configs/cifar.py:objective=sla \
    --config.model.dtype=bfloat16 --config.batch_draw=top_k --steps 100 \
    --warmup 5 --json | tee -a "$OUT/bench.jsonl"
  # Per-op breakdown (kernels per GPU stream) at K = 1 and K = 16 steps per call.
  for k in 1 16; do
    python3 -m benchmarks.profile_step --config configs/cifar.py:objective=sla \
      --config.model.dtype=bfloat16 --config.steps_per_call=$k --calls 4 \
      --out "$OUT/trace_k$k" --json > "$OUT/profile_k$k.json"
  done
elif [ "$mode" = train ]; then
  objective=$1; steps=$2; shift 2
  [ -d /tmp/cifar10 ] || tar xzf "$SHARED/data/cifar10-jpeg.tar.gz" -C /tmp
  runs=${RUNS:-/tmp/runs}; mkdir -p "$runs"
  [ -f "$runs/$objective.tgz" ] && tar xzf "$runs/$objective.tgz" -C "$runs"
  # TRAIN_TIMEOUT (seconds) stops a run that must fit a time slot; rerun to resume.
  timeout "${TRAIN_TIMEOUT:-0}" python3 -m sla_jax.main \
    --config "configs/cifar.py:dataset=folder:/tmp/cifar10,objective=$objective,steps=$steps" \
    --workdir "$runs/$objective" "$@" 2>&1 | tail -n 40
  for f in metrics.jsonl results.json; do
    [ -f "$runs/$objective/$f" ] && cp "$runs/$objective/$f" "$OUT/$objective.$f"
  done
  tar czf "$OUT/$objective.tgz" -C "$runs" "$objective"
else
  echo "usage: gpu_suite.sh bench | train OBJECTIVE STEPS [flags]" >&2; exit 2
fi
