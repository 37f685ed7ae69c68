"""Output heads shared by the models: the cosine classifier of LDAM (Cao et al. 2019).

``CosineDense(features, scale)`` outputs ``scale * cos(x, w_k)`` for each
output ``k``: the input rows and the weight columns are L2-normalised, so the
logits lie in ``[-scale, scale]`` whatever the feature norm. Long-tailed
training uses it with LDAM margins (:mod:`sla_jax.long_tail`), whose margins
then live in the same units (``scale * 0.5`` for Cao et al.'s 0.5).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["CosineDense"]


def _unit(x: jax.Array, axis: int) -> jax.Array:
  """``x / max(||x||, 1e-12)`` along ``axis`` (PyTorch's ``F.normalize``)."""
  norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True))
  return x / jnp.maximum(norm, 1e-12)


class CosineDense(nn.Module):
  """``scale * normalize(x) @ normalize(kernel, axis=0)``: ``[B, D] -> [B, features]``."""
  features: int
  scale: float = 30.0
  dtype: Any = jnp.float32
  kernel_init: Any = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", self.kernel_init,
                        (x.shape[-1], self.features), jnp.float32)
    x = _unit(x.astype(jnp.float32), -1)
    cos = jnp.dot(x, _unit(kernel, 0))
    return (self.scale * cos).astype(self.dtype)
