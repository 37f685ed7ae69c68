"""Quickstart: SLA on scikit-learn's handwritten digits, offline, on a laptop CPU.

    python -m sla_jax.main --config configs/quickstart.py --workdir workdirs/quickstart
    python -m sla_jax.main --config configs/quickstart.py:objective=baseline \
        --workdir workdirs/quickstart_baseline
    # the feature-level pretext task (discard 1 of 4 channel groups after stage 2)
    python -m sla_jax.main --config configs/quickstart.py:objective=sla_sd,feature_groups=4 \
        --workdir workdirs/quickstart_fg4

Args: objective, transform, steps, seed, feature_groups, feature_stage.

Data: 1 797 real 8x8 grey digits (no download): 1 300 train, 200 val, 297 test.
Model: CIFAR ResNet-8 (one block per stage), 4 rotations, batch 64 images
(256 views), 600 steps of SGD (lr 0.1, x0.1 at 50 % / 75 %), crop padding 1.

Measured on 2 CPU cores (other jobs paused), seed 0, 2026-12-01 (third
session), one CPU device, the tools' default (test accuracy at the best
validation step; wall time of the whole command, compilation and data included):
  objective=sla       SI 96.30 %, AG 99.33 %                     33 s
  objective=sla_sd    SI 97.98 %, AG 97.31 %, SD 97.98 %         30 s
  objective=baseline  98.99 %                                    15 s
  objective=da        92.59 % (identity view), AG 94.61 %        27 s
  objective=mt        93.27 % (identity view), AG 95.96 %        29 s
(With XLA_FLAGS=--xla_force_host_platform_device_count=2, opt-in, the second
session: objective=sla SI 97.31 %, AG 99.33 % in 25 s.)
One seed on 297 test images (one image = 0.34 points); means over 5 seeds,
feature-level runs included: results/digits/RESULTS.md (configs/grid_digits.py).
"""

from sla_jax import config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, objective="sla", transform="rotation",
                             steps=600, seed=0, feature_groups=0,
                             feature_stage=2)
  c = config_lib.base_config()
  c.seed = arg.seed
  c.dataset = "digits"
  c.val_size = 200
  c.crop_padding = 1
  c.objective = arg.objective
  c.transform = arg.transform
  c.feature_transform.groups = arg.feature_groups
  c.feature_transform.stage = arg.feature_stage
  c.model.depth = 8
  c.batch_size = 64
  c.total_steps = arg.steps
  c.eval_every = 100
  c.eval_batch_size = 512
  c.log_every = 50
  c.checkpoint_every = 100
  return c
