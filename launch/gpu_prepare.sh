#!/usr/bin/env bash
# Everything a lent GPU machine needs beside the checkout, in ignored folders, and the call to make.
#
#   OFFICIAL=/tmp/SLA_orig bash launch/gpu_prepare.sh [cifar10|tinyimagenet100|none]
#
# The device tool sends the checkout alone (tracked and untracked-not-ignored
# files, and the ignored paths a call names in `carry`; 64 MiB in all), so this
# puts into .gpu/ (ignored): shared/data/<the dataset's tarball> (default
# cifar10: the 19 MB CIFAR-10 JPEGs of ../shared; tinyimagenet100 is 38 MB;
# not both in one call), shared/reference/'s 8 MB npz of the original's
# numbers, and, with OFFICIAL=PATH, official/: a copy of a
# hankook/SLA checkout without its .git (for `compare_torch --official`;
# nothing of it is committed). The wheels come from launch/gpu_wheels.sh
# (.whl/; NO_WHEELS=1 skips the download). It prints the size that would
# travel and the device command for `benchmarks/gpu_suite.sh` (MODE, default
# bench; e.g. MODE="train sla 80000", MODE="train_many 80000 baseline:0
# sla:0 sla_sd:0 -- --config.model.dtype=bfloat16", the same arguments after
# bench_then_train_many for both in one call, or an evidence grid:
# MODE="grid configs/grid_protocol_gpu.py:dataset=cifar10 results/cifar10_gpu"
# with TRAIN_TIMEOUT=540 before it; runs resume from
# .gpu/runs, which this leaves in place: put an earlier call's runs.tgz.*
# pieces or NAME.tgz there, and from results/gpu_runs_in_progress, where
# launch/gpu_keep.sh keeps unfinished runs between sessions; it lists those).
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SLA_SHARED_DIR:-../shared}
data=${1:-cifar10}
case "$data" in
  cifar10) tarball=cifar10-jpeg.tar.gz ;;
  tinyimagenet100) tarball=tinyimagenet100-32.tar.gz ;;
  none) tarball= ;;
  *) echo "gpu_prepare.sh: unknown data '$data' (cifar10, tinyimagenet100 or none)" >&2; exit 2 ;;
esac
# Every input checked before anything already staged is replaced.
if [ -n "$tarball" ] && [ ! -f "$SHARED/data/$tarball" ]; then
  echo "gpu_prepare.sh: no $SHARED/data/$tarball (set SLA_SHARED_DIR)" >&2; exit 2
fi
if [ -n "${OFFICIAL:-}" ] && [ ! -f "$OFFICIAL/trainers.py" ]; then
  echo "gpu_prepare.sh: $OFFICIAL is not a hankook/SLA checkout (no trainers.py)" >&2; exit 2
fi
rm -rf .gpu/shared .gpu/official && mkdir -p .gpu/shared/data  # .gpu/runs stays: runs to resume
if [ -n "$tarball" ]; then
  cp "$SHARED/data/$tarball" .gpu/shared/data/
fi
# The original's numbers on the shared reference weights (8 MB): compare_torch
# checks its PyTorch step against them on the device too.
reference=reference/official_resnet32_rotation.npz
if [ -f "$SHARED/$reference" ]; then
  mkdir -p .gpu/shared/reference && cp "$SHARED/$reference" .gpu/shared/reference/
fi
official_env=
if [ -n "${OFFICIAL:-}" ]; then
  mkdir -p .gpu/official
  (cd "$OFFICIAL" && tar cf - --exclude=.git .) | (cd .gpu/official && tar xf -)
  official_env="OFFICIAL=.gpu/official "
fi
[ "${NO_WHEELS:-0}" = 1 ] || bash launch/gpu_wheels.sh >/dev/null
tree=$( (git ls-files -z | du -cb --files0-from=- 2>/dev/null || true) | awk 'END {print $1 + 0}')
carried=$( (du -sb .gpu .whl 2>/dev/null || true) | awk '{s += $1} END {print s + 0}')
echo "travels: $(( (tree + carried) / 1048576 )) MiB of 64 (checkout $(( tree / 1048576 )), .gpu + .whl $(( carried / 1048576 )))"
for kept in results/gpu_runs_in_progress/*.tgz; do
  [ -f "$kept" ] && echo "resumes: $(basename "$kept" .tgz) ($kept)"
done
if ls .whl/*.whl >/dev/null 2>&1; then
  echo "carry: [\".whl\", \".gpu\"]"
  install="python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit; "
else  # NO_WHEELS=1 and none downloaded before: the device machine's own packages
  echo "carry: [\".gpu\"] (no wheels in .whl/: run launch/gpu_wheels.sh to carry them)"
  install=
fi
echo "command: ${install}SLA_SHARED_DIR=.gpu/shared ${official_env}RUNS=.gpu/runs KEPT=results/gpu_runs_in_progress OUT=\$OUT bash benchmarks/gpu_suite.sh ${MODE:-bench}"
