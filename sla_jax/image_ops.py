"""Host-side image decoding and resizing for datasets whose images have any size.

The ImageNet recipe (Szegedy et al. 2015; torchvision's ``RandomResizedCrop``
and ``Resize`` + ``CenterCrop``), as pure functions of a numpy ``Generator``
so that a batch is a function of (seed, step) and resumed runs read the same
pixels:

* :func:`random_resized_crop_box`: an area fraction in ``scale`` and an aspect
  ratio log-uniform in ``ratio``, 10 tries, then the central crop clamped to
  ``ratio`` (torchvision's algorithm).
* :func:`train_crop`: decode, crop that box, resize it to ``size x size``
  (bilinear, antialiased), mirror with probability 1/2.
* :func:`eval_crop`: decode, resize the shorter side to ``resize_size``,
  take the central ``size x size``.

Decoding and resizing use Pillow: JPEG ``draft`` mode lets libjpeg decode
directly at 1/2, 1/4 or 1/8 scale when the target is that much smaller, which
is where most of the time of large photos goes. BENCHMARKS.md compares it with
simplejpeg and OpenCV on this machine.
"""

from __future__ import annotations

import io
import math
import pathlib

import numpy as np

__all__ = ["decode", "random_resized_crop_box", "train_crop", "eval_crop",
           "DEFAULT_SCALE", "DEFAULT_RATIO", "eval_resize_size"]

DEFAULT_SCALE = (0.08, 1.0)     # Inception-style area fraction of the crop
DEFAULT_RATIO = (3 / 4, 4 / 3)  # and its aspect-ratio range
EVAL_CROP_FRACTION = 0.875      # 224 of 256


def eval_resize_size(size: int) -> int:
  """The shorter side before the central crop: ``round(size / 0.875)`` (256 for 224)."""
  return int(round(size / EVAL_CROP_FRACTION))


def _open(source):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  if isinstance(source, (bytes, bytearray, memoryview)):
    return Image.open(io.BytesIO(bytes(source)))
  if isinstance(source, (str, pathlib.Path)):
    return Image.open(source)
  return Image.fromarray(np.asarray(source, np.uint8))  # a decoded image


def decode(source) -> np.ndarray:
  """A JPEG/PNG file path, encoded bytes or an array -> uint8 ``[H, W, 3]`` RGB."""
  with _open(source) as image:
    return np.asarray(image.convert("RGB"))


def random_resized_crop_box(rng: np.random.Generator, height: int, width: int,
                            scale=DEFAULT_SCALE, ratio=DEFAULT_RATIO
                            ) -> tuple[int, int, int, int]:
  """``(top, left, h, w)`` of a random crop with area in ``scale`` and aspect in ``ratio``."""
  area = height * width
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(10):
    target = area * rng.uniform(scale[0], scale[1])
    aspect = math.exp(rng.uniform(*log_ratio))
    w = int(round(math.sqrt(target * aspect)))
    h = int(round(math.sqrt(target / aspect)))
    if 0 < w <= width and 0 < h <= height:
      top = int(rng.integers(0, height - h + 1))
      left = int(rng.integers(0, width - w + 1))
      return top, left, h, w
  aspect = width / height  # fallback: the central crop, aspect clamped
  if aspect < min(ratio):
    w, h = width, int(round(width / min(ratio)))
  elif aspect > max(ratio):
    h, w = height, int(round(height * max(ratio)))
  else:
    h, w = height, width
  return (height - h) // 2, (width - w) // 2, h, w


def _resize_box(image, box: tuple[int, int, int, int], size: tuple[int, int]):
  """Pillow: the region ``box = (left, top, right, bottom)`` resized to ``size`` (w, h)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  if image.mode != "RGB":
    image = image.convert("RGB")
  return np.asarray(image.resize(size, Image.BILINEAR, box=box,
                                 reducing_gap=None))


def _draft_box(image, box: tuple[float, float, float, float],
               scale_down: float) -> tuple[float, float, float, float]:
  """JPEG only: decode at 1/2, 1/4 or 1/8 size if the output allows.

  Returns ``box`` (left, top, right, bottom in original pixels) in the
  coordinates of the image as it will be decoded, clamped to its size (the
  reduced size is rounded up, per axis).
  """
  if image.format != "JPEG" or scale_down < 2:
    return box
  width, height = image.size
  image.draft("RGB", (int(width / scale_down), int(height / scale_down)))
  new_width, new_height = image.size
  fx, fy = new_width / width, new_height / height
  left, top, right, bottom = box
  return (left * fx, top * fy, min(right * fx, new_width),
          min(bottom * fy, new_height))


def train_crop(source, rng: np.random.Generator, size: int,
               scale=DEFAULT_SCALE, ratio=DEFAULT_RATIO,
               flip: bool = True) -> np.ndarray:
  """Random resized crop to ``size x size`` (+ random mirror): uint8 ``[size, size, 3]``."""
  with _open(source) as image:
    width, height = image.size
    top, left, h, w = random_resized_crop_box(rng, height, width, scale, ratio)
    box = _draft_box(image, (left, top, left + w, top + h), min(h, w) / size)
    out = _resize_box(image, box, (size, size))
  if flip and rng.random() < 0.5:
    out = out[:, ::-1]
  return np.ascontiguousarray(out)


def eval_crop(source, size: int, resize_size: int | None = None) -> np.ndarray:
  """Shorter side to ``resize_size``, central ``size x size``: uint8 ``[size, size, 3]``."""
  resize_size = resize_size or eval_resize_size(size)
  with _open(source) as image:
    width, height = image.size
    shorter = min(width, height)
    # The central crop in original pixels, then one resize to size x size.
    crop = shorter * size / resize_size
    left, top = (width - crop) / 2, (height - crop) / 2
    box = _draft_box(image, (left, top, left + crop, top + crop), crop / size)
    return _resize_box(image, box, (size, size))
