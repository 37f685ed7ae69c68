"""Evidence grid: SLA with strong augmentation (Cutout, CutMix, AutoAugment) on CIFAR-10 (shared JPEGs), 2 CPU cores.

    tar xzf ../shared/data/cifar10-jpeg.tar.gz -C /tmp
    python -m sla_jax.experiments --grid configs/grid_augment_cpu.py:data=/tmp/cifar10 \
        --out results/augment_cpu
    python -m sla_jax.experiments --grid \
        configs/grid_augment_cpu.py:data=/tmp/cifar10,augment=autoaugment,plain=false \
        --out results/augment_autoaugment_cpu

``augment``: the variants, "/"-separated names of sla_jax.augment (default
``cutout/cutmix``); ``plain``: also the runs without strong augmentation.

Baseline and SLA (rotations), each without strong augmentation, with Cutout
(variant ``cutout``: one 16 x 16 square per image, DeVries & Taylor's CIFAR
setting) and with CutMix (variant ``cutmix``: alpha 1, Yun et al.; for SLA the
target is the mixture of both images' joint labels), seeds 0-2: 18 runs.
Schedule: CIFAR ResNet-8, batch 32 images x M views, 1 500 SGD steps = one
epoch of the 48 000 training images (lr 0.1, x0.1 at 50 % / 75 %), a 1 000-image
validation split, the 10 000 test images. About 2.5 minutes a baseline run and
9 an SLA run on the 2 cores (~1 h 45 min in all; rerunning resumes). One epoch
is short for regularisers that pay off late in long schedules: read the
results as early-training behaviour. Expected (the 18 runs of
results/augment_cpu/RESULTS.md, mean test % over the seeds): baseline ~52.5,
with Cutout ~46.8, with CutMix ~42.5; SLA AG ~52.3, ~49.4, ~45.8 — Cutout and
CutMix lower every group here, SLA beats the same-augmentation baseline by
~2.6 / ~3.3 points. With augment=autoaugment,plain=false (6 runs,
results/augment_autoaugment_cpu/RESULTS.md): baseline ~47.4, SLA AG ~48.6 (+1.2,
not significant over 3 seeds).
"""

import ml_collections

from sla_jax import config_lib


_TITLES = {"cutout": "Cutout", "cutmix": "CutMix", "mixup": "Mixup",
           "randaugment": "RandAugment", "autoaugment": "AutoAugment"}


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, data="/tmp/cifar10", steps=1500,
                             augment="cutout/cutmix", plain=True)
  names = [name for name in arg.augment.split("/") if name]
  unknown = [name for name in names if name not in _TITLES]
  if not names or unknown:
    raise ValueError(f"Config argument augment: {arg.augment!r}; use "
                     f"\"/\"-separated names of {', '.join(_TITLES)}.")
  g = ml_collections.ConfigDict()
  g.title = (f"CIFAR-10 (shared JPEGs) with "
             f"{' / '.join(_TITLES[name] for name in names)}, ResNet-8, "
             f"{arg.steps} steps x 32 images, CPU")
  g.config = (f"configs/cifar.py:dataset=folder:{arg.data},depth=8,"
              f"steps={arg.steps},batch_size=32")
  g.runs = tuple(f"{objective}/rotation{variant}"
                 for objective in ("baseline", "sla")
                 for variant in [""] * arg.plain + [f"/{n}" for n in names])
  g.seeds = (0, 1, 2)
  g.overrides = {"val_size": 1000, "eval_every": arg.steps // 4,
                 "checkpoint_every": arg.steps // 4, "log_every": 50,
                 "eval_batch_size": 1000, "num_devices": 1}
  g.variants = {name: {"augment": {"name": name}} for name in names}
  g.description = (
      f"Data: the shared CIFAR-10 JPEG re-encode (a seeded 1 000-image "
      f"validation split, 48 000 train, 10 000 test). Schedule: configs/grid_"
      f"augment_cpu.py (ResNet-8, {arg.steps} steps of 32 images x M views); "
      f"strong augmentation after crop / flip, before the views.")
  return g
