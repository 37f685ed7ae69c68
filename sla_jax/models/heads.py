"""Output heads shared by the models: the cosine classifier of LDAM (Cao et al. 2019).

``CosineDense(features, scale)`` outputs ``scale * cos(x, w_k)`` for each
output ``k``: the input rows and the weight columns are L2-normalised, so the
logits lie in ``[-scale, scale]`` whatever the feature norm. Long-tailed
training uses it with LDAM margins (:mod:`sla_jax.long_tail`), whose margins
then live in the same units (``scale * 0.5`` for Cao et al.'s 0.5).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["CosineDense", "check_heads"]


def check_heads(model: str, heads: Any) -> None:
  """ValueError unless ``heads`` maps names to output sizes >= 1 (None: no heads).

  ``features`` is refused as a name: every model returns its features under it.
  """
  if heads is None:
    return
  if not isinstance(heads, Mapping):
    raise ValueError(f"{model} heads must map head names to output sizes, e.g. "
                     f"{{'joint': 40}}; got {heads!r}.")
  for name, size in heads.items():
    if name == "features":
      raise ValueError(f"{model} heads cannot be named 'features': the model "
                       f"returns its features under that name.")
    if (not isinstance(name, str) or isinstance(size, bool)
        or not isinstance(size, (int, np.integer)) or size < 1):
      raise ValueError(f"{model} heads must map names to output sizes >= 1; "
                       f"got {name!r}: {size!r}.")


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
