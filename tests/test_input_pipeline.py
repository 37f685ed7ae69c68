"""The on-device batch draws: distinct indices, the same distribution, jit-safe, selectable in the trainer."""

import collections

import jax
import numpy as np
import pytest

from sla_jax import input_pipeline, train
from test_train import tiny_config

DRAWS = sorted(input_pipeline.BATCH_DRAWS)


@pytest.mark.parametrize("draw", DRAWS)
def test_draws_are_distinct_in_range_and_seeded(draw):
  fn = jax.jit(lambda k: input_pipeline.draw_indices(k, 1000, 64, draw))
  a, b = np.asarray(fn(jax.random.key(1))), np.asarray(fn(jax.random.key(1)))
  np.testing.assert_array_equal(a, b)
  assert len(set(a.tolist())) == 64 and a.min() >= 0 and a.max() < 1000
  assert not np.array_equal(a, np.asarray(fn(jax.random.key(2))))


def test_top_k_is_the_largest_random_keys_in_order():
  key = jax.random.key(7)
  bits = np.asarray(jax.random.bits(key, (500,), np.uint32)).astype(np.int64)
  want = np.argsort(-(bits >> 3), kind="stable")[:20]  # 29-bit keys, ties by index
  np.testing.assert_array_equal(
      input_pipeline.draw_indices(key, 500, 20, "top_k"), want)


@pytest.mark.parametrize("draw", DRAWS)
def test_draws_are_uniform_ordered_subsets(draw):
  # n = 5, B = 2: 20 ordered pairs, each with probability 1/20.
  keys = jax.random.split(jax.random.key(0), 20_000)
  pairs = np.asarray(jax.jit(jax.vmap(
      lambda k: input_pipeline.draw_indices(k, 5, 2, draw)))(keys))
  counts = collections.Counter(map(tuple, pairs.tolist()))
  assert len(counts) == 20
  expected = len(keys) / 20
  chi2 = sum((c - expected) ** 2 / expected for c in counts.values())
  assert chi2 < 43.8  # 19 degrees of freedom, p = 0.001


def test_bad_draw_and_batch_fail_clearly(tmp_path):
  with pytest.raises(ValueError, match="batch_draw must be one of permutation, top_k"):
    input_pipeline.draw_indices(jax.random.key(0), 10, 2, "reservoir")
  with pytest.raises(ValueError, match="cannot draw 11 distinct items of 10"):
    input_pipeline.draw_indices(jax.random.key(0), 10, 11)
  with pytest.raises(train.ConfigError, match="batch_draw must be one of"):
    train.train_and_evaluate(tiny_config("baseline", batch_draw="sort"), tmp_path)


@pytest.mark.slow
def test_trainer_runs_with_the_top_k_draw(tmp_path):
  results = train.train_and_evaluate(tiny_config("sla", batch_draw="top_k"),
                                     tmp_path)
  assert 0 <= results["test"]["acc_si"] <= 1


@pytest.mark.parametrize("draw", input_pipeline.BATCH_DRAWS)
def test_a_sharded_batch_draw_moves_no_data_between_devices(draw):
  """Every device draws all the indices and gathers its own rows: no
  collective-permute, the same rows as unsharded."""
  import re  # pylint: disable=g-import-not-at-top
  from jax.sharding import NamedSharding, PartitionSpec as P  # pylint: disable=g-import-not-at-top
  from sla_jax import distributed  # pylint: disable=g-import-not-at-top
  mesh = distributed.make_mesh(2)  # the trainer's mesh
  replicated, batch = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
  images = jax.device_put(np.zeros((500, 4, 4, 3), np.uint8), replicated)
  labels = jax.device_put(np.arange(500) % 10, replicated)
  fn = jax.jit(lambda k, x, y: input_pipeline.device_batch(k, x, y, 64, batch, draw))
  hlo = fn.lower(jax.random.key(0), images, labels).compile().as_text()
  assert not re.search(r"collective-permute|all-to-all|all-gather", hlo)
  x, y = fn(jax.random.key(0), images, labels)
  assert x.sharding.spec == P("data") and y.shape == (64,)
  one = input_pipeline.device_batch(jax.random.key(0), np.zeros((500, 4, 4, 3), np.uint8),
                                    np.arange(500) % 10, 64, None, draw)[1]
  np.testing.assert_array_equal(y, one)  # the same rows as unsharded
