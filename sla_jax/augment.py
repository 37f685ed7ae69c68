"""Strong augmentation on the device: Cutout, Mixup, CutMix and RandAugment.

Every op is a pure function of an explicit ``jax.random`` key with static
shapes, so it runs under ``jax.jit`` / ``jax.vmap`` next to the train step,
with no host round-trip. Images are NHWC ``[B, H, W, C]``; every example of a
batch draws its own parameters from the key.

* :func:`cutout` (DeVries & Taylor, 2017) and the mixing ops :func:`mixup`
  (Zhang et al., 2018) and :func:`cutmix` (Yun et al., 2019) work on any value
  range (raw or normalised images).
* :func:`rand_augment` (Cubuk et al., 2020), :func:`auto_augment` (the learned
  policies of Cubuk et al., 2019: the SLA paper's AutoAugment rows) and their
  ops expect RGB (or grey) images in ``[0, 1]``: Solarize, Posterize, Equalize
  and the enhance ops are defined on that range and clip to it.

The mixing ops return :class:`MixedLabels`; the loss is
``weight * CE(labels) + (1 - weight) * CE(partner_labels)``
(:func:`mixed_cross_entropy`). With SLA's ``M`` views per image the joint
labels of the views are :func:`joint_mixed_labels`. The :data:`AUGMENTATIONS`
registry and :func:`apply` give every augmentation that signature, so a
trainer has one code path::

    images, mixed = augment.apply("cutmix", key, images, labels, alpha=1.0)
    mixed = augment.joint_mixed_labels(mixed, num_views)      # [B * M] rows
    loss = augment.mixed_cross_entropy(joint_logits, mixed).mean()

Libraries: RandAugment uses dm-pix (DeepMind; maintained; pure functions on
arrays that compose with jit and vmap) where it has the op:
``pix.affine_transform`` / ``pix.rotate`` for the geometric ops,
``pix.solarize``, and ``pix.rgb_to_grayscale`` for the grey images that Color
and Contrast blend with. Its ``adjust_brightness`` / ``adjust_contrast`` /
``adjust_saturation`` follow ``tf.image`` (an added offset, a per-channel mean,
HSV saturation), not PIL's ``ImageEnhance`` that RandAugment is defined with,
so Brightness, Contrast, Color and Sharpness are PIL's blends written here, as
are Posterize, AutoContrast and Equalize, which dm-pix lacks. augmax (0.4.1)
is not used: it is an Albumentations-style chain of random transforms on one
image at a time, and has none of Posterize, Equalize, AutoContrast, Sharpness,
Shear, nor RandAugment's per-example choice of ops, nor Cutout/CutMix/Mixup;
it would add a dependency for two or three ops dm-pix already has.

RandAugment magnitude. ``magnitude`` ``m`` is on the AutoAugment / timm scale,
``0 <= m <= 30`` with ``10`` the strongest setting those papers list; the ops
take the level ``v = m / 10`` and a random sign ``s = +-1`` per example and op:

==============  ==============================================================
Identity        unchanged
AutoContrast    per channel, stretch [min, max] to [0, 1] (no magnitude)
Equalize        per-channel histogram equalisation, 256 bins (no magnitude)
Rotate          ``30 * v * s`` degrees, counter-clockwise, about the centre
Solarize        invert pixels ``>= (1 - v) * 256 / 255`` (timm's increasing
                solarize: PIL threshold ``256 * (1 - v)``; ``v = 0`` keeps all)
Color           blend with the grey image, factor ``max(0, 1 + 0.9 * v * s)``
Posterize       keep ``clip(8 - round(4 * v), 1, 8)`` bits (``v <= 1``: >= 4)
Contrast        blend with the mean grey level, factor as Color
Brightness      blend with black, factor as Color
Sharpness       blend with PIL's 3x3 SMOOTH filter, factor as Color
ShearX, ShearY  shear factor ``0.3 * v * s`` about the centre
TranslateX, Y   ``0.45 * v * s`` of the width / height, in pixels
==============  ==============================================================

Geometric ops sample bilinearly (dm-pix) and fill uncovered pixels with
``fill`` (0.5 grey, like timm's 128). Deliberate differences from PIL, which
works on uint8: the float ops do not round intermediate images, so
AutoContrast, Color, Contrast, Brightness and Sharpness differ from PIL by at
most about 2/255 on uint8 images (PIL truncates); Posterize, Solarize and
Equalize match PIL exactly on uint8-valued images (Posterize and Equalize
quantise to 256 levels first, ``round(255 * x)``). Shears are about the image
centre, not PIL's top-left corner, so the image does not drift sideways.
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable, Mapping

import dm_pix as pix
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from sla_jax import losses

__all__ = ["MixedLabels", "Boxes", "mixed_cross_entropy", "repeat_views",
           "joint_mixed_labels", "cutout_boxes", "cutout", "mixup_draw",
           "mixup", "cutmix_draw", "cutmix", "identity", "autocontrast",
           "equalize", "rotate", "solarize", "color", "posterize", "contrast",
           "brightness", "sharpness", "shear_x", "shear_y", "translate_x",
           "translate_y", "invert", "RANDAUGMENT_OPS", "RANDAUGMENT_OP_NAMES",
           "rand_augment", "AUTOAUGMENT_BINS", "AUTOAUGMENT_OPS",
           "AUTOAUGMENT_OP_NAMES", "AUTOAUGMENT_POLICIES", "auto_augment",
           "AUGMENTATIONS", "NAMES", "MIXING", "apply",
           "chain"]


# ---------------------------------------------------------------------------
# Mixed labels.


@flax.struct.dataclass
class MixedLabels:
  """Labels of mixed images, a JAX pytree (passes through ``jit``).

  The loss of row ``r`` is ``weight[r] * CE(labels[r]) + (1 - weight[r]) *
  CE(partner_labels[r])``: ``weight`` is the fraction of the image that comes
  from the example labelled ``labels``.

  Attributes:
    labels: ``[R]`` int32 labels of the examples themselves.
    partner_labels: ``[R]`` int32 labels of the examples mixed in.
    weight: ``[R]`` float32 in ``[0, 1]``.
  """
  labels: jax.Array
  partner_labels: jax.Array
  weight: jax.Array

  @classmethod
  def unmixed(cls, labels) -> MixedLabels:
    """Labels of images that were not mixed: partner = self, weight 1."""
    labels = jnp.asarray(labels).astype(jnp.int32)
    return cls(labels, labels, jnp.ones(labels.shape, jnp.float32))

  def map(self, fn: Callable[[jax.Array], jax.Array]) -> MixedLabels:
    """``fn`` applied to both label arrays; the weight is kept as is."""
    return MixedLabels(fn(self.labels), fn(self.partner_labels), self.weight)


def repeat_views(mixed: MixedLabels, num_views: int) -> MixedLabels:
  """Every row repeated ``num_views`` times: row ``b * M + j`` is example ``b``.

  The layout of :mod:`sla_jax.transforms` (``jnp.repeat(x, M, axis=0)``).
  """
  return jax.tree.map(lambda x: jnp.repeat(x, num_views, axis=0), mixed)


def joint_mixed_labels(mixed: MixedLabels, num_views: int) -> MixedLabels:
  """SLA joint labels of the ``B * M`` views of mixed images.

  Row ``b * M + j`` gets ``labels[b] * M + j``, ``partner_labels[b] * M + j``
  (:func:`sla_jax.losses.joint_labels`) and ``weight[b]``: mixing commutes
  with the views, so view ``j`` of a mix is the same mix of the views ``j``.
  """
  joint = mixed.map(lambda y: losses.joint_labels(y, num_views))
  return joint.replace(weight=jnp.repeat(mixed.weight, num_views, axis=0))


def mixed_cross_entropy(logits: jax.Array, mixed: MixedLabels) -> jax.Array:
  """Per-row ``w * CE(labels) + (1 - w) * CE(partner_labels)``, ``[R]`` float32.

  With ``weight == 1`` this is the plain cross-entropy of ``labels``. Take the
  mean for the loss of a batch.
  """
  if logits.ndim != 2:
    raise ValueError(f"logits must be 2-D [rows, classes]; got shape "
                     f"{tuple(logits.shape)}.")
  rows = logits.shape[0]
  for name in ("labels", "partner_labels", "weight"):
    shape = tuple(getattr(mixed, name).shape)
    if shape != (rows,):
      raise ValueError(
          f"mixed.{name} has shape {shape} but logits has {rows} rows; with "
          f"M views per image pass joint_mixed_labels(mixed, M) (or "
          f"repeat_views) so there is one entry per row.")
  for name in ("labels", "partner_labels"):  # dtype always, range when concrete
    losses.check_labels(getattr(mixed, name), logits.shape[1], f"mixed.{name}")
  logits = logits.astype(jnp.float32)
  ce = optax.softmax_cross_entropy_with_integer_labels
  weight = mixed.weight.astype(jnp.float32)
  return (weight * ce(logits, mixed.labels) +
          (1.0 - weight) * ce(logits, mixed.partner_labels))


# ---------------------------------------------------------------------------
# Boxes, Cutout, Mixup and CutMix.


@flax.struct.dataclass
class Boxes:
  """One axis-aligned box per example, clipped to the image.

  The box of example ``b`` covers rows ``[y0, y1)`` and columns ``[x0, x1)``:
  the unclipped ``height x width`` box whose top-left corner is
  ``(centre_y - height // 2, centre_x - width // 2)``, cut at the borders. All
  fields are ``[B]`` int32.
  """
  centre_y: jax.Array
  centre_x: jax.Array
  height: jax.Array
  width: jax.Array
  y0: jax.Array
  y1: jax.Array
  x0: jax.Array
  x1: jax.Array

  def mask(self, image_height: int, image_width: int) -> jax.Array:
    """``[B, H, W]`` bool, True inside each example's box."""
    rows = jnp.arange(image_height)[None, :, None]
    cols = jnp.arange(image_width)[None, None, :]
    y0, y1 = self.y0[:, None, None], self.y1[:, None, None]
    x0, x1 = self.x0[:, None, None], self.x1[:, None, None]
    inside_y = (rows >= y0) & (rows < y1)
    inside_x = (cols >= x0) & (cols < x1)
    return inside_y & inside_x

  def area(self) -> jax.Array:
    """``[B]`` int32 number of pixels inside each (clipped) box."""
    return (self.y1 - self.y0) * (self.x1 - self.x0)


def _boxes(key: jax.Array, batch_size: int, image_height: int, image_width: int,
           height, width) -> Boxes:
  """Boxes of the given (per-example) sizes, centres uniform over the pixels."""
  key_y, key_x = jax.random.split(key)
  centre_y = jax.random.randint(key_y, (batch_size,), 0, image_height)
  centre_x = jax.random.randint(key_x, (batch_size,), 0, image_width)
  height = jnp.broadcast_to(jnp.asarray(height, jnp.int32), (batch_size,))
  width = jnp.broadcast_to(jnp.asarray(width, jnp.int32), (batch_size,))
  top = centre_y - height // 2
  left = centre_x - width // 2
  return Boxes(centre_y=centre_y, centre_x=centre_x, height=height, width=width,
               y0=jnp.clip(top, 0, image_height),
               y1=jnp.clip(top + height, 0, image_height),
               x0=jnp.clip(left, 0, image_width),
               x1=jnp.clip(left + width, 0, image_width))


def _check_batch(images: jax.Array, op: str) -> None:
  if images.ndim != 4:
    raise ValueError(
        f"{op} expects an NHWC batch [B, H, W, C]; got an array of shape "
        f"{tuple(images.shape)}. Add a batch axis (x[None]) for one image.")


def _check_unit_images(images: jax.Array, op: str) -> None:
  """The policies compute on [0, 1] floats: integer pixels would be clipped."""
  if not jnp.issubdtype(images.dtype, jnp.floating):
    raise ValueError(f"{op} takes float images in [0, 1]; got {images.dtype} "
                     f"(for uint8 pixels: x.astype(jnp.float32) / 255).")


def _check_labels(labels: jax.Array, images: jax.Array, op: str) -> jax.Array:
  labels = jnp.asarray(labels)
  if labels.shape != images.shape[:1]:
    raise ValueError(f"{op}: labels must be [B] = {images.shape[:1]} to match "
                     f"the images; got shape {tuple(labels.shape)}.")
  return labels.astype(jnp.int32)


def _check_alpha(alpha, op: str) -> None:
  if not isinstance(alpha, jax.core.Tracer) and not float(alpha) > 0:
    raise ValueError(f"{op}: alpha must be > 0 (Beta(alpha, alpha)); got "
                     f"{alpha}.")


def cutout_boxes(key: jax.Array, batch_size: int, image_height: int,
                 image_width: int, size: int) -> Boxes:
  """The squares :func:`cutout` draws from ``key``: ``size x size`` at random
  centres (uniform over the pixels), clipped at the borders."""
  if int(size) != size or size < 1:
    raise ValueError(f"cutout: size must be a positive integer; got {size}.")
  size = int(size)
  return _boxes(key, batch_size, image_height, image_width, size, size)


def cutout(key: jax.Array, images: jax.Array, size: int,
           fill: float = 0.0) -> jax.Array:
  """Cutout: per example, a ``size x size`` square set to ``fill``.

  The square is centred on a uniformly random pixel and clipped at the
  borders, as in DeVries & Taylor (2017), so less than ``size**2`` pixels may
  be cut. Any value range (``fill = 0`` is the mean of normalised images).
  The squares are ``cutout_boxes(key, B, H, W, size)``.
  """
  _check_batch(images, "cutout")
  batch, height, width, _ = images.shape
  mask = cutout_boxes(key, batch, height, width, size).mask(height, width)
  return jnp.where(mask[..., None], jnp.asarray(fill, images.dtype), images)


def mixup_draw(key: jax.Array, batch_size: int,
               alpha: float) -> tuple[jax.Array, jax.Array]:
  """What :func:`mixup` draws from ``key``: ``(permutation [B], lam [B])``."""
  _check_alpha(alpha, "mixup")
  key_perm, key_lam = jax.random.split(key)
  permutation = jax.random.permutation(key_perm, batch_size)
  lam = jax.random.beta(key_lam, alpha, alpha, (batch_size,), jnp.float32)
  return permutation, lam


def mixup(key: jax.Array, images: jax.Array, labels: jax.Array,
          alpha: float) -> tuple[jax.Array, MixedLabels]:
  """Mixup (Zhang et al., 2018): ``lam * x + (1 - lam) * x[perm]``.

  ``lam ~ Beta(alpha, alpha)`` per example, one permutation of the batch per
  call; ``weight = lam``. Any value range; the images keep their dtype.
  """
  _check_batch(images, "mixup")
  labels = _check_labels(labels, images, "mixup")
  permutation, lam = mixup_draw(key, images.shape[0], alpha)
  w = lam[:, None, None, None]
  x = images.astype(jnp.float32)
  mixed = w * x + (1.0 - w) * x[permutation]
  return (mixed.astype(images.dtype),
          MixedLabels(labels, labels[permutation], lam))


def cutmix_draw(key: jax.Array, batch_size: int, image_height: int,
                image_width: int,
                alpha: float = 1.0) -> tuple[jax.Array, jax.Array, Boxes]:
  """What :func:`cutmix` draws from ``key``: ``(permutation, lam, boxes)``.

  ``lam ~ Beta(alpha, alpha)`` per example; the box is
  ``floor(H * sqrt(1 - lam)) x floor(W * sqrt(1 - lam))`` (area about
  ``(1 - lam) * H * W``) at a random centre, clipped at the borders.
  """
  _check_alpha(alpha, "cutmix")
  key_perm, key_lam, key_box = jax.random.split(key, 3)
  permutation = jax.random.permutation(key_perm, batch_size)
  lam = jax.random.beta(key_lam, alpha, alpha, (batch_size,), jnp.float32)
  ratio = jnp.sqrt(jnp.clip(1.0 - lam, 0.0, 1.0))
  height = jnp.floor(image_height * ratio).astype(jnp.int32)
  width = jnp.floor(image_width * ratio).astype(jnp.int32)
  return permutation, lam, _boxes(key_box, batch_size, image_height,
                                  image_width, height, width)


def cutmix(key: jax.Array, images: jax.Array, labels: jax.Array,
           alpha: float = 1.0) -> tuple[jax.Array, MixedLabels]:
  """CutMix (Yun et al., 2019): a box of each image replaced by its partner's.

  The partner of example ``b`` is ``perm[b]`` (one permutation per call); the
  box is drawn by :func:`cutmix_draw`. ``weight`` is the exact fraction of
  pixels outside the clipped box (the paper's adjusted lambda). Any value
  range.
  """
  _check_batch(images, "cutmix")
  labels = _check_labels(labels, images, "cutmix")
  batch, height, width, _ = images.shape
  permutation, _, boxes = cutmix_draw(key, batch, height, width, alpha)
  mask = boxes.mask(height, width)[..., None]
  mixed = jnp.where(mask, images[permutation], images)
  weight = 1.0 - boxes.area().astype(jnp.float32) / (height * width)
  return mixed, MixedLabels(labels, labels[permutation], weight)


# ---------------------------------------------------------------------------
# RandAugment ops on one [H, W, C] image in [0, 1].


def _levels(image: jax.Array) -> jax.Array:
  """[0, 1] floats -> int32 uint8 levels ``round(255 * x)``."""
  return jnp.clip(jnp.round(image * 255.0), 0, 255).astype(jnp.int32)


def _grey(image: jax.Array) -> jax.Array:
  """``[H, W, 1]`` luma (ITU-R 601, PIL's "L") of RGB; the mean otherwise."""
  if image.shape[-1] == 3:
    return pix.rgb_to_grayscale(image)
  return image.mean(axis=-1, keepdims=True)


def _blend(degenerate: jax.Array, image: jax.Array, factor) -> jax.Array:
  """PIL's ``Image.blend(degenerate, image, factor)``, clipped to [0, 1]."""
  out = degenerate + jnp.asarray(factor, image.dtype) * (image - degenerate)
  return jnp.clip(out, 0.0, 1.0).astype(image.dtype)


def identity(image: jax.Array) -> jax.Array:
  """The image unchanged."""
  return image


def autocontrast(image: jax.Array) -> jax.Array:
  """Per channel, maps [min, max] linearly onto [0, 1] (PIL, cutoff 0).

  A constant channel is left as is. PIL truncates its uint8 table, so it may
  be 1/255 darker.
  """
  lo = image.min(axis=(0, 1), keepdims=True)
  hi = image.max(axis=(0, 1), keepdims=True)
  span = hi - lo
  stretched = (image - lo) / jnp.where(span > 0, span, 1.0)
  return jnp.where(span > 0, jnp.clip(stretched, 0.0, 1.0), image).astype(
      image.dtype)


def _equalize_channel(levels: jax.Array) -> jax.Array:
  """PIL's equalisation table applied to ``[H, W]`` int levels; -1 = keep."""
  hist = jnp.bincount(levels.ravel(), length=256)
  # PIL: step = (pixels - count of the highest occupied level) // 255, and the
  # image is kept when step == 0 (which covers a single occupied level).
  step = (levels.size - hist[levels.max()]) // 255
  table = (jnp.cumsum(hist) - hist + step // 2) // jnp.maximum(step, 1)
  return jnp.where(step > 0, jnp.clip(table, 0, 255)[levels], -1)


def equalize(image: jax.Array) -> jax.Array:
  """Per-channel histogram equalisation on 256 bins, PIL's ``equalize``.

  Quantises to ``round(255 * x)`` first; equal to PIL on uint8-valued images.
  """
  out = jax.vmap(_equalize_channel, in_axes=-1, out_axes=-1)(_levels(image))
  return jnp.where(out >= 0, out / 255.0, image).astype(image.dtype)


def solarize(image: jax.Array, threshold) -> jax.Array:
  """Inverts pixels ``>= threshold`` (PIL's uint8 threshold t is t / 255)."""
  return pix.solarize(image, jnp.asarray(threshold, image.dtype))


def posterize(image: jax.Array, bits) -> jax.Array:
  """Keeps the top ``bits`` (1..8) bits of the uint8 levels, as PIL."""
  shift = 8 - jnp.asarray(bits, jnp.int32)
  levels = (_levels(image) >> shift) << shift
  return (levels / 255.0).astype(image.dtype)


def color(image: jax.Array, factor) -> jax.Array:
  """PIL ``ImageEnhance.Color``: blend with the grey image (0 = grey)."""
  return _blend(_grey(image), image, factor)


def contrast(image: jax.Array, factor) -> jax.Array:
  """PIL ``ImageEnhance.Contrast``: blend with the mean grey level."""
  return _blend(_grey(image).mean(), image, factor)


def brightness(image: jax.Array, factor) -> jax.Array:
  """PIL ``ImageEnhance.Brightness``: blend with black, i.e. ``factor * x``."""
  return _blend(jnp.zeros_like(image), image, factor)


def _smooth(image: jax.Array) -> jax.Array:
  """PIL's ``ImageFilter.SMOOTH``: 3x3, centre 5, others 1, / 13; edges kept."""
  height, width = image.shape[:2]
  weights = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]]) / 13.0
  inner = sum(weights[i, j] * image[i:height - 2 + i, j:width - 2 + j]
              for i in range(3) for j in range(3))
  return image.at[1:-1, 1:-1].set(inner.astype(image.dtype))


def sharpness(image: jax.Array, factor) -> jax.Array:
  """PIL ``ImageEnhance.Sharpness``: blend with the smoothed image."""
  return _blend(_smooth(image), image, factor)


def _affine(image: jax.Array, linear, shift=(0.0, 0.0),
            fill: float = 0.5) -> jax.Array:
  """Output pixel ``p = (row, col)`` samples the input at ``c + A(p - c) - s``.

  ``c`` is the image centre, ``s`` the shift; bilinear, ``fill`` outside the
  image (dm-pix).
  """
  height, width = image.shape[:2]
  centre = jnp.array([(height - 1) / 2.0, (width - 1) / 2.0], jnp.float32)
  linear = jnp.asarray(linear, jnp.float32)
  offset = centre - linear @ centre - jnp.asarray(shift, jnp.float32)
  matrix = jnp.zeros((3, 3), jnp.float32).at[:2, :2].set(linear).at[2, 2].set(1)
  out = pix.affine_transform(image, matrix, offset=jnp.append(offset, 0.0),
                             order=1, mode="constant", cval=fill)
  return out.astype(image.dtype)


def _snap(value: jax.Array) -> jax.Array:
  # cos(pi / 2) is -4e-8 in float32, which would push a border row of a
  # 90-degree rotation just outside the image (filled); rounding to 2**-20
  # makes quarter turns exact and moves nothing else by a visible amount.
  return jnp.round(value * 2.0**20) / 2.0**20


def rotate(image: jax.Array, degrees, fill: float = 0.5) -> jax.Array:
  """Rotates ``degrees`` counter-clockwise about the centre (90: np.rot90)."""
  theta = jnp.deg2rad(jnp.asarray(degrees, jnp.float32))
  cos, sin = _snap(jnp.cos(theta)), _snap(jnp.sin(theta))
  return _affine(image, jnp.array([[cos, sin], [-sin, cos]]), fill=fill)


def shear_x(image: jax.Array, factor, fill: float = 0.5) -> jax.Array:
  """Output ``(r, c)`` = input ``(r, c + factor * (r - centre_row))``."""
  factor = jnp.asarray(factor, jnp.float32)
  return _affine(image, jnp.array([[1.0, 0.0], [factor, 1.0]]), fill=fill)


def shear_y(image: jax.Array, factor, fill: float = 0.5) -> jax.Array:
  """Output ``(r, c)`` = input ``(r + factor * (c - centre_col), c)``."""
  factor = jnp.asarray(factor, jnp.float32)
  return _affine(image, jnp.array([[1.0, factor], [0.0, 1.0]]), fill=fill)


def translate_x(image: jax.Array, pixels, fill: float = 0.5) -> jax.Array:
  """Moves the content ``pixels`` to the right (left if negative)."""
  shift = jnp.stack([jnp.float32(0), jnp.asarray(pixels, jnp.float32)])
  return _affine(image, jnp.eye(2), shift, fill)


def translate_y(image: jax.Array, pixels, fill: float = 0.5) -> jax.Array:
  """Moves the content ``pixels`` down (up if negative)."""
  shift = jnp.stack([jnp.asarray(pixels, jnp.float32), jnp.float32(0)])
  return _affine(image, jnp.eye(2), shift, fill)


def invert(image: jax.Array) -> jax.Array:
  """``1 - x`` (PIL's ``ImageOps.invert`` on [0, 1] images)."""
  return (1.0 - image).astype(image.dtype)


# The RandAugment ops as fn(image, level, sign, fill): level = magnitude / 10,
# sign = +-1 (ignored by unsigned ops); the mapping of the module docstring.

def _factor(level, sign):
  return jnp.maximum(1.0 + 0.9 * level * sign, 0.0)


def _posterize_bits(level):
  return jnp.clip(8 - jnp.round(4.0 * level), 1, 8).astype(jnp.int32)


_RANDAUGMENT = {
    "Identity": lambda x, v, s, fill: identity(x),
    "AutoContrast": lambda x, v, s, fill: autocontrast(x),
    "Equalize": lambda x, v, s, fill: equalize(x),
    "Rotate": lambda x, v, s, fill: rotate(x, 30.0 * v * s, fill),
    "Solarize": lambda x, v, s, fill: solarize(x, (1.0 - v) * 256.0 / 255.0),
    "Color": lambda x, v, s, fill: color(x, _factor(v, s)),
    "Posterize": lambda x, v, s, fill: posterize(x, _posterize_bits(v)),
    "Contrast": lambda x, v, s, fill: contrast(x, _factor(v, s)),
    "Brightness": lambda x, v, s, fill: brightness(x, _factor(v, s)),
    "Sharpness": lambda x, v, s, fill: sharpness(x, _factor(v, s)),
    "ShearX": lambda x, v, s, fill: shear_x(x, 0.3 * v * s, fill),
    "ShearY": lambda x, v, s, fill: shear_y(x, 0.3 * v * s, fill),
    "TranslateX": lambda x, v, s, fill: translate_x(
        x, 0.45 * v * s * x.shape[1], fill),
    "TranslateY": lambda x, v, s, fill: translate_y(
        x, 0.45 * v * s * x.shape[0], fill),
}
RANDAUGMENT_OPS: Mapping[str, Callable[..., jax.Array]] = (
    types.MappingProxyType(_RANDAUGMENT))
"""RandAugment op name -> ``fn(image [H, W, C], level, sign, fill)``."""
RANDAUGMENT_OP_NAMES: tuple[str, ...] = tuple(_RANDAUGMENT)


def _check_magnitude(magnitude) -> None:
  if isinstance(magnitude, jax.core.Tracer):
    return
  if not 0 <= float(magnitude) <= 30:
    raise ValueError(f"rand_augment: magnitude must be in [0, 30] (10 = the "
                     f"strongest setting of the papers); got {magnitude}.")


def rand_augment(key: jax.Array, images: jax.Array, num_ops: int = 2,
                 magnitude: float = 9.0, *, fill: float = 0.5) -> jax.Array:
  """RandAugment (Cubuk et al., 2020) on a batch of ``[0, 1]`` images.

  Each example applies ``num_ops`` ops, each drawn uniformly (with
  replacement) from :data:`RANDAUGMENT_OP_NAMES` with its own random sign, in
  sequence, at ``magnitude`` (0..30, see the module docstring). The images
  keep their shape and dtype (ops compute in float32) and stay in [0, 1].
  """
  _check_batch(images, "rand_augment")
  _check_unit_images(images, "rand_augment")
  _check_magnitude(magnitude)
  if int(num_ops) != num_ops or num_ops < 0:
    raise ValueError(f"rand_augment: num_ops must be an integer >= 0; got "
                     f"{num_ops}.")
  batch = images.shape[0]
  key_op, key_sign = jax.random.split(key)
  op_index = jax.random.randint(key_op, (batch, num_ops), 0,
                                len(RANDAUGMENT_OP_NAMES))
  sign = jnp.where(jax.random.bernoulli(key_sign, 0.5, (batch, num_ops)),
                   1.0, -1.0)
  level = jnp.asarray(magnitude, jnp.float32) / 10.0
  branches = [functools.partial(RANDAUGMENT_OPS[name], fill=fill)
              for name in RANDAUGMENT_OP_NAMES]

  # lax.switch on a per-example (batched) index inside vmap: vmap lowers it to
  # computing every branch and selecting per example, which is what a
  # static-shape batch needs anyway (grouping examples by op would make shapes
  # data-dependent); the ops are cheap next to a train step. A switch rather
  # than an explicit select keeps the branch list the single source of truth.
  def augment_one(image, op_index, sign):
    for i in range(int(num_ops)):
      image = jax.lax.switch(op_index[i], branches, image, level, sign[i])
    return image

  out = jax.vmap(augment_one)(images.astype(jnp.float32), op_index, sign)
  return out.astype(images.dtype)


# ---------------------------------------------------------------------------
# AutoAugment: the learned policies.

AUTOAUGMENT_BINS = 10
"""Magnitude bins of the AutoAugment search space: bin ``m`` is level ``m / 9``."""

# fn(image, level, sign, fill), level = bin / 9: the search space of Cubuk et
# al. (2019) as torchvision samples it (signed ops flip with probability 1/2).
# RandAugment's ops at that level, but for whole-pixel translations of up to
# 150/331 of the side (the paper's 150 of 331 px), torchvision's Solarize
# threshold and Invert.
_AUTOAUGMENT = {
    **{name: op for name, op in _RANDAUGMENT.items()
       if name not in ("Identity", "TranslateX", "TranslateY", "Solarize")},
    "TranslateX": lambda x, v, s, fill: translate_x(
        x, jnp.trunc(150.0 / 331.0 * x.shape[1] * v) * s, fill),
    "TranslateY": lambda x, v, s, fill: translate_y(
        x, jnp.trunc(150.0 / 331.0 * x.shape[0] * v) * s, fill),
    "Solarize": lambda x, v, s, fill: solarize(x, 1.0 - v),
    "Invert": lambda x, v, s, fill: invert(x),
}
AUTOAUGMENT_OPS: Mapping[str, Callable[..., jax.Array]] = (
    types.MappingProxyType(_AUTOAUGMENT))
"""AutoAugment op name -> ``fn(image [H, W, C], level, sign, fill)``."""
AUTOAUGMENT_OP_NAMES: tuple[str, ...] = tuple(_AUTOAUGMENT)

# Each policy: sub-policies of two (op, probability, magnitude bin or None)
# steps, from the AutoAugment paper's appendix (Cubuk et al., 2019, Tables
# 7-9), in torchvision's order.
AUTOAUGMENT_POLICIES: Mapping[str, tuple] = types.MappingProxyType({
    "cifar10": (
        (("Invert", 0.1, None), ("Contrast", 0.2, 6)),
        (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
        (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)),
        (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
        (("AutoContrast", 0.5, None), ("Equalize", 0.9, None)),
        (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
        (("Color", 0.4, 3), ("Brightness", 0.6, 7)),
        (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
        (("Equalize", 0.6, None), ("Equalize", 0.5, None)),
        (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
        (("Color", 0.7, 7), ("TranslateX", 0.5, 8)),
        (("Equalize", 0.3, None), ("AutoContrast", 0.4, None)),
        (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)),
        (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
        (("Solarize", 0.5, 2), ("Invert", 0.0, None)),
        (("Equalize", 0.2, None), ("AutoContrast", 0.6, None)),
        (("Equalize", 0.2, None), ("Equalize", 0.6, None)),
        (("Color", 0.9, 9), ("Equalize", 0.6, None)),
        (("AutoContrast", 0.8, None), ("Solarize", 0.2, 8)),
        (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
        (("Solarize", 0.4, 5), ("AutoContrast", 0.9, None)),
        (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
        (("AutoContrast", 0.9, None), ("Solarize", 0.8, 3)),
        (("Equalize", 0.8, None), ("Invert", 0.1, None)),
        (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, None)),
    ),
    "imagenet": (
        (("Posterize", 0.4, 8), ("Rotate", 0.6, 9)),
        (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
        (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
        (("Posterize", 0.6, 7), ("Posterize", 0.6, 6)),
        (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
        (("Equalize", 0.4, None), ("Rotate", 0.8, 8)),
        (("Solarize", 0.6, 3), ("Equalize", 0.6, None)),
        (("Posterize", 0.8, 5), ("Equalize", 1.0, None)),
        (("Rotate", 0.2, 3), ("Solarize", 0.6, 8)),
        (("Equalize", 0.6, None), ("Posterize", 0.4, 6)),
        (("Rotate", 0.8, 8), ("Color", 0.4, 0)),
        (("Rotate", 0.4, 9), ("Equalize", 0.6, None)),
        (("Equalize", 0.0, None), ("Equalize", 0.8, None)),
        (("Invert", 0.6, None), ("Equalize", 1.0, None)),
        (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
        (("Rotate", 0.8, 8), ("Color", 1.0, 2)),
        (("Color", 0.8, 8), ("Solarize", 0.8, 7)),
        (("Sharpness", 0.4, 7), ("Invert", 0.6, None)),
        (("ShearX", 0.6, 5), ("Equalize", 1.0, None)),
        (("Color", 0.4, 0), ("Equalize", 0.6, None)),
        (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
        (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
        (("Invert", 0.6, None), ("Equalize", 1.0, None)),
        (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
        (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
    ),
    "svhn": (
        (("ShearX", 0.9, 4), ("Invert", 0.2, None)),
        (("ShearY", 0.9, 8), ("Invert", 0.7, None)),
        (("Equalize", 0.6, None), ("Solarize", 0.6, 6)),
        (("Invert", 0.9, None), ("Equalize", 0.6, None)),
        (("Equalize", 0.6, None), ("Rotate", 0.9, 3)),
        (("ShearX", 0.9, 4), ("AutoContrast", 0.8, None)),
        (("ShearY", 0.9, 8), ("Invert", 0.4, None)),
        (("ShearY", 0.9, 5), ("Solarize", 0.2, 6)),
        (("Invert", 0.9, None), ("AutoContrast", 0.8, None)),
        (("Equalize", 0.6, None), ("Rotate", 0.9, 3)),
        (("ShearX", 0.9, 4), ("Solarize", 0.3, 3)),
        (("ShearY", 0.8, 8), ("Invert", 0.7, None)),
        (("Equalize", 0.9, None), ("TranslateY", 0.6, 6)),
        (("Invert", 0.9, None), ("Equalize", 0.6, None)),
        (("Contrast", 0.3, 3), ("Rotate", 0.8, 4)),
        (("Invert", 0.8, None), ("TranslateY", 0.0, 2)),
        (("ShearY", 0.7, 6), ("Solarize", 0.4, 8)),
        (("Invert", 0.6, None), ("Rotate", 0.8, 4)),
        (("ShearY", 0.3, 7), ("TranslateX", 0.9, 3)),
        (("ShearX", 0.1, 6), ("Invert", 0.6, None)),
        (("Solarize", 0.7, 2), ("TranslateY", 0.6, 7)),
        (("ShearY", 0.8, 4), ("Invert", 0.8, None)),
        (("ShearX", 0.7, 9), ("TranslateY", 0.8, 3)),
        (("ShearY", 0.8, 5), ("AutoContrast", 0.7, None)),
        (("ShearX", 0.7, 2), ("Invert", 0.1, None)),
    ),
})
"""Policy name -> sub-policies ``((op, probability, bin or None), ...)``."""


def _policy_arrays(policy: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """``policy``'s op indices, probabilities and levels, each ``[S, steps]``."""
  if policy not in AUTOAUGMENT_POLICIES:
    raise ValueError(f"auto_augment: unknown policy {policy!r}; the policies "
                     f"are {', '.join(AUTOAUGMENT_POLICIES)}.")
  table = AUTOAUGMENT_POLICIES[policy]
  ops = np.array([[AUTOAUGMENT_OP_NAMES.index(op) for op, _, _ in sub]
                  for sub in table], np.int32)
  probs = np.array([[p for _, p, _ in sub] for sub in table], np.float32)
  levels = np.array([[0.0 if m is None else m / (AUTOAUGMENT_BINS - 1)
                      for _, _, m in sub] for sub in table], np.float32)
  return ops, probs, levels


def auto_augment(key: jax.Array, images: jax.Array, policy: str = "cifar10",
                 *, fill: float = 0.5) -> jax.Array:
  """AutoAugment (Cubuk et al., 2019) with a learned policy, on ``[0, 1]`` images.

  Each example draws one sub-policy of :data:`AUTOAUGMENT_POLICIES[policy]`
  uniformly and runs its two steps in order, each with its probability, at
  its magnitude bin, with its own random sign for the signed ops (as
  torchvision's ``AutoAugment``). The ops are those of :func:`rand_augment`
  plus :func:`invert`; shears and rotations are about the centre and
  translations move whole pixels. The images keep their shape and dtype and
  stay in [0, 1].
  """
  _check_batch(images, "auto_augment")
  _check_unit_images(images, "auto_augment")
  ops, probs, levels = _policy_arrays(policy)
  batch, steps = images.shape[0], ops.shape[1]
  key_sub, key_apply, key_sign = jax.random.split(key, 3)
  sub = jax.random.randint(key_sub, (batch,), 0, len(ops))
  applied = jax.random.uniform(key_apply, (batch, steps)) < jnp.asarray(probs)[sub]
  sign = jnp.where(jax.random.bernoulli(key_sign, 0.5, (batch, steps)),
                   1.0, -1.0)
  branches = [functools.partial(AUTOAUGMENT_OPS[name], fill=fill)
              for name in AUTOAUGMENT_OP_NAMES]

  def augment_one(image, op_index, level, applied, sign):
    for i in range(steps):  # every branch, selected per example (rand_augment)
      out = jax.lax.switch(op_index[i], branches, image, level[i], sign[i])
      image = jnp.where(applied[i], out, image)
    return image

  out = jax.vmap(augment_one)(images.astype(jnp.float32),
                              jnp.asarray(ops)[sub], jnp.asarray(levels)[sub],
                              applied, sign)
  return out.astype(images.dtype)


# ---------------------------------------------------------------------------
# The registry.


def _none(key: jax.Array, images: jax.Array,
          labels: jax.Array) -> tuple[jax.Array, MixedLabels]:
  del key
  return images, MixedLabels.unmixed(_check_labels(labels, images, "none"))


def _cutout(key: jax.Array, images: jax.Array, labels: jax.Array, size: int,
            fill: float = 0.0) -> tuple[jax.Array, MixedLabels]:
  labels = _check_labels(labels, images, "cutout")
  return cutout(key, images, size, fill), MixedLabels.unmixed(labels)


def _rand_augment(key: jax.Array, images: jax.Array, labels: jax.Array,
                  num_ops: int = 2, magnitude: float = 9.0,
                  fill: float = 0.5) -> tuple[jax.Array, MixedLabels]:
  labels = _check_labels(labels, images, "randaugment")
  return (rand_augment(key, images, num_ops, magnitude, fill=fill),
          MixedLabels.unmixed(labels))


def _auto_augment(key: jax.Array, images: jax.Array, labels: jax.Array,
                  policy: str = "cifar10",
                  fill: float = 0.5) -> tuple[jax.Array, MixedLabels]:
  labels = _check_labels(labels, images, "autoaugment")
  return (auto_augment(key, images, policy, fill=fill),
          MixedLabels.unmixed(labels))


AUGMENTATIONS: Mapping[str, Callable[..., tuple[jax.Array, MixedLabels]]] = (
    types.MappingProxyType({
        "none": _none,
        "cutout": _cutout,
        "cutmix": cutmix,
        "mixup": mixup,
        "randaugment": _rand_augment,
        "autoaugment": _auto_augment,
    }))
"""Name -> ``fn(key, images, labels, **params) -> (images, MixedLabels)``."""
NAMES: tuple[str, ...] = tuple(AUGMENTATIONS)


def apply(name: str, key: jax.Array, images: jax.Array, labels: jax.Array,
          **params) -> tuple[jax.Array, MixedLabels]:
  """Applies the augmentation called ``name`` (one of :data:`NAMES`).

  Always returns :class:`MixedLabels` (partner = self and weight 1 for the
  ops that do not mix), so a trainer has one loss. ``params`` are the op's
  keyword arguments: ``cutout``: ``size``, ``fill``; ``cutmix``: ``alpha``;
  ``mixup``: ``alpha``; ``randaugment``: ``num_ops``, ``magnitude``, ``fill``;
  ``autoaugment``: ``policy`` (:data:`AUTOAUGMENT_POLICIES`), ``fill``.
  """
  try:
    fn = AUGMENTATIONS[name]
  except KeyError:
    raise ValueError(f"Unknown augmentation {name!r}; valid names are: "
                     f"{', '.join(NAMES)}.") from None
  signature = inspect.signature(fn)
  try:
    signature.bind(key, images, labels, **params)
  except TypeError as e:
    accepted = [p for p in list(signature.parameters)[3:]]
    raise ValueError(
        f"Augmentation {name!r}: {e}. It takes the parameters "
        f"{accepted or 'none'}.") from None
  return fn(key, images, labels, **params)


MIXING = frozenset({"cutmix", "mixup"})
"""The augmentations that mix examples (their weight can be < 1)."""


def chain(spec: str, params: Mapping[str, Mapping] | None = None
          ) -> Callable[[jax.Array, jax.Array, jax.Array],
                        tuple[jax.Array, MixedLabels]] | None:
  """``"randaugment+cutout"`` -> one ``fn(key, images, labels) -> (images, MixedLabels)``.

  The ops run in the given order, each with ``params[name]`` and its own key
  (``fold_in(key, position)``); ``None`` for ``"none"``. At most one op may
  mix, and it must come last (mixing first would mix labels the later ops
  never see). Names and parameters are checked here, before anything is
  traced (ValueError naming the fix).
  """
  names = [n.strip() for n in spec.split("+") if n.strip()]
  unknown = [n for n in names if n not in AUGMENTATIONS]
  if not names or unknown:
    raise ValueError(f"Unknown augmentation {spec!r}; use one of "
                     f"{', '.join(NAMES)}, or several joined by '+'.")
  names = [n for n in names if n != "none"]
  if not names:
    return None
  mixing = [i for i, n in enumerate(names) if n in MIXING]
  if len(mixing) > 1 or (mixing and mixing[0] != len(names) - 1):
    raise ValueError(f"Augmentation {spec!r}: at most one mixing op "
                     f"({', '.join(sorted(MIXING))}), and it must come last.")
  steps = []
  for name in names:
    kwargs = dict((params or {}).get(name) or {})
    parameters = list(inspect.signature(AUGMENTATIONS[name]).parameters.values())[3:]
    accepted = [p.name for p in parameters]
    extra = sorted(set(kwargs) - set(accepted))
    if extra:
      raise ValueError(f"Augmentation {name!r} takes {accepted or 'no'} "
                       f"parameters; got {extra}.")
    missing = [p.name for p in parameters
               if p.default is inspect.Parameter.empty and p.name not in kwargs]
    if missing:
      raise ValueError(f"Augmentation {name!r} needs {', '.join(missing)}: pass "
                       f"params={{{name!r}: {{{missing[0]!r}: ...}}}}.")
    steps.append(functools.partial(AUGMENTATIONS[name], **kwargs))

  def augment(key, images, labels):
    mixed = None
    for i, step in enumerate(steps):
      images, mixed = step(jax.random.fold_in(key, i), images, labels)
    return images, mixed

  return augment

