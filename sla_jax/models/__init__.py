"""Flax models for SLA, and import of PyTorch checkpoints of the original code."""

from sla_jax.models.cifar_resnet import (BasicBlock, CifarResNet, DEPTHS,
                                         OBJECTIVES, STAGE_CHANNELS,
                                         heads_for_objective)
from sla_jax.models.torch_import import from_torch_state_dict

__all__ = ["BasicBlock", "CifarResNet", "DEPTHS", "OBJECTIVES", "STAGE_CHANNELS",
           "heads_for_objective", "from_torch_state_dict"]
