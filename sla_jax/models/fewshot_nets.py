"""Few-shot backbones: the ResNet-12 of MetaOptNet and the classic Conv-4.

Both follow the model contract of :mod:`sla_jax.models` (NHWC images in,
``{"features": [B, D], <head>: [B, size], ...}`` out, ``dtype`` compute with
float32 parameters). Few-shot heads (:mod:`sla_jax.fewshot`) work on the
features, so ``heads`` is usually empty; a head can still be added, e.g. for
SLA pre-training on the base classes.

``resnet12`` (Lee et al. 2019, MetaOptNet; Oreshkin et al. 2018): four
residual blocks of widths (64, 160, 320, 640). A block is three
3x3 conv -> BN -> LeakyReLU(0.1) layers (no activation after the third BN),
plus a 1x1 conv -> BN shortcut, the sum, LeakyReLU(0.1) and a 2x2 max-pool of
stride 2; features are the global average pool (640-d). With ``drop_rate > 0``
the first two blocks end with plain dropout and the last two with DropBlock
(Ghiasi et al. 2018), as MetaOptNet does; both are identities at eval.

``conv4`` (Vinyals et al. 2016; Snell et al. 2017): four conv3x3 -> BN ->
ReLU -> 2x2 max-pool layers of 64 filters. The features are the global average
pool of the last map (64-d) instead of the usual flattening (1600-d at 84 px),
so any input size gives the same feature size.

Initialisation: convolutions ``normal(0, sqrt(2 / (k * k * C_out)))`` (as
MetaOptNet's ``kaiming_normal_(mode="fan_out")``), BatchNorm scale 1 / bias 0,
eps 1e-5, PyTorch momentum 0.1; convolutions have no bias (BatchNorm follows).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sla_jax.models import heads as heads_lib
from sla_jax.models import registry
from sla_jax.models.cifar_resnet import (_check_conv_weight_grad, _check_images,
                                         _conv_fn, batch_norm, conv_init,
                                         conv_layer, torch_linear_bias_init,
                                         torch_linear_kernel_init)

__all__ = ["ResNet12", "ResNet12Block", "Conv4", "drop_block",
           "RESNET12_WIDTHS", "CONV4_WIDTHS"]

RESNET12_WIDTHS = (64, 160, 320, 640)
CONV4_WIDTHS = (64, 64, 64, 64)
_LEAKY_SLOPE = 0.1


def drop_block(x: jax.Array, key: jax.Array, drop_rate: float,
               block_size: int) -> jax.Array:
  """DropBlock (Ghiasi et al. 2018) of an NHWC map, for training.

  Seeds are drawn with probability
  ``gamma = drop_rate / s^2 * H * W / ((H - s + 1) * (W - s + 1))`` at the
  positions where an ``s x s`` block fits (independently per channel, as the
  reference implementation), every seed zeroes the block it starts, and the
  kept values are scaled by ``#elements / #kept`` so the mean is preserved.
  ``s`` is clipped to the map size (a 2x2 map with ``s = 5`` drops whole
  maps).
  """
  _, height, width, _ = x.shape
  size = min(block_size, height, width)
  valid_h, valid_w = height - size + 1, width - size + 1
  gamma = drop_rate / size ** 2 * height * width / (valid_h * valid_w)
  seeds = jax.random.bernoulli(
      key, gamma, (x.shape[0], valid_h, valid_w, x.shape[3]))
  seeds = seeds.astype(jnp.float32)
  # A seed at (i, j) covers [i, i + s) x [j, j + s): pad before the max-pool.
  pad = ((0, 0), (size - 1, size - 1), (size - 1, size - 1), (0, 0))
  dropped = nn.max_pool(jnp.pad(seeds, pad), (size, size), strides=(1, 1))
  keep = 1.0 - dropped
  scale = keep.size / jnp.maximum(keep.sum(), 1.0)
  return (x * (keep * scale).astype(x.dtype)).astype(x.dtype)


def _add_heads(module: nn.Module, features: jax.Array,
               heads: Mapping[str, int] | None, dtype: Any) -> dict[str, jax.Array]:
  out = {"features": features}
  fan_in = features.shape[-1]
  for head, size in (heads or {}).items():
    out[head] = nn.Dense(size, dtype=dtype,
                         kernel_init=torch_linear_kernel_init,
                         bias_init=torch_linear_bias_init(fan_in),
                         name=f"{head}_head", parent=module)(features)
  return out


def _check_common(name: str, widths: Sequence[int], conv_weight_grad: str,
                  dtype: Any, heads: Mapping[str, int] | None) -> None:
  _check_conv_weight_grad(conv_weight_grad)
  heads_lib.check_heads(name, heads)
  jnp.dtype(dtype)  # a valid dtype name or dtype
  if not widths or any(int(w) != w or w < 1 for w in widths):
    raise ValueError(f"{name} widths must be positive integers, one per "
                     f"block; got {tuple(widths)}.")


class ResNet12Block(nn.Module):
  """3 x (conv3x3 -> BN [-> LeakyReLU]) + 1x1 conv-BN shortcut, LeakyReLU, max-pool.

  ``drop`` is ``"none"``, ``"dropout"`` or ``"dropblock"`` (applied after
  the pool, with ``drop_rate``; only when ``train``, using the ``"dropout"``
  rng).
  """
  features: int
  dtype: Any = jnp.float32
  use_fast_variance: bool = False
  fused_batch_norm: bool = False
  conv_weight_grad: str = "auto"
  drop: str = "none"
  drop_rate: float = 0.0
  dropblock_size: int = 5

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    conv = conv_layer(self.dtype, self.conv_weight_grad, self.features)
    norm = batch_norm(train, self.dtype, self.use_fast_variance,
                      self.fused_batch_norm)
    y = x
    for i in range(3):
      y = conv((3, 3), padding=((1, 1), (1, 1)), name=f"conv{i + 1}")(y)
      y = norm(name=f"bn{i + 1}")(y)
      if i < 2:
        y = nn.leaky_relu(y, _LEAKY_SLOPE)
    shortcut = conv((1, 1), padding="VALID", name="shortcut_conv")(x)
    shortcut = norm(name="shortcut_bn")(shortcut)
    y = nn.leaky_relu(y + shortcut, _LEAKY_SLOPE)
    y = nn.max_pool(y, (2, 2), strides=(2, 2))
    if train and self.drop_rate > 0:
      if self.drop == "dropout":
        y = nn.Dropout(self.drop_rate, deterministic=False)(y)
      elif self.drop == "dropblock":
        y = drop_block(y, self.make_rng("dropout"), self.drop_rate,
                       self.dropblock_size)
    return y


class ResNet12(nn.Module):
  """The few-shot ResNet-12 (see the module doc) with named output heads.

  Attributes:
    widths: Output channels of the four blocks.
    heads: Output heads, name -> size (usually empty for few-shot).
    dtype: Computation dtype; parameters and BatchNorm statistics stay float32.
    use_fast_variance: One-pass BatchNorm variance.
    fused_batch_norm: BatchNorm with a closed-form backward pass.
    conv_weight_grad: ``auto``, ``xla`` or ``matmul`` (see
      :class:`sla_jax.models.CifarResNet`).
    drop_rate: 0 (default): no dropout. Otherwise dropout of this rate after
      blocks 1-2 and DropBlock of this rate after blocks 3-4 in training
      (pass ``rngs={"dropout": key}``). MetaOptNet anneals the DropBlock rate
      over training; here it is constant.
    dropblock_size: DropBlock block size (MetaOptNet: 5 at 84 px, 2 at 32 px),
      clipped to the feature map.

  Call ``model.apply(variables, x, train=...)``; in training pass
  ``mutable=["batch_stats"]``. Returns ``{"features": [B, widths[-1]], **heads}``.
  """
  widths: Sequence[int] = RESNET12_WIDTHS
  heads: Mapping[str, int] | None = None
  dtype: Any = jnp.float32
  use_fast_variance: bool = False
  fused_batch_norm: bool = False
  conv_weight_grad: str = "auto"
  drop_rate: float = 0.0
  dropblock_size: int = 5

  def __post_init__(self):
    _check_common("ResNet12", self.widths, self.conv_weight_grad, self.dtype,
                  self.heads)
    if len(self.widths) != 4:
      raise ValueError(f"ResNet12 has 4 blocks: pass 4 widths; got "
                       f"{tuple(self.widths)}.")
    if not 0.0 <= self.drop_rate < 1.0:
      raise ValueError(f"ResNet12 drop_rate must be in [0, 1) (0 disables "
                       f"dropout and DropBlock); got {self.drop_rate}.")
    if self.dropblock_size < 1:
      raise ValueError(f"ResNet12 dropblock_size must be >= 1; got "
                       f"{self.dropblock_size}.")
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> dict[str, jax.Array]:
    _check_images("ResNet12", x)
    dtype = jnp.dtype(self.dtype)
    x = x.astype(dtype)
    for i, width in enumerate(self.widths):
      x = ResNet12Block(int(width), dtype=dtype,
                        use_fast_variance=self.use_fast_variance,
                        fused_batch_norm=self.fused_batch_norm,
                        conv_weight_grad=self.conv_weight_grad,
                        drop="dropout" if i < 2 else "dropblock",
                        drop_rate=self.drop_rate,
                        dropblock_size=self.dropblock_size,
                        name=f"block{i + 1}")(x, train)
    return _add_heads(self, jnp.mean(x, axis=(1, 2)), self.heads, dtype)


class Conv4(nn.Module):
  """The 4-layer few-shot ConvNet, globally average-pooled (see the module doc).

  Attributes:
    widths: Filters of each conv layer (one layer per entry; default 4 x 64).
    heads: Output heads, name -> size (usually empty for few-shot).
    dtype: Computation dtype; parameters and BatchNorm statistics stay float32.
    use_fast_variance: One-pass BatchNorm variance.
    fused_batch_norm: BatchNorm with a closed-form backward pass.
    conv_weight_grad: ``auto``, ``xla`` or ``matmul``.

  Returns ``{"features": [B, widths[-1]], **heads}``.
  """
  widths: Sequence[int] = CONV4_WIDTHS
  heads: Mapping[str, int] | None = None
  dtype: Any = jnp.float32
  use_fast_variance: bool = False
  fused_batch_norm: bool = False
  conv_weight_grad: str = "auto"

  def __post_init__(self):
    _check_common("Conv4", self.widths, self.conv_weight_grad, self.dtype,
                  self.heads)
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> dict[str, jax.Array]:
    _check_images("Conv4", x)
    dtype = jnp.dtype(self.dtype)
    x = x.astype(dtype)
    norm = batch_norm(train, dtype, self.use_fast_variance,
                      self.fused_batch_norm)
    for i, width in enumerate(self.widths):
      x = nn.Conv(int(width), (3, 3), padding=((1, 1), (1, 1)), use_bias=False,
                  kernel_init=conv_init, dtype=dtype,
                  conv_general_dilated=_conv_fn(self.conv_weight_grad),
                  name=f"conv{i + 1}")(x)
      x = nn.relu(norm(name=f"bn{i + 1}")(x))
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    return _add_heads(self, jnp.mean(x, axis=(1, 2)), self.heads, dtype)


registry.register("resnet12", ResNet12)
registry.register("conv4", Conv4)
