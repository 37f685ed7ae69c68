"""Images of any size: random resized crops, resize + centre crop, and the trainer's host path."""

import io
import tarfile

import jax
import numpy as np
import pytest
from PIL import Image

from conftest import CIFAR10_JPEG, interrupt_after
from sla_jax import data, image_ops, train
from tests import subprocess_util as sp


def _photo(h, w, seed=0):
  """A smooth random RGB image (so resampling differences stay small)."""
  rng = np.random.RandomState(seed)
  small = rng.randint(0, 256, (4, 4, 3)).astype(np.uint8)
  return np.asarray(Image.fromarray(small).resize((w, h), Image.BILINEAR))


def test_crop_box_area_and_aspect_within_ranges():
  rng = np.random.default_rng(0)
  for _ in range(200):
    top, left, h, w = image_ops.random_resized_crop_box(rng, 300, 400)
    assert 0 <= top and top + h <= 300 and 0 <= left and left + w <= 400
    assert 0.08 * 0.9 <= h * w / 120000 <= 1.0
    assert 3 / 4 * 0.95 <= w / h <= 4 / 3 * 1.05
  same = [image_ops.random_resized_crop_box(np.random.default_rng(7), 50, 60)
          for _ in range(2)]
  assert same[0] == same[1]


def test_crop_box_falls_back_to_the_clamped_centre():
  # A 10 x 200 strip cannot hold a crop of >= 99 % area with aspect <= 4/3.
  box = image_ops.random_resized_crop_box(np.random.default_rng(0), 10, 200,
                                          scale=(0.99, 1.0))
  assert box == (0, (200 - 13) // 2, 10, 13)


def test_train_crop_is_crop_then_bilinear_resize():
  image = _photo(60, 90)
  rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
  out = image_ops.train_crop(image, rng_a, 24, flip=False)
  top, left, h, w = image_ops.random_resized_crop_box(rng_b, 60, 90)
  expected = np.asarray(Image.fromarray(image).resize(
      (24, 24), Image.BILINEAR, box=(left, top, left + w, top + h),
      reducing_gap=None))
  assert out.shape == (24, 24, 3) and out.dtype == np.uint8
  np.testing.assert_array_equal(out, expected)


def test_train_crop_flips_half_the_time():
  image = _photo(40, 40)
  flips = 0
  for seed in range(40):
    plain = image_ops.train_crop(image, np.random.default_rng(seed), 16,
                                 flip=False)
    maybe = image_ops.train_crop(image, np.random.default_rng(seed), 16)
    if not np.array_equal(plain, maybe):
      np.testing.assert_array_equal(maybe, plain[:, ::-1])
      flips += 1
  assert 10 <= flips <= 30


def test_eval_crop_is_resize_shorter_side_then_centre_crop():
  image = _photo(120, 200)
  out = image_ops.eval_crop(image, 56, resize_size=64)
  # Reference: shorter side 120 -> 64 (200 -> 106.67), central 56 x 56.
  scale = 120 / 64
  crop = 56 * scale
  box = ((200 - crop) / 2, (120 - crop) / 2, (200 + crop) / 2, (120 + crop) / 2)
  expected = np.asarray(Image.fromarray(image).resize((56, 56), Image.BILINEAR,
                                                      box=box, reducing_gap=None))
  np.testing.assert_array_equal(out, expected)
  assert image_ops.eval_resize_size(224) == 256


def test_jpeg_draft_decoding_stays_close_to_full_decoding():
  buffer = io.BytesIO()
  Image.fromarray(_photo(512, 640)).save(buffer, "JPEG", quality=95)
  encoded = buffer.getvalue()
  fast = image_ops.eval_crop(encoded, 32)            # decoded at 1/8 scale
  full = image_ops.eval_crop(image_ops.decode(encoded), 32)  # no draft
  assert np.abs(fast.astype(int) - full.astype(int)).mean() < 3.0


def _mixed_size_folder(root, per_class=12, classes=("airplane", "automobile",
                                                    "bird")):
  """Real CIFAR-10 test JPEGs re-saved at several sizes and aspect ratios."""
  if not CIFAR10_JPEG.exists():
    pytest.skip(f"shared CIFAR-10 JPEGs not found at {CIFAR10_JPEG}")
  sizes = [(32, 32), (48, 40), (30, 70), (64, 64), (90, 45), (37, 53)]
  wanted = {c: 0 for c in classes}
  with tarfile.open(CIFAR10_JPEG, "r:gz") as tar:
    for member in tar:
      parts = member.name.split("/")
      if len(parts) != 4 or parts[2] not in wanted or not member.isfile():
        continue
      k = wanted[parts[2]]
      if k >= per_class:
        if all(v >= per_class for v in wanted.values()):
          break
        continue
      wanted[parts[2]] = k + 1
      split = "test" if k % 4 == 0 else "train"
      out = root / split / parts[2]
      out.mkdir(parents=True, exist_ok=True)
      with Image.open(tar.extractfile(member)) as im:
        im.convert("RGB").resize(sizes[k % len(sizes)], Image.BICUBIC).save(
            out / f"{k:03d}.jpg", quality=90)
  return root


def test_mixed_size_folder_loads_lazily_with_crops(tmp_path):
  root = _mixed_size_folder(tmp_path / "mixed")
  config = sp.make_config(dataset=f"folder:{root}", val_size=3, image_size=24,
                          data_on_device=False)
  dataset = data.load(config)
  assert dataset.image_shape == (24, 24, 3) and dataset.num_classes == 3
  images, labels = dataset.test.read(np.arange(dataset.test.size))
  assert images.shape == (dataset.test.size, 24, 24, 3)
  a, _ = dataset.train.read_train(np.arange(4), np.random.default_rng(1))
  b, _ = dataset.train.read_train(np.arange(4), np.random.default_rng(1))
  c, _ = dataset.train.read_train(np.arange(4), np.random.default_rng(2))
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  with pytest.raises(ValueError, match="image_size"):
    data.load(sp.make_config(dataset=f"folder:{root}", val_size=3))
  with pytest.raises(ValueError, match="crop_scale"):
    data.load(sp.make_config(dataset=f"folder:{root}", val_size=3,
                             image_size=24, crop_scale=(0.5, 0.2)))


@pytest.mark.slow
def test_mixed_size_folder_trains_and_resumes_exactly(tmp_path, monkeypatch):
  root = _mixed_size_folder(tmp_path / "mixed")
  config = sp.make_config(
      dataset=f"folder:{root}", val_size=3, image_size=24,
      data_on_device=False, batch_size=8, total_steps=8, eval_every=4,
      checkpoint_every=4, log_every=2, host_threads=2)
  with pytest.raises(train.ConfigError, match="data_on_device=False"):
    train.train_and_evaluate(sp.make_config(
        dataset=f"folder:{root}", val_size=3, image_size=24), tmp_path / "bad")
  straight = train.train_and_evaluate(config, tmp_path / "straight")
  assert straight["final_step"] == 8 and 0 <= straight["test"]["acc_si"] <= 1

  # Killed after the step-4 checkpoint, mid-way to the next one.
  undo = interrupt_after(monkeypatch, 6)
  with pytest.raises(KeyboardInterrupt):
    train.train_and_evaluate(config, tmp_path / "resumed")
  undo()
  resumed = train.train_and_evaluate(config, tmp_path / "resumed")
  assert resumed["test"] == pytest.approx(straight["test"], rel=1e-6)
  a = sp.restore_params(tmp_path / "straight", 8)
  b = sp.restore_params(tmp_path / "resumed", 8)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("height,width", [(375, 500), (500, 375), (333, 501)])
def test_draft_decoding_of_odd_sizes_stays_inside_the_image(height, width):
  buffer = io.BytesIO()
  Image.fromarray(_photo(height, width)).save(buffer, "JPEG", quality=90)
  for seed in range(30):  # small crops of the whole image: 1/8-scale drafts
    out = image_ops.train_crop(buffer.getvalue(), np.random.default_rng(seed),
                               8, scale=(0.9, 1.0))
    assert out.shape == (8, 8, 3)
  assert image_ops.eval_crop(buffer.getvalue(), 8).shape == (8, 8, 3)
