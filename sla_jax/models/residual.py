"""A residual block's output computed once on XLA:CPU, not again in each of its consumers.

XLA's fusion copies cheap elementwise producers into every consumer. In a
ResNet stage the block output ``relu(bn(conv) + shortcut)`` feeds the next
block's convolution and its residual add, so the add's fusion recomputes the
block output from the convolution outputs below it, and the next block's from
one more: in ResNet-32's stage 1 the last forward fusion read six convolution
outputs and the backward ones up to seven (BENCHMARKS.md, "The residual stream
computed once"). :func:`materialize` ends the block in a division, an op the
fusion does not copy, so each block output is written once and read back.

The value is ``x`` bit for bit (a division by exactly 1; like every XLA:CPU
arithmetic op it flushes subnormals to zero, so a block output, itself the
result of an add, is never changed) and the gradient passes through unchanged
(``custom_vjp``): a CIFAR ResNet's loss and gradients are bit-identical with
and without it (tests/test_residual.py); only the CPU program's fusions change. Other backends get ``x`` itself: their fusion
works differently, and on a GPU an extra kernel per block would cost more
than it saves.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["materialize"]


@jax.custom_vjp
def _stored(x: jax.Array) -> jax.Array:
  # Exactly 1 for every non-NaN x (the clip keeps 0 * inf out); XLA does not
  # fold 0 * y to 0, so the division stays and stops the duplication.
  one = 1 + 0 * jnp.clip(x, -1, 1)
  return x / one


def _stored_fwd(x):
  return _stored(x), None


def _stored_bwd(_, g):
  return (g,)


_stored.defvjp(_stored_fwd, _stored_bwd)


def materialize(x: jax.Array) -> jax.Array:
  """``x``, stored once on the CPU backend instead of recomputed by each consumer (module doc).

  The same values (subnormals flushed, as by any XLA:CPU arithmetic) and an
  identity gradient on every backend.
  """
  return jax.lax.platform_dependent(x, cpu=_stored, default=lambda x: x)
