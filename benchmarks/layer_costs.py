"""ResNet-32's train step layer by layer on one CPU core: our convolutions and BatchNorm beside PyTorch's.

    taskset -c 0 python -m benchmarks.layer_costs --views 256 [--torch] [--json]

For each distinct layer of the CIFAR ResNet-32 (the 3->16 stem, the 16-, 32-
and 64-channel 3x3 convs, the two stride-2 convs) at ``--views`` images, times
the pieces of one training step, median of ``--repeats`` calls after one
warm-up: the convolution's forward, its input gradient and its weight gradient
as the trainer computes them (:mod:`sla_jax.models.conv_ops`, so the matmul
weight gradient where the model uses it), and Flax BatchNorm + ReLU forward and
forward+backward. ``--torch`` adds the same pieces in PyTorch (NCHW, the
original code's layout; one thread): ``torch.nn.Conv2d`` forward, forward +
weight gradient, forward + both gradients, and ``BatchNorm2d`` + ReLU, whose
differences give the weight and input gradients. The last row sums each column
over the network (each layer times how often ResNet-32 has it). Run it pinned
to one core (``taskset -c 0``) with one XLA CPU device
(``XLA_FLAGS=--xla_force_host_platform_device_count=1``): that is what each of
the trainer's per-core CPU devices does with its share of the batch.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable

import flax.linen as nn
import jax

from sla_jax import bench
from sla_jax.models import conv_ops

# (input size, in channels, out channels, stride, how many in ResNet-32)
RESNET32_LAYERS = ((32, 3, 16, 1, 1), (32, 16, 16, 1, 10), (32, 16, 32, 2, 1),
                   (16, 32, 32, 1, 9), (16, 32, 64, 2, 1), (8, 64, 64, 1, 9))
_PADDING = ((1, 1), (1, 1))


def _median_ms(fn: Callable[[], Any], repeats: int) -> float:
  """sla-bench's timing: one untimed call, then the median of ``repeats``."""
  return 1e3 * bench._time_calls(fn, repeats, 0)["median_s"]  # pylint: disable=protected-access


def jax_layer(views: int, size: int, cin: int, cout: int, stride: int,
              repeats: int) -> dict[str, float]:
  """Milliseconds per call of one layer's pieces as the trainer computes them."""
  key_x, key_w, key_dy = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(key_x, (views, size, size, cin))
  w = 0.1 * jax.random.normal(key_w, (3, 3, cin, cout))
  strides = (stride, stride)
  forward = jax.jit(lambda x, w: conv_ops.canonical_conv(x, w, strides, _PADDING))
  y = forward(x, w)
  dy = jax.random.normal(key_dy, y.shape)
  input_grad = jax.jit(lambda dy, w: conv_ops.input_grad(
      dy, w, x.shape, strides, _PADDING))
  weight_grad = jax.jit(lambda x, dy: jax.vjp(
      lambda w: conv_ops.canonical_conv(x, w, strides, _PADDING), w)[1](dy)[0])
  norm = nn.BatchNorm(use_running_average=False, momentum=0.9)
  variables = norm.init(key_x, y)
  norm_relu = lambda v, y: jax.nn.relu(
      norm.apply(v, y, mutable=["batch_stats"])[0])
  norm_fwd = jax.jit(norm_relu)
  norm_fwd_bwd = jax.jit(lambda v, y, dy: jax.vjp(norm_relu, v, y)[1](dy))
  run = lambda f, *a: lambda: f(*a)
  return {"fwd": _median_ms(run(forward, x, w), repeats),
          "dx": _median_ms(run(input_grad, dy, w), repeats),
          "dw": _median_ms(run(weight_grad, x, dy), repeats),
          "bn_fwd": _median_ms(run(norm_fwd, variables, y), repeats),
          "bn_fwd_bwd": _median_ms(run(norm_fwd_bwd, variables, y, dy), repeats)}


def torch_layer(views: int, size: int, cin: int, cout: int, stride: int,
                repeats: int) -> dict[str, float]:
  """The same pieces in PyTorch (NCHW, the current thread count)."""
  import torch  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  x = torch.randn(views, cin, size, size)
  x_grad = x.clone().requires_grad_(True)
  conv = torch.nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
  y = conv(x).detach()
  dy = torch.randn_like(y)
  y_grad = y.clone().requires_grad_(True)
  norm = torch.nn.BatchNorm2d(cout)

  def forward():
    with torch.no_grad():
      conv(x)

  def forward_weight_grad():
    conv.zero_grad()
    conv(x).backward(dy)

  def forward_both_grads():
    conv.zero_grad()
    x_grad.grad = None
    conv(x_grad).backward(dy)

  def norm_fwd():
    with torch.no_grad():
      F.relu(norm(y_grad))

  def norm_fwd_bwd():
    y_grad.grad = None
    norm.zero_grad()
    F.relu(norm(y_grad)).backward(dy)

  fwd, fwd_dw, fwd_dx_dw = (_median_ms(f, repeats) for f in (
      forward, forward_weight_grad, forward_both_grads))
  return {"fwd": fwd, "dx": fwd_dx_dw - fwd_dw, "dw": fwd_dw - fwd,
          "bn_fwd": _median_ms(norm_fwd, repeats),
          "bn_fwd_bwd": _median_ms(norm_fwd_bwd, repeats)}


def measure(views: int, repeats: int, with_torch: bool) -> dict[str, Any]:
  """Per layer and summed over ResNet-32: ``{"layers": [...], "resnet32": {...}}``."""
  sides = {"jax": jax_layer}
  if with_torch:
    import torch  # pylint: disable=g-import-not-at-top
    torch.set_num_threads(1)
    sides["torch"] = torch_layer
  layers, totals = [], {side: {} for side in sides}
  for size, cin, cout, stride, count in RESNET32_LAYERS:
    row = {"layer": f"{size}x{size}, {cin}->{cout}, s{stride}", "count": count}
    for side, fn in sides.items():
      row[side] = fn(views, size, cin, cout, stride, repeats)
      for piece, ms in row[side].items():
        totals[side][piece] = totals[side].get(piece, 0.0) + count * ms
    layers.append(row)
  return {"what": "layer_costs", "views": views, "repeats": repeats,
          "jax_devices": jax.device_count(), "layers": layers,
          "resnet32": totals, "machine_load_before": bench.machine_load()}


def format_table(result: dict[str, Any]) -> str:
  sides = list(result["resnet32"])
  pieces = list(result["resnet32"]["jax"])
  header = "| layer (× in ResNet-32) | " + " | ".join(
      f"{p} {s}" for p in pieces for s in sides) + " |"
  lines = [f"ms per call, {result['views']} views (median of "
           f"{result['repeats']})", header,
           "|---|" + "---:|" * (len(pieces) * len(sides))]
  rows = [(f"{r['layer']} (×{r['count']})", r) for r in result["layers"]]
  rows.append(("ResNet-32, summed", result["resnet32"]))
  for name, r in rows:
    lines.append(f"| {name} | " + " | ".join(
        f"{r[s][p]:.1f}" for p in pieces for s in sides) + " |")
  return "\n".join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--views", type=int, default=256)
  parser.add_argument("--repeats", type=int, default=9)
  parser.add_argument("--torch", action="store_true",
                      help="Also time PyTorch's layers (one thread).")
  parser.add_argument("--json", action="store_true")
  args = parser.parse_args(argv)
  if args.views < 1 or args.repeats < 1:
    print(f"layer_costs: error: --views and --repeats must be >= 1; got "
          f"{args.views} and {args.repeats}.", file=sys.stderr)
    sys.exit(2)
  if args.torch:
    try:
      import torch  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
    except ImportError:
      print("layer_costs: error: --torch needs PyTorch (pip install -e .[bench]).",
            file=sys.stderr)
      sys.exit(2)
  result = measure(args.views, args.repeats, args.torch)
  print(json.dumps(result) if args.json else format_table(result))


if __name__ == "__main__":
  main()
