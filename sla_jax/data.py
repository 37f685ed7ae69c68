"""Datasets as in-memory uint8 arrays: train / val / test splits.

Sources (``config.dataset``):

* ``"digits"`` -- scikit-learn's bundled handwritten digits (1 797 real 8x8 grey
  images, 10 classes; no download). A fixed, seeded 297-image test split.
* a TFDS name (``"cifar10"``, ``"cifar100"``, any image-classification builder
  with ``image`` and ``label`` features and equal-sized images), read from
  ``config.data_dir`` (a local path or ``gs://``) in TFDS's ``array_record``
  format, never downloaded here.
* ``"folder:<root>"`` -- ``root/{train,test}/<class>/*.{jpg,jpeg,png}``, classes
  in sorted order (e.g. the shared CIFAR-10 JPEGs after unpacking); train/ and
  test/ must hold the same class folders. An unreadable image is an error
  naming the file, unless ``config.skip_corrupt`` (then skipped and counted
  in a warning).

The validation split is ``config.val_size`` images held out of the training
split by a permutation seeded with ``config.data_seed`` (fixed across training
seeds, like the original's ``splits/*_val_idx.npy``). ``samples_per_class``
then keeps the first ``k`` training images of each class in that order.

Each split is a :class:`Split`: a size and a ``read(indices)`` function. Digits
and image folders are read into memory; TFDS datasets too unless
``config.data_on_device`` is False, in which case their splits stay lazy views
of the ``array_record`` files (random access, decoded on read), for datasets
larger than host or device memory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import pathlib
from collections.abc import Callable
from typing import Any

import numpy as np

from sla_jax import long_tail

__all__ = ["Split", "Dataset", "load", "describe"]

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclasses.dataclass(frozen=True)
class Split:
  """``size`` examples; ``read(indices)`` -> uint8 ``[k, H, W, C]``, int32 ``[k]``.

  ``labels``: all ``size`` labels when known without decoding images (in-memory
  splits), else None (lazy TFDS splits, whose ClassLabel feature bounds them).
  """
  size: int
  read: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
  labels: np.ndarray | None = None
  # Images of any size (``config.image_size``): ``read`` gives the evaluation
  # crops and ``read_train(indices, rng)`` random resized crops
  # (sla_jax.image_ops); None = ``read`` serves training too.
  read_train: Callable[[np.ndarray, np.random.Generator],
                       tuple[np.ndarray, np.ndarray]] | None = None

  @classmethod
  def from_arrays(cls, images: np.ndarray, labels: np.ndarray) -> "Split":
    return cls(len(labels), lambda index: (images[index], labels[index]),
               labels)

  def subset(self, index: np.ndarray) -> "Split":
    index = np.asarray(index)
    read_train = (None if self.read_train is None else
                  lambda i, rng: self.read_train(index[i], rng))
    return Split(len(index), lambda i: self.read(index[i]),
                 None if self.labels is None else self.labels[index],
                 read_train)

  def read_all(self) -> tuple[np.ndarray, np.ndarray]:
    return self.read(np.arange(self.size))


@dataclasses.dataclass(frozen=True)
class Dataset:
  """The train / val / test splits of one dataset."""
  name: str
  num_classes: int
  image_shape: tuple[int, int, int]
  train: Split
  val: Split
  test: Split
  # Training images per class, [N]; None when the labels are not in memory.
  class_counts: np.ndarray | None = None


def _digits():
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  digits = load_digits()
  images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
  labels = digits.target.astype(np.int32)
  order = np.random.RandomState(1797).permutation(len(labels))
  test, train = order[:297], order[297:]
  return (10, Split.from_arrays(images[train], labels[train]),
          Split.from_arrays(images[test], labels[test]), labels[train])


@contextlib.contextmanager
def _quiet_absl():
  """absl's warnings off: ``is_prepared`` warns of a variant folder without
  dataset_info.json, and a missing dataset gets this module's own one-line
  error."""
  absl_logger = logging.getLogger("absl")
  level = absl_logger.level
  absl_logger.setLevel(max(level, logging.ERROR))
  try:
    yield
  finally:
    absl_logger.setLevel(level)


def _tfds(name: str, data_dir: str | None, in_memory: bool,
          crops: Crops | None = None, test_split: str = "test"):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  how = (f"Prepare it once where there is internet access with `tfds build "
         f"{name} --file_format=array_record --data_dir=DIR` and pass "
         f"--config.data_dir=DIR (a local path or gs://), or use "
         f"--config.dataset=folder:<root> for image folders.")
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except Exception as e:  # unknown builder name
    reason = str(e).strip().splitlines()[0][:200]  # TFDS lists every dataset
    raise ValueError(f"Unknown dataset {name!r}: not 'digits', not "
                     f"'folder:<root>' and not a TFDS builder ({reason} "
                     f"tfds.list_builders() lists them).") from None
  num_classes = builder.info.features["label"].num_classes

  def read(split):
    try:
      source = builder.as_data_source(split=split)
    except Exception as e:  # pylint: disable=broad-except
      with _quiet_absl():
        prepared = builder.is_prepared()
      if not prepared:
        raise FileNotFoundError(
            f"Dataset {name!r} is not prepared in data_dir="
            f"{data_dir or builder.data_dir!r} and is never downloaded by "
            f"sla_jax. {how}") from None
      raise ValueError(f"Cannot read {name!r} split {split!r} without "
                       f"TensorFlow ({e}). {how}") from None
    if crops is not None:  # any size: cropped when read
      def load(i):
        example = source[i]  # decodes once
        return example["image"], example["label"]
      return crops.split(len(source), load)

    def read_records(index):
      examples = [source[int(i)] for i in index]
      shapes = {ex["image"].shape for ex in examples}
      if len(shapes) > 1:
        raise ValueError(f"Dataset {name!r} has images of several sizes "
                         f"({sorted(shapes)[:3]}...); set --config.image_size "
                         f"(random resized crops, data_on_device=False).")
      return (np.stack([ex["image"] for ex in examples]).astype(np.uint8),
              np.asarray([ex["label"] for ex in examples], np.int32))

    lazy = Split(len(source), read_records)
    return Split.from_arrays(*lazy.read_all()) if in_memory else lazy

  train, test = read("train"), read(test_split)
  if crops is not None:
    in_memory = False
  if in_memory:
    return num_classes, train, test, train.read_all()[1]
  # Labels are only needed for samples_per_class; reading them decodes each
  # image once (TFDS cannot skip image decoding without TensorFlow).
  labels = lambda: np.concatenate([train.read(np.array([i]))[1]
                                   for i in range(train.size)])
  return num_classes, train, test, labels


def _folder(root: str, skip_corrupt: bool = False, crops: Crops | None = None):
  from PIL import Image, UnidentifiedImageError  # pylint: disable=g-import-not-at-top
  root_path = pathlib.Path(root).expanduser()
  splits = {s: root_path / s for s in ("train", "test")}
  for split, path in splits.items():
    if not path.is_dir():
      raise FileNotFoundError(
          f"Image folder {str(root_path)!r} has no {split}/ directory; "
          f"expected {root_path}/{{train,test}}/<class>/*.jpg.")
  class_sets = {s: sorted(p.name for p in path.iterdir() if p.is_dir())
                for s, path in splits.items()}
  classes = class_sets["train"]
  if not classes:
    raise FileNotFoundError(f"No class folders in {splits['train']}.")
  if class_sets["test"] != classes:
    only_train = sorted(set(classes) - set(class_sets["test"]))
    only_test = sorted(set(class_sets["test"]) - set(classes))
    raise ValueError(
        f"Image folder {str(root_path)!r}: train/ and test/ must hold the same "
        f"class folders; only in train/: {', '.join(only_train) or 'none'}; "
        f"only in test/: {', '.join(only_test) or 'none'}.")

  def files_of(path):
    files, labels = [], []
    for label, cls in enumerate(classes):
      found = sorted(f for f in (path / cls).iterdir()
                     if f.suffix.lower() in _IMAGE_SUFFIXES)
      files += found
      labels += [label] * len(found)
    if not files:
      raise FileNotFoundError(f"No images under {path}/<class>/.")
    labels = np.asarray(labels, np.int32)
    return crops.split(len(files), lambda i: (files[i], labels[i]), labels)

  if crops is not None:  # any size: decoded and cropped when read
    train, test = files_of(splits["train"]), files_of(splits["test"])
    return len(classes), train, test, train.labels

  def read(path):
    images, labels, skipped = [], [], []
    for label, cls in enumerate(classes):
      files = sorted(f for f in (path / cls).iterdir()
                     if f.suffix.lower() in _IMAGE_SUFFIXES)
      for f in files:
        try:
          with Image.open(f) as im:
            images.append(np.asarray(im.convert("RGB")))
        except (UnidentifiedImageError, OSError, SyntaxError) as e:
          if not skip_corrupt:
            raise ValueError(
                f"Cannot read image {f} ({type(e).__name__}: "
                f"{' '.join(str(e).split())[:120]}); remove or replace it, or "
                f"set --config.skip_corrupt=True to skip unreadable images."
            ) from None
          skipped.append(f)
          continue
        labels.append(label)
    if skipped:
      logging.warning("Skipped %d unreadable image(s) under %s (skip_corrupt), "
                      "e.g. %s.", len(skipped), path, skipped[0])
    if not images:
      raise FileNotFoundError(f"No images under {path}/<class>/.")
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
      raise ValueError(f"Images under {path} have several sizes "
                       f"({sorted(shapes)[:3]}...); set --config.image_size "
                       f"(random resized crops, data_on_device=False) or "
                       f"resize them to one size.")
    return np.stack(images), np.asarray(labels, np.int32)

  train, test = read(splits["train"]), read(splits["test"])
  return (len(classes), Split.from_arrays(*train), Split.from_arrays(*test),
          train[1])


@dataclasses.dataclass(frozen=True)
class Crops:
  """How images of any size become ``size x size`` (see :mod:`sla_jax.image_ops`)."""
  size: int
  scale: tuple[float, float] = (0.08, 1.0)
  ratio: tuple[float, float] = (3 / 4, 4 / 3)
  eval_resize: int = 0  # shorter side before the central crop; 0: size / 0.875

  def __post_init__(self):
    if self.size <= 0 or not 0 < self.scale[0] <= self.scale[1] <= 1 or not (
        0 < self.ratio[0] <= self.ratio[1]) or self.eval_resize < 0:
      raise ValueError(
          f"image_size must be > 0, crop_scale within (0, 1] and increasing, "
          f"crop_ratio positive and increasing, eval_resize >= 0; got size="
          f"{self.size}, scale={self.scale}, ratio={self.ratio}, "
          f"eval_resize={self.eval_resize}.")

  @classmethod
  def from_config(cls, config) -> "Crops | None":
    size = config.get("image_size", 0)
    if not size:
      return None
    return cls(size, tuple(config.crop_scale), tuple(config.crop_ratio),
               config.get("eval_resize", 0))

  def split(self, size: int, load: Callable[[int], tuple[Any, int]],
            labels: np.ndarray | None = None) -> Split:
    """A lazy split: ``load(i) -> (image, label)``, the image a path, bytes or array."""
    from sla_jax import image_ops  # pylint: disable=g-import-not-at-top

    def read_with(crop, index):
      images, labels_ = [], []
      for i in index:
        image, label = load(int(i))
        images.append(crop(image))
        labels_.append(label)
      return np.stack(images), np.asarray(labels_, np.int32)

    def read(index):
      return read_with(lambda im: image_ops.eval_crop(
          im, self.size, self.eval_resize or None), index)

    def read_train(index, rng):  # flips stay on the device (config.flip)
      return read_with(lambda im: image_ops.train_crop(
          im, rng, self.size, self.scale, self.ratio, flip=False), index)

    return Split(size, read, labels, read_train)


def describe(name: str, data_dir: str | None = None
             ) -> tuple[tuple[int, int, int] | None, int | None]:
  """``(image_shape, num_classes)`` of a dataset without reading its images.

  Digits: known; a TFDS name: its builder's metadata (no data needed; a shape
  is None for variable-size images); ``folder:``: the class folders and the
  first image. ``(None, None)`` when it cannot be told.
  """
  if name == "digits":
    return (8, 8, 1), 10
  if name.startswith("folder:"):
    from PIL import Image  # pylint: disable=g-import-not-at-top
    train = pathlib.Path(name[len("folder:"):]).expanduser() / "train"
    classes = sorted(p for p in train.iterdir() if p.is_dir()) if train.is_dir() else []
    for cls in classes:
      for f in sorted(cls.iterdir()):
        if f.suffix.lower() in _IMAGE_SUFFIXES:
          with Image.open(f) as im:
            return (im.height, im.width, 3), len(classes)
    return None, len(classes) or None
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    features = tfds.builder(name, data_dir=data_dir).info.features
    shape = tuple(features["image"].shape)
    return (shape if None not in shape else None,
            features["label"].num_classes)
  except Exception:  # pylint: disable=broad-except  # unknown to TFDS
    return None, None


def load(config) -> Dataset:
  """Loads ``config.dataset`` and makes the seeded validation / limited splits."""
  name = config.dataset
  crops = Crops.from_config(config)
  if name == "digits":
    if crops is not None:
      raise ValueError(f"image_size={crops.size} crops photos of folder and "
                       f"TFDS datasets; digits are 8x8 arrays: drop "
                       f"--config.image_size.")
    num_classes, train, test, labels = _digits()
  elif name.startswith("folder:"):
    num_classes, train, test, labels = _folder(
        name[len("folder:"):], config.get("skip_corrupt", False), crops)
  else:
    num_classes, train, test, labels = _tfds(
        name, config.get("data_dir"), config.get("data_on_device", True),
        crops, config.get("test_split", "test"))

  if not 0 <= config.val_size < train.size:
    raise ValueError(f"val_size={config.val_size} must be in [0, "
                     f"{train.size}) for {name!r}'s {train.size} training "
                     f"images.")
  order = np.random.RandomState(config.data_seed).permutation(train.size)
  val, rest = order[:config.val_size], order[config.val_size:]
  if config.get("samples_per_class") is not None:
    k = config.samples_per_class
    if k < 1:
      raise ValueError(f"samples_per_class must be >= 1 (None: every training "
                       f"image); got {k}.")
    labels = labels() if callable(labels) else labels
    rest = np.concatenate([rest[labels[rest] == c][:k]
                           for c in range(num_classes)])
    rest.sort()
  ratio = config.get("imbalance_ratio", 1.0)
  if ratio != 1.0:
    labels = labels() if callable(labels) else labels
    if ratio < 1:
      raise ValueError(f"imbalance_ratio must be >= 1 (most / fewest training "
                       f"images per class); got {ratio}.")
    rest = np.sort(rest[long_tail.long_tailed_indices(labels[rest], num_classes,
                                                      ratio)])
  counts = (None if callable(labels) else
            np.bincount(labels[rest], minlength=num_classes))
  image_shape = tuple(test.read(np.arange(1))[0].shape[1:])
  return Dataset(name, num_classes, image_shape, train.subset(rest),
                 train.subset(val), test, counts)
