"""Transformations of intermediate feature maps: discarding channel groups.

The "internal pretext task" (Yang et al. 2021, arXiv 2106.04921) moves SLA's
transformation inside the network: a ``[B, H, W, C]`` feature map is split
into ``K`` channel groups and each variant zeroes one group; the network then
predicts the joint label (class, discarded group). Only the abstract of the
paper is public; the choices made here:

* Groups are ``K`` contiguous, equal blocks of channels (``C % K == 0``).
* Discarding a group multiplies it by zero; the kept channels are not
  rescaled (rescaling by ``K / (K - 1)`` as in dropout would change the
  statistics that the next BatchNorm normalises away anyway).
* ``include_identity=True`` (default) adds the untouched map as variant 0,
  mirroring SLA's ``t_0 = identity``, so single inference (SI) and the
  self-distilled head read the whole feature map; then there are ``K + 1``
  variants. Without it, variant ``k`` discards group ``k`` and SI reads
  variant 0 (group 0 discarded).
* Variants sit next to each other on the batch axis, as the input transforms'
  views do: row ``b * V + v`` is variant ``v`` of row ``b``. Applied after
  ``M`` input views, row ``(b * M + j) * V + v`` is image ``b``, input view
  ``j``, feature variant ``v``, whose joint label ``y * M * V + j * V + v`` is
  :func:`sla_jax.losses.joint_labels` with ``M * V`` views — every loss and
  aggregation of :mod:`sla_jax.losses` applies unchanged.

All functions are pure and jit / vmap / shard_map-safe (shapes are static).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["num_variants", "group_masks", "discard_channel_groups"]


def num_variants(num_groups: int, include_identity: bool = True) -> int:
  """How many feature variants ``discard_channel_groups`` makes per row."""
  if num_groups < 2:
    raise ValueError(f"num_groups must be >= 2 to discard one group of "
                     f"several; got {num_groups}.")
  return num_groups + int(include_identity)


def group_masks(num_channels: int, num_groups: int,
                include_identity: bool = True, dtype=jnp.float32) -> jax.Array:
  """``[V, C]`` 0/1 masks: row ``v`` keeps the channels variant ``v`` keeps."""
  v = num_variants(num_groups, include_identity)
  if num_channels % num_groups:
    raise ValueError(f"{num_channels} channels do not split into {num_groups} "
                     f"equal groups; choose num_groups dividing {num_channels}.")
  group_of_channel = jnp.arange(num_channels) // (num_channels // num_groups)
  discarded = jnp.arange(v) - int(include_identity)  # -1: the identity variant
  return (group_of_channel[None, :] != discarded[:, None]).astype(dtype)


def discard_channel_groups(x: jax.Array, num_groups: int,
                           include_identity: bool = True) -> jax.Array:
  """``[B, ..., C]`` -> ``[B * V, ..., C]``: each row's V variants, adjacent."""
  if getattr(x, "ndim", 0) < 2:
    raise ValueError(f"discard_channel_groups takes a feature map [B, ..., C] "
                     f"(at least 2-D); got shape {tuple(getattr(x, 'shape', ()))}.")
  masks = group_masks(x.shape[-1], num_groups, include_identity, x.dtype)
  v = masks.shape[0]
  masks = masks.reshape((1, v) + (1,) * (x.ndim - 2) + (x.shape[-1],))
  out = x[:, None] * masks
  return out.reshape((x.shape[0] * v,) + x.shape[1:])
