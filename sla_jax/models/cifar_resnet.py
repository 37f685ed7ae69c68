"""CIFAR ResNets (He et al. 2016) with the topology of the original SLA code.

3x3 conv (16) -> BN -> ReLU -> three stages of ``(depth - 2) / 6`` basic blocks
(widths 16, 32, 64; the first block of stages 2 and 3 has stride 2) -> global
average pool -> heads. Shortcuts are "option A": stride-2 subsampling with
zero-padded extra channels, no parameters. BatchNorm uses eps 1e-5 and
PyTorch's momentum 0.1 (Flax ``momentum=0.9``).

Initialisation follows the original by default: convolutions
``normal(0, sqrt(2 / (k * k * C_out)))``, BatchNorm scale 1 / bias 0, and the
heads PyTorch's default ``nn.Linear`` init ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``
for weights and biases.

The heads are named by what they predict (an objective's ``heads``, see
:mod:`sla_jax.objectives`); the output is a dict
``{"features": [B, 64], <head>: [B, outputs], ...}``. Registered as
``cifar_resnet`` (any ``depth``) and ``cifar_resnet{20,32,44,56,110}``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from sla_jax import feature_transforms
from sla_jax.models import conv_ops, registry, residual
from sla_jax.models.batch_norm import FusedBatchNorm
from sla_jax.models import heads as heads_lib

__all__ = ["CifarResNet", "BasicBlock", "DEPTHS", "STAGE_CHANNELS"]

DEPTHS = (20, 32, 44, 56, 110)
# Channels after the stem (index 0) and after each of the 3 stages.
STAGE_CHANNELS = (16, 16, 32, 64)
CONV_WEIGHT_GRADS = ("auto", "xla", "matmul")

# He-normal with fan_out, as the original's ``normal_(0, sqrt(2 / n))`` with
# ``n = k * k * out_channels``.
conv_init = jax.nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# PyTorch nn.Linear default: kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)).
torch_linear_kernel_init = jax.nn.initializers.variance_scaling(
    1.0 / 3.0, "fan_in", "uniform")


def torch_linear_bias_init(fan_in: int):
  """PyTorch nn.Linear default bias init ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``."""
  bound = 1.0 / fan_in ** 0.5

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def _check_conv_weight_grad(conv_weight_grad: str) -> None:
  if conv_weight_grad not in CONV_WEIGHT_GRADS:
    raise ValueError(f"conv_weight_grad must be one of "
                     f"{', '.join(CONV_WEIGHT_GRADS)}; got {conv_weight_grad!r}.")


def _check_images(model: str, x: jax.Array) -> None:
  """ValueError unless ``x`` is a batch of images, ``[B, H, W, C]``."""
  if getattr(x, "ndim", None) != 4:
    raise ValueError(f"{model} takes a batch of images [B, H, W, C]; got shape "
                     f"{tuple(getattr(x, 'shape', ()))} (add a batch axis: "
                     f"x[None]).")


def _conv_fn(conv_weight_grad: str):
  """``auto``: the matmul weight gradient on the CPU backend, XLA's elsewhere."""
  _check_conv_weight_grad(conv_weight_grad)
  if conv_weight_grad == "auto":
    conv_weight_grad = "matmul" if jax.default_backend() == "cpu" else "xla"
  return (conv_ops.conv_general_dilated if conv_weight_grad == "matmul"
          else lax.conv_general_dilated)


def _shortcut_option_a(x: jax.Array, out_channels: int, stride: int) -> jax.Array:
  """Parameter-free shortcut: subsample by ``stride``, zero-pad the channels."""
  if stride != 1:
    x = x[:, ::stride, ::stride, :]
  extra = out_channels - x.shape[-1]
  if extra:
    x = jnp.concatenate([x, jnp.zeros(x.shape[:-1] + (extra,), x.dtype)], -1)
  return x


def conv_layer(dtype: Any, conv_weight_grad: str, *args, **kwargs):
  """``nn.Conv`` as every model here builds it: no bias, ``conv_init``, the chosen weight gradient."""
  return functools.partial(nn.Conv, *args, use_bias=False,
                           kernel_init=conv_init, dtype=dtype,
                           conv_general_dilated=_conv_fn(conv_weight_grad),
                           **kwargs)


def batch_norm(train: bool, dtype: Any, use_fast_variance: bool,
               fused: bool = False):
  """BatchNorm with PyTorch's defaults (momentum 0.1, eps 1e-5), batch statistics in training.

  ``nn.BatchNorm``, or with ``fused`` :class:`~sla_jax.models.batch_norm.FusedBatchNorm`
  (same variables and forward values, closed-form backward: fewer GPU kernels).
  """
  return functools.partial(FusedBatchNorm if fused else nn.BatchNorm,
                           use_running_average=not train,
                           momentum=0.9, epsilon=1e-5, dtype=dtype,
                           use_fast_variance=use_fast_variance)


class BasicBlock(nn.Module):
  """conv3x3 -> BN -> ReLU -> conv3x3 -> BN, + option-A shortcut, ReLU."""
  features: int
  strides: int = 1
  dtype: Any = jnp.float32
  use_fast_variance: bool = False
  fused_batch_norm: bool = False
  zero_init_last_bn: bool = False
  conv_weight_grad: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    conv = conv_layer(self.dtype, self.conv_weight_grad, self.features, (3, 3),
                      padding=((1, 1), (1, 1)))
    norm = batch_norm(train, self.dtype, self.use_fast_variance,
                      self.fused_batch_norm)
    y = conv(strides=(self.strides, self.strides), name="conv_a")(x)
    y = nn.relu(norm(name="bn_a")(y))
    y = conv(name="conv_b")(y)
    last_scale = (nn.initializers.zeros if self.zero_init_last_bn
                  else nn.initializers.ones)
    y = norm(name="bn_b", scale_init=last_scale)(y)
    return nn.relu(y + _shortcut_option_a(x, self.features, self.strides))


class CifarResNet(nn.Module):
  """CIFAR ResNet-{20,32,44,56,110} with named output heads.

  Attributes:
    depth: Total depth, ``6n + 2`` (one of :data:`DEPTHS` or any such value).
    heads: Output heads, name -> number of outputs (see
      an objective's ``heads``). Empty: a feature extractor.
    dtype: Computation dtype (e.g. ``jnp.bfloat16`` or ``"bfloat16"``);
      parameters, BatchNorm statistics and reductions stay float32.
    use_fast_variance: BatchNorm variance as ``E[x^2] - E[x]^2`` (one pass,
      faster) instead of the two-pass ``E[(x - E[x])^2]`` (PyTorch's numerics).
    fused_batch_norm: BatchNorm with a closed-form backward pass
      (:class:`~sla_jax.models.batch_norm.FusedBatchNorm`): same variables and
      forward values, gradients equal to float rounding, fewer GPU kernels.
    zero_init_heads: Zero-initialise the heads (big_vision style) instead of
      PyTorch's default Linear init.
    cosine_scale: If > 0, every head is a cosine classifier of this scale
      (:class:`sla_jax.models.heads.CosineDense`, LDAM's normalised head).
    zero_init_last_bn: Zero-initialise each block's last BatchNorm scale.
    conv_weight_grad: ``"xla"`` (XLA's own convolution gradients),
      ``"matmul"`` (weight gradients as one matmul over 3x3 patches,
      :mod:`sla_jax.models.conv_ops`; faster on XLA's CPU backend, same values
      to float rounding; BENCHMARKS.md), or ``"auto"`` (matmul on the CPU
      backend, xla on GPU/TPU).
    feature_groups: If >= 2, the feature-level pretext task
      (:mod:`sla_jax.feature_transforms`): after stage ``feature_stage`` every
      row is replaced by its ``V`` channel-group-discarding variants, so the
      layers up to there run once per input row and only the later ones on
      ``V`` copies; every output then has ``B * V`` rows (row ``b * V + v``).
    feature_stage: 0 (after the stem), 1, 2 or 3 (after that stage; 3 = just
      before pooling).
    feature_identity: Include the untouched map as variant 0 (``V = K + 1``).

  Call ``model.apply(variables, x, train=...)`` on NHWC images; in training
  pass ``mutable=["batch_stats"]``. Returns ``{"features": [B, 64], **heads}``.
  Invalid settings raise ValueError when the module is constructed.
  """
  depth: int = 32
  heads: Mapping[str, int] | None = None
  dtype: Any = jnp.float32
  use_fast_variance: bool = False
  fused_batch_norm: bool = False
  zero_init_heads: bool = False
  zero_init_last_bn: bool = False
  cosine_scale: float = 0.0
  conv_weight_grad: str = "auto"
  feature_groups: int = 0
  feature_stage: int = 2
  feature_identity: bool = True

  def __post_init__(self):
    if (self.depth - 2) % 6 or self.depth < 8:
      raise ValueError(f"CifarResNet depth must be 6n + 2 (e.g. "
                       f"{', '.join(map(str, DEPTHS))}); got {self.depth}.")
    _check_conv_weight_grad(self.conv_weight_grad)
    heads_lib.check_heads("CifarResNet", self.heads)
    jnp.dtype(self.dtype)  # a valid dtype name or dtype
    if self.cosine_scale < 0 or (self.cosine_scale and self.zero_init_heads):
      raise ValueError(f"cosine_scale must be >= 0 (0 = linear heads) and "
                       f"cannot be combined with zero_init_heads; got "
                       f"{self.cosine_scale}.")
    if self.feature_groups:
      if self.feature_stage not in range(len(STAGE_CHANNELS)):
        raise ValueError(f"feature stage must be 0 (after the stem), 1, 2 or "
                         f"3; got {self.feature_stage}.")
      width = STAGE_CHANNELS[self.feature_stage]
      if self.feature_groups < 2 or width % self.feature_groups:
        raise ValueError(f"feature groups={self.feature_groups} must be >= 2 "
                         f"and divide the {width} channels after stage "
                         f"{self.feature_stage}.")
    super().__post_init__()

  def _feature_variants(self, x: jax.Array, stage: int) -> jax.Array:
    if self.feature_groups and stage == self.feature_stage:
      return feature_transforms.discard_channel_groups(
          x, self.feature_groups, self.feature_identity)
    return x

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> dict[str, jax.Array]:
    _check_images("CifarResNet", x)
    blocks_per_stage = (self.depth - 2) // 6
    dtype = jnp.dtype(self.dtype)
    x = x.astype(dtype)
    x = conv_layer(dtype, self.conv_weight_grad)(
        STAGE_CHANNELS[0], (3, 3), padding=((1, 1), (1, 1)),
        name="conv_1_3x3")(x)
    x = batch_norm(train, dtype, self.use_fast_variance,
                   self.fused_batch_norm)(name="bn_1")(x)
    x = self._feature_variants(nn.relu(x), 0)
    for stage, width in enumerate(STAGE_CHANNELS[1:], start=1):
      for i in range(blocks_per_stage):
        strides = 2 if (stage > 1 and i == 0) else 1
        x = BasicBlock(width, strides, dtype=dtype,
                       use_fast_variance=self.use_fast_variance,
                       fused_batch_norm=self.fused_batch_norm,
                       zero_init_last_bn=self.zero_init_last_bn,
                       conv_weight_grad=self.conv_weight_grad,
                       name=f"stage_{stage}_{i}")(x, train)
        if i < blocks_per_stage - 1:
          # The next block reads it twice (its convolution and its residual
          # add): stored once on the CPU rather than recomputed (residual.py).
          x = residual.materialize(x)
      x = self._feature_variants(x, stage)
    features = jnp.mean(x, axis=(1, 2))
    out = {"features": features}
    for head, size in (self.heads or {}).items():
      fan_in = features.shape[-1]
      if self.cosine_scale:
        out[head] = heads_lib.CosineDense(
            size, self.cosine_scale, dtype=dtype,
            kernel_init=torch_linear_kernel_init, name=f"{head}_head")(features)
        continue
      out[head] = nn.Dense(
          size, dtype=dtype,
          kernel_init=(nn.initializers.zeros if self.zero_init_heads
                       else torch_linear_kernel_init),
          bias_init=(nn.initializers.zeros if self.zero_init_heads
                     else torch_linear_bias_init(fan_in)),
          name=f"{head}_head")(features)
    return out


registry.register("cifar_resnet", CifarResNet)
for _depth in DEPTHS:
  registry.register(f"cifar_resnet{_depth}",
                    functools.partial(CifarResNet, depth=_depth))
