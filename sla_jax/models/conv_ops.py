"""Convolutions whose gradients XLA's CPU backend computes fast, inside loops too.

Two things XLA:CPU does slowly are done here by hand, bit-identical to XLA's own
gradients where both are exact (tested):

* Weight gradient of a 3x3 convolution as a matrix multiplication (in the
  standard form XLA:CPU's matmul libraries take: YNNPACK by default, XLA's
  own Eigen matmul under the tools' flags, :mod:`sla_jax.xla_env`, which is
  faster for these products), faster on CPU for inputs of 16x16 and
  larger and for smaller inputs whose patches matrix is large; other layers
  keep the convolution form (:data:`MIN_MATMUL_PIXELS`,
  :data:`MIN_MATMUL_PATCH_BYTES`). Two ways to write it; the one whose
  operands take fewer bytes is used:

  - nine taps: ``dW^T = dy^T @ patches(x)``, the output gradient transposed
    times the nine shifted copies of the padded input side by side;
  - split taps (stride 1): the three column shifts go into the input and the
    three row shifts into the output gradient (zero-padded), so each operand
    is three copies instead of nine and one; the ResNet stages' layers (as
    many channels out as in) use it, the 3-channel stem and strided layers the
    nine taps.

  ``dy^T`` is computed as a matmul with the identity (exact), which XLA:CPU
  runs faster than its transpose of such narrow arrays (:func:`_transposed`). The
  batch is processed in chunks whose operands stay small
  (:data:`PATCH_CHUNK_BYTES`), so each chunk's operands are still in cache
  when its matmul reads them. Where the batch is split over devices
  (:func:`batch_axes`: an explicit sharding, or a context mesh as the trainer
  traces its step under), each device sums its own images' chunks and one
  all-reduce adds the devices' sums, instead of one per chunk.
* Every backward convolution in canonical form (NHWC input, HWIO kernel): the
  input gradient as a convolution of the output gradient with the flipped,
  in/out-swapped kernel; the weight gradient as a convolution with channels as
  the batch and images as the features. XLA rewrites its own backward
  convolutions into that form only outside loops: inside a ``while`` body
  (``config.steps_per_call > 1``) they stayed non-canonical and ran as generic
  convolution thunks, tens of times slower.

Pass :func:`conv_general_dilated` to ``flax.linen.Conv(conv_general_dilated=...)``;
convolutions other than NHWC/HWIO without dilation or feature groups fall back
to ``lax.conv_general_dilated``. Measurements: BENCHMARKS.md ("One all-reduce
per weight gradient", "The weight gradient as split taps", "Where the CPU time
goes", "The matmul weight gradient for large 8x8 layers too", "Several steps per
jitted call").
"""

from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

__all__ = ["conv_general_dilated", "canonical_conv", "input_grad",
           "weight_grad_conv", "weight_grad_matmul", "batch_axes",
           "operand_bytes_per_image",
           "MIN_MATMUL_PIXELS", "MIN_MATMUL_PATCH_BYTES", "PATCH_CHUNK_BYTES"]

# The matmul weight gradient is used for inputs of MIN_MATMUL_PIXELS (H * W)
# and more, and for smaller ones whose whole patches matrix (output rows x 9 C
# x itemsize, the global batch) reaches MIN_MATMUL_PATCH_BYTES: the choices
# that were fastest in whole training steps (BENCHMARKS.md, "The matmul
# weight gradient for large 8x8 layers too").
MIN_MATMUL_PIXELS = 16 * 16
MIN_MATMUL_PATCH_BYTES = 32 * 2**20
# Largest matmul operands built at once (both, :func:`operand_bytes_per_image`):
# the batch (each device's part where it is split over devices,
# :func:`batch_axes`) is split into the fewest equal chunks whose operands fit
# (at least one image per chunk).
PATCH_CHUNK_BYTES = 2**20


def _images_per_chunk(batch: int, bytes_per_image: int,
                      chunk_bytes: int) -> int:
  """The largest divisor of ``batch`` whose operands fit ``chunk_bytes`` (>= 1)."""
  fits = max(1, chunk_bytes // max(1, bytes_per_image))
  return max(d for d in range(1, min(batch, fits) + 1) if batch % d == 0)


def weight_grad_matmul(x: jax.Array, dy: jax.Array, stride: int,
                       chunk_bytes: int | None = PATCH_CHUNK_BYTES
                       ) -> jax.Array:
  """Gradient of a 3x3, padding-1 NHWC conv w.r.t. its HWIO kernel: ``[3, 3, C, D]``, float32.

  ``chunk_bytes``: build the matmul's operands (:func:`operand_bytes_per_image`)
  for at most this many bytes at a time, summing the chunks' products (None:
  the whole batch at once). Where the batch is split over devices
  (:func:`batch_axes`), each device sums the products of its own images, in
  chunks of its own, and one all-reduce adds the devices' sums; otherwise a
  loop over a sharded batch would sum every chunk across the devices.
  """
  mesh, axes = _batch_split(x)
  if not axes:
    return _weight_grad_in_chunks(x, dy, stride, chunk_bytes)

  def per_device(x, dy):
    return lax.psum(_weight_grad_in_chunks(x, dy, stride, chunk_bytes, axes),
                    axes)

  return jax.shard_map(per_device, mesh=mesh,
                       in_specs=(P(axes), P(axes)), out_specs=P(),
                       axis_names=frozenset(axes))(x, dy)


def batch_axes(x: jax.Array) -> tuple[str, ...]:
  """The mesh axes that split ``x``'s batch (leading) axis, for :func:`weight_grad_matmul`.

  From ``x``'s type where it is explicitly sharded (its batch axis only);
  otherwise, inside a context mesh of ``Auto`` axes
  (``jax.sharding.use_abstract_mesh``, ``jax.set_mesh``), every axis of it
  larger than 1, as in data parallelism (the trainer traces its step so).
  ``()`` where neither applies or the batch does not divide evenly.
  """
  return _batch_split(x)[1]


def _batch_split(x: jax.Array) -> tuple[object, tuple[str, ...]]:
  """``(mesh, axes)``: :func:`batch_axes` and the mesh they belong to (None
  where there are none)."""
  sharding = _explicit_sharding(x)
  if sharding is not None:
    if any(s is not None for s in tuple(sharding.spec)[1:]):
      return None, ()
    names, mesh = _explicit_batch_names(sharding), sharding.mesh
  else:
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or any(t != AxisType.Auto for t in mesh.axis_types):
      return None, ()
    names = tuple(name for name in mesh.axis_names if mesh.shape[name] > 1)
  if not names or x.shape[0] % math.prod(mesh.shape[n] for n in names):
    return None, ()
  return mesh, names


def _weight_grad_in_chunks(x: jax.Array, dy: jax.Array, stride: int,
                           chunk_bytes: int | None,
                           varying_axes: tuple[str, ...] = ()) -> jax.Array:
  """:func:`weight_grad_matmul` of the images at hand (``varying_axes``: the
  manual mesh axes they vary over, inside ``shard_map``)."""
  form = _matmul_form(x.shape[-1], dy.shape, stride)
  batch = dy.shape[0]
  shards = _batch_shards(x)  # each device builds its own images' operands
  size = (batch if chunk_bytes is None else shards * _images_per_chunk(
      batch // shards, operand_bytes_per_image(x, dy, stride), chunk_bytes))
  if size == batch:
    total = form.product(x, dy, stride)
  else:
    # Chunk k holds images k, k + n, k + 2n, ... (n chunks): the batch axis
    # stays the leading one, so with a batch sharded over D devices and
    # chunks of a multiple of D images each device builds its own images'
    # operands.
    n = batch // size
    strided = lambda a: _reshape(a, (size, n) + a.shape[1:], (0, None))
    xs, dys = strided(x), strided(dy)

    def add_chunk(k, total):
      take = lambda a: lax.dynamic_index_in_dim(a, k, axis=1, keepdims=False)
      return total + form.product(take(xs), take(dys), stride)

    zero = jnp.zeros(form.product_shape(x.shape[-1], dy.shape[-1]),
                     jnp.float32)
    if varying_axes:  # the loop's sum varies over the devices as its terms do
      zero = lax.pcast(zero, varying_axes, to="varying")
    total = lax.fori_loop(0, n, add_chunk, zero)
  # The barrier keeps XLA from folding this rearrangement into the matmul.
  return form.to_kernel(lax.optimization_barrier(total), x.shape[-1])


def operand_bytes_per_image(x: jax.Array, dy: jax.Array, stride: int) -> int:
  """Bytes of both matmul operands that :func:`weight_grad_matmul` builds per image."""
  form = _matmul_form(x.shape[-1], dy.shape, stride)
  return form.elements_per_image(x.shape[-1], dy.shape) * x.dtype.itemsize


class _MatmulForm(NamedTuple):
  """One way to write the weight gradient as ``left @ right`` (module doc)."""
  product: Callable[[jax.Array, jax.Array, int], jax.Array]
  product_shape: Callable[[int, int], tuple[int, int]]
  to_kernel: Callable[[jax.Array, int], jax.Array]
  # Elements of both operands per image, from (C, dy's shape).
  elements_per_image: Callable[[int, tuple[int, ...]], int]


def _nine_taps_product(x: jax.Array, dy: jax.Array, stride: int) -> jax.Array:
  """The weight gradient transposed, ``[D, 9 C]`` = ``dy^T @ patches(x)``.

  ``dy^T`` is materialised (:func:`_transposed`; the barrier stops XLA from
  folding it into the matmul), so the matmul contracts the last axis of its left operand
  and the first of its right one: the form XLA:CPU hands to YNNPACK. As
  ``patches^T @ dy``, which contracts both operands' first axis, it ran as a
  slower generic dot (BENCHMARKS.md, "The weight-gradient matmul in standard
  form").
  """
  out_h, out_w = dy.shape[1], dy.shape[2]
  padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  taps = [padded[:, kh:kh + stride * (out_h - 1) + 1:stride,
                 kw:kw + stride * (out_w - 1) + 1:stride, :]
          for kh in range(3) for kw in range(3)]
  channels = x.shape[-1]
  patches = _reshape(jnp.concatenate(taps, -1), (-1, 9 * channels), (0,))
  rows_t = lax.optimization_barrier(
      _transposed(_reshape(dy, (-1, dy.shape[-1]), (0,))))
  return _replicated_matmul(rows_t, patches, x)


def _split_taps_product(x: jax.Array, dy: jax.Array, stride: int) -> jax.Array:
  """Stride 1: ``[3 D, 3 C]`` = (``dy^T`` shifted down by kh = 0, 1, 2 rows)
  @ (the padded ``x`` shifted left by kw = 0, 1, 2 columns).

  Both operands run over the padded rows of each image (``H + 2``), so the
  row shift lives in the output gradient (zero rows above and below) and the
  column shift in the input: the two operands are three copies each, where
  the nine-tap patches are nine copies of ``x``. Entry ``(kh D + d, kw C +
  c)`` is the kernel's ``[kh, kw, c, d]``.
  """
  del stride  # 1
  out_w = dy.shape[2]
  padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  columns = jnp.concatenate([padded[:, :, kw:kw + out_w, :]
                             for kw in range(3)], -1)
  columns = _reshape(columns, (-1, columns.shape[-1]), (0,))
  n, h, w, d = dy.shape
  dy_t = _reshape(_transposed(_reshape(dy, (-1, d), (0,))), (d, n, h, w),
                  (None, 1))  # [D, N, H, W]
  rows = jnp.concatenate(
      [jnp.pad(dy_t, ((0, 0), (0, 0), (kh, 2 - kh), (0, 0)))
       for kh in range(3)], 0)
  rows = lax.optimization_barrier(
      _reshape(rows, (rows.shape[0], -1), (None, 1)))
  return _replicated_matmul(rows, columns, x)


def _transposed(rows: jax.Array) -> jax.Array:
  """``rows.T`` for a ``[R, D]`` array with few columns, as ``I_D @ rows^T``.

  XLA:CPU transposes such an array more slowly than its matmul libraries
  multiply it by the identity (BENCHMARKS.md, "The output gradient
  transposed by a matmul with the identity"). Exact for finite values: each
  entry is one product by 1 plus products by 0.
  """
  eye = jnp.eye(rows.shape[1], dtype=rows.dtype)
  return lax.dot_general(eye, rows, (((1,), (1,)), ((), ())),
                         precision=lax.Precision.HIGHEST)


def _replicated_matmul(left: jax.Array, right: jax.Array, like: jax.Array
                       ) -> jax.Array:
  """``left @ right`` in float32, replicated where ``like`` is explicitly sharded."""
  sharding = _explicit_sharding(like)
  return jnp.matmul(left, right, preferred_element_type=jnp.float32,
                    out_sharding=(None if sharding is None
                                  else NamedSharding(sharding.mesh, P())))


_NINE_TAPS = _MatmulForm(
    _nine_taps_product, lambda c, d: (d, 9 * c),
    lambda total, c: total.T.reshape(3, 3, c, -1),
    lambda c, dy_shape: dy_shape[1] * dy_shape[2] * (9 * c + dy_shape[3]))
_SPLIT_TAPS = _MatmulForm(
    _split_taps_product, lambda c, d: (3 * d, 3 * c),
    lambda total, c: total.reshape(3, -1, 3, c).transpose(0, 2, 3, 1),
    lambda c, dy_shape: (dy_shape[1] + 2) * dy_shape[2] * 3 * (c + dy_shape[3]))


def _matmul_form(channels: int, dy_shape, stride: int) -> _MatmulForm:
  """The form whose operands take fewer bytes (the split taps only at stride
  1; the nine taps on a tie)."""
  if stride != 1:
    return _NINE_TAPS
  return min((_NINE_TAPS, _SPLIT_TAPS),
             key=lambda form: form.elements_per_image(channels, dy_shape))


def _explicit_sharding(a: jax.Array) -> NamedSharding | None:
  """``a``'s sharding if its mesh has explicit axes (None otherwise)."""
  sharding = jax.typeof(a).sharding
  mesh = getattr(sharding, "mesh", None)
  if mesh is None or mesh.empty or not any(
      t == AxisType.Explicit for t in mesh.axis_types):
    return None
  return sharding


def _explicit_batch_names(sharding: NamedSharding) -> tuple[str, ...]:
  """The mesh axes an explicit sharding splits the leading axis over (``()``: none)."""
  spec = tuple(sharding.spec)
  if not spec or spec[0] is None:
    return ()
  return spec[0] if isinstance(spec[0], tuple) else (spec[0],)


def _batch_shards(x: jax.Array) -> int:
  """The devices ``x``'s batch axis is split over, if explicitly sharded (else 1)."""
  sharding = _explicit_sharding(x)
  if sharding is None:
    return 1
  return math.prod(sharding.mesh.shape[name]
                   for name in _explicit_batch_names(sharding))


def _reshape(a: jax.Array, shape, dims) -> jax.Array:
  """``a.reshape(shape)``; under explicit sharding new axis ``i`` is sharded as
  ``a``'s axis ``dims[i]`` (None or beyond ``dims``: unsharded)."""
  sharding = _explicit_sharding(a)
  if sharding is None:
    return a.reshape(shape)
  shape = list(shape)
  if -1 in shape:  # the one inferred size
    shape[shape.index(-1)] = a.size // math.prod(s for s in shape if s != -1)
  axes = [None if d is None else sharding.spec[d] for d in dims]
  return lax.reshape(a, tuple(shape), out_sharding=NamedSharding(
      sharding.mesh, P(*axes, *[None] * (len(shape) - len(axes)))))


_NHWC = ("NHWC", "HWIO", "NHWC")


def _pads(x_shape, kernel_hw, strides, padding):
  """``padding`` ('SAME', 'VALID' or pairs) as explicit (low, high) pairs."""
  if isinstance(padding, str):
    return tuple(lax.padtype_to_pads(x_shape[1:3], kernel_hw, strides, padding))
  return tuple(tuple(int(p) for p in pair) for pair in padding)


def input_grad(dy: jax.Array, w: jax.Array, x_shape, strides, padding
               ) -> jax.Array:
  """Gradient of an NHWC/HWIO conv w.r.t. its input, as one canonical conv.

  The output gradient, dilated by the stride, convolved with the kernel
  flipped in space and with in/out channels swapped.
  """
  pads = []
  for axis, (k, s, (low, _)) in enumerate(zip(w.shape[:2], strides, padding)):
    size, out = x_shape[1 + axis], dy.shape[1 + axis]
    pads.append((k - 1 - low, size + low - (out - 1) * s - 1))
  flipped = jnp.swapaxes(w[::-1, ::-1], 2, 3)
  return lax.conv_general_dilated(dy, flipped, (1, 1), pads,
                                  lhs_dilation=tuple(strides),
                                  dimension_numbers=_NHWC)


def weight_grad_conv(x: jax.Array, dy: jax.Array, kernel_hw, strides, padding
                     ) -> jax.Array:
  """Gradient of an NHWC/HWIO conv w.r.t. its ``[kh, kw, C, D]`` kernel, as one canonical conv.

  Channels play the batch and images the input features: ``x`` as ``[C, H, W,
  N]`` convolved with ``dy`` as an ``[Ho, Wo, N, D]`` kernel dilated by the
  stride.
  """
  pads = []
  for axis, (k, s, (low, _)) in enumerate(zip(kernel_hw, strides, padding)):
    size, out = x.shape[1 + axis], dy.shape[1 + axis]
    pads.append((low, k + (out - 1) * s - size - low))
  grad = lax.conv_general_dilated(
      jnp.transpose(x, (3, 1, 2, 0)), jnp.transpose(dy, (1, 2, 0, 3)), (1, 1),
      pads, rhs_dilation=tuple(strides), dimension_numbers=_NHWC)
  return jnp.transpose(grad, (1, 2, 0, 3))


def _forward(x, w, strides, padding, precision=None):
  return lax.conv_general_dilated(x, w, strides, padding, precision=precision,
                                  dimension_numbers=_NHWC)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _canonical_conv(x, w, strides, padding, precision):
  return _forward(x, w, strides, padding, precision)


def _canonical_conv_fwd(x, w, strides, padding, precision):
  return _forward(x, w, strides, padding, precision), (x, w)


def _canonical_conv_bwd(strides, padding, precision, residuals, dy):
  del precision  # the backward convs run at the default precision, as XLA's
  x, w = residuals
  dy = dy.astype(x.dtype)
  dx = input_grad(dy, w, x.shape, strides, padding)
  if _uses_matmul_weight_grad(x, w, strides, padding):
    dw = weight_grad_matmul(x, dy, strides[0])
  else:
    dw = weight_grad_conv(x, dy, w.shape[:2], strides, padding)
  return dx.astype(x.dtype), dw.astype(w.dtype)


_canonical_conv.defvjp(_canonical_conv_fwd, _canonical_conv_bwd)


def _uses_matmul_weight_grad(x, w, strides, padding) -> bool:
  if not (tuple(w.shape[:2]) == (3, 3) and tuple(padding) == ((1, 1), (1, 1))
          and strides[0] == strides[1]):
    return False
  if x.shape[1] * x.shape[2] >= MIN_MATMUL_PIXELS:
    return True
  rows = x.shape[0] * math.prod(-(-n // strides[0]) for n in x.shape[1:3])
  return rows * 9 * x.shape[-1] * x.dtype.itemsize >= MIN_MATMUL_PATCH_BYTES


def canonical_conv(x: jax.Array, w: jax.Array, strides=(1, 1), padding="SAME",
                   precision=None) -> jax.Array:
  """An NHWC/HWIO convolution whose gradients are canonical convs or, for 3x3
  padding-1 kernels on large inputs or with large patches, the matmul weight
  gradient (module doc)."""
  strides = tuple(int(s) for s in strides)
  return _canonical_conv(x, w, strides, _pads(x.shape, w.shape[:2], strides,
                                              padding), precision)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None,
                         feature_group_count=1, precision=None, **kwargs):
  """Drop-in for ``lax.conv_general_dilated`` (as Flax calls it), see module doc."""
  nhwc = lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
  supported = (
      lhs.ndim == 4 and not kwargs
      and dimension_numbers in (nhwc, _NHWC)
      and feature_group_count == 1
      and all(d in (None, 1) for d in (lhs_dilation or [None]))
      and all(d in (None, 1) for d in (rhs_dilation or [None])))
  if not supported:
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count, precision=precision, **kwargs)
  return canonical_conv(lhs, rhs, window_strides, padding, precision)
