"""Evidence grid: the shared real 100-class data (tinyimagenet100-32) on 2 CPU cores, 3 seeds, 3 epochs.

    tar xzf ../shared/data/tinyimagenet100-32.tar.gz -C /tmp
    python -m sla_jax.experiments --grid configs/grid_tinyimagenet100_cpu.py:data=/tmp/tinyimagenet100-32 \
        --out results/tinyimagenet100_cpu

Baseline, DA, MT, SLA and SLA+SD with rotations, SLA with colour permutations
(M = 6), and SLA+SD with the feature-level task (variant fg4: discard one of 4
channel groups after stage 2, no input transforms), seeds 0-2. Schedule:
configs/tinyimagenet100_32.py shrunk to CIFAR ResNet-8, 200 training images per
class (20 000, seeded; ``samples_per_class``), batch 64 images x M views, 940
SGD steps = 3 epochs of that set (lr 0.1, x0.1 at 50 % / 75 %), a 1 000-image
validation split, the full 5 000-image test set. How it was chosen: a ResNet-8
step on 256 views costs ~0.7 s on the 2 cores, so an SLA run is ~12 minutes,
the baseline ~4, colour permutations ~18, and the 21 runs about 4 hours
(spread over sessions: rerunning the command resumes). Results:
results/tinyimagenet100_cpu/RESULTS.md. Result reached (all 21 runs, code of
ac5d48e): baseline 10.31 +- 0.96 %, SLA rotation AG 9.35 +- 0.74, SLA+SD SD
head 9.98 +- 1.31, DA 9.04, MT 9.34, colour permutations AG 7.85, fg4 SD 9.40:
on this short schedule SLA does not beat the baseline (analysis.md there).
"""

import ml_collections

from sla_jax import config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, data="/tmp/tinyimagenet100-32")
  g = ml_collections.ConfigDict()
  g.title = ("tinyimagenet100-32 (100 classes), ResNet-8, 200 images/class, "
             "940 steps x 64 images (3 epochs), CPU")
  g.config = (f"configs/tinyimagenet100_32.py:data={arg.data},depth=8,"
              f"steps=940,batch_size=64")
  g.runs = ("baseline/rotation", "da/rotation", "mt/rotation", "sla/rotation",
            "sla_sd/rotation", "sla/color_perm", "sla_sd/identity/fg4")
  g.seeds = (0, 1, 2)
  g.overrides = {"val_size": 1000, "samples_per_class": 200,
                 "eval_every": 235, "checkpoint_every": 235, "log_every": 47,
                 "eval_batch_size": 1000, "num_devices": 1}
  g.variants = {"fg4": {"feature_transform": {"groups": 4, "stage": 2}}}
  g.description = (
      "Data: the shared tinyimagenet100-32 (100 ImageNet classes at 32 px), a "
      "seeded 1 000-image validation split, 200 training images per class of "
      "the rest, the 5 000 test images. Schedule: configs/grid_tinyimagenet100_"
      "cpu.py (ResNet-8, 940 steps of 64 images x M views: 3 epochs of the "
      "20 000 images).")
  return g
