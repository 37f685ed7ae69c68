"""Evidence grid: the ResNet-20 100-class grid's schedule on CIFAR-10: is SLA's gain larger with 100 classes?

    tar xzf ../shared/data/cifar10-jpeg.tar.gz -C /tmp
    python -m sla_jax.experiments --grid configs/grid_cifar10_r20_cpu.py:data=/tmp/cifar10 \
        --out results/cifar10_r20_cpu

Baseline and SLA with rotations, seeds 0-2, exactly as
configs/grid_tinyimagenet100_long_cpu.py with ``depth=20`` but on the shared
CIFAR-10 JPEGs: CIFAR ResNet-20, batch 64 images x M views, 3 840 SGD steps
(lr 0.1, x0.1 at 50 % / 75 %), a seeded 1 000-image validation split, so the
same 49 000 training images and 5 epochs; the 10 000 test images; evaluation
every 480 steps; one CPU device per core. Only the data differ (10 classes,
40 joint classes, against 100 and 400), so the two grids form the
like-for-like pair the paper's claim needs ("larger gains on 100 classes";
results/tinyimagenet100_long_cpu_r20: SLA AG +3.04 points, 11.4 % of its
baseline). Expect the run times of that grid (about 20-30 minutes a
baseline run and 1.1-1.8 hours an SLA run on the 2 cores): spread over
sessions, `bash launch/cpu_evidence.sh run cifar10_r20_cpu`, collected
after each run. Results: results/cifar10_r20_cpu/RESULTS.md (its "Gains here
and in results/tinyimagenet100_long_cpu_r20" table answers the question;
complete on 2026-12-07, 3 seeds): baseline 75.01 +- 0.49 %, SLA AG
76.63 +- 0.67 (+1.62, p = 0.032), SI 74.81 +- 0.54 (-0.20); the gain is
larger with 100 classes by 1.42 points for AG (p = 0.058) and 1.86 for SI
(p = 0.023). Reading: results/cifar10_r20_cpu/analysis.md.
"""

import ml_collections

from sla_jax import config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, data="/tmp/cifar10")
  g = ml_collections.ConfigDict()
  g.title = ("CIFAR-10 (shared JPEGs), ResNet-20, 49 000 training images, "
             "3 840 steps x 64 images (5 epochs), CPU")
  g.config = (f"configs/cifar.py:dataset=folder:{arg.data},depth=20,"
              "steps=3840,batch_size=64")
  g.runs = ("baseline/rotation", "sla/rotation")
  g.seeds = (0, 1, 2)
  g.overrides = {"val_size": 1000, "eval_every": 480, "checkpoint_every": 480,
                 "log_every": 96, "eval_batch_size": 1000}
  # The 100-class grid's folder: RESULTS.md sets the gains side by side.
  g.paired_with = "results/tinyimagenet100_long_cpu_r20"
  g.description = (
      "Data: the shared CIFAR-10 JPEG re-encode (a seeded 1 000-image "
      "validation split, 49 000 train, 10 000 test). Schedule: configs/grid_"
      "cifar10_r20_cpu.py (ResNet-20, 3 840 steps of 64 images x M views: 5 "
      "epochs), that of the ResNet-20 100-class grid (grid_tinyimagenet100_"
      "long_cpu.py:depth=20), so the two form a like-for-like pair.")
  return g
