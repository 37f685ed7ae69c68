"""The original SLA optimiser in optax: SGD with momentum, PyTorch-coupled
weight decay on every parameter, and a step-decay learning-rate schedule."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import optax

__all__ = ["sgd", "step_decay_schedule"]


def sgd(learning_rate: float | optax.Schedule, momentum: float = 0.9,
        weight_decay: float = 1e-4, nesterov: bool = False
        ) -> optax.GradientTransformation:
  """PyTorch ``optim.SGD(lr, momentum, weight_decay)`` as an optax chain.

  PyTorch adds ``weight_decay * p`` to the gradient *before* the momentum
  buffer (``buf = momentum * buf + g + wd * p``; ``p -= lr * buf``), for every
  parameter including BatchNorm scales and biases. ``add_decayed_weights``
  followed by ``optax.sgd`` computes exactly that. Negative Python numbers
  raise ValueError, as in PyTorch (arrays pass: ``optax.inject_hyperparams``
  calls it with traced ones).
  """
  for name, value in (("momentum", momentum), ("weight_decay", weight_decay),
                      ("learning_rate", learning_rate)):
    if isinstance(value, numbers.Real) and value < 0:  # (arrays: as given)
      raise ValueError(f"{name} must be >= 0; got {value}.")
  return optax.chain(
      optax.add_decayed_weights(weight_decay),
      optax.sgd(learning_rate, nesterov=nesterov, momentum=(
          None if isinstance(momentum, numbers.Real) and momentum == 0
          else momentum)),  # 0: no momentum buffer in the state
  )


def step_decay_schedule(base_learning_rate: float, total_steps: int,
                        decay_at: Sequence[float] = (0.5, 0.75),
                        factor: float = 0.1) -> optax.Schedule:
  """``base * factor^k`` after the ``k``-th fraction of ``decay_at`` of the steps.

  With the defaults this is the original's ``MultiStepLR(optimizer,
  [T // 2, T * 3 // 4])`` stepped every iteration: update ``t`` (0-based) uses
  ``0.1 * base`` from ``t = T // 2`` on and ``0.01 * base`` from ``3T // 4``.
  """
  boundaries = {}
  for fraction in decay_at:
    step = int(total_steps * fraction)
    boundaries[step] = boundaries.get(step, 1.0) * factor
  return optax.piecewise_constant_schedule(base_learning_rate, boundaries)
