"""Evidence grid on a GPU: the paper protocol (issue 17, item 4), 3 seeds, made over device sessions.

    # on a lent GPU (launch/gpu_prepare.sh prints the install line and carry):
    SLA_SHARED_DIR=.gpu/shared KEPT=results/gpu_runs_in_progress OUT=$OUT TRAIN_TIMEOUT=540 \
        bash benchmarks/gpu_suite.sh grid configs/grid_protocol_gpu.py:dataset=cifar10 \
        results/cifar10_gpu
    # back here, on what came back (files_at), then commit results/:
    bash launch/gpu_keep.sh FILES_AT --grid results/cifar10_gpu
    python -m sla_jax.experiments --grid configs/grid_protocol_gpu.py:dataset=cifar10 \
        --out results/cifar10_gpu --summarize_only

configs/cifar.py's protocol (CIFAR ResNet-32, 80 000 SGD steps of 128 images x
M views, lr 0.1 x0.1 at 50 % / 75 %, a seeded 5 000-image validation split, the
test accuracy at the best validation step) with bf16 compute and 16 steps per
jitted call (results identical to 1 per call, tests/test_train.py), seeds 0-2.
``dataset=cifar10`` (the shared CIFAR-10 JPEGs): baseline, SLA and SLA+SD with
rotations; ``dataset=tinyimagenet100`` (the shared 100-class data, the same
protocol through configs/tinyimagenet100_32.py): baseline and SLA+SD. Issue 17's
goals: on CIFAR-10 SLA+AG >= baseline + 2.0 points and SLA+SD >= baseline + 1.0
over the 3 seeds; on the 100-class data SLA+AG >= baseline + 4 points.

The harness runs one run at a time (PARALLEL=N before the command: N at a
time, each with 0.9/N of the GPU's memory; whether that gains on the per-step
floor is for the first such call to measure); `gpu_suite.sh grid` stops it at
TRAIN_TIMEOUT with a checkpoint (exit 75), and launch/gpu_keep.sh keeps the
finished runs' logs in results/<dataset>_gpu/runs/ and the unfinished run in
results/gpu_runs_in_progress/, from which the next device session goes on.
One protocol run is about 8 minutes of an H200 (RESULTS.md, "SLA, seed 0, on
an H200"): about one run per 15-minute device session. Result reached: not yet
run (no device lent since this grid was written).
"""

import ml_collections

from sla_jax import config_lib

# dataset -> (trainer config, its default data folder, the runs).
DATASETS = {
    "cifar10": ("configs/cifar.py:dataset=folder:{data}", "/tmp/cifar10",
                ("baseline/rotation", "sla/rotation", "sla_sd/rotation")),
    "tinyimagenet100": ("configs/tinyimagenet100_32.py:data={data}",
                        "/tmp/tinyimagenet100-32",
                        ("baseline/rotation", "sla_sd/rotation")),
}


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, dataset="cifar10", data="")
  if arg.dataset not in DATASETS:
    raise ValueError(f"Unknown dataset {arg.dataset!r}; use one of "
                     f"{', '.join(DATASETS)}.")
  config, default_data, runs = DATASETS[arg.dataset]
  g = ml_collections.ConfigDict()
  g.title = (f"{arg.dataset}: the paper protocol (ResNet-32, 80 000 steps x 128 "
             "images, bf16), GPU")
  g.config = config.format(data=arg.data or default_data)
  g.runs = runs
  if "sla/rotation" in runs:  # does the SD head keep AG's gain in one pass?
    g.comparisons = ("sla_sd/rotation:acc_sd vs sla/rotation:acc_ag",
                     "sla_sd/rotation:acc_ag vs sla/rotation:acc_ag")
  g.seeds = (0, 1, 2)
  g.overrides = {"model": {"dtype": "bfloat16"}, "steps_per_call": 16,
                 "eval_every": 4000, "checkpoint_every": 2000,
                 "log_every": 800, "keep_checkpoints": 1}
  g.description = (
      f"Data: the shared {arg.dataset} files (a seeded 5 000-image validation "
      "split). Schedule: configs/grid_protocol_gpu.py (configs/cifar.py's "
      "protocol, bf16 compute, 16 steps per jitted call). Runs made on lent "
      "GPUs over several device sessions (benchmarks/gpu_suite.sh grid, "
      "launch/gpu_keep.sh); summarised on a CPU machine.")
  return g
