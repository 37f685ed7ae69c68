"""Load PyTorch weights of the original SLA code (hankook/SLA) into CifarResNet.

Accepts a ``state_dict`` (a mapping of names to torch tensors or numpy arrays;
torch itself is not needed) in either naming:

* the module names of ``models/cifar_resnet.py`` plus named heads:
  ``conv_1_3x3.weight``, ``bn_1.*``, ``stage_2.0.conv_a.weight``,
  ``joint_head.weight``, ...
* the original training script's checkpoints (``model-best.pth``'s
  ``"model"``), where the backbone is an ``nn.Sequential`` inside
  ``PredictionModel`` wrapped in ``DataParallel``: ``module.base_model.0.weight``,
  ``module.base_model.3.0.conv_a.weight``, ``module.classifiers.1.bias``, ...
  The classifiers are mapped, in order, to ``head_names`` (for ``sla+sd`` runs
  of the original: ``("joint", "single")``).

Layouts are converted (conv OIHW -> HWIO, Linear [out, in] -> [in, out]).
BatchNorm running statistics are copied as they are: both frameworks
normalise with them the same way at evaluation. (In training, PyTorch updates
``running_var`` with the unbiased batch variance and Flax with the biased one,
a relative difference of ``1 / (n - 1)`` per update for ``n`` values per
channel.)
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["from_torch_state_dict", "from_torchvision_resnet"]

# Positions of the original's nn.Sequential backbone (models/__init__.py).
_SEQUENTIAL_NAMES = {"0": "conv_1_3x3", "1": "bn_1", "3": "stage_1",
                     "4": "stage_2", "5": "stage_3"}


def _canonical_name(name: str, head_names: Sequence[str] | None) -> str | None:
  """Maps an original checkpoint name to ``conv_1_3x3.weight`` style, or None to skip."""
  name = name.removeprefix("module.")
  if name.endswith("num_batches_tracked"):
    return None
  m = re.fullmatch(r"base_model\.(\d+)\.(.*)", name)
  if m:
    if m.group(1) not in _SEQUENTIAL_NAMES:
      raise ValueError(f"Unexpected backbone entry {name!r} in the state dict.")
    return f"{_SEQUENTIAL_NAMES[m.group(1)]}.{m.group(2)}"
  m = re.fullmatch(r"classifiers\.(\d+)\.(weight|bias)", name)
  if m:
    index = int(m.group(1))
    if head_names is None or index >= len(head_names):
      raise ValueError(
          f"The state dict has classifier {index} ({name!r}); pass head_names "
          f"giving each classifier's head in order, e.g. ('joint', 'single') "
          f"for an sla+sd checkpoint.")
    return f"{head_names[index]}_head.{m.group(2)}"
  return name


def _to_numpy(value: Any) -> np.ndarray:
  if hasattr(value, "detach"):  # a torch tensor, without importing torch
    value = value.detach().cpu().numpy()
  return np.asarray(value, dtype=np.float32)


def from_torch_state_dict(state_dict: Mapping[str, Any],
                          head_names: Sequence[str] | None = None
                          ) -> dict[str, dict[str, Any]]:
  """Converts an original SLA ResNet ``state_dict`` to Flax variables.

  Args:
    state_dict: Name -> tensor/array, in either naming described in the module
      docstring.
    head_names: For the original's ``classifiers.K`` entries, the head name of
      each K (e.g. ``("joint", "single")``). Not needed for ``<name>_head`` keys.

  Returns:
    ``{"params": ..., "batch_stats": ...}`` for :class:`CifarResNet` (nested
    dicts of float32 numpy arrays), ready for ``model.apply``.
  """
  params: dict[str, Any] = {}
  stats: dict[str, Any] = {}

  def put(tree: dict, path: Sequence[str], value: np.ndarray) -> None:
    for key in path[:-1]:
      tree = tree.setdefault(key, {})
    tree[path[-1]] = value

  for raw_name, raw_value in state_dict.items():
    name = _canonical_name(raw_name, head_names)
    if name is None:
      continue
    value = _to_numpy(raw_value)
    *module, leaf = name.split(".")
    if len(module) == 3 and module[0].startswith("stage_"):
      module = [f"{module[0]}_{module[1]}", module[2]]  # stage_2.0.conv_a
    layer = module[-1]
    if layer.startswith("conv") and leaf == "weight":
      put(params, module + ["kernel"], value.transpose(2, 3, 1, 0))
    elif layer.startswith("bn") and leaf in ("weight", "bias"):
      put(params, module + ["scale" if leaf == "weight" else "bias"], value)
    elif layer.startswith("bn") and leaf in ("running_mean", "running_var"):
      put(stats, module + ["mean" if leaf == "running_mean" else "var"], value)
    elif layer.endswith("_head") and leaf == "weight":
      put(params, module + ["kernel"], value.T)
    elif layer.endswith("_head") and leaf == "bias":
      put(params, module + ["bias"], value)
    else:
      raise ValueError(f"Cannot map state-dict entry {raw_name!r} onto "
                       f"CifarResNet; expected conv_*, bn_*, stage_*, *_head "
                       f"or the original's base_model/classifiers names.")
  return {"params": params, "batch_stats": stats}


def from_torchvision_resnet(state_dict: Mapping[str, Any],
                            head_name: str = "class"
                            ) -> dict[str, dict[str, Any]]:
  """Converts a torchvision ``resnet18/34/50`` ``state_dict`` to Flax variables for :class:`ResNet`.

  torchvision's names map one to one: ``conv1`` / ``bn1`` (stem),
  ``layer{l}.{b}.conv{k}`` / ``bn{k}``, ``layer{l}.{b}.downsample.0`` / ``.1``
  (shortcut conv / BN), and ``fc`` -> the ``<head_name>_head`` Dense (e.g. the
  ImageNet classifier as ``class``). ``num_batches_tracked`` is dropped.
  Returns ``{"params", "batch_stats"}`` for ``models.get("resnet50",
  heads={head_name: 1000})``.
  """
  params: dict[str, Any] = {}
  stats: dict[str, Any] = {}
  pattern = re.compile(r"^(?:(layer\d+)\.(\d+)\.)?(conv\d|bn\d|downsample\.[01]|fc)\."
                       r"(weight|bias|running_mean|running_var|"
                       r"num_batches_tracked)$")
  shortcut = {"downsample.0": "downsample_conv", "downsample.1": "downsample_bn"}

  def put(tree: dict, path: Sequence[str], value: np.ndarray) -> None:
    for key in path[:-1]:
      tree = tree.setdefault(key, {})
    tree[path[-1]] = value

  for raw_name, raw_value in state_dict.items():
    match = pattern.match(raw_name)
    if match is None:
      raise ValueError(f"Cannot map torchvision entry {raw_name!r} onto "
                       f"ResNet; expected conv1, bn1, layer*.*, fc.")
    layer, block, module, leaf = match.groups()
    if leaf == "num_batches_tracked":
      continue
    module = shortcut.get(module, module)
    if module == "fc":
      module = f"{head_name}_head"
    path = ([f"{layer}_{block}"] if layer else []) + [module]
    value = _to_numpy(raw_value)
    if module.endswith("_head"):
      put(params, path + ["kernel" if leaf == "weight" else "bias"],
          value.T if leaf == "weight" else value)
    elif "conv" in module:
      put(params, path + ["kernel"], value.transpose(2, 3, 1, 0))
    elif leaf in ("weight", "bias"):
      put(params, path + ["scale" if leaf == "weight" else "bias"], value)
    else:
      put(stats, path + ["mean" if leaf == "running_mean" else "var"], value)
  return {"params": params, "batch_stats": stats}

