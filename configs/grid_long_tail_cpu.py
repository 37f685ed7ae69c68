"""Evidence grid: long-tailed CIFAR-10 (shared JPEGs) on 2 CPU cores, CE vs LDAM-DRW, with and without SLA.

    tar xzf ../shared/data/cifar10-jpeg.tar.gz -C /tmp
    python -m sla_jax.experiments --grid configs/grid_long_tail_cpu.py:data=/tmp/cifar10,ratio=100 \
        --out results/cifar10_lt100_cpu
    python -m sla_jax.experiments --grid configs/grid_long_tail_cpu.py:data=/tmp/cifar10,ratio=10 \
        --out results/cifar10_lt10_cpu

configs/long_tail.py shrunk to fit the CPU: CIFAR ResNet-8, batch 32 images x
M views, ``steps`` SGD steps (default 1 000; lr 0.1, x0.1 at 50 % / 75 %), a
balanced 1 000-image validation split, the balanced 10 000-image test set,
seeds 0-2. Runs: cross-entropy baseline, CE + SLA (rotations), LDAM-DRW
baseline (variant ``ldam``: cosine heads of scale 30, margins up to 15 logit
units, deferred re-weighting from 80 % of the steps), LDAM-DRW + SLA+SD (its
SI, AG and SD predictions). At ratio 100 the training set keeps about 12 000
of the 49 000 images (4 880 down to 48 per class), so 1 000 steps of 32 are
about 2.6 epochs.
Result: OUT/RESULTS.md (mean +- std over the seeds, the group accuracies per run
in each results.json).
"""

import ml_collections

from sla_jax import config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, data="/tmp/cifar10", ratio=100.0, steps=1000)
  g = ml_collections.ConfigDict()
  g.title = (f"Long-tailed CIFAR-10 (shared JPEGs, ratio {arg.ratio:g}), "
             f"ResNet-8, {arg.steps} steps x 32 images, CPU")
  g.config = (f"configs/long_tail.py:dataset=folder:{arg.data},"
              f"ratio={arg.ratio},depth=8,steps={arg.steps},batch_size=32")
  g.runs = ("baseline/rotation", "sla/rotation", "baseline/rotation/ldam",
            "sla_sd/rotation/ldam")
  g.seeds = (0, 1, 2)
  g.overrides = {"val_size": 1000, "eval_every": arg.steps // 4,
                 "checkpoint_every": arg.steps // 4, "log_every": 50,
                 "eval_batch_size": 1000, "num_devices": 1}
  g.variants = {"ldam": {"ldam": {"max_margin": 15.0}, "drw": {"start": 0.8},
                         "model": {"cosine_scale": 30.0}}}
  g.description = (
      f"Data: the shared CIFAR-10 JPEG re-encode, a balanced seeded 1 000-image "
      f"validation split, the rest made long-tailed at ratio {arg.ratio:g} "
      f"(sla_jax.long_tail), the balanced 10 000-image test set. Schedule: "
      f"configs/grid_long_tail_cpu.py (ResNet-8, {arg.steps} steps of 32 images "
      f"x M views).")
  return g
