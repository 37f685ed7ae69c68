#!/usr/bin/env bash
# Keeps what a device call of benchmarks/gpu_suite.sh returned, so that its runs outlive the session.
#
#   bash launch/gpu_keep.sh FILES_AT GPU             # after train_many; e.g. GPU=h100
#   bash launch/gpu_keep.sh FILES_AT --grid OUTDIR   # after grid; e.g. OUTDIR=results/cifar10_gpu
#
# A session's checkout and its ignored folders (.gpu/runs) are gone by the
# next session, and a device session gives 15 minutes: an 80 000-step run
# often spans sessions. This unpacks FILES_AT/runs.tgz.* and, per run:
#   - its metrics.jsonl (and results.json once finished) to results/GPU/NAME/
#     (or to the results/*/NAME/ it started in, if an earlier call kept it);
#     with --grid, to OUTDIR/runs/NAME/ with config.json and wall_time.json,
#     where `sla-experiments --summarize_only` finds it;
#   - unfinished: its workdir without best/ (parameters, momentum, one
#     checkpoint: ~3.5 MB for ResNet-32) as results/gpu_runs_in_progress/NAME.tgz
#     (with --grid: <OUTDIR's name>.tgz, the grid's unfinished runs), from
#     which the next call resumes (gpu_suite.sh reads
#     KEPT=results/gpu_runs_in_progress; launch/gpu_prepare.sh prints it);
#   - finished: its tarball there goes (git history keeps the old ones).
# Those tarballs are the repository's only checkpoints, there only while a run
# is unfinished: the device session's files are gone otherwise, and an
# 80 000-step ResNet-32 run needs most of a session's 15 minutes.
# A run whose returned metrics end before those already kept is refused
# (an older call's files): nothing of it is overwritten, exit status 2.
# Commit results/ afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
usage="usage: gpu_keep.sh FILES_AT GPU | gpu_keep.sh FILES_AT --grid OUTDIR (e.g. gpu_keep.sh /tmp/device_out h100)"
from=${1:-}; gpu=${2:-}; grid_out=
if [ -z "$from" ] || [ -z "$gpu" ]; then echo "$usage" >&2; exit 2; fi
if [ "$gpu" = --grid ]; then
  grid_out=${3:-}
  [ -n "$grid_out" ] || { echo "$usage" >&2; exit 2; }
  grid_out=${grid_out%/}
else
  [[ "$gpu" =~ ^[a-z0-9_]+$ ]] || {
    echo "gpu_keep.sh: GPU '$gpu' must be a folder name such as h100 or h200" >&2; exit 2; }
fi
ls "$from"/runs.tgz.* > /dev/null 2>&1 || {
  echo "gpu_keep.sh: no runs.tgz.* in $from (the files of a gpu_suite.sh train_many or grid call)" >&2; exit 2; }
kept=results/gpu_runs_in_progress
mkdir -p "$kept"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
cat "$from"/runs.tgz.* | tar xzf - -C "$tmp"
last_step() {  # metrics.jsonl -> the step of its last row (-1 if none)
  python3 -c 'import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print(rows[-1]["step"] if rows else -1)' "$1"
}
refused=0; unfinished=(); files=(metrics.jsonl results.json)
[ -z "$grid_out" ] || files+=(config.json wall_time.json)  # what sla-experiments reads
for dir in "$tmp"/*/; do
  name=$(basename "$dir")
  [ -f "$dir/metrics.jsonl" ] || { echo "$name: no metrics.jsonl, skipped"; continue; }
  step=$(last_step "$dir/metrics.jsonl")
  if [ -n "$grid_out" ]; then
    dest=$grid_out/runs/$name
  else
    dest=results/$gpu/$name
    for started in results/*/"$name"/metrics.jsonl; do  # a run stays where it started
      [ -f "$started" ] && dest=$(dirname "$started")
    done
    [ "$dest" = "results/$gpu/$name" ] || echo "$name: started on another machine, kept in $dest"
  fi
  if [ -f "$dest/metrics.jsonl" ] && [ "$(last_step "$dest/metrics.jsonl")" -gt "$step" ]; then
    echo "gpu_keep.sh: $name: the returned run ends at step $step, before the kept one" \
         "($dest/metrics.jsonl); an older call's files? nothing of it kept" >&2
    refused=2; continue
  fi
  mkdir -p "$dest"
  for f in "${files[@]}"; do [ -f "$dir/$f" ] && cp "$dir/$f" "$dest/"; done
  if [ -f "$dir/results.json" ]; then
    [ -n "$grid_out" ] || rm -f "$kept/$name.tgz"
    echo "$name: finished (step $step): $dest"
  else
    unfinished+=("$name")
    if [ -z "$grid_out" ]; then
      tar czf "$kept/$name.tgz" -C "$tmp" --exclude="$name/best" "$name"
      echo "$name: at step $step, kept to resume: $kept/$name.tgz ($(du -k "$kept/$name.tgz" | cut -f1) KiB)"
    fi
  fi
done
if [ -n "$grid_out" ]; then
  grid_kept=$kept/$(basename "$grid_out").tgz
  if [ $refused = 0 ] && [ ${#unfinished[@]} -gt 0 ]; then
    tar czf "$grid_kept" -C "$tmp" --exclude='*/best' "${unfinished[@]}"
    echo "${unfinished[*]}: unfinished, kept to resume: $grid_kept ($(du -k "$grid_kept" | cut -f1) KiB)"
  elif [ $refused = 0 ]; then
    rm -f "$grid_kept"
  fi
fi
rmdir "$kept" 2> /dev/null || true  # nothing in progress
exit $refused
