"""sla_jax.augment: every op against numpy or PIL, jit, randomness, registry."""

import ast
import functools
import importlib.util
import io
import pathlib
import tarfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from conftest import CIFAR10_JPEG
from sla_jax import augment, losses

B, H, W = 8, 32, 32


def _normal_images(b=B, h=H, w=W, c=3, seed=0):
  """Normalised-looking images (negative values too): batch ops ignore range."""
  rng = np.random.default_rng(seed)
  return rng.normal(size=(b, h, w, c)).astype(np.float32)


def _synthetic_u8(n=B, size=H, seed=0):
  """Smooth colour gradients plus noise, uint8: a stand-in for photos."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[:size, :size] / size
  images = []
  for _ in range(n):
    freq, phase = rng.uniform(1, 4, 3), rng.uniform(0, 6, 3)
    chans = [120 + 90 * np.sin(f * (xx + 0.5 * yy) * np.pi + p)
             for f, p in zip(freq, phase)]
    image = np.stack(chans, -1) + rng.normal(0, 12, (size, size, 3))
    images.append(np.clip(np.round(image), 0, 255).astype(np.uint8))
  return np.stack(images)


def _read_cifar(n=B):
  if not CIFAR10_JPEG.exists():
    return None
  images = []
  with tarfile.open(CIFAR10_JPEG, "r:gz") as tar:
    for member in tar:
      if member.isfile() and member.name.endswith(".jpg"):
        data = tar.extractfile(member).read()
        images.append(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
        if len(images) == n:
          break
  return np.stack(images)


@pytest.fixture(scope="module")
def cifar_u8():
  """Real CIFAR-10 images, uint8 [8, 32, 32, 3] (skips if absent)."""
  images = _read_cifar()
  if images is None:
    pytest.skip(f"shared CIFAR-10 not found at {CIFAR10_JPEG}")
  return images


@pytest.fixture(scope="module")
def images_u8():
  """Real CIFAR-10 images when the shared data is there, else synthetic ones."""
  images = _read_cifar()
  return _synthetic_u8() if images is None else images


def _float(u8):
  return jnp.asarray(u8 / 255.0, jnp.float32)


# Compile time dominates these tests on a busy CPU, so each op is compiled
# once and shared. The mixing ops run eagerly: their Beta sampler is the costly
# part and eager calls share JAX's compiled sampler, where every jit would
# compile its own.
_cutout = jax.jit(augment.cutout, static_argnums=2)


@functools.cache
def _batched(fn):
  """jit(vmap(fn)) over images, the op's parameters (traced) shared."""
  def run(images, *params):
    return jax.vmap(lambda im: fn(im, *params))(images)
  return jax.jit(run)


@jax.jit
def _geometric(images, degrees, shear, pixels, fill):
  """The five geometric primitives in one compile, parameters shared."""
  def one(im):
    return {"rotate": augment.rotate(im, degrees, fill),
            "shear_x": augment.shear_x(im, shear, fill),
            "shear_y": augment.shear_y(im, shear, fill),
            "translate_x": augment.translate_x(im, pixels, fill),
            "translate_y": augment.translate_y(im, pixels, fill)}
  return jax.vmap(one)(images)


# ---------------------------------------------------------------------------
# Cutout.


def _np_box(cy, cx, box_h, box_w, h, w):
  """Numpy reference: box_h x box_w at (cy - box_h//2, cx - box_w//2), clipped."""
  top, left = cy - box_h // 2, cx - box_w // 2
  mask = np.zeros((h, w), bool)
  mask[max(top, 0):max(min(top + box_h, h), 0),
       max(left, 0):max(min(left + box_w, w), 0)] = True
  return mask


@pytest.mark.parametrize("size", [12, 7])
def test_cutout_fills_exactly_the_clipped_square(size):
  images = _normal_images(16)
  key = jax.random.key(3)
  out = np.asarray(_cutout(key, jnp.asarray(images), size, -5.0))
  boxes = augment.cutout_boxes(key, 16, H, W, size)
  cy, cx = np.asarray(boxes.centre_y), np.asarray(boxes.centre_x)
  assert ((0 <= cy) & (cy < H) & (0 <= cx) & (cx < W)).all()
  for b in range(16):
    mask = _np_box(cy[b], cx[b], size, size, H, W)
    assert mask[cy[b], cx[b]]
    np.testing.assert_array_equal(out[b][mask], -5.0)
    np.testing.assert_array_equal(out[b][~mask], images[b][~mask])
  assert len(set(zip(cy.tolist(), cx.tolist()))) > 8  # a square per example


def test_cutout_squares_are_clipped_at_the_borders():
  images = jnp.ones((64, 8, 8, 1))
  out = np.asarray(_cutout(jax.random.key(0), images, 6, 0.0))
  cut = (out[..., 0] == 0).sum(axis=(1, 2))
  assert cut.max() == 36 and cut.min() < 36  # whole squares and clipped ones
  boxes = augment.cutout_boxes(jax.random.key(0), 64, 8, 8, 6)
  np.testing.assert_array_equal(cut, np.asarray(boxes.area()))


def test_cutout_jit_equals_eager_and_keeps_dtype():
  images = jnp.asarray(_normal_images(), jnp.bfloat16)
  key = jax.random.key(1)
  eager = augment.cutout(key, images, 10)
  jitted = _cutout(key, images, 10)
  assert eager.dtype == jnp.bfloat16 and eager.shape == images.shape
  np.testing.assert_array_equal(np.asarray(eager, np.float32),
                                np.asarray(jitted, np.float32))
  other = _cutout(jax.random.key(2), images, 10)
  assert not np.array_equal(np.asarray(eager, np.float32),
                            np.asarray(other, np.float32))


def test_cutout_rejects_bad_input():
  with pytest.raises(ValueError, match="NHWC"):
    augment.cutout(jax.random.key(0), jnp.zeros((8, 8, 3)), 4)
  with pytest.raises(ValueError, match="positive integer"):
    augment.cutout(jax.random.key(0), jnp.zeros((2, 8, 8, 3)), 0)


# ---------------------------------------------------------------------------
# CutMix and Mixup.


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cutmix_matches_numpy_reference(seed):
  images = _normal_images(seed=seed)
  labels = np.arange(B) + 10
  key = jax.random.key(seed)
  out, mixed = augment.cutmix(key, jnp.asarray(images), labels, alpha=1.0)
  perm, lam, boxes = augment.cutmix_draw(key, B, H, W, 1.0)
  perm, lam = np.asarray(perm), np.asarray(lam)
  np.testing.assert_array_equal(np.sort(perm), np.arange(B))
  np.testing.assert_array_equal(mixed.labels, labels)
  np.testing.assert_array_equal(mixed.partner_labels, labels[perm])
  for b in range(B):
    ratio = np.sqrt(np.float32(1) - lam[b])
    box_h, box_w = int(np.floor(H * ratio)), int(np.floor(W * ratio))
    mask = _np_box(int(boxes.centre_y[b]), int(boxes.centre_x[b]), box_h, box_w,
                   H, W)
    expected = np.where(mask[..., None], images[perm[b]], images[b])
    np.testing.assert_array_equal(np.asarray(out[b]), expected)
    np.testing.assert_allclose(mixed.weight[b], 1.0 - mask.mean(), atol=1e-6)
  # Flooring and clipping only shrink the box: weight >= lam.
  assert (np.asarray(mixed.weight) >= lam - 1e-6).all()
  assert np.ptp(np.asarray(mixed.weight)) > 0.05


def test_cutmix_pixels_come_from_self_or_partner_inside_a_box():
  """Without the draw: each pixel is its own or the partner's at that place."""
  images = _normal_images(seed=4)
  out, mixed = augment.cutmix(jax.random.key(4), jnp.asarray(images),
                              np.arange(B), alpha=1.0)
  out, partner = np.asarray(out), np.asarray(mixed.partner_labels)
  np.testing.assert_array_equal(np.sort(partner), np.arange(B))
  from_partner = (out != images).any(-1)
  np.testing.assert_array_equal(
      out, np.where(from_partner[..., None], images[partner], images))
  boxed = 0
  for b in np.flatnonzero(partner != np.arange(B)):
    ys, xs = np.nonzero(from_partner[b])
    count = len(ys)
    if count:
      boxed += 1
      assert count == (np.ptp(ys) + 1) * (np.ptp(xs) + 1)  # a rectangle
    np.testing.assert_allclose(mixed.weight[b], 1 - count / (H * W), atol=1e-6)
  assert boxed >= 3


def test_cutmix_and_mixup_reject_bad_arguments():
  images = jnp.zeros((B, 4, 4, 3))
  key = jax.random.key(5)
  with pytest.raises(ValueError, match="alpha"):
    augment.cutmix(key, images, jnp.arange(B), alpha=0.0)
  with pytest.raises(ValueError, match="alpha"):
    augment.mixup(key, images, jnp.arange(B), alpha=-1.0)
  with pytest.raises(ValueError, match="labels"):
    augment.cutmix(key, images, jnp.arange(B + 1))


@pytest.mark.parametrize("alpha", [0.2, 1.0])
def test_mixup_is_the_weighted_sum_with_the_partner(alpha):
  images = _normal_images()
  key = jax.random.key(6)
  out, mixed = augment.mixup(key, jnp.asarray(images), np.arange(B), alpha)
  perm, w = np.asarray(mixed.partner_labels), np.asarray(mixed.weight)
  np.testing.assert_array_equal(np.sort(perm), np.arange(B))
  assert ((0 <= w) & (w <= 1)).all() and np.ptp(w) > 0.05
  w4 = w[:, None, None, None]
  np.testing.assert_allclose(out, w4 * images + (1 - w4) * images[perm],
                             atol=1e-5)
  draw_perm, lam = augment.mixup_draw(key, B, alpha)
  np.testing.assert_array_equal(draw_perm, perm)
  np.testing.assert_array_equal(lam, w)


# ---------------------------------------------------------------------------
# Mixed labels and their loss.


def _np_ce(logits, labels):
  z = logits - logits.max(-1, keepdims=True)
  log_p = z - np.log(np.exp(z).sum(-1, keepdims=True))
  return -log_p[np.arange(len(labels)), labels]


def test_mixed_cross_entropy_matches_numpy():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(6, 5)).astype(np.float32) * 3
  labels, partner = rng.integers(0, 5, 6), rng.integers(0, 5, 6)
  weight = rng.uniform(size=6).astype(np.float32)
  mixed = augment.MixedLabels(jnp.asarray(labels), jnp.asarray(partner),
                              jnp.asarray(weight))
  got = augment.mixed_cross_entropy(jnp.asarray(logits), mixed)
  expected = (weight * _np_ce(logits, labels) +
              (1 - weight) * _np_ce(logits, partner))
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  plain = augment.mixed_cross_entropy(jnp.asarray(logits),
                                      augment.MixedLabels.unmixed(labels))
  np.testing.assert_allclose(plain, _np_ce(logits, labels), rtol=1e-5)
  np.testing.assert_allclose(plain.mean(), losses.cross_entropy(logits, labels),
                             rtol=1e-5)
  out_of_range = augment.MixedLabels(jnp.asarray([9] * 6), jnp.asarray(partner),
                                     jnp.asarray(weight))  # was a NaN row
  with pytest.raises(ValueError, match=r"mixed.labels must lie in \[0, 5\)"):
    augment.mixed_cross_entropy(jnp.asarray(logits), out_of_range)
  floats = augment.MixedLabels(jnp.asarray(labels), jnp.asarray(partner, jnp.float32),
                               jnp.asarray(weight))
  with pytest.raises(ValueError, match="mixed.partner_labels must be integers"):
    jax.jit(augment.mixed_cross_entropy)(jnp.asarray(logits), floats)
  with pytest.raises(ValueError, match="joint_mixed_labels"):
    augment.mixed_cross_entropy(jnp.zeros((12, 5)), mixed)


def test_map_repeat_views_and_joint_labels_layout():
  labels, partner = np.array([3, 1, 4]), np.array([1, 5, 9])
  weight = np.array([0.2, 0.5, 1.0], np.float32)
  mixed = augment.MixedLabels(jnp.asarray(labels), jnp.asarray(partner),
                              jnp.asarray(weight))
  m = 4
  rep = augment.repeat_views(mixed, m)
  np.testing.assert_array_equal(rep.labels, np.repeat(labels, m))
  np.testing.assert_array_equal(rep.partner_labels, np.repeat(partner, m))
  np.testing.assert_array_equal(rep.weight, np.repeat(weight, m))
  mapped = mixed.map(lambda y: y * 10)
  np.testing.assert_array_equal(mapped.labels, labels * 10)
  np.testing.assert_array_equal(mapped.partner_labels, partner * 10)
  np.testing.assert_array_equal(mapped.weight, weight)
  joint = augment.joint_mixed_labels(mixed, m)
  views = np.tile(np.arange(m), 3)
  np.testing.assert_array_equal(joint.labels, np.repeat(labels, m) * m + views)
  np.testing.assert_array_equal(joint.labels, losses.joint_labels(labels, m))
  np.testing.assert_array_equal(joint.partner_labels,
                                np.repeat(partner, m) * m + views)
  np.testing.assert_array_equal(joint.weight, np.repeat(weight, m))
  # Same as repeating the rows, then mapping each row to its joint label.
  via_rows = rep.map(lambda y: y * m + jnp.asarray(views))
  for a, b in zip(jax.tree.leaves(joint), jax.tree.leaves(via_rows)):
    np.testing.assert_array_equal(a, b)
  loss = augment.mixed_cross_entropy(jnp.zeros((3 * m, 10 * m)), joint)
  np.testing.assert_allclose(loss, np.log(10 * m), rtol=1e-6)


def test_mixed_labels_is_a_pytree():
  mixed = augment.MixedLabels.unmixed(jnp.arange(4))
  assert len(jax.tree.leaves(mixed)) == 3
  out = jax.jit(lambda m: m.map(lambda y: y + 1))(mixed)
  assert isinstance(out, augment.MixedLabels)
  np.testing.assert_array_equal(out.labels, np.arange(4) + 1)
  assert out.weight.dtype == jnp.float32 and (np.asarray(out.weight) == 1).all()


# ---------------------------------------------------------------------------
# RandAugment ops against PIL (uint8 images, values i / 255).


def _ours(fn, u8, *params):
  """fn(image, *params) over a uint8 batch, returned on the 0..255 scale."""
  return np.asarray(_batched(fn)(_float(u8), *params), np.float64) * 255


def _pil(fn, u8):
  return np.stack([np.asarray(fn(Image.fromarray(im)), np.float64)
                   for im in u8])


def _low_contrast(u8):
  return (60 + u8 // 3).astype(np.uint8)


@pytest.mark.parametrize("bits", [1, 2, 4, 6, 8])
def test_posterize_matches_pil(images_u8, bits):
  got = _ours(augment.posterize, images_u8, bits)
  want = _pil(lambda im: ImageOps.posterize(im, bits), images_u8)
  np.testing.assert_allclose(got, want, atol=1e-3)


@pytest.mark.parametrize("threshold", [0, 1, 77, 128, 255, 256])
def test_solarize_matches_pil(images_u8, threshold):
  got = _ours(augment.solarize, images_u8, threshold / 255)
  want = _pil(lambda im: ImageOps.solarize(im, threshold), images_u8)
  np.testing.assert_allclose(got, want, atol=1e-3)


def test_autocontrast_matches_pil(images_u8):
  flat = np.full((1, H, W, 3), 90, np.uint8)
  for u8 in (images_u8, _low_contrast(images_u8), flat):
    got = _ours(augment.autocontrast, u8)
    want = _pil(ImageOps.autocontrast, u8)
    # PIL truncates its uint8 table (int(x * scale + offset)); we do not.
    np.testing.assert_allclose(got, want, atol=1 + 1e-3)
  stretched = _ours(augment.autocontrast, _low_contrast(images_u8))
  np.testing.assert_allclose(stretched.min(axis=(1, 2)), 0, atol=1e-3)
  np.testing.assert_allclose(stretched.max(axis=(1, 2)), 255, atol=1e-3)
  np.testing.assert_allclose(_ours(augment.autocontrast, flat), 90, atol=1e-3)


def test_equalize_matches_pil(images_u8):
  # Step 1 with a large top bin: PIL's table exceeds 255 there and is clipped.
  v = np.full(H * W, 255, np.uint8)
  v[:400] = np.repeat(np.arange(200), 2)
  tall = v.reshape(1, H, W, 1).repeat(3, -1)
  tall[..., 1] = tall[0, ::-1, :, 1]
  tall[..., 2] = 7  # a constant channel is kept
  for u8 in (images_u8, _low_contrast(images_u8), tall):
    got = _ours(augment.equalize, u8)
    want = _pil(ImageOps.equalize, u8)
    np.testing.assert_allclose(got, want, atol=1e-3)
  np.testing.assert_allclose(_ours(augment.equalize, tall)[..., 2], 7,
                             atol=1e-3)


_ENHANCE = [("color", augment.color, ImageEnhance.Color),
            ("contrast", augment.contrast, ImageEnhance.Contrast),
            ("brightness", augment.brightness, ImageEnhance.Brightness),
            ("sharpness", augment.sharpness, ImageEnhance.Sharpness)]


@pytest.mark.parametrize("name, ours, theirs", _ENHANCE,
                         ids=[e[0] for e in _ENHANCE])
def test_enhance_ops_match_pil(images_u8, name, ours, theirs):
  del name
  for factor in (0.0, 0.3, 1.0, 1.9):
    got = _ours(ours, images_u8, factor)
    want = _pil(lambda im: theirs(im).enhance(factor), images_u8)
    # PIL rounds its grey / smoothed image and truncates the blend to uint8.
    np.testing.assert_allclose(got, want, atol=2)
    if factor == 1.0:
      np.testing.assert_allclose(got, images_u8, atol=1e-3)


# ---------------------------------------------------------------------------
# Geometric ops.


def _np_affine(image, linear, shift=(0.0, 0.0), fill=0.5):
  """Numpy reference: output p samples the input at c + A(p - c) - shift."""
  h, w = image.shape[:2]
  centre = np.array([(h - 1) / 2, (w - 1) / 2])
  rows, cols = np.mgrid[:h, :w]
  p = np.stack([rows, cols], -1).astype(np.float64) - centre
  src = p @ np.asarray(linear, np.float64).T + centre - np.asarray(shift)
  out = np.full(image.shape, fill, np.float64)
  for r in range(h):
    for c in range(w):
      y, x = src[r, c]
      if not (0 <= y <= h - 1 and 0 <= x <= w - 1):
        continue
      y0, x0 = int(np.floor(y)), int(np.floor(x))
      y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
      fy, fx = y - y0, x - x0
      out[r, c] = ((1 - fy) * (1 - fx) * image[y0, x0]
                   + (1 - fy) * fx * image[y0, x1]
                   + fy * (1 - fx) * image[y1, x0]
                   + fy * fx * image[y1, x1])  # bilinear
  return out


def test_rotate_quarter_turns_equal_rot90(images_u8):
  x = np.asarray(_float(images_u8))
  for degrees, k in [(90, 1), (180, 2), (270, 3), (-90, -1)]:
    got = _geometric(x, degrees, 0.0, 0.0, 0.5)["rotate"]
    np.testing.assert_allclose(got, np.rot90(x, k, axes=(1, 2)), atol=1e-5)


def test_geometric_ops_match_numpy_bilinear_reference(images_u8):
  x = np.asarray(_float(images_u8))
  theta = np.deg2rad(27.0)
  rotation = [[np.cos(theta), np.sin(theta)], [-np.sin(theta), np.cos(theta)]]
  for shear, pixels, fill in [(0.3, 5.5, 0.5), (-0.2, -7.0, 0.0)]:
    got = _geometric(x, 27.0, shear, pixels, fill)
    expected = {  # the pull map A and shift of each op's docstring
        "rotate": (rotation, (0, 0)),
        "shear_x": ([[1, 0], [shear, 1]], (0, 0)),
        "shear_y": ([[1, shear], [0, 1]], (0, 0)),
        "translate_x": (np.eye(2), (0, pixels)),
        "translate_y": (np.eye(2), (pixels, 0)),
    }
    for name, (linear, shift) in expected.items():
      np.testing.assert_allclose(got[name][1],
                                 _np_affine(x[1], linear, shift, fill),
                                 atol=1e-4, err_msg=name)
  moved = np.asarray(_geometric(x, 0.0, 0.0, 5.0, 0.5)["translate_x"])
  np.testing.assert_allclose(moved[:, :, 5:], x[:, :, :-5], atol=1e-6)  # right
  np.testing.assert_allclose(moved[:, :, :5], 0.5, atol=1e-6)


# ---------------------------------------------------------------------------
# Every RandAugment op at once, jitted once for an [8, 32, 32, 3] batch.


@jax.jit
@jax.jit
def _all_ops(images, level, sign):
  # One compiled call for the 14 ops (level, sign traced: no recompiles).
  return {name: jax.vmap(lambda im, op=op: op(im, level, sign, 0.5))(images)
          for name, op in augment.RANDAUGMENT_OPS.items()}


def test_op_names_are_the_paper_list():
  assert set(augment.RANDAUGMENT_OP_NAMES) == {
      "Identity", "AutoContrast", "Equalize", "Rotate", "Solarize", "Color",
      "Posterize", "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY",
      "TranslateX", "TranslateY"}


def test_ops_at_magnitude_zero_are_identity(images_u8):
  x = _float(images_u8)
  for sign in (1.0, -1.0):
    for name, out in _all_ops(x, 0.0, sign).items():
      if name not in ("AutoContrast", "Equalize"):  # no magnitude
        np.testing.assert_allclose(out, x, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("level", [0.5, 1.0, 3.0])
def test_ops_keep_shape_dtype_and_range_and_change_the_image(images_u8, level):
  x = _float(_low_contrast(images_u8))  # AutoContrast / Equalize change these
  for sign in (1.0, -1.0):
    for name, out in _all_ops(x, level, sign).items():
      assert out.shape == x.shape and out.dtype == jnp.float32, name
      out = np.asarray(out)
      assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1, name
      changed = np.abs(out - np.asarray(x)).max(axis=(1, 2, 3)) > 1e-3
      assert changed.all() == (name != "Identity"), (name, changed)


def _geo(name, degrees=0.0, shear=0.0, pixels=0.0):
  return lambda x: _geometric(x, degrees, shear, pixels, 0.5)[name]


def _prim(fn, *params):
  return lambda x: _batched(fn)(x, *params)


# (op, level, sign, the primitive with the parameter the docstring's table gives)
_MAPPING = [
    ("Rotate", 1.0, -1.0, _geo("rotate", degrees=-30.0)),
    ("Rotate", 3.0, 1.0, _geo("rotate", degrees=90.0)),
    ("Solarize", 0.5, 1.0, _prim(augment.solarize, 128 / 255)),
    ("Posterize", 1.0, 1.0, _prim(augment.posterize, 4)),
    ("Posterize", 0.5, -1.0, _prim(augment.posterize, 6)),
    ("Posterize", 0.9, 1.0, _prim(augment.posterize, 4)),  # round(3.6) = 4
    ("Posterize", 3.0, 1.0, _prim(augment.posterize, 1)),
    ("Color", 1.0, -1.0, _prim(augment.color, 0.1)),
    ("Contrast", 0.5, 1.0, _prim(augment.contrast, 1.45)),
    ("Brightness", 3.0, -1.0, _prim(augment.brightness, 0.0)),
    ("Sharpness", 1.0, 1.0, _prim(augment.sharpness, 1.9)),
    ("ShearX", 1.0, 1.0, _geo("shear_x", shear=0.3)),
    ("ShearY", 0.5, -1.0, _geo("shear_y", shear=-0.15)),
    ("TranslateX", 1.0, 1.0, _geo("translate_x", pixels=0.45 * W)),
    ("TranslateY", 1.0, -1.0, _geo("translate_y", pixels=-0.45 * H)),
]


def test_magnitude_mapping(images_u8):
  x = _float(images_u8)
  for name, level, sign, expected in _MAPPING:
    np.testing.assert_allclose(_all_ops(x, level, sign)[name], expected(x),
                               atol=1e-5, err_msg=f"{name} {level} {sign}")


# ---------------------------------------------------------------------------
# rand_augment.

_rand_augment = jax.jit(augment.rand_augment, static_argnames=("num_ops",))


def test_rand_augment_applies_one_listed_op_per_example(images_u8):
  """num_ops=1: each output is one of the 14 ops (either sign) of its input."""
  x = _float(images_u8)
  level = 0.9
  candidates = {}
  for sign in (1.0, -1.0):
    for name, out in _all_ops(x, level, sign).items():
      candidates[(name, sign)] = np.asarray(out)
  unsigned = {"Identity", "AutoContrast", "Equalize", "Solarize", "Posterize"}
  chosen, both_signs = set(), False
  for seed in range(4):
    out = np.asarray(_rand_augment(jax.random.key(seed), x, num_ops=1,
                                   magnitude=9.0))
    signs = set()
    for b in range(B):
      hits = [k for k, c in candidates.items()
              if np.abs(c[b] - out[b]).max() < 1e-5]
      assert hits, f"example {b} (seed {seed}) is none of the ops"
      chosen.add(hits[0][0])
      if hits[0][0] not in unsigned:
        signs.add(hits[0][1])
    both_signs |= len(signs) == 2
  assert len(chosen) >= 8  # many different ops were drawn
  assert both_signs  # each example draws its own sign


def test_rand_augment_shape_dtype_range_and_keys(images_u8):
  x = _float(images_u8)
  out1 = _rand_augment(jax.random.key(0), x, num_ops=2, magnitude=9.0)
  out2 = _rand_augment(jax.random.key(1), x, num_ops=2, magnitude=9.0)
  assert out1.shape == x.shape and out1.dtype == jnp.float32
  for out in (out1, out2):
    out = np.asarray(out)
    assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
  assert not np.allclose(out1, out2)
  again = _rand_augment(jax.random.key(0), x, num_ops=2, magnitude=9.0)
  np.testing.assert_array_equal(out1, again)  # a pure function of the key
  none = _rand_augment(jax.random.key(0), x, num_ops=0, magnitude=9.0)
  np.testing.assert_array_equal(none, x)


def test_rand_augment_is_random_per_example(images_u8):
  same = jnp.repeat(_float(images_u8[:1]), B, axis=0)
  for seed in range(3):
    out = np.asarray(_rand_augment(jax.random.key(seed), same, num_ops=2,
                                   magnitude=9.0))
    distinct = {np.round(o, 4).tobytes() for o in out}
    assert len(distinct) >= 6, (seed, len(distinct))


def test_rand_augment_rejects_bad_arguments():
  x = jnp.zeros((2, 8, 8, 3))
  with pytest.raises(ValueError, match="magnitude"):
    augment.rand_augment(jax.random.key(0), x, 2, 31.0)
  with pytest.raises(ValueError, match="NHWC"):
    augment.rand_augment(jax.random.key(0), x[0], 2, 9.0)
  with pytest.raises(ValueError, match="num_ops"):
    augment.rand_augment(jax.random.key(0), x, -1, 9.0)
  for op in (augment.rand_augment, augment.auto_augment):  # uint8 was clipped to 0/1
    with pytest.raises(ValueError, match=r"takes float images in \[0, 1\]; got uint8"):
      op(jax.random.key(0), jnp.zeros((2, 8, 8, 3), jnp.uint8))


# ---------------------------------------------------------------------------
# auto_augment.

_auto_augment = jax.jit(augment.auto_augment, static_argnames=("policy",))


def _torchvision_policies():
  """torchvision's AutoAugment policies, read from its source without importing
  it (its import may fail where torch and torchvision versions differ)."""
  spec = importlib.util.find_spec("torchvision")
  if spec is None or not spec.submodule_search_locations:
    pytest.skip("torchvision is not installed")
  path = pathlib.Path(spec.submodule_search_locations[0], "transforms",
                      "autoaugment.py")
  tree = ast.parse(path.read_text())
  policies = {}
  for node in ast.walk(tree):
    if isinstance(node, ast.If) and isinstance(node.test, ast.Compare):
      name = getattr(node.test.comparators[0], "attr", None)
      returned = node.body[0]
      if name and isinstance(returned, ast.Return) and isinstance(
          returned.value, ast.List):
        policies[name.lower()] = ast.literal_eval(returned.value)
  return policies


def test_auto_augment_policies_are_torchvisions():
  """The three learned policies equal torchvision's, sub-policy by sub-policy."""
  theirs = _torchvision_policies()
  assert set(theirs) == set(augment.AUTOAUGMENT_POLICIES) == {
      "cifar10", "imagenet", "svhn"}
  for name, ours in augment.AUTOAUGMENT_POLICIES.items():
    assert [tuple(sub) for sub in theirs[name]] == list(ours), name


def test_auto_augment_magnitude_bins():
  """Bin m of 10 -> torchvision's magnitude space (linspace over the bins)."""
  x = jnp.asarray(_synthetic_u8(2), jnp.float32) / 255.0
  ops, bins = augment.AUTOAUGMENT_OPS, augment.AUTOAUGMENT_BINS
  level = lambda m: m / (bins - 1)
  posterize = [int(augment._posterize_bits(level(m))) for m in range(bins)]
  assert posterize == [8, 8, 7, 7, 6, 6, 5, 5, 4, 4]
  cases = [  # (op, bin, sign, the op it must equal)
      ("Rotate", 2, 1.0, lambda im: augment.rotate(im, 30.0 * 2 / 9, 0.5)),
      ("ShearY", 8, -1.0, lambda im: augment.shear_y(im, -0.3 * 8 / 9, 0.5)),
      # int(150 / 331 * 32 * m / 9) whole pixels: 14 at bin 9, 4 at bin 3.
      ("TranslateX", 9, 1.0, lambda im: augment.translate_x(im, 14.0, 0.5)),
      ("TranslateY", 3, -1.0, lambda im: augment.translate_y(im, -4.0, 0.5)),
      ("Color", 3, -1.0, lambda im: augment.color(im, 1.0 - 0.3)),
      ("Brightness", 7, 1.0, lambda im: augment.brightness(im, 1.0 + 0.7)),
      ("Solarize", 2, 1.0, lambda im: augment.solarize(im, 1.0 - 2 / 9)),
      ("Solarize", 0, 1.0, lambda im: im),  # threshold 1: uint8 255 only
      ("Posterize", 7, 1.0, lambda im: augment.posterize(im, 5)),
      ("Invert", 0, 1.0, lambda im: 1.0 - im),
  ]
  for name, m, sign, expected in cases:
    for image in x:
      ours = ops[name](image, level(m), sign, 0.5)
      want = expected(image)
      if name == "Solarize" and m == 0:
        want = jnp.where(image >= 1.0, 0.0, image)
      np.testing.assert_allclose(ours, want, atol=1e-6, err_msg=f"{name} {m}")


def test_auto_augment_draws_sub_policies_and_step_probabilities(monkeypatch):
  """Uniform sub-policy, each step applied with its probability, in order."""
  monkeypatch.setattr(augment, "AUTOAUGMENT_POLICIES", {"test": (
      (("Invert", 0.3, None), ("Invert", 0.0, 9)),
      (("Posterize", 1.0, 9), ("Solarize", 1.0, 0)),
  )})
  n = 2000
  x = jax.random.uniform(jax.random.key(0), (n, 4, 4, 3), minval=0.05,
                         maxval=0.95)
  out = np.asarray(_auto_augment(jax.random.key(1), x, policy="test"))
  x = np.asarray(x)
  inverted = np.isclose(out, 1.0 - x, atol=1e-6).all(axis=(1, 2, 3))
  second = np.isclose(out, np.asarray(augment.posterize(x, 4)),
                      atol=1e-6).all(axis=(1, 2, 3))
  untouched = (out == x).all(axis=(1, 2, 3))
  assert (inverted | second | untouched).all()
  assert not (inverted & untouched).any()
  assert abs(second.mean() - 0.5) < 0.05  # the sub-policy, uniform
  assert abs(inverted.mean() / (1 - second.mean()) - 0.3) < 0.05  # its p


def test_auto_augment_shape_dtype_range_keys_and_errors(images_u8):
  x = _float(images_u8)
  out1 = _auto_augment(jax.random.key(0), x)
  out2 = _auto_augment(jax.random.key(1), x, policy="imagenet")
  assert out1.shape == x.shape and out1.dtype == jnp.float32
  for out in (out1, out2):
    out = np.asarray(out)
    assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
  np.testing.assert_array_equal(out1, _auto_augment(jax.random.key(0), x))
  assert not np.allclose(out1, _auto_augment(jax.random.key(2), x))
  with pytest.raises(ValueError, match="unknown policy 'cifar100'.*cifar10"):
    augment.auto_augment(jax.random.key(0), x, "cifar100")
  with pytest.raises(ValueError, match="unknown policy"):
    augment.apply("autoaugment", jax.random.key(0), x, jnp.arange(B),
                  policy="cifar100")
  with pytest.raises(ValueError, match="NHWC"):
    augment.auto_augment(jax.random.key(0), x[0])


# ---------------------------------------------------------------------------
# Real CIFAR-10 images.


def test_real_images(cifar_u8):
  x = _float(cifar_u8)
  assert x.shape == (B, H, W, 3)
  for sign in (1.0, -1.0):
    for name, out in _all_ops(x, 1.0, sign).items():
      out = np.asarray(out)
      assert out.shape == x.shape and 0 <= out.min() and out.max() <= 1, name
      changed = np.abs(out - np.asarray(x)).max(axis=(1, 2, 3)) > 1e-3
      assert changed.any() == (name != "Identity"), name
  out = np.asarray(_rand_augment(jax.random.key(0), x, num_ops=2,
                                 magnitude=9.0))
  assert (np.abs(out - np.asarray(x)).max(axis=(1, 2, 3)) > 1e-3).sum() >= 6
  cut = np.asarray(_cutout(jax.random.key(0), x, 16, 0.5))
  assert ((cut == 0.5).all(-1).sum(axis=(1, 2)) > 0).all()
  mixed_images, mixed = augment.cutmix(jax.random.key(0), x, jnp.arange(B))
  perm, w = np.asarray(mixed.partner_labels), np.asarray(mixed.weight)
  from_self = (np.asarray(mixed_images) == np.asarray(x)).all(-1).mean((1, 2))
  moved = perm != np.arange(B)
  # A partner pixel may equal the own one by chance (e.g. saturated white).
  assert (from_self[moved] >= w[moved] - 1e-6).all()
  assert (from_self[moved] <= w[moved] + 0.02).all()
  mixed_images, mixed = augment.mixup(jax.random.key(0), x, jnp.arange(B), 1.0)
  perm = np.asarray(mixed.partner_labels)
  w = np.asarray(mixed.weight)[:, None, None, None]
  x = np.asarray(x)
  np.testing.assert_allclose(mixed_images, w * x + (1 - w) * x[perm], atol=1e-5)


# ---------------------------------------------------------------------------
# The registry.


def test_apply_unknown_name_lists_the_valid_names():
  names = "none, cutout, cutmix, mixup, randaugment, autoaugment"
  with pytest.raises(ValueError, match=names):
    augment.apply("trivialaugment", jax.random.key(0), jnp.zeros((2, 4, 4, 3)),
                  jnp.arange(2))
  with pytest.raises(ValueError, match="size"):
    augment.apply("cutout", jax.random.key(0), jnp.zeros((2, 4, 4, 3)),
                  jnp.arange(2), sizes=2)
  assert augment.NAMES == tuple(augment.AUGMENTATIONS)


def test_apply_none_returns_the_inputs_with_weight_one():
  images = jnp.asarray(_normal_images())
  out, mixed = augment.apply("none", jax.random.key(0), images, jnp.arange(B))
  assert out is images
  np.testing.assert_array_equal(mixed.labels, np.arange(B))
  np.testing.assert_array_equal(mixed.partner_labels, np.arange(B))
  np.testing.assert_array_equal(mixed.weight, np.ones(B))


@pytest.mark.parametrize("name, params", [
    ("cutout", {"size": 8}), ("cutmix", {"alpha": 1.0}),
    ("mixup", {"alpha": 0.4}),
    ("randaugment", {"num_ops": 2, "magnitude": 9.0}),
    ("autoaugment", {"policy": "svhn"})])
def test_apply_returns_images_and_mixed_labels(name, params):
  images = jnp.asarray(_normal_images())
  key, labels = jax.random.key(7), jnp.arange(B)
  run = functools.partial(augment.apply, name, **params)
  shapes = jax.eval_shape(run, key, images, labels)
  assert shapes[0].shape == images.shape and shapes[0].dtype == images.dtype
  assert isinstance(shapes[1], augment.MixedLabels)
  assert [(s.shape, s.dtype) for s in jax.tree.leaves(shapes[1])] == [
      ((B,), jnp.int32), ((B,), jnp.int32), ((B,), jnp.float32)]
  # The same computation as the op itself (compared as jaxprs: no compiling).
  direct = {"cutout": lambda k, x, y: (augment.cutout(k, x, 8),
                                       augment.MixedLabels.unmixed(y)),
            "cutmix": lambda k, x, y: augment.cutmix(k, x, y, 1.0),
            "mixup": lambda k, x, y: augment.mixup(k, x, y, 0.4),
            "randaugment": lambda k, x, y: (augment.rand_augment(k, x, 2, 9.0),
                                            augment.MixedLabels.unmixed(y)),
            "autoaugment": lambda k, x, y: (augment.auto_augment(k, x, "svhn"),
                                            augment.MixedLabels.unmixed(y))}
  assert (str(jax.make_jaxpr(run)(key, images, labels)) ==
          str(jax.make_jaxpr(direct[name])(key, images, labels)))
