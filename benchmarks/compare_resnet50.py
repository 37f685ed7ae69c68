"""Our ResNet-50 SLA train step vs torchvision's resnet50 doing the same step, alternating.

    pip install -e .[bench]
    python -m benchmarks.compare_resnet50 --batch_size 64 --rounds 20 --json   # a GPU
    python -m benchmarks.compare_resnet50 --batch_size 2 --image_size 64 --rounds 2   # a CPU check

Both sides do one SGD step (momentum 0.9, weight decay 1e-4, lr 0.1) of
ResNet-50 on ``batch_size`` images of ``image_size`` px x 4 rotations, one
softmax over ``num_classes`` x 4 joint labels, summed over the views (the large
loss of ``configs/imagenet.py``). Ours is the trainer's own jitted step for
``configs/imagenet.py`` (:func:`sla_jax.bench.build_train_step`: batch drawn,
flipped, normalised and rotated inside the step; ``--jax_dtype`` compute,
float32 parameters). PyTorch's is torchvision's ``resnet50(num_classes=4N)``
given the normalised batch on its device: views, forward, backward, SGD, in
each ``--torch_variant``: ``fp32`` (PyTorch's default, TF32 convolutions on a
GPU), ``channels_last``, ``bf16`` (autocast) and ``bf16_channels_last`` (the
fastest eager setting); ``--torch_compile`` adds ``torch.compile``. cuDNN
autotuning is on. After a warm-up of every contestant, ``--rounds`` rounds
call each once in turn (each call synchronised); medians are reported with the
machine's load before the run.
"""

from __future__ import annotations

import importlib.util
import json
import pathlib

import jax
import numpy as np
import torch
from torch.nn import functional as F

from benchmarks import compare_torch, torch_sla
from sla_jax import bench, cli

REPO = pathlib.Path(__file__).resolve().parents[1]


def imagenet_config(batch_size: int, image_size: int, dtype: str):
  """``configs/imagenet.py``'s SLA config at this batch, size and dtype, one device."""
  spec = importlib.util.spec_from_file_location("imagenet_config",
                                                REPO / "configs" / "imagenet.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(f"objective=sla,batch_size={batch_size},"
                             f"dtype={dtype}")
  config.image_size, config.num_devices = image_size, 1
  return config


def jax_step(batch_size: int, image_size: int, num_classes: int, dtype: str,
             lr: float = 0.1):
  """``call() -> loss``: one step of the trainer's jitted ResNet-50 SLA step."""
  config = imagenet_config(batch_size, image_size, dtype)
  config.lr = lr
  return compare_torch.config_step(config, (image_size, image_size, 3),
                                   num_classes)


def torch_step(batch_size: int, image_size: int, num_classes: int,
               variant: str, compile_model: bool, device: str, lr: float = 0.1):
  """``call() -> loss``: torchvision resnet50, the same SLA step on a device batch."""
  torchvision = torch_sla.import_torchvision()
  torch.manual_seed(0)
  channels_last = "channels_last" in variant
  memory_format = (torch.channels_last if channels_last
                   else torch.contiguous_format)
  model = torchvision.models.resnet50(num_classes=num_classes * 4)
  model = model.to(device=device, memory_format=memory_format).train()
  forward = torch.compile(model) if compile_model else model
  opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9,
                        weight_decay=1e-4)
  rng = np.random.default_rng(0)
  images = torch.from_numpy(rng.standard_normal(
      (batch_size, 3, image_size, image_size), dtype=np.float32)).to(device)
  labels = torch.from_numpy(rng.integers(0, num_classes, batch_size)).to(device)
  joint = torch.stack([labels * 4 + k for k in range(4)], 1).reshape(-1)
  autocast = "cpu" if device == "cpu" else "cuda"

  def call():
    views = torch.stack([torch.rot90(images, k, (2, 3)) for k in range(4)], 1)
    views = views.reshape(-1, *images.shape[1:]).contiguous(
        memory_format=memory_format)
    with torch.autocast(autocast, dtype=torch.bfloat16,
                        enabled=variant.startswith("bf16")):
      loss = F.cross_entropy(forward(views), joint) * 4  # summed over views
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())  # synchronises

  return call


def main():
  cli.start_tool_process()  # what sla-train and sla-bench run with
  parser = compare_torch.OneLineParser(prog="compare_resnet50",
                                       description=__doc__.splitlines()[0])
  parser.add_argument("--image_size", type=int, default=224)
  parser.add_argument("--num_classes", type=int, default=1000)
  parser.add_argument("--torch_compile", action="store_true",
                      help="torch.compile the model (default: eager).")
  compare_torch.add_side_by_side_flags(parser, batch_size=64, rounds=20,
                                       jax_dtype="bfloat16",
                                       torch_variant="bf16_channels_last")
  args = parser.parse_args()
  if min(args.batch_size, args.image_size, args.num_classes, args.rounds) < 1:
    parser.exit(2, "compare_resnet50: error: --batch_size, --image_size, "
                "--num_classes and --rounds must be >= 1.\n")
  load, device = compare_torch.start_side_by_side(parser, args)
  shape = (args.batch_size, args.image_size, args.num_classes)
  calls = {"jax": jax_step(*shape, args.jax_dtype),
           "torch": torch_step(*shape, args.torch_variant, args.torch_compile,
                               device)}
  times = compare_torch.time_alternating(calls, args.rounds)
  result = {"model": "resnet50", "batch_size": args.batch_size,
            "views": 4 * args.batch_size, "image_size": args.image_size,
            "num_classes": args.num_classes, "rounds": args.rounds,
            "jax_dtype": args.jax_dtype, "torch_variant": args.torch_variant,
            "torch_compile": args.torch_compile, "torch_device": device,
            "torch_version": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "jax_version": jax.__version__,
            "jax_device": str(jax.devices()[0].device_kind),
            "machine_load_before": load,
            **{f"{name}_median_s": float(np.median(t))
               for name, t in times.items()}}
  result["jax_speed_vs_torch"] = result["torch_median_s"] / result["jax_median_s"]
  result["jax_views_per_s"] = result["views"] / result["jax_median_s"]
  result["torch_views_per_s"] = result["views"] / result["torch_median_s"]
  if args.json:
    print(json.dumps(result))
  else:
    print(f"ResNet-50, {args.batch_size} images x 4 views at {args.image_size} "
          f"px: JAX ({args.jax_dtype}) {result['jax_median_s']:.4f} s/step, "
          f"torchvision ({args.torch_variant}"
          f"{', compiled' if args.torch_compile else ''}) "
          f"{result['torch_median_s']:.4f} s/step -> JAX runs at "
          f"{result['jax_speed_vs_torch']:.2f}x PyTorch's speed (load before "
          f"{load['load_1m']:.2f}{', BUSY: not a result' if load['busy'] else ''})")


if __name__ == "__main__":
  main()
