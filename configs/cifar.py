"""The paper protocol on CIFAR (Lee et al. 2020, Sec. 4.1; hankook/SLA train.py).

    python -m sla_jax.main --config configs/cifar.py:objective=sla_sd \
        --workdir workdirs/cifar10_sla_sd_rotation
    # CIFAR-100 from TFDS (prepared offline in DATA_DIR):
    python -m sla_jax.main --config configs/cifar.py:dataset=cifar100,objective=sla \
        --config.data_dir=DATA_DIR --workdir workdirs/cifar100_sla
    # The shared CIFAR-10 JPEGs (unpacked to /tmp/cifar10):
    python -m sla_jax.main --config configs/cifar.py:dataset=folder:/tmp/cifar10 \
        --workdir workdirs/cifar10_folder_sla

CIFAR ResNet-32, batch 128 images x M views, 80 000 SGD steps (lr 0.1, momentum
0.9, weight decay 1e-4 on every parameter, x0.1 at 50 % / 75 %), crop 32 with
4-pixel zero padding + flip, a seeded 5 000-image validation split; the test
accuracy at the best validation step is the result. Args: dataset (cifar10,
cifar100, another TFDS name, or folder:<root>), objective (baseline, da, mt,
sla, sla_sd), transform (any sla_jax.transforms name), depth, steps, seed,
batch_size, feature_groups / feature_stage (the feature-level pretext task,
sla / sla_sd only; 0 groups = off).

Expected result: the paper's CIFAR-10 / ResNet-32 / rotation numbers (SLA+AG
and SLA+SD above the baseline by 1-2 points). Measured on one H100 with the
shared lossy-JPEG CIFAR-10 and --config.model.dtype=bfloat16 (seed 0,
RESULTS.md): baseline 89.03 % test at its best validation step (80k steps at
a median 17 200 images/s, ~10 min); SLA+SD, stopped by the device-time limit
at step 62 000 of 80 000: SD 89.88 %, SI 89.81 %, AG 90.59 % at step 60 000. A float32 step takes
seconds on 2 CPU cores: this config needs an accelerator.
"""

from sla_jax import config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, dataset="cifar10", objective="sla",
                             transform="rotation", depth=32, steps=80_000,
                             seed=0, batch_size=128,
                             feature_groups=0, feature_stage=2)
  c = config_lib.base_config()
  c.dataset = arg.dataset
  c.objective = arg.objective
  c.transform = arg.transform
  c.feature_transform.groups = arg.feature_groups
  c.feature_transform.stage = arg.feature_stage
  c.model.depth = arg.depth
  c.total_steps = arg.steps
  c.seed = arg.seed
  c.batch_size = arg.batch_size
  return c
