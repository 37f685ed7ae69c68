#!/bin/bash
# The GPU measurements of BENCHMARKS.md / RESULTS.md in one command.
#
#   SLA_SHARED_DIR=../shared OUT=/tmp/gpu bash benchmarks/gpu_suite.sh bench
#   SLA_SHARED_DIR=../shared OUT=/tmp/gpu bash benchmarks/gpu_suite.sh train \
#       OBJECTIVE STEPS [extra trainer flags...]
#
# bench (7 files in $OUT; the device tool returns at most 8): env.txt;
# bench.jsonl: `sla-bench` on the protocol config (ResNet-32, 128 images x 4
# rotations); compare.jsonl: the PyTorch side by side
# (benchmarks/compare_torch.py), with OFFICIAL=PATH (a hankook/SLA checkout
# carried along) the original code's own step too; resnet50.jsonl: our
# ResNet-50 SLA step vs torchvision's at its fastest eager setting
# (benchmarks/compare_resnet50.py); batch_draw.jsonl; profile_k{1,16}.json:
# the jax.profiler per-op breakdown (benchmarks/profile_step.py; traces stay in
# /tmp). The parts, most needed first: sla_k1, sla_k16 (bf16 at steps_per_call
# K = 1 and 16: the per-step floor), baseline_k16, compare_fp32 (the
# original's default), resnet50, sla_sd_k16, float32_k16, top_k (the top_k
# batch draw), compare_bf16_channels_last, batch_draw, profile_k1,
# profile_k16, no_command_buffers and command_buffers_while (XLA:GPU's CUDA
# graphs off, and capturing loops too; K = 16), census (census.jsonl: the
# kernels one step launches on this GPU, benchmarks/gpu_kernel_census.py,
# plain and with the kernel cuts), fused_bn (model.fused_batch_norm),
# kernel_cuts and kernel_cuts_baseline (SLA and the baseline with the fused
# BatchNorm, one-pass variance and the top_k draw: the floor's fit again,
# BENCHMARKS.md "Kernels per step on a GPU"), conv_fusion and
# conv_fusion_cuts (XLA:GPU's experimental convolution fusion, which puts the
# cuDNN convolutions and the kernels of a step into one command buffer,
# without and with the cuts), concurrent_2 and concurrent_3 (2 or 3 SLA
# benches at once: does one GPU gain from parallel runs?). PARTS="name ..." runs only
# those, in its order. They run within DEADLINE seconds in all (default 540, under the
# device tool's 10 minutes a command), each within STEP_TIMEOUT (default 150)
# of them: a slow or stuck part loses only itself and what follows it.
# SMOKE=1 runs every part at toy sizes (quickstart config, depth-8 side by side,
# ResNet-50 at 64 px): what tests/test_launch.py runs on the CPU, so that the
# suite is known to run before it spends device time.
# train: the paper protocol (configs/cifar.py) on the shared CIFAR-10 JPEGs, or
# CONFIG (e.g. "configs/long_tail.py:dataset=folder:/tmp/cifar10,ratio=100" or
# "configs/tinyimagenet100_32.py:data=/tmp/tinyimagenet100-32"), in workdir
# $RUNS/NAME (NAME defaults to OBJECTIVE; resumes from $RUNS/NAME.tgz if
# present); leaves NAME.{metrics.jsonl,results.json,tgz} in $OUT.
# train_many: several such runs at once on the one GPU (OBJECTIVE:SEED each;
# one run leaves it mostly idle: BENCHMARKS.md, the per-step floor), named
# PREFIX + OBJECTIVE_seedSEED, each within TRAIN_TIMEOUT (default 540 s,
# under the device tool's 10 minutes a command; a stopped run saves its step
# and resumes next time), every process with an equal share of the GPU's memory
# and one checkpoint kept. In $OUT: summary.jsonl (a line
# per run: exit status, last step, results when finished), logs.txt (the end
# of each run's output) and the workdirs without best/ as one tarball cut in
# 15 MiB pieces, runs.tgz.0, runs.tgz.1, ... (the device tool returns eight
# files of 16 MiB at most; a ResNet-32 run keeps ~3.6 MiB: parameters and
# momentum).
# metrics.jsonl and results.json are inside: `cat runs.tgz.* | tar xz`.
# To resume, put the pieces in $RUNS (e.g. .gpu/runs, carried), or keep them
# in the repository with launch/gpu_keep.sh, which leaves each unfinished run
# as results/gpu_runs_in_progress/NAME.tgz: KEPT=results/gpu_runs_in_progress
# resumes from those (a run already in $RUNS wins).
#   OUT=/tmp/gpu RUNS=.gpu/runs KEPT=results/gpu_runs_in_progress TRAIN_TIMEOUT=480 bash benchmarks/gpu_suite.sh train_many 80000 \
#       baseline:0 sla:0 sla_sd:0 -- --config.model.dtype=bfloat16
# grid GRID_SPEC OUTDIR: an evidence grid (e.g. configs/grid_protocol_gpu.py:
# dataset=cifar10 into results/cifar10_gpu) through sla_jax.experiments, PARALLEL
# runs at a time (default 1), resumed across device sessions with launch/gpu_keep.sh
# --grid OUTDIR and KEPT (the mode's own comment below says what returns).
# bench_then_train_many (same arguments as train_many) and bench_then_grid
# (as grid): both in one device call, the bench (PARTS) within BENCH_DEADLINE
# seconds (default 330), packed as bench.tgz, then the runs until END seconds
# after the start (default 565). bench_then_grid with PARALLEL=auto trains as
# many runs at a time as the bench's parts sla_k16 and concurrent_N say pay
# (benchmarks/pick_parallel.py; its reason in bench.tgz's parallel.txt).
set -u
OUT=${OUT:-/tmp/gpu_suite}
SHARED=${SLA_SHARED_DIR:-../shared}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
mode=${1:-bench}; shift || true

if [ "$mode" = bench_then_train_many ] || [ "$mode" = bench_then_grid ]; then
  # One device call, both halves: the bench parts (PARTS) within BENCH_DEADLINE
  # seconds (default 330) as one bench.tgz, then train_many (or grid) until END
  # seconds (default 565) after the start: 4 or 5 files in $OUT, under the tool's 8.
  next_mode=${mode#bench_then_}
  TRAIN_CHECK=1 bash "$0" "$next_mode" "$@" || exit $?  # bad arguments: before any timing
  mkdir -p "$OUT/bench"
  OUT="$OUT/bench" DEADLINE=${BENCH_DEADLINE:-330} bash "$0" bench || exit $?
  if [ "${PARALLEL:-1}" = auto ]; then  # from the bench's own concurrent rows
    PARALLEL=$(python3 -m benchmarks.pick_parallel "$OUT/bench/bench.jsonl" \
      2> "$OUT/bench/parallel.txt") || PARALLEL=1
    cat "$OUT/bench/parallel.txt" >&2; export PARALLEL
  fi
  tar czf "$OUT/bench.tgz" -C "$OUT" bench && rm -rf "$OUT/bench"
  left=$(( ${END:-565} - SECONDS ))
  if [ "$left" -lt 10 ]; then echo "gpu_suite: no time left to train (END=${END:-565})" >&2; exit 0; fi
  TRAIN_TIMEOUT=$left exec bash "$0" "$next_mode" "$@"
fi

if [ "$mode" = bench ]; then
  if [ "${SMOKE:-0}" = 1 ]; then
    # Toy sizes: every part's code path, in seconds of CPU (8 images a step,
    # one warm-up call, 3 calls of each batch draw).
    config=configs/quickstart.py; steps=32; rounds=1; calls=1; warmup=1; draw_calls=3
    small="--config.batch_size=8 --config.eval_batch_size=16"
    compare_size="--depth 8 --batch_size 8"; r50_size="--batch_size 2 --image_size 64 --num_classes 10"
  else
    config=configs/cifar.py; steps=1600; rounds=50; calls=4; warmup=2; draw_calls=21
    small=""
    compare_size="--batch_size 128"; r50_size="--batch_size 64"
  fi
  # The parts, one line each (name, then its command), in the order they run
  # without PARTS: the issues' targets first (the floor, K = 1 vs 16; the
  # baseline's rate; the original's default; ResNet-50 against torchvision),
  # then the rest. PARTS (space-separated names) runs only those, in its own
  # order. no_command_buffers and command_buffers_while: command buffers off,
  # and with while loops and conditionals captured too (the rows in
  # bench.jsonl carry their xla_flags).
  declare -A part_command=(); parts=""
  while read -r name command; do
    [ -n "$name" ] || continue
    parts="$parts $name"; part_command[$name]=$command
  done <<'PARTS_TABLE'
sla_k1                     bench sla bfloat16 1
sla_k16                    bench sla bfloat16 16
baseline_k16               bench baseline bfloat16 16
compare_fp32               compare fp32
resnet50                   resnet50
sla_sd_k16                 bench sla_sd bfloat16 16
float32_k16                bench sla float32 16
top_k                      bench sla bfloat16 16 --config.batch_draw=top_k
compare_bf16_channels_last compare bf16_channels_last
batch_draw                 batch_draw
profile_k1                 profile 1
profile_k16                profile 16
no_command_buffers         command_buffers ""
command_buffers_while      command_buffers FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN,WHILE,CONDITIONAL
census                     census_both
fused_bn                   bench sla bfloat16 16 --config.model.fused_batch_norm=true
kernel_cuts                bench sla bfloat16 16 $cuts
kernel_cuts_baseline       bench baseline bfloat16 16 $cuts
conv_fusion                XLA_FLAGS="${XLA_FLAGS:-} $conv_fusion" bench sla bfloat16 16
conv_fusion_cuts           XLA_FLAGS="${XLA_FLAGS:-} $conv_fusion" bench sla bfloat16 16 $cuts
concurrent_2               concurrent 2
concurrent_3               concurrent 3
PARTS_TABLE
  for name in ${PARTS:-}; do
    if [ -z "${part_command[$name]+set}" ]; then
      echo "gpu_suite.sh: unknown part '$name' in PARTS; the parts:$parts" >&2; exit 2
    fi
  done
  limit() {  # the command, within STEP_TIMEOUT and what is left of DEADLINE
    local left=$(( ${DEADLINE:-540} - SECONDS )) step=${STEP_TIMEOUT:-150}
    if [ "$left" -le 5 ]; then echo "gpu_suite: deadline reached, skipped: $*" >&2; return 0; fi
    timeout $(( left < step ? left : step )) "$@"
  }
  { nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm \
      --format=csv,noheader
    python3 -c "import sys, jax, flax, optax, torch; print(sys.version.split()[0], \
'jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, \
'torch', torch.__version__, jax.devices())"; } 2>&1 | tee "$OUT/env.txt"
  bench() {  # objective dtype steps_per_call [flags...]
    local objective=$1 dtype=$2 k=$3; shift 3
    limit python3 -m sla_jax.bench --config "$config:objective=$objective" \
      --config.model.dtype="$dtype" --config.steps_per_call="$k" \
      --steps $((steps / k)) --warmup $warmup --json $small "$@" | tee -a "$OUT/bench.jsonl"
  }
  concurrent() {  # N: N SLA K = 16 benches at once, each with 0.9/N of the
    # GPU's memory; rows tagged "concurrent": N. Their summed views/s against
    # sla_k16's tell whether `sla-experiments --parallel N` gains on the floor.
    local n=$1 i pids=()
    for i in $(seq "$n"); do
      XLA_PYTHON_CLIENT_MEM_FRACTION=0.$(printf %02d $(( 90 / n ))) limit python3 \
        -m sla_jax.bench --config "$config:objective=sla" --config.model.dtype=bfloat16 \
        --config.steps_per_call=16 --steps $((steps / 16)) --warmup $warmup --json $small \
        > "/tmp/gpu_concurrent_${n}_$i.jsonl" &
      pids+=($!)
    done
    wait "${pids[@]}"
    python3 -c 'import json, sys
for path in sys.argv[2:]:
  for line in open(path):
    if line.startswith("{"):
      print(json.dumps({**json.loads(line), "concurrent": int(sys.argv[1])}))' \
      "$n" /tmp/gpu_concurrent_${n}_*.jsonl | tee -a "$OUT/bench.jsonl"
    rm -f /tmp/gpu_concurrent_${n}_*.jsonl
  }
  compare() {  # torch_variant: the PyTorch side by side
    limit python3 -m benchmarks.compare_torch $compare_size --rounds $rounds \
      --jax_dtype bfloat16 --torch_variant "$1" ${OFFICIAL:+--official $OFFICIAL} --json \
      | tee -a "$OUT/compare.jsonl"
  }
  profile() {  # steps_per_call
    limit python3 -m benchmarks.profile_step --config "$config:objective=sla" \
      --config.model.dtype=bfloat16 --config.steps_per_call="$1" --calls $calls $small \
      --out "/tmp/gpu_trace_k$1" --json > "$OUT/profile_k$1.json"
  }
  resnet50() {
    limit python3 -m benchmarks.compare_resnet50 $r50_size \
      --rounds $(( rounds < 20 ? rounds : 20 )) --json | tee -a "$OUT/resnet50.jsonl"
  }
  batch_draw() {
    limit python3 -m benchmarks.batch_draw --calls $draw_calls | tee "$OUT/batch_draw.jsonl"
  }
  command_buffers() {  # XLA:GPU's command buffers (CUDA graphs): the types captured
    XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_command_buffer=$1" bench sla bfloat16 16
  }
  # The kernel cuts (BENCHMARKS.md, "Kernels per step on a GPU").
  cuts="--config.model.fused_batch_norm=true --config.model.use_fast_variance=true --config.batch_draw=top_k"
  census() {  # [flags...]: what one step launches on this GPU (no GPU in SMOKE: one error line)
    limit python3 -m benchmarks.gpu_kernel_census --config "$config:objective=sla" \
      --config.model.dtype=bfloat16 --config.steps_per_call=16 --json $small "$@" \
      | tee -a "$OUT/census.jsonl"
  }
  conv_fusion=--xla_gpu_experimental_enable_conv_fusion=true
  census_both() {  # plain, the cuts, the convolution fusion
    census; census $cuts; XLA_FLAGS="${XLA_FLAGS:-} $conv_fusion" census
  }
  for name in ${PARTS:-$parts}; do eval "${part_command[$name]}"; done
elif [ "$mode" = train ] || [ "$mode" = train_many ] || [ "$mode" = grid ]; then
  # CONFIG: the config and its data (default the CIFAR-10 protocol); NAME: the
  # run's folder and file names (default OBJECTIVE; e.g. sla_seed1 with
  # --config.seed=1). The dataset tarballs of $SHARED/data are unpacked as needed.
  config=${CONFIG:-configs/cifar.py:dataset=folder:/tmp/cifar10}
  if [ "$mode" = grid ]; then
    grid=${1:-}; grid_out=${2:-}
    if [ -z "$grid" ] || [ -z "$grid_out" ] || [ $# -gt 2 ]; then
      echo "usage: gpu_suite.sh grid GRID_SPEC OUTDIR (e.g. configs/grid_protocol_gpu.py:dataset=cifar10 results/cifar10_gpu)" >&2; exit 2
    fi
    # The grid's trainer config names its data (and a bad grid fails here, before any run).
    config=$(python3 - "$grid" <<'PY'
import importlib.util, sys
path, _, arg = sys.argv[1].partition(":")
spec = importlib.util.spec_from_file_location("grid", path)
module = importlib.util.module_from_spec(spec)
try:
  spec.loader.exec_module(module)
  print(module.get_config(arg or None).config)
except Exception as e:  # pylint: disable=broad-except
  sys.exit(f"gpu_suite.sh: grid {sys.argv[1]!r}: {e}")
PY
) || exit 2
    case ${PARALLEL:-1} in
      auto) [ "${TRAIN_CHECK:-0}" = 1 ] || {
        echo "gpu_suite.sh: PARALLEL=auto needs bench_then_grid (it reads that call's concurrent_N rows); give a number" >&2; exit 2; } ;;
      *[!0-9]*|0) echo "gpu_suite.sh: PARALLEL='${PARALLEL}' is not a number of runs (or auto with bench_then_grid)" >&2; exit 2 ;;
    esac
    [ "${TRAIN_CHECK:-0}" = 1 ] && exit 0  # bench_then_grid: arguments checked
  fi
  case "$config" in *cifar10*) [ -d /tmp/cifar10 ] || tar xzf "$SHARED/data/cifar10-jpeg.tar.gz" -C /tmp ;; esac
  case "$config" in *tinyimagenet100-32*) [ -d /tmp/tinyimagenet100-32 ] || tar xzf "$SHARED/data/tinyimagenet100-32.tar.gz" -C /tmp ;; esac
  runs=${RUNS:-/tmp/runs}; mkdir -p "$runs"
  # TRAIN_TIMEOUT (seconds) stops a run that must fit a time slot; rerun to resume
  # (carry the returned tgz in RUNS, e.g. RUNS=.gpu/runs). Default 540: the
  # device tool's 10 minutes a command less a minute to save and pack, since a
  # command it stops returns nothing; 0: no limit.
  train_timeout=${TRAIN_TIMEOUT:-540}
  case "$config" in *:*) args="$config," ;; *) args="$config:" ;; esac
  train_run() {  # name objective steps [trainer flags...]: one run, resumed if saved
    local name=$1 objective=$2 steps=$3; shift 3
    timeout "$train_timeout" python3 -m sla_jax.main \
      --config "${args}objective=$objective,steps=$steps" \
      --workdir "$runs/$name" "$@"
  }
  run_summary() {  # workdir name status: one summary.jsonl line
    python3 - "$@" <<'PY'
import json, pathlib, sys
workdir, name, status = pathlib.Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
rows = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()
        ] if (workdir / "metrics.jsonl").exists() else []
results = workdir / "results.json"
print(json.dumps({"name": name, "exit_status": status,
                  "last_step": rows[-1]["step"] if rows else None,
                  "last_row": rows[-1] if rows else None,
                  "results": json.loads(results.read_text()) if results.exists() else None}))
PY
  }
  if [ "$mode" = grid ]; then
    # The evidence harness, PARALLEL runs at a time (default 1), in OUTDIR (a folder of this
    # checkout: the finished runs committed there are skipped); the
    # unfinished runs kept between sessions come from $KEPT/<OUTDIR's name>.tgz.
    # At TRAIN_TIMEOUT the running trainer saves a checkpoint and the harness
    # stops (exit 75 / 124). In $OUT: summary.jsonl (a line per run of OUTDIR),
    # logs.txt, and runs.tgz.* (every run folder; without best/, and without
    # the checkpoints of finished runs): `bash launch/gpu_keep.sh FILES_AT
    # --grid OUTDIR` keeps them.
    mkdir -p "$grid_out/runs"
    kept=${KEPT:-/nonexistent}/$(basename "$grid_out").tgz
    [ -f "$kept" ] && tar xzf "$kept" -C "$grid_out/runs"
    status=0
    echo "gpu_suite.sh grid: ${PARALLEL:-1} run(s) at a time" > "$OUT/logs.txt"
    timeout "$train_timeout" python3 -m sla_jax.experiments --grid "$grid" \
      --out "$grid_out" --runs_only --parallel "${PARALLEL:-1}" >> "$OUT/logs.txt" 2>&1 || status=$?
    : > "$OUT/summary.jsonl"; names=(); finished=()
    for dir in "$grid_out"/runs/*/; do
      [ -d "$dir" ] || continue
      name=$(basename "$dir"); names+=("$name")
      run_summary "$dir" "$name" "$status" >> "$OUT/summary.jsonl"
      [ -f "$dir/results.json" ] && finished+=(--exclude="$name/checkpoints")
    done
    tail -n 5 "$OUT/logs.txt"
    [ ${#names[@]} -gt 0 ] && tar czf - -C "$grid_out/runs" --exclude='*/best' \
      "${finished[@]}" "${names[@]}" | split -b 15m -d -a 1 - "$OUT/runs.tgz."
    case $status in 0|75|124) exit 0 ;; *) exit 1 ;; esac
  elif [ "$mode" = train ]; then
    objective=$1; steps=$2; shift 2
    name=${NAME:-$objective}
    [ -f "$runs/$name.tgz" ] && tar xzf "$runs/$name.tgz" -C "$runs"
    train_run "$name" "$objective" "$steps" "$@" 2>&1 | tail -n 40
    for f in metrics.jsonl results.json; do
      [ -f "$runs/$name/$f" ] && cp "$runs/$name/$f" "$OUT/$name.$f"
    done
    tar czf "$OUT/$name.tgz" -C "$runs" "$name"
  else
    steps=${1:-}; shift || true
    specs=()
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do specs+=("$1"); shift; done
    [ $# -gt 0 ] && shift  # the "--" before the trainer flags
    for spec in "${specs[@]}"; do
      case "$spec" in [a-z]*:[0-9]*) ;; *)
        echo "gpu_suite.sh: '$spec' is not OBJECTIVE:SEED (e.g. sla:0)" >&2; exit 2 ;;
      esac
    done
    if [[ ! "$steps" =~ ^[0-9]+$ ]] || [ ${#specs[@]} -eq 0 ]; then
      echo "usage: gpu_suite.sh train_many STEPS OBJECTIVE:SEED... [-- flags]" >&2; exit 2
    fi
    [ "${TRAIN_CHECK:-0}" = 1 ] && exit 0  # bench_then_train_many: arguments checked
    if ls "$runs"/runs.tgz.* > /dev/null 2>&1; then cat "$runs"/runs.tgz.* | tar xzf - -C "$runs"; fi
    share=$(( 90 / ${#specs[@]} ))
    names=(); pids=()
    for spec in "${specs[@]}"; do
      objective=${spec%%:*}; seed=${spec#*:}; name=${PREFIX:-}${objective}_seed$seed
      names+=("$name")
      # A run kept between sessions (launch/gpu_keep.sh): NAME.tgz in $runs or $KEPT.
      for kept in "$runs/$name.tgz" "${KEPT:-/nonexistent}/$name.tgz"; do
        [ ! -d "$runs/$name" ] && [ -f "$kept" ] && tar xzf "$kept" -C "$runs"
      done
      XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.$(printf %02d $share)} \
        train_run "$name" "$objective" "$steps" --config.seed="$seed" \
        --config.keep_checkpoints=1 "$@" \
        > "$runs/$name.log" 2>&1 &
      pids+=($!)
    done
    : > "$OUT/summary.jsonl"; : > "$OUT/logs.txt"; failed=0
    for i in "${!names[@]}"; do
      name=${names[$i]}; status=0; wait "${pids[$i]}" || status=$?
      case $status in 0|75|124) ;; *) failed=1 ;; esac  # 75, 124: stopped, saved
      run_summary "$runs/$name" "$name" "$status" >> "$OUT/summary.jsonl"
      { echo "== $name (exit status $status)"; tail -n 30 "$runs/$name.log"; } >> "$OUT/logs.txt"
    done
    saved=()
    for name in "${names[@]}"; do [ -d "$runs/$name" ] && saved+=("$name"); done
    [ ${#saved[@]} -gt 0 ] && tar czf - -C "$runs" --exclude='*/best' "${saved[@]}" \
      | split -b 15m -d -a 1 - "$OUT/runs.tgz."
    exit $failed
  fi
else
  echo "usage: gpu_suite.sh bench | train OBJECTIVE STEPS [flags] | train_many STEPS OBJECTIVE:SEED... [-- flags] | bench_then_train_many STEPS OBJECTIVE:SEED... [-- flags] | grid GRID_SPEC OUTDIR | bench_then_grid GRID_SPEC OUTDIR" >&2; exit 2
fi
