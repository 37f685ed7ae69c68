"""BatchNorm with its backward pass written out: fewer GPU kernels, same model.

:class:`FusedBatchNorm` holds the same variables as ``flax.linen.BatchNorm``
(``params/scale``, ``params/bias``, ``batch_stats/mean``, ``batch_stats/var``),
computes the same forward values and running statistics bit for bit (feature
axis last, statistics over every other axis, in float32), and differs only in
its gradient: a ``custom_vjp`` with the closed form

    dx = scale / sigma * (dy - mean(dy) - x_hat * mean(dy * x_hat))

that is, two sums (``sum dy``, ``sum dy * x_hat``, which are also the bias
and scale gradients; off the CPU one reduction of both side by side, which
XLA:GPU finishes in one kernel instead of two) and one elementwise pass.
Autodiff through the statistics instead differentiates each reduction
separately; on a GPU that is several more small kernels per layer, and a
small network's step is bound by its kernel count (BENCHMARKS.md, "Kernels per step on a GPU").
Gradients equal autodiff's to float rounding (tests/test_batch_norm.py).

Not supported (use ``flax.linen.BatchNorm``): ``axis_name`` (statistics
across a ``pmap``/``shard_map`` axis; under ``jit`` with shardings XLA sums
across devices by itself), masks, feature axes other than the last.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["FusedBatchNorm", "batch_statistics"]


def batch_statistics(x: jax.Array, use_fast_variance: bool
                     ) -> tuple[jax.Array, jax.Array]:
  """Float32 ``(mean, biased variance)`` over all axes but the last, as Flax's BatchNorm.

  ``use_fast_variance``: ``E[x^2] - E[x]^2`` (one reduction pass, clipped at
  0) instead of ``E[(x - E[x])^2]``.
  """
  axes = tuple(range(x.ndim - 1))
  x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  mean = x.mean(axes)
  if use_fast_variance:
    return mean, jnp.maximum(0.0, jnp.square(x).mean(axes) - jnp.square(mean))
  return mean, jnp.square(x - mean).mean(axes)


def _output_dtype(x, scale, dtype):
  return dtype if dtype is not None else jnp.result_type(x, scale)


def _normalize(x, mean, var, scale, bias, epsilon, dtype):
  """Flax's ``_normalize``, in its order of operations."""
  multiplier = jax.lax.rsqrt(var + epsilon) * scale
  return jnp.asarray((x - mean) * multiplier + bias,
                     _output_dtype(x, scale, dtype))


def _separate_sums(a, b, axes):
  """``(a.sum(axes), b.sum(axes))``: two reductions (faster on the CPU)."""
  return a.sum(axes), b.sum(axes)


def _joint_sums(a, b, axes):
  """The same sums as one reduction of ``a`` and ``b`` side by side on the last axis.

  On a GPU each separate reduction ends in a kernel of its own; this one ends
  in one (BENCHMARKS.md, "Kernels per step on a GPU"). Equal to
  :func:`_separate_sums` up to float rounding.
  """
  return tuple(jnp.split(jnp.concatenate([a, b], -1).sum(axes), 2))


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def _train_normalize(x, mean, var, scale, bias, epsilon, dtype):
  """Normalises ``x`` by its own batch ``mean, var`` (which must be exactly those of ``x``).

  The gradient accounts for ``mean`` and ``var`` depending on ``x``; their
  own cotangents are ignored (the caller stops their gradients).
  """
  return _normalize(x, mean, var, scale, bias, epsilon, dtype)


def _train_normalize_fwd(x, mean, var, scale, bias, epsilon, dtype):
  y = _normalize(x, mean, var, scale, bias, epsilon, dtype)
  return y, (x, mean, jax.lax.rsqrt(var + epsilon), scale)


def _train_normalize_bwd(epsilon, dtype, residuals, dy):
  del epsilon, dtype
  x, mean, inv_std, scale = residuals
  axes = tuple(range(x.ndim - 1))
  n = x.size // x.shape[-1]
  x_hat = (x.astype(mean.dtype) - mean) * inv_std
  dy = dy.astype(mean.dtype)
  dbias, dscale = jax.lax.platform_dependent(
      dy, dy * x_hat, cpu=functools.partial(_separate_sums, axes=axes),
      default=functools.partial(_joint_sums, axes=axes))
  dx = (scale * inv_std) * (dy - (dbias + x_hat * dscale) / n)
  return (dx.astype(x.dtype), jnp.zeros_like(mean), jnp.zeros_like(mean),
          dscale.astype(scale.dtype), dbias.astype(scale.dtype))


_train_normalize.defvjp(_train_normalize_fwd, _train_normalize_bwd)


class FusedBatchNorm(nn.Module):
  """``flax.linen.BatchNorm`` (last feature axis) with a closed-form backward pass.

  Attributes:
    use_running_average: Normalise by the stored statistics (evaluation)
      instead of the batch's (training, which also updates them unless the
      module is initialising).
    momentum: Decay of the running statistics (Flax's convention: PyTorch's
      momentum 0.1 is 0.9 here).
    epsilon: Added to the variance.
    dtype: Output dtype (default: ``x`` promoted with the float32 scale).
    use_fast_variance: One-pass variance (:func:`batch_statistics`).
    scale_init, bias_init: Initialisers of the float32 scale and bias.
  """
  use_running_average: bool | None = None
  momentum: float = 0.99
  epsilon: float = 1e-5
  dtype: Any = None
  use_fast_variance: bool = True
  scale_init: Any = nn.initializers.ones
  bias_init: Any = nn.initializers.zeros

  @nn.compact
  def __call__(self, x: jax.Array, use_running_average: bool | None = None
               ) -> jax.Array:
    use_running_average = nn.merge_param(
        "use_running_average", self.use_running_average, use_running_average)
    features = (x.shape[-1],)
    ra_mean = self.variable("batch_stats", "mean",
                            lambda s: jnp.zeros(s, jnp.float32), features)
    ra_var = self.variable("batch_stats", "var",
                           lambda s: jnp.ones(s, jnp.float32), features)
    scale = self.param("scale", self.scale_init, features, jnp.float32)
    bias = self.param("bias", self.bias_init, features, jnp.float32)
    if use_running_average:
      return _normalize(x, ra_mean.value, ra_var.value, scale, bias,
                        self.epsilon, self.dtype)
    mean, var = jax.lax.stop_gradient(
        batch_statistics(x, self.use_fast_variance))
    if not self.is_initializing():
      ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
      ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
    return _train_normalize(x, mean, var, scale, bias, self.epsilon,
                            None if self.dtype is None else jnp.dtype(self.dtype))
