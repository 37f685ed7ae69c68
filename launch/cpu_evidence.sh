#!/usr/bin/env bash
# The CPU evidence still to run, in priority order, resumable across sessions.
#
#   bash launch/cpu_evidence.sh run [GRID...]    # train (default: every grid below, in order)
#   bash launch/cpu_evidence.sh collect          # finished runs -> results/<name>/, RESULTS.md
#   bash launch/cpu_evidence.sh status           # finished / started runs per grid
#   bash launch/cpu_evidence.sh restore [GRID...] # collected runs -> $EVIDENCE (run does it too)
#   bash launch/cpu_evidence.sh keep [GRID...]   # unfinished runs' newest checkpoints -> $RESULTS
#   bash launch/cpu_evidence.sh pin GRID         # the grid's code: its commit and worktree
#
# Runs train in $EVIDENCE (default /tmp/evidence/<name>), outside the repo, so
# that a half-finished run is never committed; rerunning `run` resumes every
# interrupted run from its checkpoint and skips finished ones (sla-experiments).
# /tmp does not outlive a session, so `run` first puts back the finished runs
# already collected into $RESULTS/<name>/runs: a grid spread over sessions
# retrains only what was not collected (collect after every few runs).
# An SLA run can outlast what is left of a session: stop the grid (SIGTERM to
# the harness, which checkpoints the running trainer), then `keep` packs each
# unfinished run (its newest checkpoint and its logs, not best/) into
# $RESULTS/<name>/in_progress/NAME.tgz to commit; `run` and `restore` unpack
# it where the run has no checkpoint of its own, and `collect` deletes it once
# the run is finished.
# Every run of a grid uses the same code: the first `run` pins the commit it
# started from in $RESULTS/<name>/code_commit (commit that file with the runs),
# and each `run` trains from a git worktree of that commit ($WORKTREES, default
# /tmp/sla_worktrees/<commit>), so a later change to the numerics of main
# never mixes into a grid half done. Delete code_commit to restart a grid on
# newer code (and its collected runs with it).
# `collect` copies each finished run's results.json, metrics.jsonl, config.json
# and wall_time.json into $RESULTS/<name>/runs/ (default results/) and rewrites
# its RESULTS.md from them (--summarize_only). The shared data is
# unpacked into /tmp once. Names (grid file : output folder):
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SLA_SHARED_DIR:-../shared}
EVIDENCE=$(realpath -m "${EVIDENCE:-/tmp/evidence}")  # absolute: runs start in a worktree
RESULTS=${RESULTS:-results}
PYTHON=${PYTHON:-python}
GRIDS=(
  "fewshot_cpu:configs/grid_fewshot_cpu.py:data=/tmp/tinyimagenet100-32"
  "tinyimagenet100_cpu:configs/grid_tinyimagenet100_cpu.py:data=/tmp/tinyimagenet100-32"
  "cifar10_long_cpu:configs/grid_cifar_long_cpu.py:data=/tmp/cifar10"
  "long_tail_cpu_r100:configs/grid_long_tail_cpu.py:ratio=100,data=/tmp/cifar10"
  "long_tail_cpu_r10:configs/grid_long_tail_cpu.py:ratio=10,data=/tmp/cifar10"
  "augment_cpu:configs/grid_augment_cpu.py:data=/tmp/cifar10"
  "side_by_side/ours_xla:configs/grid_side_by_side.py:xla=true,data=/tmp/cifar10"
  "augment_autoaugment_cpu:configs/grid_augment_cpu.py:data=/tmp/cifar10,augment=autoaugment,plain=false"
  "tinyimagenet100_long_cpu:configs/grid_tinyimagenet100_long_cpu.py:data=/tmp/tinyimagenet100-32"
  "tinyimagenet100_long_cpu_r20:configs/grid_tinyimagenet100_long_cpu.py:data=/tmp/tinyimagenet100-32,depth=20"
  "tinyimagenet100_long_cpu_r20_sd:configs/grid_tinyimagenet100_long_cpu.py:data=/tmp/tinyimagenet100-32,depth=20,sd"
  "cifar10_r20_cpu:configs/grid_cifar10_r20_cpu.py:data=/tmp/cifar10"
)

pin() {  # grid $1's pinned commit (HEAD on first use) -> its worktree's path
  local file=$RESULTS/$1/code_commit commit tree
  if [ -f "$file" ]; then
    commit=$(cat "$file")
  else
    commit=$(git rev-parse HEAD); mkdir -p "$RESULTS/$1"; echo "$commit" > "$file"
  fi
  tree=${WORKTREES:-/tmp/sla_worktrees}/$commit
  if [ ! -d "$tree" ]; then
    git worktree prune  # a worktree registered in a wiped /tmp would block the add
    git worktree add --detach "$tree" "$commit" >/dev/null 2>&1 || {
      echo "cpu_evidence.sh: cannot check out $commit (pinned in $file)" >&2; exit 2; }
  fi
  echo "$tree"
}

unpack() {
  local folder tarball
  for pair in cifar10:cifar10-jpeg.tar.gz tinyimagenet100-32:tinyimagenet100-32.tar.gz; do
    folder=/tmp/${pair%%:*}; tarball=$SHARED/data/${pair#*:}
    [ -d "$folder" ] && continue
    [ -f "$tarball" ] || { echo "cpu_evidence.sh: no $tarball to unpack into $folder (set SLA_SHARED_DIR)" >&2; exit 2; }
    tar xzf "$tarball" -C /tmp
  done
}

check_names() {  # every name on the command line is one of GRIDS (exit 2 otherwise)
  local want entry names=""
  for entry in "${GRIDS[@]}"; do names="$names ${entry%%:*}"; done
  for want in "$@"; do
    case " $names " in
      *" $want "*) ;;
      *) echo "cpu_evidence.sh: unknown grid '$want'; the grids:$names" >&2; exit 2 ;;
    esac
  done
}

restore() {  # collected finished runs of grid $1 -> $EVIDENCE (the harness skips them)
  local run dst kept restored=0
  for run in "$RESULTS/$1"/runs/*/; do
    [ -f "$run/results.json" ] || continue
    dst=$EVIDENCE/$1/runs/$(basename "$run")
    [ -f "$dst/results.json" ] && continue
    mkdir -p "$dst"; cp "$run"* "$dst/"
    restored=$((restored + 1))
  done
  if [ "$restored" -gt 0 ]; then echo "$1: $restored finished runs restored from $RESULTS/$1"; fi
  restored=0
  for kept in "$RESULTS/$1"/in_progress/*.tgz; do  # unfinished runs kept by `keep`
    [ -f "$kept" ] || continue
    dst=$EVIDENCE/$1/runs/$(basename "$kept" .tgz)
    [ -f "$dst/results.json" ] && continue
    [ -n "$(ls "$dst/checkpoints" 2>/dev/null)" ] && continue  # its own are newer
    mkdir -p "$dst"; tar xzf "$kept" -C "$dst"
    restored=$((restored + 1))
  done
  if [ "$restored" -gt 0 ]; then echo "$1: $restored unfinished runs restored from $RESULTS/$1/in_progress"; fi
}

keep() {  # grid $1's unfinished runs: newest checkpoint + logs -> $RESULTS/$1/in_progress/NAME.tgz
  local run step files out
  for run in "$EVIDENCE/$1"/runs/*/; do
    [ -f "$run/results.json" ] && continue
    step=$( (ls "$run/checkpoints" 2>/dev/null || true) | { grep -E '^[0-9]+$' || true; } | sort -n | tail -n 1)
    [ -n "$step" ] || continue
    files=$(cd "$run" && find . -maxdepth 1 -type f -printf '%P\n' | sort)
    mkdir -p "$RESULTS/$1/in_progress"
    out=$RESULTS/$1/in_progress/$(basename "$run").tgz
    # shellcheck disable=SC2086  # file names: the trainer's own, no spaces
    (cd "$run" && tar czf - "checkpoints/$step" $files) > "$out.partial"
    mv "$out.partial" "$out"  # a kept run is replaced whole or not at all
    echo "$1: kept $(basename "$run") at step $step in $out"
  done
}

selected() {  # the GRIDS entries named on the command line (all if none)
  local entry
  for entry in "${GRIDS[@]}"; do
    if [ $# -eq 0 ]; then echo "$entry"; continue; fi
    for want in "$@"; do
      if [ "${entry%%:*}" = "$want" ]; then echo "$entry"; fi
    done
  done
}

mode=${1:-status}; shift || true
case "$mode" in run|collect|restore|keep|status|pin) check_names "$@" ;; esac
case "$mode" in
  run)
    unpack
    selected "$@" | while IFS= read -r entry; do
      name=${entry%%:*}; grid=${entry#*:}
      echo "== $name: $grid ($(date))"
      restore "$name"
      tree=$(pin "$name")
      echo "   code: $(cat "$RESULTS/$name/code_commit") ($tree)"
      (cd "$tree" && "$PYTHON" -m sla_jax.experiments --grid "$grid" \
        --out "$EVIDENCE/$name")
    done ;;
  pin)
    [ $# -eq 1 ] || { echo "usage: cpu_evidence.sh pin GRID" >&2; exit 2; }
    pin "$1" ;;
  collect)
    selected "$@" | while IFS= read -r entry; do
      name=${entry%%:*}; grid=${entry#*:}
      [ -d "$EVIDENCE/$name/runs" ] || continue
      copied=0
      for run in "$EVIDENCE/$name"/runs/*/; do
        [ -f "$run/results.json" ] || continue
        dst=$RESULTS/$name/runs/$(basename "$run"); mkdir -p "$dst"
        for f in results.json metrics.jsonl config.json wall_time.json; do
          [ -f "$run/$f" ] && cp "$run/$f" "$dst/"
        done
        copied=$((copied + 1))
      done
      echo "$name: $copied finished runs"
      for run in "$RESULTS/$name"/runs/*/; do  # a finished run needs no kept checkpoint
        rm -f "$RESULTS/$name/in_progress/$(basename "$run").tgz"
      done
      rmdir "$RESULTS/$name/in_progress" 2>/dev/null || true
      if [ "$copied" -gt 0 ]; then
        "$PYTHON" -m sla_jax.experiments --grid "$grid" --out "$RESULTS/$name" \
          --summarize_only
      fi
    done ;;
  restore)
    selected "$@" | while IFS= read -r entry; do restore "${entry%%:*}"; done ;;
  keep)
    selected "$@" | while IFS= read -r entry; do keep "${entry%%:*}"; done ;;
  status)
    selected "$@" | while IFS= read -r entry; do
      name=${entry%%:*}
      done_=$( (ls "$EVIDENCE/$name"/runs/*/results.json 2>/dev/null || true) | wc -l)
      started=$( (ls -d "$EVIDENCE/$name"/runs/*/ 2>/dev/null || true) | wc -l)
      echo "$name: $done_ finished, $started started (in $EVIDENCE/$name)"
    done ;;
  *)
    echo "usage: cpu_evidence.sh run|collect|status|restore|keep [GRID...] | pin GRID" >&2; exit 2 ;;
esac
