"""Transformation groups for self-supervised label augmentation (SLA).

A transform group turns a batch of images into ``M`` views of each image and
stacks them on the batch axis, the views of one image next to each other::

    apply(x)[b * M + j] == t_j(x[b])        x: [B, H, W, C] (NHWC)

``t_0`` is always the identity, so ``apply(x)[::M] == x``. The view index ``j``
is the self-supervised label: SLA trains on the joint label ``y * M + j``
(see :mod:`sla_jax.losses`).

Every ``apply`` is a pure ``jax.numpy`` function with static shapes: it works
under ``jax.jit``, ``jax.vmap`` and ``jax.shard_map`` (views never cross
images, so no communication is needed), in any dtype, with no host round-trip.
Shape errors are raised while tracing, before anything runs.

The groups match the original PyTorch implementation (hankook/SLA,
``augmentations.py``) view for view::

    >>> from sla_jax import transforms
    >>> group = transforms.get("rotation")
    >>> group.num_views
    4
    >>> views = group.apply(images)           # [4B, H, W, C]

Products of groups are built with :func:`compose` and are ``a``-major: view
``r * M_b + c`` is ``t_c^b(t_r^a(x))``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

__all__ = ["TransformGroup", "get", "compose", "rotation_group",
           "channel_permutation_group", "NAMES"]


@dataclasses.dataclass(frozen=True)
class TransformGroup:
  """A named set of ``num_views`` image transformations, ``t_0`` = identity.

  Attributes:
    name: Name of the group (as accepted by :func:`get` for the built-ins).
    num_views: ``M``, the number of views made of each image.
    apply: Pure function ``[B, H, W, C] -> [B * M, H, W, C]``, views of one
      image adjacent (row ``b * M + j`` is ``t_j(x_b)``).
  """
  name: str
  num_views: int
  apply: Callable[[jax.Array], jax.Array]

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.apply(x)


def _check_images(x: jax.Array, group: str) -> None:
  if not hasattr(x, "ndim"):
    raise ValueError(f"Transform {group!r} expects an array [B, H, W, C]; got "
                     f"{type(x).__name__} (pass jnp.asarray(x)).")
  if x.ndim != 4:
    raise ValueError(
        f"Transform {group!r} expects an NHWC batch [B, H, W, C]; got an array "
        f"of shape {tuple(x.shape)}. Add a batch axis (x[None]) for one image.")


def _stack_views(views: Sequence[jax.Array]) -> jax.Array:
  """[B, ...] x M -> [B * M, ...], the M views of image b in rows b*M..b*M+M-1."""
  stacked = jnp.stack(views, axis=1)
  return stacked.reshape((-1,) + stacked.shape[2:])


def rotation_group(name: str, quarter_turns: Sequence[int]) -> TransformGroup:
  """Rotations by ``k * 90`` degrees over (H, W), one view per ``k``.

  ``jnp.rot90(x, k, axes=(1, 2))`` on NHWC equals the original's
  ``torch.rot90(x, k, (2, 3))`` on NCHW. Requires square images.
  """
  quarter_turns = tuple(int(k) for k in quarter_turns)
  if not quarter_turns or quarter_turns[0] % 4 != 0:
    raise ValueError(f"{name}: the first view must be the identity (k = 0); "
                     f"got quarter turns {quarter_turns}.")

  def apply(x: jax.Array) -> jax.Array:
    _check_images(x, name)
    if x.shape[1] != x.shape[2]:
      raise ValueError(
          f"Transform {name!r} rotates images by 90 degrees and needs square "
          f"images (H == W); got H={x.shape[1]}, W={x.shape[2]}. Crop or resize "
          f"the images to a square first.")
    return _stack_views([jnp.rot90(x, k, axes=(1, 2)) for k in quarter_turns])

  return TransformGroup(name, len(quarter_turns), apply)


def channel_permutation_group(
    name: str, orders: Sequence[Sequence[int]]) -> TransformGroup:
  """Colour-channel permutations, one view per channel order.

  View ``j`` has channels ``x[..., orders[j]]``. Requires 3-channel images.
  """
  orders = tuple(tuple(int(c) for c in order) for order in orders)
  if not orders or not orders[0]:
    raise ValueError(f"{name}: give at least one channel order, the identity "
                     f"first (e.g. ((0, 1, 2), (1, 2, 0))); got {orders}.")
  num_channels = len(orders[0])
  if orders[0] != tuple(range(num_channels)):
    raise ValueError(f"{name}: the first view must be the identity order; "
                     f"got {orders[0]}.")
  if any(sorted(o) != list(range(num_channels)) for o in orders):
    raise ValueError(f"{name}: every order must permute 0..{num_channels - 1}; "
                     f"got {orders}.")

  def apply(x: jax.Array) -> jax.Array:
    _check_images(x, name)
    if x.shape[3] != num_channels:
      raise ValueError(
          f"Transform {name!r} permutes colour channels and needs "
          f"{num_channels}-channel (RGB) images; got C={x.shape[3]}. Use a "
          f"rotation transform for grey images.")
    return _stack_views([x[..., list(order)] for order in orders])

  return TransformGroup(name, len(orders), apply)


def compose(a: TransformGroup, b: TransformGroup,
            name: str | None = None) -> TransformGroup:
  """The product group ``a x b``, ``a``-major: view ``r * M_b + c`` is ``b_c(a_r(x))``.

  Its identity view is ``b_0(a_0(x)) = x`` and it has ``M_a * M_b`` views.
  """

  def apply(x: jax.Array) -> jax.Array:
    # a: row b*Ma + r; then b expands each row in place: (b*Ma + r)*Mb + c.
    return b.apply(a.apply(x))

  return TransformGroup(name or f"{a.name}*{b.name}",
                        a.num_views * b.num_views, apply)


# Channel orders of the original implementation, in its view order.
_COLOR_PERM6 = ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))
_COLOR_PERM3 = ((0, 1, 2), (1, 2, 0), (2, 0, 1))


def _builtins() -> dict[str, Callable[[], TransformGroup]]:
  rotation = lambda: rotation_group("rotation", (0, 1, 2, 3))
  rotation2 = lambda: rotation_group("rotation2", (0, 2))
  color_perm = lambda: channel_permutation_group("color_perm", _COLOR_PERM6)
  color_perm3 = lambda: channel_permutation_group("color_perm3", _COLOR_PERM3)
  return {
      "identity": lambda: TransformGroup("identity", 1, _identity),
      "rotation": rotation,
      "rotation2": rotation2,
      "color_perm": color_perm,
      "color_perm3": color_perm3,
      "rot_color_perm6": lambda: compose(rotation2(), color_perm3(),
                                         "rot_color_perm6"),
      "rot_color_perm12": lambda: compose(rotation(), color_perm3(),
                                          "rot_color_perm12"),
      "rot_color_perm24": lambda: compose(rotation(), color_perm(),
                                          "rot_color_perm24"),
  }


def _identity(x: jax.Array) -> jax.Array:
  _check_images(x, "identity")
  return x


# Built once: get(name) returns the same (equal, hashable) group every call, so
# a group passed as a static jit argument does not recompile.
_BUILTINS = {name: make() for name, make in _builtins().items()}
NAMES: tuple[str, ...] = tuple(_BUILTINS)


def get(name: str) -> TransformGroup:
  """Returns the built-in transform group called ``name`` (one of :data:`NAMES`).

  The same object for the same name (equal and hashable: usable as a static
  ``jax.jit`` argument).
  """
  try:
    return _BUILTINS[name]
  except KeyError:
    raise ValueError(f"Unknown transform {name!r}; valid names are: "
                     f"{', '.join(NAMES)}.") from None
