"""Our jitted SLA train step vs the PyTorch re-implementation, same batch shape, alternating.

    pip install -e .[bench]
    python -m benchmarks.compare_torch --batch_size 128 --rounds 5

    # and the original code itself, from a checkout outside this repo:
    git clone https://github.com/hankook/SLA /tmp/SLA_orig
    python -m benchmarks.compare_torch --official /tmp/SLA_orig --rounds 5

Both do one SGD step of ResNet-{depth} on ``batch_size`` images x 4 rotations
(CE on joint labels, momentum 0.9, weight decay 1e-4). The script first checks
that the PyTorch re-implementation reproduces the original's loss on the shared
reference weights (when ../shared is present), then alternates JAX and PyTorch
calls for ``--rounds`` rounds and prints median step times and the ratio.
``--official PATH`` adds a third contestant: the original's own update, i.e.
its ``trainers.create_sla_trainer`` process function (its ``cresnet{depth}``
from ``models.check_model``, its ``augmentations.rotation``, SGD), imported
from the user's checkout at PATH; nothing of it enters this repo. The load
averages before the run are recorded (``--require_quiet`` refuses a busy
machine).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import sys
import time

import jax
import numpy as np
import torch

from benchmarks import original_side_by_side, torch_sla
from sla_jax import bench, cli, config_lib

SHARED = pathlib.Path(os.environ.get(
    "SLA_SHARED_DIR", pathlib.Path(__file__).resolve().parents[2] / "shared"))
REFERENCE = SHARED / "reference" / "official_resnet32_rotation.npz"


def check_against_reference(path=REFERENCE) -> float | None:
  """Relative error of the PyTorch step's loss on the reference batch, or None."""
  if not path.exists():
    return None
  ref = np.load(path)
  model = torch_sla.CifarResNetSLA(32, 40).train()
  torch_sla.load_reference_weights(model, ref)
  with torch.no_grad():
    loss = torch_sla.sla_loss(model, torch.from_numpy(ref["images_nchw"]),
                              torch.from_numpy(ref["labels"]))
  return abs(float(loss) - float(ref["sla.loss"])) / float(ref["sla.loss"])


def default_jax_devices() -> int:
  """Every CPU device (the tools' one per core, :mod:`sla_jax.xla_env`, as
  PyTorch uses every core through its threads); one accelerator (PyTorch's
  one GPU)."""
  return jax.device_count() if jax.default_backend() == "cpu" else 1


def jax_step(depth: int, batch_size: int, dtype: str, fast_variance=False,
             num_devices: int = 1, fused_batch_norm=False):
  """The trainer's own jitted step (on-device data path), ready to call."""
  config = config_lib.base_config()
  config.model.use_fast_variance = fast_variance
  config.model.fused_batch_norm = fused_batch_norm
  config.model.depth, config.batch_size, config.model.dtype = depth, batch_size, dtype
  config.objective, config.transform = "sla", "rotation"
  config.num_devices = num_devices
  return config_step(config, (32, 32, 3), 10)


def config_step(config, image_shape, num_classes: int):
  """``call() -> loss``: one step of the trainer's jitted step for ``config``, on seeded synthetic data."""
  images, labels = bench.synthetic_data(config.batch_size, image_shape,
                                        num_classes)
  setup = bench.build_train_step(config, images, labels, num_classes,
                                 image_shape)
  holder = {"state": setup.state}

  def call():
    holder["state"], losses = setup.step(holder["state"], *setup.data,
                                         setup.seed_key, 1)
    return float(losses[0])

  return call


def official_step(path: str, depth: int, batch_size: int, device: str):
  """``call()``: one update of the original hankook/SLA code at ``path`` (its engine's process function)."""
  models, augmentations, trainers = original_side_by_side.import_official(path)
  torch.manual_seed(0)
  transform, m = augmentations.rotation()
  with contextlib.redirect_stdout(sys.stderr):  # it prints its depth: keep --json's stdout JSON
    model = models.check_model(f"cresnet{depth}", 10 * m)
  optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9,
                              weight_decay=1e-4)
  engine = trainers.create_sla_trainer(model, transform, optimizer,
                                       device=torch.device(device))
  rng = np.random.default_rng(0)
  batch = (torch.from_numpy(rng.uniform(-1, 1, (batch_size, 3, 32, 32))
                            .astype(np.float32)),
           torch.from_numpy(rng.integers(0, 10, batch_size)))
  return lambda: engine._process_function(engine, batch)["loss"]  # pylint: disable=protected-access


def time_alternating(calls: dict, rounds: int, warmup: int = 3) -> dict:
  """``{name: [seconds]}``: each synchronous ``call()`` once per round, in turn.

  ``warmup`` untimed rounds first (compilation, cuDNN's autotuning).
  """
  for _ in range(warmup):
    for call in calls.values():
      call()
  times = {name: [] for name in calls}
  for _ in range(rounds):
    for name, call in calls.items():
      start = time.perf_counter()
      call()
      times[name].append(time.perf_counter() - start)
  return times


TORCH_VARIANTS = ("fp32", "channels_last", "bf16", "bf16_channels_last")


class OneLineParser(argparse.ArgumentParser):
  """argparse whose errors are one line (no usage block) and exit status 2."""

  def error(self, message):
    self.exit(2, f"{self.prog}: error: {message}\n")


def positive_int(text: str) -> int:
  """An argparse type: a whole number >= 1."""
  try:
    value = int(text)
  except ValueError:
    value = 0
  if value < 1:
    raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
  return value


def _torch_device(text: str) -> str:
  if text in ("auto", "cpu", "cuda") or (text.startswith("cuda:")
                                         and text[5:].isdigit()):
    return text
  raise argparse.ArgumentTypeError(f"{text!r}: use cpu, cuda, cuda:N or auto")


def add_side_by_side_flags(parser: argparse.ArgumentParser, batch_size: int,
                           rounds: int, jax_dtype: str,
                           torch_variant: str) -> None:
  """The flags every side-by-side tool takes, with its own defaults."""
  parser.add_argument("--batch_size", type=positive_int, default=batch_size)
  parser.add_argument("--rounds", type=positive_int, default=rounds)
  parser.add_argument("--jax_dtype", default=jax_dtype,
                      choices=["float32", "bfloat16"])
  parser.add_argument("--torch_variant", default=torch_variant,
                      choices=TORCH_VARIANTS,
                      help="fp32 is PyTorch's default (on GPUs it runs float32 "
                      "convolutions in TF32); bf16 is autocast.")
  parser.add_argument("--torch_device", default="auto", type=_torch_device,
                      help="cpu, cuda, or auto (cuda when available).")
  parser.add_argument("--json", action="store_true")
  parser.add_argument("--require_quiet", action="store_true",
                      help="Refuse to time on a busy machine (exit 2).")


def start_side_by_side(parser: argparse.ArgumentParser, args) -> tuple[dict, str]:
  """``(load before, torch device)``; exits 2 on a busy machine under ``--require_quiet``.

  cuDNN autotuning goes on: PyTorch's faster setting, so a ratio never flatters us.
  """
  load = bench.machine_load()
  if args.require_quiet and load["busy"]:
    parser.exit(2, f"{parser.prog}: error: the machine is busy ({load}); stop "
                f"other work or drop --require_quiet.\n")
  torch.backends.cudnn.benchmark = True
  device = (("cuda" if torch.cuda.is_available() else "cpu")
            if args.torch_device == "auto" else args.torch_device)
  return load, device


def main():
  cli.start_tool_process()  # what sla-train and sla-bench run with
  parser = OneLineParser(prog="compare_torch",
                         description=__doc__.splitlines()[0])
  parser.add_argument("--depth", type=int, default=32)
  parser.add_argument("--fast_variance", action="store_true",
                      help="One-pass BatchNorm variance on the JAX side.")
  parser.add_argument("--fused_batch_norm", action="store_true",
                      help="The closed-form BatchNorm backward on the JAX side "
                      "(model.fused_batch_norm).")
  parser.add_argument("--official", default=None,
                      help="A checkout of hankook/SLA: also time its own step.")
  parser.add_argument("--only", default=None,
                      choices=["jax", "torch", "official"],
                      help="Time this contestant alone (no ratio): alternate "
                      "such processes to compare programs that each have a "
                      "process of their own, as users run them.")
  parser.add_argument("--jax_devices", type=positive_int, default=None,
                      help="Devices of our step (default: every CPU device, "
                      "or one accelerator).")
  add_side_by_side_flags(parser, batch_size=128, rounds=5, jax_dtype="float32",
                         torch_variant="fp32")
  args = parser.parse_args()
  if args.only == "official" and not args.official:
    parser.error("--only official needs --official PATH")
  if args.official and not os.path.isdir(args.official):
    parser.error(f"--official {args.official}: no such directory (a checkout "
                 f"of hankook/SLA)")
  if args.official:
    try:  # before minutes of compiling and timing
      original_side_by_side.import_official(args.official)
    except original_side_by_side.OfficialCodeError as e:
      parser.error(str(e))
  if args.depth < 8 or (args.depth - 2) % 6:
    parser.error(f"--depth {args.depth}: a CIFAR ResNet has depth 6n + 2 "
                 f"(8, 14, 20, 32, ...)")
  jax_devices = args.jax_devices or default_jax_devices()
  if jax_devices > len(jax.devices()):
    parser.error(f"--jax_devices {jax_devices}: JAX sees "
                 f"{len(jax.devices())} devices")
  load, device = start_side_by_side(parser, args)

  error = check_against_reference()
  if error is not None and error > 1e-5:
    raise SystemExit(f"PyTorch re-implementation is off the reference loss by "
                     f"{error:.2e} relative; not a fair comparison.")
  timed = {args.only} if args.only else {"jax", "torch", "official"}
  calls = {}
  if "jax" in timed:
    if args.batch_size % jax_devices:
      parser.exit(2, f"{parser.prog}: error: --batch_size={args.batch_size} is "
                  f"not divisible by the {jax_devices} JAX devices; use a "
                  f"multiple or set --jax_devices.\n")
    calls["jax"] = jax_step(args.depth, args.batch_size, args.jax_dtype,
                            args.fast_variance, jax_devices,
                            args.fused_batch_norm)
  if "torch" in timed:
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.uniform(-1, 1, (args.batch_size, 3, 32, 32))
                              .astype(np.float32)).to(device)
    labels = torch.from_numpy(rng.integers(0, 10, args.batch_size)).to(device)
    _, torch_call = torch_sla.make_step(
        args.depth, channels_last="channels_last" in args.torch_variant,
        bf16=args.torch_variant.startswith("bf16"), device=device)
    calls["torch"] = lambda: float(torch_call(images, labels))
  if args.official and "official" in timed:
    calls["official"] = official_step(args.official, args.depth,
                                      args.batch_size, device)
  times = time_alternating(calls, args.rounds)
  result = {"batch_size": args.batch_size, "views": 4 * args.batch_size,
            "depth": args.depth, "jax_dtype": args.jax_dtype,
            "jax_fast_variance": args.fast_variance,
            "jax_fused_batch_norm": args.fused_batch_norm,
            "torch_variant": args.torch_variant, "rounds": args.rounds,
            "torch_threads": torch.get_num_threads(),
            "torch_device": device, "torch_version": torch.__version__,
            "jax_version": jax.__version__,
            "jax_device": str(jax.devices()[0].device_kind),
            "jax_backend": jax.default_backend(), "jax_devices": jax_devices,
            "reference_loss_rel_error": error,
            "machine_load_before": load,
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
            "only": args.only}
  for name, seconds in times.items():
    result[f"{name}_median_s"] = float(np.median(seconds))
  if "jax" in times and "torch" in times:
    result["jax_speed_vs_torch"] = (result["torch_median_s"] /
                                    result["jax_median_s"])
  if "jax" in times and "official" in times:
    result["jax_speed_vs_official"] = (result["official_median_s"] /
                                       result["jax_median_s"])
  if args.json:
    print(json.dumps(result))
    return
  check = "skipped" if error is None else f"{error:.1e} rel"
  busy = ", BUSY: not a result" if load["busy"] else ""
  names = {"jax": f"JAX ({args.jax_dtype})",
           "torch": f"PyTorch ({args.torch_variant})",
           "official": f"the original code's own step ({args.official})"}
  print(f"ResNet-{args.depth}, {args.batch_size} images x 4 views "
        f"(reference loss check: {check}; load before {load['load_1m']:.2f}"
        f"{busy}):")
  for name in times:
    print(f"  {names[name]}: {result[f'{name}_median_s']:.3f} s/step")
  for other in ("torch", "official"):
    if f"jax_speed_vs_{other}" in result:
      print(f"  JAX runs at {result[f'jax_speed_vs_{other}']:.2f}x the speed "
            f"of {names[other]}")


if __name__ == "__main__":
  main()
