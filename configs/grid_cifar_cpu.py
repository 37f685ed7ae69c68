"""Evidence grid (b): the shared real CIFAR-10 on 2 CPU cores, 3 seeds, reduced schedule.

    tar xzf ../shared/data/cifar10-jpeg.tar.gz -C /tmp
    python -m sla_jax.experiments --grid configs/grid_cifar_cpu.py:data=/tmp/cifar10 \
        --out results/cifar10_cpu

Baseline, DA, MT, SLA and SLA+SD with rotations, SLA with colour
permutations (M = 6), and the feature-level pretext task (variant fg4: discard
one of 4 channel groups after stage 2; SLA and SLA+SD without input
transforms), each on seeds 0-2, all on one schedule: configs/cifar.py
shrunk to CIFAR ResNet-8, batch 32 images x M views, 300 SGD steps (lr 0.1,
x0.1 at 50 % / 75 %), a 1 000-image validation split, the full 10 000-image
test set. How it was chosen: a ResNet-8 SLA step on 128 views costs ~0.5 s on
these 2 cores, so 300 steps plus JPEG decoding, compilation and two evaluations
keep a run at 1.5-6 minutes (measured alone on the machine: 98 s baseline to
347 s colour permutations) and the 24 runs near 85 minutes. 300 x 32 images is
a fifth of an epoch: this measures the objectives early in training, far from
the paper's 80 000-step protocol (see the GPU runs in RESULTS.md for that).
Results: results/cifar10_cpu/RESULTS.md; it should reach (test %, mean over 3
seeds): baseline 33.1, DA 28.1, MT 28.7, SLA rotation SI 35.8 / AG 36.4,
SLA+SD rotation SD head 34.6, SLA colour_perm SI 31.2.
"""

import ml_collections

from sla_jax import config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, data="/tmp/cifar10")
  g = ml_collections.ConfigDict()
  g.title = "CIFAR-10 (shared JPEGs), ResNet-8, 300 steps x 32 images, CPU"
  g.config = (f"configs/cifar.py:dataset=folder:{arg.data},depth=8,steps=300,"
              f"batch_size=32")
  g.runs = ("baseline/rotation", "da/rotation", "mt/rotation", "sla/rotation",
            "sla_sd/rotation", "sla/color_perm", "sla/identity/fg4",
            "sla_sd/identity/fg4")
  g.seeds = (0, 1, 2)
  g.overrides = {"val_size": 1000, "eval_every": 150, "checkpoint_every": 150,
                 "log_every": 50, "eval_batch_size": 1000, "num_devices": 1}
  g.variants = {"fg4": {"feature_transform": {"groups": 4, "stage": 2}}}
  g.description = (
      "Data: the shared CIFAR-10 JPEG re-encode (49 000 train, a seeded 1 000-"
      "image validation split, 10 000 test). Schedule: configs/grid_cifar_cpu.py "
      "(ResNet-8, 300 steps of 32 images x M views): a fifth of an epoch, so "
      "absolute accuracies are low and this compares the objectives early in "
      "training only.")
  return g
