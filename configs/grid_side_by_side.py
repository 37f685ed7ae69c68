"""Our side of the side-by-side with the original code: CIFAR ResNet-20, batch 32, 600 steps, 5 seeds.

    tar xzf ../shared/data/cifar10-jpeg.tar.gz -C /tmp
    python -m sla_jax.experiments --grid configs/grid_side_by_side.py:data=/tmp/cifar10 \
        --out results/side_by_side/ours
    # the original hankook/SLA code on the same splits and schedule:
    python -m benchmarks.original_side_by_side --official /tmp/SLA_orig \
        --data /tmp/cifar10 --out results/side_by_side/original
    python -m benchmarks.side_by_side_report results/side_by_side

Baseline, SLA and SLA+SD with rotations, seeds 0-4 (``first_seed`` /
``num_seeds`` pick a subset), and the same three with ``conv_weight_grad=xla``
(variant ``xla``: XLA's own convolution gradients instead of our matmul weight
gradient). Schedule: configs/cifar.py with ResNet-20, 32 images x M views per
step, 600 SGD steps (lr 0.1, x0.1 at steps 300 and 450), the 1 000-image
validation split, evaluation every 150 steps on it and on the 10 000 test
images; the test accuracy at the best validation step is the result.
benchmarks/original_side_by_side.py runs the original with the same numbers.
Result: results/side_by_side/RESULTS.md.
"""

import ml_collections

from sla_jax import config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, data="/tmp/cifar10", first_seed=0,
                             num_seeds=5, xla=False)
  g = ml_collections.ConfigDict()
  g.title = ("Side by side with the original: CIFAR-10 (shared JPEGs), "
             "ResNet-20, 600 steps x 32 images, CPU")
  g.config = (f"configs/cifar.py:dataset=folder:{arg.data},depth=20,steps=600,"
              f"batch_size=32")
  runs = ("baseline/rotation", "sla/rotation", "sla_sd/rotation")
  g.runs = tuple(f"{r}/xla" for r in runs) if arg.xla else runs
  g.seeds = tuple(range(arg.first_seed, arg.first_seed + arg.num_seeds))
  g.overrides = {"val_size": 1000, "eval_every": 150, "checkpoint_every": 150,
                 "log_every": 50, "eval_batch_size": 1000, "num_devices": 1}
  g.variants = {"xla": {"model": {"conv_weight_grad": "xla"}}}
  g.description = (
      "Data: the shared CIFAR-10 JPEG re-encode (49 000 train, a seeded 1 000-"
      "image validation split, 10 000 test). Schedule: configs/grid_side_by_side.py "
      "(ResNet-20, 600 steps of 32 images x M views, lr x0.1 at 300 / 450), "
      "the same as benchmarks/original_side_by_side.py gives the original code.")
  return g
