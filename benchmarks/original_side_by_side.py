"""Train with the original hankook/SLA code, on our data splits, for a side-by-side with ``sla-train``.

    git clone https://github.com/hankook/SLA /tmp/SLA_orig      # never into this repo
    pip install -e ".[bench]" pytorch-ignite
    tar xzf ../shared/data/cifar10-jpeg.tar.gz -C /tmp
    python -m benchmarks.original_side_by_side --official /tmp/SLA_orig \
        --data /tmp/cifar10 --modes baseline,sla,sla+sd --seeds 0,1,2,3,4 \
        --out results/side_by_side/original

Everything that trains comes unchanged from the user's checkout at ``--official``:
its ``models.check_model`` (CIFAR ResNet + PyTorch ``nn.Linear`` heads),
``augmentations.rotation``, ``trainers.create_{baseline,sla,sla_sd}_trainer``
(ignite engines: loss, backward, SGD step, the SI / AG / SD metrics), and its
``train.py`` recipe re-typed here (this file only wires it): ``optim.SGD(lr,
momentum 0.9, weight_decay)``, ``MultiStepLR`` at 1/2 and 3/4 stepped every
iteration, ``random.sample`` batches of distinct images, evaluation every
``--eval_every`` steps, the test metrics at the best validation ``single_acc``.
Its CIFAR input transforms (``RandomCrop(32, padding=4)``, horizontal flip,
``Normalize(0.5, 0.5)``) are re-expressed in torch ops because torchvision does
not import beside the CPU torch wheel here; they draw from torch's RNG as
torchvision does. The images and the train / validation / test split come from
``sla_jax.data.load`` with the trainer's own fields, so both sides see the same
pixels. Each run writes ``OUT/runs/<mode>_rotation_seed<k>/`` with
``metrics.jsonl`` and ``results.json`` in ``sla-train``'s metric names (SLA:
``single_acc`` -> ``acc_si``, ``agg_acc`` -> ``acc_ag``; SLA+SD: ``single_acc``
is the SD head -> ``acc_sd``); finished runs are skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import pathlib
import random
import sys
import time
import types

import numpy as np

MODES = {"baseline": "baseline", "sla": "sla", "sla+sd": "sla_sd"}
# The original's metric names -> ours, per mode.
METRIC_NAMES = {
    "baseline": {"single_acc": "acc"},
    "sla": {"single_acc": "acc_si", "agg_acc": "acc_ag"},
    "sla+sd": {"single_acc": "acc_sd", "agg_acc": "acc_ag"},
}


_PIP_NAMES = {"ignite": "pytorch-ignite"}  # import name -> pip name, where they differ


class OfficialCodeError(ValueError):
  """``--official`` does not lead to an importable checkout of hankook/SLA."""


def import_official(path: str):
  """The original's ``models``, ``augmentations`` and ``trainers`` modules.

  Raises OfficialCodeError (one line: the CLIs pass it to ``parser.error``) for
  a folder that is not a checkout, or one whose imports need a package that is
  not installed (its trainers import pytorch-ignite).
  """
  path = str(pathlib.Path(path).resolve())
  if not (pathlib.Path(path) / "trainers.py").exists():
    raise OfficialCodeError(f"--official {path}: no trainers.py there; pass a "
                            f"checkout of hankook/SLA")
  if path not in sys.path:
    sys.path.insert(0, path)
  with _torchvision_or_stand_in():
    try:
      return (importlib.import_module("models"),
              importlib.import_module("augmentations"),
              importlib.import_module("trainers"))
    except ModuleNotFoundError as e:
      package = _PIP_NAMES.get(e.name, e.name)
      raise OfficialCodeError(
          f"--official {path}: its code needs the module {e.name!r}, which is "
          f"not installed (pip install {package})") from e


@contextlib.contextmanager
def _torchvision_or_stand_in():
  """Real torchvision if it imports, else empty modules for the duration only.

  The original's models/__init__.py imports torchvision.models.resnet for its
  ImageNet models only; an empty stand-in lets the CIFAR ResNets import. It
  leaves sys.modules afterwards, so later code in the process (a test, say)
  finds torchvision absent rather than hollow.
  """
  try:
    from benchmarks import torch_sla  # pylint: disable=g-import-not-at-top
    torch_sla.import_torchvision()
  except Exception:  # pylint: disable=broad-except
    tv = types.ModuleType("torchvision")
    tv.models = types.ModuleType("torchvision.models")
    tv.models.resnet = types.ModuleType("torchvision.models.resnet")
    stand_in = {"torchvision": tv, "torchvision.models": tv.models,
                "torchvision.models.resnet": tv.models.resnet}
  else:
    stand_in = {}
  sys.modules.update(stand_in)
  try:
    yield
  finally:
    for name, module in stand_in.items():
      if sys.modules.get(name) is module:
        del sys.modules[name]


def to_tensor_normalized(torch, images_uint8):
  """``ToTensor`` + ``Normalize((.5,)*3, (.5,)*3)``: NHWC uint8 -> NCHW in [-1, 1]."""
  x = torch.from_numpy(images_uint8).permute(0, 3, 1, 2).float() / 255.0
  return (x - 0.5) / 0.5


def random_crop_flip(torch, images_uint8, padding=4):
  """torchvision ``RandomCrop(size, padding)`` + ``RandomHorizontalFlip`` per image."""
  n, h, w, _ = images_uint8.shape
  padded = np.pad(images_uint8, ((0, 0), (padding,) * 2, (padding,) * 2, (0, 0)))
  out = np.empty_like(images_uint8)
  for k in range(n):
    i = int(torch.randint(0, h + 2 * padding - h + 1, size=(1,)))
    j = int(torch.randint(0, w + 2 * padding - w + 1, size=(1,)))
    crop = padded[k, i:i + h, j:j + w]
    out[k] = crop[:, ::-1] if torch.rand(1) < 0.5 else crop
  return out


def train_one(mods, dataset, mode, seed, args, workdir: pathlib.Path):
  import torch  # pylint: disable=g-import-not-at-top
  from torch import optim  # pylint: disable=g-import-not-at-top
  models, augmentations, trainers = mods
  torch.manual_seed(seed)
  random.seed(seed)
  np.random.seed(seed)
  device = torch.device("cpu")
  n = dataset.num_classes
  transform, m = augmentations.rotation()
  model_name = f"cresnet{args.depth}"
  if mode == "baseline":
    model = models.check_model(model_name, n)
    builder = trainers.create_baseline_trainer
    kwargs = {}
  elif mode == "sla":
    model = models.check_model(model_name, n * m)
    builder = trainers.create_sla_trainer
    kwargs = {"transform": transform, "with_large_loss": False}
  else:
    model = models.check_model(model_name, n * m, n)
    builder = trainers.create_sla_sd_trainer
    kwargs = {"transform": transform, "T": args.temperature,
              "with_large_loss": False}
  model.num_classes = n
  model.num_transformations = m
  optimizer = optim.SGD(model.parameters(), lr=args.lr,
                        weight_decay=args.weight_decay, momentum=0.9)
  scheduler = optim.lr_scheduler.MultiStepLR(
      optimizer, [args.steps // 2, args.steps * 3 // 4])
  train = builder(model, optimizer=optimizer, name="train", device=device,
                  **kwargs)
  evaluate = builder(model, optimizer=None, name="val", device=device, **kwargs)

  @train.on(trainers.Events.ITERATION_COMPLETED)
  def _step_lr(engine):  # pylint: disable=unused-argument
    scheduler.step()

  train_images, train_labels = dataset.train.read_all()
  eval_splits = {s: getattr(dataset, s).read_all() for s in ("val", "test")}

  def train_batches():
    for _ in range(args.steps):
      index = random.sample(range(len(train_labels)), args.batch_size)
      x = to_tensor_normalized(torch, random_crop_flip(torch, train_images[index]))
      yield x, torch.from_numpy(train_labels[index].astype(np.int64))

  def eval_batches(split):
    images, labels = eval_splits[split]
    for start in range(0, len(labels), args.eval_batch_size):
      sl = slice(start, start + args.eval_batch_size)
      yield (to_tensor_normalized(torch, images[sl]),
             torch.from_numpy(labels[sl].astype(np.int64)))

  names = METRIC_NAMES[mode]
  best, rows = None, []
  batches = train_batches()
  t0 = time.perf_counter()
  for step in range(args.eval_every, args.steps + 1, args.eval_every):
    train.run(batches, max_epochs=1, epoch_length=args.eval_every)
    row = {"step": step}
    for split in ("val", "test"):
      evaluate.run(list(eval_batches(split)), max_epochs=1)
      row.update({f"{split}/{ours}": float(evaluate.state.metrics[theirs])
                  for theirs, ours in names.items()})
    rows.append(row)
    key = f"val/{names['single_acc']}"
    if best is None or row[key] > best[key]:  # the original: strict '<'
      best = row
    print(json.dumps(row), flush=True)
  wall = time.perf_counter() - t0
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / "metrics.jsonl").write_text(
      "".join(json.dumps(r) + "\n" for r in rows))
  results = {
      "side": "original", "official": str(pathlib.Path(args.official).resolve()),
      "mode": mode, "objective": MODES[mode], "seed": seed,
      "model": model_name, "batch_size": args.batch_size, "steps": args.steps,
      "selection_metric": f"val/{names['single_acc']}",
      "best_step": best["step"], "wall_s": wall,
      "val": {k[4:]: v for k, v in best.items() if k.startswith("val/")},
      "test": {k[5:]: v for k, v in best.items() if k.startswith("test/")},
  }
  (workdir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
  return results


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
  """``--official`` (the user's hankook/SLA checkout), ``--data``, ``--out``: shared with paired_trajectory."""
  parser.add_argument("--official", required=True,
                      help="a checkout of hankook/SLA (not part of this repo)")
  parser.add_argument("--data", required=True,
                      help="image folder root with train/ and test/")
  parser.add_argument("--out", required=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  add_source_arguments(parser)
  parser.add_argument("--modes", default="baseline,sla,sla+sd")
  parser.add_argument("--seeds", default="0,1,2,3,4")
  parser.add_argument("--depth", type=int, default=20)
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--steps", type=int, default=600)
  parser.add_argument("--eval_every", type=int, default=150)
  parser.add_argument("--eval_batch_size", type=int, default=32,
                      help="the original evaluates in training-size batches")
  parser.add_argument("--val_size", type=int, default=1000)
  parser.add_argument("--lr", type=float, default=0.1)
  parser.add_argument("--weight_decay", type=float, default=1e-4)
  parser.add_argument("--temperature", type=float, default=1.0)
  parser.add_argument("--threads", type=int, default=0,
                      help="torch threads (0: torch's default)")
  args = parser.parse_args()
  modes = args.modes.split(",")
  for mode in modes:
    if mode not in MODES:
      parser.error(f"--modes: {mode!r} is not one of {', '.join(MODES)}")
  if args.steps % args.eval_every:
    parser.error("--steps must be a multiple of --eval_every")
  try:
    mods = import_official(args.official)
  except OfficialCodeError as e:
    parser.error(str(e))

  import torch  # pylint: disable=g-import-not-at-top
  if args.threads:
    torch.set_num_threads(args.threads)
  from sla_jax import config_lib, data  # pylint: disable=g-import-not-at-top
  config = config_lib.base_config()
  config.dataset, config.val_size = f"folder:{args.data}", args.val_size
  dataset = data.load(config)
  out = pathlib.Path(args.out)
  for seed in map(int, args.seeds.split(",")):
    for mode in modes:
      workdir = out / "runs" / f"{MODES[mode]}_rotation_seed{seed}"
      if (workdir / "results.json").exists():
        continue
      print(f"== {mode} seed {seed} -> {workdir}", flush=True)
      results = train_one(mods, dataset, mode, seed, args, workdir)
      print(json.dumps({"run": workdir.name, "best_step": results["best_step"],
                        "test": results["test"], "wall_s": results["wall_s"]}),
            flush=True)


if __name__ == "__main__":
  main()
