"""On-device training augmentation and input scaling (pure, jit-compiled with the step)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["normalize", "to_unit", "unit_to_normalized",
           "random_crop_and_flip"]


def to_unit(images: jax.Array) -> jax.Array:
  """uint8 ``[0, 255]`` -> float32 ``[0, 1]`` (what :mod:`sla_jax.augment` expects)."""
  return images.astype(jnp.float32) / 255.0


def unit_to_normalized(images: jax.Array, dtype=jnp.float32) -> jax.Array:
  """``[0, 1]`` -> ``[-1, 1]``: ``(x - 0.5) / 0.5`` as the original's ``Normalize``."""
  return ((images - 0.5) / 0.5).astype(dtype)


def normalize(images: jax.Array, dtype=jnp.float32) -> jax.Array:
  """uint8 ``[0, 255]`` -> ``[-1, 1]``: ``(x / 255 - 0.5) / 0.5`` as the original."""
  return unit_to_normalized(to_unit(images), dtype)


def random_crop_and_flip(key: jax.Array, images: jax.Array, padding: int,
                         flip: bool = True) -> jax.Array:
  """torchvision ``RandomCrop(size, padding)`` + ``RandomHorizontalFlip`` per image.

  Pads with zeros (black, ``-1`` after :func:`normalize`), crops back to the
  input size at a uniformly random offset, and mirrors each image with
  probability 1/2. ``images``: ``[B, H, W, C]`` of any dtype.
  """
  b, h, w, c = images.shape
  crop_key, flip_key = jax.random.split(key)
  if padding:
    padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding),
                              (0, 0)))
    offsets = jax.random.randint(crop_key, (b, 2), 0, 2 * padding + 1)
    crop = lambda im, o: jax.lax.dynamic_slice(im, (o[0], o[1], 0), (h, w, c))
    images = jax.vmap(crop)(padded, offsets)
  if flip:
    mirror = jax.random.bernoulli(flip_key, 0.5, (b, 1, 1, 1))
    images = jnp.where(mirror, images[:, :, ::-1, :], images)
  return images
