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

__all__ = ["register", "get", "names", "arguments", "defaults", "fixed"]

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
  factory, fixed_args = _unwrapped(name)
  return tuple(f.name for f in dataclasses.fields(factory)
               if f.init and f.name not in {*fixed_args, "parent", "name"})


def defaults(name: str) -> dict[str, object]:
  """:func:`arguments` of model ``name`` that have a default, with it."""
  fields = {f.name: f for f in dataclasses.fields(_unwrapped(name)[0])}
  return {arg: fields[arg].default for arg in arguments(name)
          if fields[arg].default is not dataclasses.MISSING}


def fixed(name: str) -> dict[str, object]:
  """The arguments model ``name`` fixes (``cifar_resnet20``: ``{"depth": 20}``)."""
  return _unwrapped(name)[1]


def _unwrapped(name: str) -> tuple[type[nn.Module], dict[str, object]]:
  """Model ``name``'s class and the keywords its ``functools.partial`` layers fix."""
  factory, fixed_args = _factory(name), {}
  while isinstance(factory, functools.partial):
    fixed_args = {**factory.keywords, **fixed_args}  # the outer partial wins
    factory = factory.func
  return factory, fixed_args


def get(name: str, **kwargs) -> nn.Module:
  """The model ``name`` built with ``kwargs`` (ValueError naming the fix).

  An argument the name fixes may be passed with the same value (a config's
  ``depth=20`` for ``cifar_resnet20``); another value is refused rather than
  building a different network than the name says.
  """
  factory = _factory(name)
  for arg, value in fixed(name).items():
    if arg in kwargs:
      if kwargs[arg] != value:
        raise ValueError(
            f"Model {name!r} has {arg}={value!r} by its name; got "
            f"{arg}={kwargs[arg]!r}. Pass {arg}={value!r}"
            + (f", or name {_generic(name)!r}, which takes {arg}."
               if _generic(name) else "."))
      del kwargs[arg]
  takes = arguments(name)
  unknown = sorted(set(kwargs) - set(takes))
  if unknown:
    raise ValueError(f"Model {name!r} takes no argument {unknown[0]!r}; it "
                     f"takes {', '.join(takes)}.")
  return factory(**kwargs)


def _generic(name: str) -> str | None:
  """Another registered name for the class model ``name`` fixes arguments of
  (``cifar_resnet`` for ``cifar_resnet20``; None if there is none)."""
  factory = _unwrapped(name)[0]
  return next((other for other, f in _REGISTRY.items()
               if f is factory and other != name), None)
