"""A 3x3 convolution whose weight gradient is one matrix multiplication.

XLA's CPU backend computes convolution weight gradients slowly: for the
stage-1 convs of a ResNet-32 SLA step (512 views of 32x32x16) ~0.9 s each, 20x
the forward (``python -m benchmarks.xla_conv_grad``). Writing the gradient as
``dW = patches(x)^T @ dy`` (the nine shifted copies of the padded input side by
side, times the output gradient) is 2-3x faster there for inputs of 16x16
and larger; at 8x8 the two are even and below that XLA's own is faster (the
quickstart's 8x8 digits: 40 s with XLA's vs 49 s with the matmul everywhere),
so smaller inputs keep XLA's gradient (:data:`MIN_MATMUL_PIXELS`). The forward
and the input gradient stay XLA's own convolutions. Pass
:func:`conv_general_dilated` to ``flax.linen.Conv(conv_general_dilated=...)``;
any other convolution than a 3x3 NHWC/HWIO one with padding 1 falls back to
``lax.conv_general_dilated``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["conv_general_dilated", "weight_grad_matmul", "MIN_MATMUL_PIXELS"]

# Input H*W from which the matmul weight gradient is used (measured crossover,
# `python -m benchmarks.xla_conv_grad`: 16x16 0.21 s vs XLA 0.35 s; 8x8 even).
MIN_MATMUL_PIXELS = 16 * 16


def _conv(x, w, stride):
  return lax.conv_general_dilated(x, w, (stride, stride), ((1, 1), (1, 1)),
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))


def weight_grad_matmul(x: jax.Array, dy: jax.Array, stride: int) -> jax.Array:
  """Gradient of a 3x3, padding-1 NHWC conv w.r.t. its HWIO kernel: ``[3, 3, C, D]``."""
  out_h, out_w = dy.shape[1], dy.shape[2]
  padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  taps = [padded[:, kh:kh + stride * (out_h - 1) + 1:stride,
                 kw:kw + stride * (out_w - 1) + 1:stride, :]
          for kh in range(3) for kw in range(3)]
  channels = x.shape[-1]
  patches = jnp.concatenate(taps, -1).reshape(-1, 9 * channels)
  grad = jnp.matmul(patches.T, dy.reshape(-1, dy.shape[-1]),
                    preferred_element_type=jnp.float32)
  return grad.reshape(3, 3, channels, -1)


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
