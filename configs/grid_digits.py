"""Evidence grid (a): the five objectives with rotations on the digits, 5 seeds.

    python -m sla_jax.experiments --grid configs/grid_digits.py --out results/digits

Each run is configs/quickstart.py (ResNet-8, batch 64 images, 600 steps on the
1 300 training digits; ~40 s on 2 CPU cores), so the grid of 25 runs takes
~20 minutes. Results: results/digits/RESULTS.md (measured there, with plots).
"""

import ml_collections


def get_config(arg=None):
  del arg
  g = ml_collections.ConfigDict()
  g.title = "Digits (sklearn, 8x8), ResNet-8, 600 steps, rotation"
  g.config = "configs/quickstart.py"
  g.runs = ("baseline/rotation", "da/rotation", "mt/rotation", "sla/rotation",
            "sla_sd/rotation")
  g.seeds = (0, 1, 2, 3, 4)
  g.overrides = {}
  g.description = (
      "Data: scikit-learn's 1 797 handwritten digits (1 300 train, 200 val, 297 "
      "test; one test image = 0.34 points). Model and schedule: "
      "configs/quickstart.py (CIFAR ResNet-8, batch 64 images × M views, 600 "
      "SGD steps, lr 0.1 decayed ×0.1 at 50 % and 75 %). The baseline ignores "
      "the transform (M = 1).")
  return g
