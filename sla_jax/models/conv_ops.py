"""A 3x3 convolution whose weight gradient is a matrix multiplication over patches.

XLA's CPU backend computes convolution weight gradients slowly (it transposes
the activations into the layout of a batch-contracting convolution). Writing
the gradient as ``dW = patches(x)^T @ dy`` (the nine shifted copies of the
padded input side by side, times the output gradient) is faster on CPU for
inputs of 16x16 and larger; below that XLA's own is as fast or faster, so
smaller inputs keep it (:data:`MIN_MATMUL_PIXELS`). The batch is processed in
chunks whose patches stay small (:data:`PATCH_CHUNK_BYTES`), so each chunk's
patches are still in cache when its matmul reads them. The forward and the
input gradient stay XLA's own convolutions. Pass :func:`conv_general_dilated`
to ``flax.linen.Conv(conv_general_dilated=...)``; any other convolution than a
3x3 NHWC/HWIO one with padding 1 falls back to ``lax.conv_general_dilated``.
Measurements: BENCHMARKS.md ("Where the CPU time goes").
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

__all__ = ["conv_general_dilated", "weight_grad_matmul", "MIN_MATMUL_PIXELS",
           "PATCH_CHUNK_BYTES"]

# Input H*W from which the matmul weight gradient is used (the measured
# crossover, `python -m benchmarks.xla_conv_grad`).
MIN_MATMUL_PIXELS = 16 * 16
# Largest patches matrix built at once: the batch is split into the fewest
# equal chunks whose patches fit (at least one image per chunk).
PATCH_CHUNK_BYTES = 8 * 2**20


def _conv(x, w, stride):
  return lax.conv_general_dilated(x, w, (stride, stride), ((1, 1), (1, 1)),
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _images_per_chunk(batch: int, patch_bytes_per_image: int,
                      chunk_bytes: int) -> int:
  """The largest divisor of ``batch`` whose patches fit ``chunk_bytes`` (>= 1)."""
  fits = max(1, chunk_bytes // max(1, patch_bytes_per_image))
  return max(d for d in range(1, min(batch, fits) + 1) if batch % d == 0)


def weight_grad_matmul(x: jax.Array, dy: jax.Array, stride: int,
                       chunk_bytes: int | None = PATCH_CHUNK_BYTES
                       ) -> jax.Array:
  """Gradient of a 3x3, padding-1 NHWC conv w.r.t. its HWIO kernel: ``[3, 3, C, D]``, float32.

  ``chunk_bytes``: build the patches of at most this many bytes at a time,
  summing the chunks' products (None: the whole batch at once).
  """
  batch, out_h, out_w = dy.shape[:3]
  channels = x.shape[-1]
  per_image = out_h * out_w * 9 * channels * x.dtype.itemsize
  shards = _batch_shards(x)  # each device builds its own images' patches
  size = (batch if chunk_bytes is None else shards * _images_per_chunk(
      batch // shards, per_image, chunk_bytes))
  if size == batch:
    return _patches_matmul(x, dy, stride)
  # Chunk k holds images k, k + n, k + 2n, ... (n chunks): the batch axis
  # stays the leading one, so with a batch sharded over D devices and chunks
  # of a multiple of D images each device builds its own images' patches.
  n = batch // size
  strided = lambda a: _reshape(a, (size, n) + a.shape[1:], (0, None))
  xs, dys = strided(x), strided(dy)

  def add_chunk(k, total):
    take = lambda a: lax.dynamic_index_in_dim(a, k, axis=1, keepdims=False)
    return total + _patches_matmul(take(xs), take(dys), stride)

  zero = jnp.zeros((3, 3, channels, dy.shape[-1]), jnp.float32)
  return lax.fori_loop(0, n, add_chunk, zero)


def _patches_matmul(x: jax.Array, dy: jax.Array, stride: int) -> jax.Array:
  out_h, out_w = dy.shape[1], dy.shape[2]
  padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  taps = [padded[:, kh:kh + stride * (out_h - 1) + 1:stride,
                 kw:kw + stride * (out_w - 1) + 1:stride, :]
          for kh in range(3) for kw in range(3)]
  channels = x.shape[-1]
  patches = _reshape(jnp.concatenate(taps, -1), (-1, 9 * channels), (0,))
  rows = _reshape(dy, (-1, dy.shape[-1]), (0,))
  sharding = _explicit_sharding(x)
  grad = jnp.matmul(patches.T, rows, preferred_element_type=jnp.float32,
                    out_sharding=(None if sharding is None
                                  else NamedSharding(sharding.mesh, P())))
  return grad.reshape(3, 3, channels, -1)


def _explicit_sharding(a: jax.Array) -> NamedSharding | None:
  """``a``'s sharding if its mesh has explicit axes (None otherwise)."""
  sharding = jax.typeof(a).sharding
  mesh = getattr(sharding, "mesh", None)
  if mesh is None or mesh.empty or not any(
      t == AxisType.Explicit for t in mesh.axis_types):
    return None
  return sharding


def _batch_shards(x: jax.Array) -> int:
  """The devices ``x``'s batch axis is split over, if explicitly sharded (else 1)."""
  sharding = _explicit_sharding(x)
  if sharding is None or not sharding.spec or sharding.spec[0] is None:
    return 1
  names = sharding.spec[0]
  names = names if isinstance(names, tuple) else (names,)
  return math.prod(sharding.mesh.shape[name] for name in names)


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


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv3x3(x, w, stride):
  return _conv(x, w, stride)


def _conv3x3_fwd(x, w, stride):
  return _conv(x, w, stride), (x, w)


def _conv3x3_bwd(stride, residuals, dy):
  x, w = residuals
  _, input_vjp = jax.vjp(lambda x: _conv(x, w, stride), x)
  return input_vjp(dy)[0], weight_grad_matmul(x, dy, stride).astype(w.dtype)


_conv3x3.defvjp(_conv3x3_fwd, _conv3x3_bwd)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None,
                         feature_group_count=1, **kwargs):
  """Drop-in for ``lax.conv_general_dilated`` (as Flax calls it), see module doc."""
  nhwc = lax.conv_dimension_numbers(lhs.shape, rhs.shape,
                                    ("NHWC", "HWIO", "NHWC"))
  supported = (
      lhs.ndim == 4 and tuple(rhs.shape[:2]) == (3, 3)
      and lhs.shape[1] * lhs.shape[2] >= MIN_MATMUL_PIXELS
      and dimension_numbers in (nhwc, ("NHWC", "HWIO", "NHWC"))
      and feature_group_count == 1
      and tuple(map(tuple, padding)) == ((1, 1), (1, 1))
      and len(set(window_strides)) == 1
      and all(d in (None, 1) for d in (lhs_dilation or [None]))
      and all(d in (None, 1) for d in (rhs_dilation or [None])))
  if not supported:
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count, **kwargs)
  return _conv3x3(lhs, rhs, int(window_strides[0]))
