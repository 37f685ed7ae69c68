"""Models by name: ``sla_jax.models.get("cifar_resnet32", heads={...})``.

Every registered model is a Flax Linen module called as
``model.apply(variables, images, train=...)`` on NHWC images that returns
``{"features": [B, D], <head>: [B, size], ...}`` for its ``heads`` mapping,
computes in ``dtype`` (a name or a dtype) with float32 parameters, and takes
``conv_weight_grad`` ("auto", "xla" or "matmul"), ``use_fast_variance`` and
``fused_batch_norm``.
Adding a model is one :func:`register` call plus its tests.
"""

from __future__ import annotations

from collections.abc import Callable

import dataclasses
import functools

import flax.linen as nn

__all__ = ["register", "get", "names", "arguments", "defaults"]

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register(name: str, factory: Callable[..., nn.Module]) -> None:
  """Adds ``factory(**kwargs) -> nn.Module`` under ``name``."""
  if name in _REGISTRY:
    raise ValueError(f"Model {name!r} is already registered.")
  _REGISTRY[name] = factory


def names() -> tuple[str, ...]:
  """The registered model names."""
  return tuple(_REGISTRY)


def _factory(name: str) -> Callable[..., nn.Module]:
  try:
    return _REGISTRY[name]
  except KeyError:
    raise ValueError(f"Unknown model {name!r}; valid models are: "
                     f"{', '.join(_REGISTRY)}.") from None


def arguments(name: str) -> tuple[str, ...]:
  """The keyword arguments model ``name`` takes (its Linen fields, less those its factory fixes)."""
  factory = _factory(name)
  fixed = set()
  while isinstance(factory, functools.partial):
    fixed |= set(factory.keywords)
    factory = factory.func
  return tuple(f.name for f in dataclasses.fields(factory)
               if f.init and f.name not in fixed | {"parent", "name"})


def defaults(name: str) -> dict[str, object]:
  """:func:`arguments` of model ``name`` that have a default, with it."""
  factory = _factory(name)
  while isinstance(factory, functools.partial):
    factory = factory.func
  fields = {f.name: f for f in dataclasses.fields(factory)}
  return {arg: fields[arg].default for arg in arguments(name)
          if fields[arg].default is not dataclasses.MISSING}


def get(name: str, **kwargs) -> nn.Module:
  """The model ``name`` built with ``kwargs`` (ValueError naming the fix)."""
  factory = _factory(name)
  try:
    return factory(**kwargs)
  except TypeError as e:  # an unknown keyword argument
    raise ValueError(f"Model {name!r}: {e}.") from None
