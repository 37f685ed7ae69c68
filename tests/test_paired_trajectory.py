"""benchmarks.paired_trajectory's pure parts: the shared batches and the distance to the reference."""

import numpy as np
import pytest

pytest.importorskip("torch")
from benchmarks import paired_trajectory  # pylint: disable=g-import-not-at-top


def test_batches_are_seeded_distinct_crops_and_flips():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (20, 6, 6, 3), dtype=np.uint8)
  labels = np.arange(20)
  a = paired_trajectory.make_batches(images, labels, 5, 8, seed=3, padding=2)
  b = paired_trajectory.make_batches(images, labels, 5, 8, seed=3, padding=2)
  c = paired_trajectory.make_batches(images, labels, 5, 8, seed=4, padding=2)
  assert all(np.array_equal(x[0], y[0]) for x, y in zip(a, b))
  assert not all(np.array_equal(x[0], y[0]) for x, y in zip(a, c))
  for batch, y in a:
    assert batch.shape == (8, 6, 6, 3) and batch.dtype == np.uint8
    assert len(set(y.tolist())) == 8  # distinct images, labels = indices here
    for img, k in zip(batch, y):  # each is a crop (maybe flipped) of its image
      padded = np.pad(images[k], ((2, 2), (2, 2), (0, 0)))
      windows = [padded[t:t + 6, l:l + 6] for t in range(5) for l in range(5)]
      assert any(np.array_equal(img, w) or np.array_equal(img, w[:, ::-1])
                 for w in windows)


def test_relative_distance():
  ref = {"a": np.array([3.0, 0.0]), "b": np.array([[4.0]])}
  assert paired_trajectory.relative_distance(ref, ref) == 0.0
  moved = {"a": np.array([3.0, 1.0]), "b": np.array([[4.0]])}
  assert paired_trajectory.relative_distance(moved, ref) == pytest.approx(0.2)


def test_format_table_lists_every_trajectory():
  run = {"param_distance_vs_f64": {25: 1e-3, 50: 2e-3, 75: 3e-3, 100: 4e-3},
         "max_abs_loss_diff_vs_f64": 0.01, "test": {"acc_si": 0.4, "acc_ag": 0.41}}
  table = paired_trajectory.format_table(
      {"checkpoints": [25, 50, 75, 100], "runs": {"original_f32": run,
                                                  "ours_matmul": run}})
  assert "| ours_matmul | 1.00e-03 | 2.00e-03 | 3.00e-03 | 4.00e-03 |" in table
  assert table.count("\n") == 3
