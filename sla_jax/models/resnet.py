"""ImageNet-layout ResNets (He et al. 2016) as the original SLA code uses them through torchvision.

7x7 stride-2 conv (64) -> BN -> ReLU -> 3x3 stride-2 max-pool -> four stages
(64, 128, 256, 512 planes; BasicBlock for ResNet-18/34, Bottleneck with 4x
expansion for ResNet-50) -> global average pool -> heads. The stride of a
stage's first block sits on its 3x3 conv (torchvision's "ResNet v1.5"); a
block whose shape changes gets a 1x1 conv + BN shortcut. Initialisation as
torchvision: convolutions ``kaiming_normal_(mode="fan_out")``, BatchNorm scale 1
/ bias 0 (optionally the last BN of each block zero, ``zero_init_residual``),
heads PyTorch's default ``nn.Linear`` init; BatchNorm eps 1e-5, momentum 0.1.

Registered as ``resnet18``, ``resnet34`` and ``resnet50``; the output is
``{"features": [B, 512 * expansion], <head>: [B, size], ...}`` like every
model of :mod:`sla_jax.models`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sla_jax.models import heads as heads_lib
from sla_jax.models import registry
from sla_jax.models.cifar_resnet import (_check_conv_weight_grad, _check_images,
                                         batch_norm, conv_init, conv_layer,
                                         torch_linear_bias_init,
                                         torch_linear_kernel_init)

__all__ = ["ResNet", "BasicBlock", "Bottleneck", "LAYOUTS"]


class _Block(nn.Module):
  planes: int
  strides: int = 1
  dtype: Any = jnp.float32
  use_fast_variance: bool = False
  fused_batch_norm: bool = False
  zero_init_residual: bool = False
  conv_weight_grad: str = "auto"

  def _layers(self, train: bool):
    conv = conv_layer(self.dtype, self.conv_weight_grad)
    norm = batch_norm(train, self.dtype, self.use_fast_variance,
                      self.fused_batch_norm)
    last_scale = (nn.initializers.zeros if self.zero_init_residual
                  else nn.initializers.ones)
    return conv, norm, last_scale

  def _shortcut(self, x, out_channels, conv, norm):
    if self.strides == 1 and x.shape[-1] == out_channels:
      return x
    x = conv(out_channels, (1, 1), strides=(self.strides,) * 2,
             padding="VALID", name="downsample_conv")(x)
    return norm(name="downsample_bn")(x)


class BasicBlock(_Block):
  """3x3 conv -> BN -> ReLU -> 3x3 conv -> BN, + shortcut, ReLU (expansion 1)."""
  expansion = 1

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    conv, norm, last_scale = self._layers(train)
    y = conv(self.planes, (3, 3), strides=(self.strides,) * 2,
             padding=((1, 1), (1, 1)), name="conv1")(x)
    y = nn.relu(norm(name="bn1")(y))
    y = conv(self.planes, (3, 3), padding=((1, 1), (1, 1)), name="conv2")(y)
    y = norm(name="bn2", scale_init=last_scale)(y)
    return nn.relu(y + self._shortcut(x, self.planes, conv, norm))


class Bottleneck(_Block):
  """1x1 -> 3x3 (stride) -> 1x1 (4x planes) convs with BN, + shortcut, ReLU."""
  expansion = 4

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    conv, norm, last_scale = self._layers(train)
    y = nn.relu(norm(name="bn1")(conv(self.planes, (1, 1), padding="VALID",
                                      name="conv1")(x)))
    y = conv(self.planes, (3, 3), strides=(self.strides,) * 2,
             padding=((1, 1), (1, 1)), name="conv2")(y)
    y = nn.relu(norm(name="bn2")(y))
    y = conv(self.planes * 4, (1, 1), padding="VALID", name="conv3")(y)
    y = norm(name="bn3", scale_init=last_scale)(y)
    return nn.relu(y + self._shortcut(x, self.planes * 4, conv, norm))


# name -> (block, blocks per stage), as torchvision.
LAYOUTS = {"resnet18": (BasicBlock, (2, 2, 2, 2)),
           "resnet34": (BasicBlock, (3, 4, 6, 3)),
           "resnet50": (Bottleneck, (3, 4, 6, 3))}


class ResNet(nn.Module):
  """An ImageNet-layout ResNet with named output heads (see the module doc).

  Attributes:
    block: :class:`BasicBlock` or :class:`Bottleneck`.
    stage_sizes: Blocks in each of the four stages.
    heads: Output heads, name -> number of outputs (an objective's ``heads``).
    dtype: Computation dtype (parameters and BatchNorm statistics float32).
    use_fast_variance: One-pass BatchNorm variance.
    fused_batch_norm: BatchNorm with a closed-form backward pass (fewer GPU
      kernels; :mod:`sla_jax.models.batch_norm`).
    zero_init_residual: Zero-initialise each block's last BatchNorm scale.
    conv_weight_grad: ``auto``, ``xla`` or ``matmul`` (the matmul weight
      gradient applies to the 3x3 convs only).
  """
  block: type = BasicBlock
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  heads: Mapping[str, int] | None = None
  dtype: Any = jnp.float32
  use_fast_variance: bool = False
  fused_batch_norm: bool = False
  zero_init_residual: bool = False
  conv_weight_grad: str = "auto"

  def __post_init__(self):
    _check_conv_weight_grad(self.conv_weight_grad)
    heads_lib.check_heads("ResNet", self.heads)
    jnp.dtype(self.dtype)
    if len(self.stage_sizes) != 4:
      raise ValueError(f"ResNet stage_sizes must list 4 stages; got "
                       f"{self.stage_sizes}.")
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> dict[str, jax.Array]:
    _check_images("ResNet", x)
    dtype = jnp.dtype(self.dtype)
    x = x.astype(dtype)
    x = nn.Conv(64, (7, 7), strides=(2, 2), padding=((3, 3), (3, 3)),
                use_bias=False, kernel_init=conv_init, dtype=dtype,
                name="conv1")(x)
    x = batch_norm(train, dtype, self.use_fast_variance,
                   self.fused_batch_norm)(name="bn1")(x)
    x = nn.max_pool(nn.relu(x), (3, 3), strides=(2, 2),
                    padding=((1, 1), (1, 1)))
    for stage, blocks in enumerate(self.stage_sizes):
      for i in range(blocks):
        x = self.block(64 * 2 ** stage, 2 if (stage > 0 and i == 0) else 1,
                       dtype=dtype, use_fast_variance=self.use_fast_variance,
                       fused_batch_norm=self.fused_batch_norm,
                       zero_init_residual=self.zero_init_residual,
                       conv_weight_grad=self.conv_weight_grad,
                       name=f"layer{stage + 1}_{i}")(x, train)
    features = jnp.mean(x, axis=(1, 2))
    out = {"features": features}
    fan_in = features.shape[-1]
    for head, size in (self.heads or {}).items():
      out[head] = nn.Dense(size, dtype=dtype,
                           kernel_init=torch_linear_kernel_init,
                           bias_init=torch_linear_bias_init(fan_in),
                           name=f"{head}_head")(features)
    return out


for _name, (_block, _sizes) in LAYOUTS.items():
  registry.register(_name, functools.partial(ResNet, block=_block,
                                             stage_sizes=_sizes))
