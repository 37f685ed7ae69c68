"""Flax models for SLA by name, and import of PyTorch checkpoints of the original code.

    model = sla_jax.models.get("cifar_resnet32", heads=objective.heads)

:func:`get` builds any registered model (:func:`names`; :func:`arguments`
lists what one takes, :func:`defaults` their defaults, :func:`fixed`
what a name such as ``cifar_resnet20`` fixes); the classes are
exported for direct use; :func:`to_nnx` wraps any of them for Flax NNX.
"""

from sla_jax.models.registry import (arguments, defaults, fixed, get, names,
                                     register)
from sla_jax.models.cifar_resnet import (BasicBlock, CifarResNet, DEPTHS,
                                         STAGE_CHANNELS)
from sla_jax.models.resnet import ResNet
from sla_jax.models.fewshot_nets import Conv4, ResNet12
from sla_jax.models.wide_resnet import WideResNet
from sla_jax.models.torch_import import (from_torch_state_dict,
                                         from_torchvision_resnet)
from sla_jax.models.nnx_bridge import to_nnx

__all__ = ["arguments", "defaults", "fixed", "get", "names", "register", "BasicBlock", "CifarResNet", "Conv4",
           "DEPTHS", "STAGE_CHANNELS", "ResNet", "ResNet12",
           "WideResNet", "from_torch_state_dict", "from_torchvision_resnet",
           "to_nnx"]
