"""Training batches: drawn on the device, or read by a grain host pipeline.

Both paths draw B distinct images per step (as the original's
``random.sample``) from a pure function of (seed, step), so a resumed run
reads exactly the batches an uninterrupted one would.

* On the device (``data_on_device=True``): the uint8 training set lives on the
  devices and :func:`device_batch` picks the step's rows inside the jitted
  step; the host does no per-step work.
* On the host (``data_on_device=False``, datasets too large for that):
  :func:`host_batches` reads each process's share of every batch
  (:func:`host_batch_indices`) in grain's background threads and assembles the
  global batch with ``jax.make_array_from_process_local_data``. Splits of
  images of any size (``config.image_size``) are decoded and randomly crop-
  resized there (:mod:`sla_jax.image_ops`), seeded by (seed, step, process).

Everything after the batch (crop, flip, scaling, the M views) is the jitted
step's, the same for both paths.
"""

from __future__ import annotations

from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from sla_jax import data as data_lib

__all__ = ["BATCH_DRAWS", "check_draw", "draw_indices", "device_batch",
           "host_batch_indices", "host_batches"]


def _draw_by_permutation(key: jax.Array, num_items: int,
                         batch_size: int) -> jax.Array:
  # jax.random.choice(replace=False): a shuffle of all num_items (sorts them).
  return jax.random.choice(key, num_items, (batch_size,), replace=False)


def _draw_by_top_k(key: jax.Array, num_items: int, batch_size: int) -> jax.Array:
  # The batch_size largest of num_items iid 29-bit keys, in decreasing order.
  # Keys are positive normal float32 numbers whose order is their bits' order
  # (top_k has a fast float32 path; on integers XLA:CPU sorts).
  bits = jax.random.bits(key, (num_items,), jnp.uint32)
  keys = jax.lax.bitcast_convert_type((bits >> 3) + jnp.uint32(0x00800000),
                                      jnp.float32)
  return jax.lax.top_k(keys, batch_size)[1]


# How the on-device step draws its batch (config.batch_draw).
BATCH_DRAWS = {"permutation": _draw_by_permutation, "top_k": _draw_by_top_k}


def check_draw(draw: str):
  """The draw function named ``draw``; ValueError naming the valid draws."""
  try:
    return BATCH_DRAWS[draw]
  except KeyError:
    raise ValueError(f"batch_draw must be one of {', '.join(BATCH_DRAWS)}; "
                     f"got {draw!r}.") from None


def draw_indices(key: jax.Array, num_items: int, batch_size: int,
                 draw: str = "permutation") -> jax.Array:
  """``batch_size`` distinct indices below ``num_items`` in random order (jit-safe).

  Both draws give a uniformly random ordered subset (without replacement, as
  the original's ``random.sample``); they differ in cost and in which subset
  a key gives. ``"permutation"`` shuffles all ``num_items`` (sorts) and keeps
  the first ``batch_size`` — the default, the draw every recorded run used.
  ``"top_k"`` takes the ``batch_size`` largest of ``num_items`` independent
  29-bit random keys: one pass, no sort of the whole set (BENCHMARKS.md). Its
  only departure from uniform is key ties, broken by index: a tie decides
  membership with probability ~``num_items / 2**29`` per draw (1e-4 for CIFAR).
  """
  fn = check_draw(draw)
  if not 0 < batch_size <= num_items:
    raise ValueError(f"cannot draw {batch_size} distinct items of {num_items}.")
  return fn(key, num_items, batch_size)


def device_batch(key: jax.Array, images: jax.Array, labels: jax.Array,
                 batch_size: int, sharding=None, draw: str = "permutation"
                 ) -> tuple[jax.Array, jax.Array]:
  """``batch_size`` distinct random rows of the on-device training set (jit-safe).

  ``draw``: see :func:`draw_indices`. With ``sharding`` the batch is laid out
  over the mesh's data axis.
  """
  index = draw_indices(key, labels.shape[0], batch_size, draw)
  if sharding is not None:  # every device draws all indices, gathers its rows
    index = jax.lax.with_sharding_constraint(
        index, jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec()))
  batch = images[index], labels[index]
  if sharding is not None:
    batch = jax.lax.with_sharding_constraint(batch, sharding)
  return batch


def host_batch_indices(seed: int, step: int, num_train: int, batch_size: int,
                       process_index: int = 0, process_count: int = 1
                       ) -> np.ndarray:
  """This process's share of step ``step``'s batch: B distinct random images.

  A pure function of (seed, step), so a resumed run reads the same batches.
  """
  rng = np.random.default_rng([seed, step])
  index = rng.choice(num_train, batch_size, replace=False)
  share = batch_size // process_count
  return index[process_index * share:(process_index + 1) * share]


def host_batches(split: data_lib.Split, seed: int, batch_size: int,
                 start_step: int, total_steps: int, sharding,
                 num_threads: int = 8) -> Iterator[tuple[jax.Array, jax.Array]]:
  """Global batches for steps ``start_step..total_steps-1``, read by grain threads.

  Each process reads only its rows; ``sharding`` (batch axis over the mesh)
  assembles them into global arrays.
  """
  import grain  # pylint: disable=g-import-not-at-top

  def read(step):
    index = host_batch_indices(seed, step, split.size, batch_size,
                               jax.process_index(), jax.process_count())
    if split.read_train is None:
      return split.read(index)
    # Random crops of any-size images: a pure function of (seed, step, process).
    return split.read_train(index, np.random.default_rng(
        [seed, step, jax.process_index()]))

  batches = grain.MapDataset.range(start_step, total_steps).map(read)
  batches = batches.to_iter_dataset(grain.ReadOptions(
      num_threads=num_threads, prefetch_buffer_size=2 * num_threads))
  for images, labels in batches:
    yield (jax.make_array_from_process_local_data(sharding, images),
           jax.make_array_from_process_local_data(sharding, labels))
