"""Wide ResNets for CIFAR (Zagoruyko & Komodakis 2016): WRN-d-k, pre-activation blocks.

3x3 conv (16) -> three groups of ``(d - 4) / 6`` pre-activation blocks
(BN -> ReLU -> 3x3 conv -> [dropout] -> BN -> ReLU -> 3x3 conv, + shortcut)
with ``16k, 32k, 64k`` channels, stride 2 at the first block of groups 2 and
3, a 1x1 conv shortcut where the shape changes -> BN -> ReLU -> global average
pool -> heads. Convolutions ``kaiming_normal_(mode="fan_out")`` as the other
models, heads PyTorch's ``nn.Linear`` init.

Registered as ``wide_resnet`` (any ``depth`` / ``width``) and
``wide_resnet28_10``; output ``{"features": [B, 64k], <head>: ...}`` like
every model of :mod:`sla_jax.models`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sla_jax.models import heads as heads_lib
from sla_jax.models import registry
from sla_jax.models.cifar_resnet import (_check_conv_weight_grad, _check_images,
                                         batch_norm, conv_layer,
                                         torch_linear_bias_init,
                                         torch_linear_kernel_init)

__all__ = ["WideResNet", "WideBlock"]


class WideBlock(nn.Module):
  """One pre-activation wide block (dropout between the convs when training)."""
  features: int
  strides: int = 1
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32
  use_fast_variance: bool = False
  fused_batch_norm: bool = False
  conv_weight_grad: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    conv = conv_layer(self.dtype, self.conv_weight_grad)
    norm = batch_norm(train, self.dtype, self.use_fast_variance,
                      self.fused_batch_norm)
    pre = nn.relu(norm(name="bn1")(x))
    y = conv(self.features, (3, 3), strides=(self.strides,) * 2,
             padding=((1, 1), (1, 1)), name="conv1")(pre)
    y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
    y = nn.relu(norm(name="bn2")(y))
    y = conv(self.features, (3, 3), padding=((1, 1), (1, 1)), name="conv2")(y)
    if self.strides != 1 or x.shape[-1] != self.features:
      x = conv(self.features, (1, 1), strides=(self.strides,) * 2,
               padding="VALID", name="shortcut")(pre)
    return x + y


class WideResNet(nn.Module):
  """WRN-``depth``-``width`` with named output heads.

  Attributes:
    depth: ``6n + 4`` (28 for WRN-28-10).
    width: The widening factor ``k``.
    heads: Output heads, name -> size.
    dropout_rate: Dropout between each block's convs in training (0.3 in
      the WRN paper's dropout variant; it draws from the ``dropout`` rng).
    dtype, use_fast_variance, fused_batch_norm, conv_weight_grad: as every
      model.
  """
  depth: int = 28
  width: int = 10
  heads: Mapping[str, int] | None = None
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32
  use_fast_variance: bool = False
  fused_batch_norm: bool = False
  conv_weight_grad: str = "auto"

  def __post_init__(self):
    if (self.depth - 4) % 6 or self.depth < 10 or self.width < 1:
      raise ValueError(f"WideResNet depth must be 6n + 4 (e.g. 16, 28, 40) and "
                       f"width >= 1; got depth={self.depth}, "
                       f"width={self.width}.")
    if not 0 <= self.dropout_rate < 1:
      raise ValueError(f"dropout_rate must be in [0, 1); got "
                       f"{self.dropout_rate}.")
    _check_conv_weight_grad(self.conv_weight_grad)
    heads_lib.check_heads("WideResNet", self.heads)
    jnp.dtype(self.dtype)
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> dict[str, jax.Array]:
    _check_images("WideResNet", x)
    dtype = jnp.dtype(self.dtype)
    x = conv_layer(dtype, self.conv_weight_grad)(
        16, (3, 3), padding=((1, 1), (1, 1)), name="conv1")(x.astype(dtype))
    blocks = (self.depth - 4) // 6
    for group, channels in enumerate((16, 32, 64)):
      for i in range(blocks):
        x = WideBlock(channels * self.width, 2 if (group and not i) else 1,
                      self.dropout_rate, dtype, self.use_fast_variance,
                      self.fused_batch_norm, self.conv_weight_grad,
                      name=f"group{group + 1}_{i}")(x, train)
    x = batch_norm(train, dtype, self.use_fast_variance,
                   self.fused_batch_norm)(name="bn")(x)
    features = jnp.mean(nn.relu(x), axis=(1, 2))
    out = {"features": features}
    for head, size in (self.heads or {}).items():
      out[head] = nn.Dense(size, dtype=dtype,
                           kernel_init=torch_linear_kernel_init,
                           bias_init=torch_linear_bias_init(features.shape[-1]),
                           name=f"{head}_head")(features)
    return out


registry.register("wide_resnet", WideResNet)
registry.register("wide_resnet28_10",
                  functools.partial(WideResNet, depth=28, width=10))
