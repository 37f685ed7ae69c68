#!/usr/bin/env bash
# Keeps what a `gpu_suite.sh train_many` call returned, so that its runs outlive the session.
#
#   bash launch/gpu_keep.sh FILES_AT GPU      # e.g. FILES_AT=<the device reply's files_at>/, GPU=h100
#
# A session's checkout and its ignored folders (.gpu/runs) are gone by the
# next session, and a device session gives 15 minutes: an 80 000-step run
# often spans sessions. This unpacks FILES_AT/runs.tgz.* and, per run:
#   - its metrics.jsonl (and results.json once finished) to results/GPU/NAME/
#     (or to the results/*/NAME/ it started in, if an earlier call kept it);
#   - unfinished: its workdir without best/ (parameters, momentum, one
#     checkpoint: ~3.5 MB for ResNet-32) as results/gpu_runs_in_progress/NAME.tgz,
#     from which the next call resumes (gpu_suite.sh train_many reads
#     KEPT=results/gpu_runs_in_progress; launch/gpu_prepare.sh prints it);
#   - finished: its NAME.tgz there is deleted (git history keeps the old ones).
# Those tarballs are the repository's only checkpoints, there only while a run
# is unfinished: the device session's files are gone otherwise, and an
# 80 000-step ResNet-32 run needs most of a session's 15 minutes.
# A run whose returned metrics end before those already kept is refused
# (an older call's files): nothing of it is overwritten, exit status 2.
# Commit results/ afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
from=${1:-}; gpu=${2:-}
if [ -z "$from" ] || [ -z "$gpu" ]; then
  echo "usage: gpu_keep.sh FILES_AT GPU (e.g. gpu_keep.sh /tmp/device_out h100)" >&2; exit 2
fi
[[ "$gpu" =~ ^[a-z0-9_]+$ ]] || {
  echo "gpu_keep.sh: GPU '$gpu' must be a folder name such as h100 or h200" >&2; exit 2; }
ls "$from"/runs.tgz.* > /dev/null 2>&1 || {
  echo "gpu_keep.sh: no runs.tgz.* in $from (the files of a gpu_suite.sh train_many call)" >&2; exit 2; }
kept=results/gpu_runs_in_progress
mkdir -p "$kept"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
cat "$from"/runs.tgz.* | tar xzf - -C "$tmp"
last_step() {  # metrics.jsonl -> the step of its last row (-1 if none)
  python3 -c 'import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print(rows[-1]["step"] if rows else -1)' "$1"
}
refused=0
for dir in "$tmp"/*/; do
  name=$(basename "$dir")
  [ -f "$dir/metrics.jsonl" ] || { echo "$name: no metrics.jsonl, skipped"; continue; }
  step=$(last_step "$dir/metrics.jsonl")
  dest=results/$gpu/$name
  for started in results/*/"$name"/metrics.jsonl; do  # a run stays where it started
    [ -f "$started" ] && dest=$(dirname "$started")
  done
  [ "$dest" = "results/$gpu/$name" ] || echo "$name: started on another machine, kept in $dest"
  if [ -f "$dest/metrics.jsonl" ] && [ "$(last_step "$dest/metrics.jsonl")" -gt "$step" ]; then
    echo "gpu_keep.sh: $name: the returned run ends at step $step, before the kept one" \
         "($dest/metrics.jsonl); an older call's files? nothing of it kept" >&2
    refused=2; continue
  fi
  mkdir -p "$dest"
  cp "$dir/metrics.jsonl" "$dest/"
  if [ -f "$dir/results.json" ]; then
    cp "$dir/results.json" "$dest/"
    rm -f "$kept/$name.tgz"
    echo "$name: finished (step $step): $dest/{metrics.jsonl,results.json}"
  else
    tar czf "$kept/$name.tgz" -C "$tmp" --exclude="$name/best" "$name"
    echo "$name: at step $step, kept to resume: $kept/$name.tgz ($(du -k "$kept/$name.tgz" | cut -f1) KiB)"
  fi
done
rmdir "$kept" 2> /dev/null || true  # nothing in progress
exit $refused
