"""Evidence grid: CIFAR-10 (shared JPEGs) for 3 epochs on 2 CPU cores: does the SLA+SD deficit close?

    tar xzf ../shared/data/cifar10-jpeg.tar.gz -C /tmp
    python -m sla_jax.experiments --grid configs/grid_cifar_long_cpu.py:data=/tmp/cifar10 \
        --out results/cifar10_long_cpu

Baseline, SLA and SLA+SD with rotations, seeds 0-2, on the network of
configs/grid_cifar_cpu.py (CIFAR ResNet-8, batch 32 images x M views) for 4 600
SGD steps = 3 epochs of the 48 000 training images (lr 0.1, x0.1 at 50 % /
75 %), a 1 000-image validation split, the 10 000 test images; evaluation every
575 steps. About 7 minutes a baseline run and 27-30 an SLA / SLA+SD run on the
2 cores: the 9 runs take about 3 hours (spread over sessions; rerunning the
command resumes). Results: results/cifar10_long_cpu/RESULTS.md; all 9 runs
(2026-12-02, code 1ec1e30): baseline 65.80 +/- 0.45 %, SLA AG 67.01 +/- 0.59
(SI 65.59), SLA+SD SD 66.61 +/- 0.57 (SI 66.27, AG 64.22): the early SLA+SD
deficit closes for its single-pass heads, not for its AG.
"""

import ml_collections

from sla_jax import config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, data="/tmp/cifar10")
  g = ml_collections.ConfigDict()
  g.title = "CIFAR-10 (shared JPEGs), ResNet-8, 4 600 steps x 32 images (3 epochs), CPU"
  g.config = (f"configs/cifar.py:dataset=folder:{arg.data},depth=8,steps=4600,"
              f"batch_size=32")
  g.runs = ("baseline/rotation", "sla/rotation", "sla_sd/rotation")
  g.seeds = (0, 1, 2)
  g.overrides = {"val_size": 1000, "eval_every": 575, "checkpoint_every": 575,
                 "log_every": 115, "eval_batch_size": 1000, "num_devices": 1}
  g.description = (
      "Data: the shared CIFAR-10 JPEG re-encode (a seeded 1 000-image "
      "validation split, 48 000 train, 10 000 test). Schedule: configs/grid_"
      "cifar_long_cpu.py (ResNet-8, 4 600 steps of 32 images x M views: 3 "
      "epochs), the network of the fifth-of-an-epoch grid (grid_cifar_cpu.py).")
  return g
