"""Our Linen models for Flax NNX users, through Flax's own bridge (``flax.nnx.bridge.ToNNX``).

    model = sla_jax.models.to_nnx(sla_jax.models.get("cifar_resnet32", heads=objective.heads), views)
    outputs = model(views, train=True, mutable=["batch_stats"])  # updates the model's statistics
    outputs = model(views, train=False)                           # {"features", <heads>...}

The NNX module holds the same parameters (``nnx.Param``) and BatchNorm statistics
(``nnx.BatchStat``) under the same names as the Linen variables, so an
``nnx.Optimizer(model, tx, wrt=nnx.Param)`` step is the Linen step (tested bit
for bit), and a trained workdir's variables (``sla_jax.inference.load(w).variables``)
load into it. Models that draw randomness in training (ResNet-12's DropBlock)
take it from the ``dropout`` stream: ``rngs=nnx.Rngs(params=0, dropout=1)``
(a seed or key: ``nnx.Rngs(seed)``). ``train`` is the Linen call's argument
(default True); NNX's ``model.eval()`` does not reach the bridged module.
"""

from collections.abc import Mapping
from typing import Any

import jax
from flax import linen as nn
from flax import nnx
from flax.nnx import bridge


__all__ = ["to_nnx"]


def to_nnx(model: nn.Module, example_inputs: jax.Array, *,
           variables: Any = None, rngs: nnx.Rngs | None = None) -> bridge.ToNNX:
  """``model`` as an initialised NNX module; ``variables`` (Linen's) replace the fresh init.

  ``example_inputs`` fixes the shapes only (e.g. a batch of views, ``[B·M, H, W, C]``).
  The fresh init runs under ``nnx.jit`` (Linen's eager init dispatches every
  op on its own); with ``variables`` nothing is initialised, their values are
  checked against the model's shapes and used as they are.
  """
  if not isinstance(model, nn.Module):
    raise ValueError(f"to_nnx takes a Linen module (e.g. models.get(name, ...)); "
                     f"got {type(model).__name__}.")
  if not isinstance(rngs, nnx.Rngs):  # None, a seed or a key: the default stream
    rngs = nnx.Rngs(0 if rngs is None else rngs)
  wrapped = bridge.ToNNX(model, rngs=rngs)
  if variables is None:
    _jitted_init(wrapped, example_inputs)
    return wrapped

  streams = {name: 0 for name, _ in rngs.items()}  # the same streams: same graph

  def initialised():
    return bridge.lazy_init(bridge.ToNNX(model, rngs=nnx.Rngs(**streams)),
                            example_inputs, train=False)

  graphdef, params, stats, _ = nnx.split(nnx.eval_shape(initialised),
                                         nnx.Param, nnx.BatchStat, ...)
  if not isinstance(variables, Mapping) or "params" not in variables:
    what = (f"a mapping with keys {sorted(map(str, variables))}"
            if isinstance(variables, Mapping) else type(variables).__name__)
    raise ValueError(f"variables must be Linen's variables, {{'params': ..., "
                     f"'batch_stats': ...}} (e.g. inference.load(w).variables); "
                     f"got {what}.")
  for collection, state in (("params", params), ("batch_stats", stats)):
    given = variables.get(collection, {})
    _check_fits(collection, given, nnx.to_pure_dict(state))
    nnx.replace_by_pure_dict(state, given)
  return nnx.merge(graphdef, params, stats, nnx.state(wrapped))


# One jitted init for every call: the same model and shapes compile once.
_jitted_init = nnx.jit(lambda m, x: bridge.lazy_init(m, x, train=False))


def _check_fits(collection: str, given: Any, wanted: Any) -> None:
  """One clear line when a variables tree does not fit the model (shape or dtype)."""
  def leaves(tree):
    out = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
      if not hasattr(leaf, "shape") or not hasattr(leaf, "dtype"):
        raise ValueError(f"variables[{collection!r}]{jax.tree_util.keystr(path)} "
                         f"is a {type(leaf).__name__}, not an array.")
      out[jax.tree_util.keystr(path)] = leaf
    return out

  given, wanted = leaves(given), leaves(wanted)
  for path in sorted(set(given) | set(wanted)):
    have, want = given.get(path), wanted.get(path)
    if have is None or want is None or tuple(have.shape) != tuple(want.shape):
      raise ValueError(
          f"variables[{collection!r}]{path} has shape "
          f"{'missing' if have is None else tuple(have.shape)}, the model wants "
          f"{'none (not a variable of it)' if want is None else tuple(want.shape)}: "
          f"pass the variables of this model and input shape.")
    if have.dtype != want.dtype:
      raise ValueError(
          f"variables[{collection!r}]{path} is {have.dtype}, the model keeps "
          f"{want.dtype}: pass the variables as trained (parameters and "
          f"statistics stay float32 under a bf16 compute dtype).")
