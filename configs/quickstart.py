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

Measured on 2 CPU cores (other jobs paused), seed 0, 2026-12-02, two CPU
devices, the tools' default (test accuracy at the best validation step; wall
time of the whole command, compilation and data included; that day the VM ran
1.2-1.5x slower than on 2026-12-01):
  objective=sla       SI 97.31 %, AG 99.33 %                     40 s
  objective=sla_sd    SI 96.97 %, AG 97.98 %, SD 97.64 %         39 s
  objective=baseline  97.98 %                                    24 s
  objective=da        92.26 % (identity view), AG 94.28 %        36 s
  objective=mt        94.28 % (identity view), AG 95.62 %        36 s
(One device, --config.num_devices=1 or JAX_NUM_CPU_DEVICES=1, differs in float
rounding: 2026-12-01, objective=sla SI 96.30 %, AG 99.33 % in 33 s.)
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
