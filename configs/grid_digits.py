"""Evidence grid (a): the five objectives with rotations on the digits, 5 seeds,
beside the feature-level pretext task (variant fg4: discard one of 4 channel
groups after stage 2, alone and combined with rotations).

    python -m sla_jax.experiments --grid configs/grid_digits.py --out results/digits

Each run is configs/quickstart.py (ResNet-8, batch 64 images, 600 steps on the
1 300 training digits; ~40-70 s on 2 CPU cores), so the grid of 40 runs takes
~40 minutes. Results: results/digits/RESULTS.md (measured there, with plots);
it should reach (test %, mean over 5 seeds): baseline 97.9, DA 93.4, MT 94.3,
SLA rotation SI 96.5 / AG 98.5, SLA+SD rotation SD head 98.3 / AG 98.8.
"""

import ml_collections

from sla_jax import config_lib


def get_config(arg=None):
  config_lib.parse_arg(arg)  # takes no arguments: refuses any
  g = ml_collections.ConfigDict()
  g.title = "Digits (sklearn, 8x8), ResNet-8, 600 steps, rotation"
  g.config = "configs/quickstart.py"
  g.runs = ("baseline/rotation", "da/rotation", "mt/rotation", "sla/rotation",
            "sla_sd/rotation", "sla/identity/fg4", "sla_sd/identity/fg4",
            "sla_sd/rotation/fg4")
  g.seeds = (0, 1, 2, 3, 4)
  g.overrides = {}
  g.variants = {"fg4": {"feature_transform": {"groups": 4, "stage": 2}}}
  g.description = (
      "Data: scikit-learn's 1 797 handwritten digits (1 300 train, 200 val, 297 "
      "test; one test image = 0.34 points). Model and schedule: "
      "configs/quickstart.py (CIFAR ResNet-8, batch 64 images × M views, 600 "
      "SGD steps, lr 0.1 decayed ×0.1 at 50 % and 75 %). The baseline ignores "
      "the transform (M = 1).")
  return g
