"""A PyTorch re-implementation of the original SLA training step, for timing.

Same computation as hankook/SLA's ``create_sla_trainer`` step with the CIFAR
ResNet (option-A shortcuts, a Linear N*M joint head), the 4 rotations stacked
next to each other, cross-entropy on the joint labels ``y*M + j``, and
``torch.optim.SGD(lr, momentum=0.9, weight_decay=1e-4)``; float32 NCHW as the
original runs, with channels-last and bf16-autocast variants. Parameter names
match ``../shared/reference`` so its weights load directly.
"""

from __future__ import annotations

import sys
import types

import torch
from torch import nn
from torch.nn import functional as F


class _Shortcut(nn.Module):
  """Option A: stride-2 subsampling, then zero channels up to ``out_channels``."""

  def __init__(self, out_channels: int):
    super().__init__()
    self.out_channels = out_channels

  def forward(self, x):
    x = x[:, :, ::2, ::2]
    zeros = torch.zeros(x.shape[0], self.out_channels - x.shape[1], *x.shape[2:],
                        dtype=x.dtype, device=x.device)
    return torch.cat([x, zeros], 1)


class _Block(nn.Module):

  def __init__(self, cin: int, cout: int, stride: int):
    super().__init__()
    self.conv_a = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    self.bn_a = nn.BatchNorm2d(cout)
    self.conv_b = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
    self.bn_b = nn.BatchNorm2d(cout)
    self.shortcut = _Shortcut(cout) if stride != 1 or cin != cout else None

  def forward(self, x):
    y = F.relu(self.bn_a(self.conv_a(x)))
    y = self.bn_b(self.conv_b(y))
    return F.relu(y + (self.shortcut(x) if self.shortcut is not None else x))


class CifarResNetSLA(nn.Module):
  """CIFAR ResNet-{depth} with a joint head (the original's names)."""

  def __init__(self, depth: int = 32, num_outputs: int = 40):
    super().__init__()
    n = (depth - 2) // 6
    self.conv_1_3x3 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
    self.bn_1 = nn.BatchNorm2d(16)
    cin = 16
    for s, width in enumerate((16, 32, 64), 1):
      blocks = []
      for i in range(n):
        blocks.append(_Block(cin, width, 2 if (s > 1 and i == 0) else 1))
        cin = width
      setattr(self, f"stage_{s}", nn.Sequential(*blocks))
    self.joint_head = nn.Linear(64, num_outputs)
    for m in self.modules():
      if isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
        nn.init.normal_(m.weight, 0.0, (2.0 / fan_out) ** 0.5)

  def forward(self, x):
    x = F.relu(self.bn_1(self.conv_1_3x3(x)))
    x = self.stage_3(self.stage_2(self.stage_1(x)))
    return self.joint_head(x.mean((2, 3)))


def rotation_views(images: torch.Tensor) -> torch.Tensor:
  """NCHW -> 4 views per image, adjacent: row b*4 + k = rot90(x_b, k)."""
  views = torch.stack([torch.rot90(images, k, (2, 3)) for k in range(4)], 1)
  return views.reshape(-1, *images.shape[1:])


def sla_loss(model, images, labels, large_loss=False):
  views = rotation_views(images)
  joint = torch.stack([labels * 4 + k for k in range(4)], 1).reshape(-1)
  loss = F.cross_entropy(model(views), joint)
  return loss * 4 if large_loss else loss


def make_step(depth=32, num_classes=10, channels_last=False, bf16=False,
              lr=0.1, momentum=0.9, weight_decay=1e-4, seed=0, device="cpu"):
  """Returns ``(model, step)``; ``step(images, labels) -> loss`` does one SGD update."""
  torch.manual_seed(seed)
  model = CifarResNetSLA(depth, num_classes * 4)
  memory_format = torch.channels_last if channels_last else torch.contiguous_format
  model = model.to(device=device, memory_format=memory_format).train()
  opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum,
                        weight_decay=weight_decay)

  def step(images, labels):
    images = images.contiguous(memory_format=memory_format)
    with torch.autocast("cpu" if images.device.type == "cpu" else "cuda",
                        dtype=torch.bfloat16, enabled=bf16):
      loss = sla_loss(model, images, labels)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()

  return model, step


def load_reference_weights(model: nn.Module, reference, mode: str = "sla"):
  """Loads ``{mode}.before.*`` of the shared reference npz into ``model``."""
  prefix = f"{mode}.before."
  state = {k[len(prefix):]: torch.from_numpy(reference[k].copy())
           for k in reference if k.startswith(prefix)}
  missing, unexpected = model.load_state_dict(state, strict=False)
  if unexpected or any("num_batches_tracked" not in k for k in missing):
    raise ValueError(f"reference weights do not fit: missing {missing}, "
                     f"unexpected {unexpected}")


def import_torchvision():
  """``torchvision``, importable beside the CPU-only torch wheel too.

  Its compiled ops do not load beside that wheel, so its operator
  meta-registrations (detection ops, which the ResNets never use) are stubbed
  before the import.
  """
  stub_name = "torchvision._meta_registrations"
  stub = sys.modules.setdefault(stub_name, types.ModuleType(stub_name))
  try:
    import torchvision  # pylint: disable=g-import-not-at-top
  except ImportError:
    if sys.modules.get(stub_name) is stub:  # leave no trace of a failed import
      del sys.modules[stub_name]
    raise
  return torchvision
