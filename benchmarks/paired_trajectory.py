"""Paired trajectories: the original code and ours from the same weights on the same batches, against float64.

    python -m benchmarks.paired_trajectory --official /tmp/SLA_orig --data /tmp/cifar10 \
        --steps 300 --out results/side_by_side/paired

The seed-based side by side (benchmarks/original_side_by_side.py) compares
accuracy distributions; this compares the training trajectories themselves.
One initial ResNet (the original's ``models.check_model``, torch seed
``--seed``) and one sequence of ``--steps`` batches (distinct images drawn
with a seeded numpy RNG, random crop with 4-pixel zero padding and horizontal
flip precomputed as uint8) are trained with SLA (4 rotations, joint CE, SGD
momentum 0.9, weight decay 1e-4, lr ×0.1 at 1/2 and 3/4) by:

- ``original_f64``: the original's own update (its ``trainers.create_sla_trainer``
  process function, ``augmentations.rotation``, ``torch.optim.SGD``,
  ``MultiStepLR``) in float64 — the reference;
- ``original_f32``: the same in float32, as the original runs;
- ``ours_<grad>``: sla_jax in float32 (:class:`sla_jax.models.CifarResNet`
  with the imported weights, :func:`sla_jax.losses.sla_loss`,
  :func:`sla_jax.train.make_optimizer`), for each ``--conv_weight_grad``.

Float32 training is chaotic: rounding differences grow through the ReLU masks
and the normalisations until two float32 runs are as far apart as two seeds.
The question is therefore not whether our run equals the original's, but
whether it stays as close to the float64 reference as the original's own
float32 run does. Every ``--check_every`` steps the relative L2 distance of all
parameters to the reference is recorded, and the per-step losses; at the end
every trajectory's final weights are evaluated by the same JAX code on the
test split (SI and AG). Writes ``OUT/trajectory.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import original_side_by_side


def make_batches(images, labels, steps, batch_size, seed, padding=4):
  """``steps`` uint8 batches: distinct images per batch, random crop + flip, seeded."""
  rng = np.random.default_rng(seed)
  n, h, w, _ = images.shape
  out = []
  for _ in range(steps):
    index = rng.choice(n, batch_size, replace=False)
    padded = np.pad(images[index], ((0, 0), (padding,) * 2, (padding,) * 2, (0, 0)))
    tops = rng.integers(0, 2 * padding + 1, batch_size)
    lefts = rng.integers(0, 2 * padding + 1, batch_size)
    flips = rng.random(batch_size) < 0.5
    batch = np.stack([p[t:t + h, l:l + w] for p, t, l in zip(padded, tops, lefts)])
    batch[flips] = batch[flips, :, ::-1]
    out.append((batch, labels[index].astype(np.int64)))
  return out


def flax_params(state_dict) -> dict:
  """The Flax parameters of an original ResNet ``state_dict`` (float64 numpy leaves)."""
  from sla_jax import models  # pylint: disable=g-import-not-at-top
  as64 = {k: v.detach().double().cpu().numpy() for k, v in state_dict.items()}
  variables = models.from_torch_state_dict(as64, head_names=("joint",))
  return jax.tree.map(lambda x: np.asarray(x, np.float64), variables["params"])


def relative_distance(params, reference) -> float:
  """``||params - reference|| / ||reference||`` over every leaf (float64)."""
  diff = sum(float(np.sum((np.asarray(a, np.float64) - b) ** 2))
             for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(reference)))
  norm = sum(float(np.sum(b ** 2)) for b in jax.tree.leaves(reference))
  return (diff / norm) ** 0.5


def run_original(mods, initial_state, batches, steps, dtype, checkpoints):
  """The original's SLA update for every batch; per-step losses and parameter snapshots."""
  import torch  # pylint: disable=g-import-not-at-top
  models, augmentations, trainers = mods
  transform, m = augmentations.rotation()
  model = models.check_model(f"cresnet{initial_state['depth']}", 10 * m)
  model.load_state_dict(initial_state["state_dict"])
  model = model.to(dtype)
  model.num_classes, model.num_transformations = 10, m
  optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9,
                              weight_decay=1e-4)
  scheduler = torch.optim.lr_scheduler.MultiStepLR(
      optimizer, [steps // 2, steps * 3 // 4])
  engine = trainers.create_sla_trainer(model, transform, optimizer,
                                       device=torch.device("cpu"))
  losses, snapshots = [], {}
  for step, (images, labels) in enumerate(batches, start=1):
    x = original_side_by_side.to_tensor_normalized(torch, images).to(dtype)
    out = engine._process_function(engine, (x, torch.from_numpy(labels)))  # pylint: disable=protected-access
    scheduler.step()
    losses.append(float(out["loss"]))
    if step in checkpoints:
      snapshots[step] = flax_params(model.state_dict())
  return losses, snapshots, model.state_dict()


def run_ours(initial_variables, batches, steps, depth, conv_weight_grad,
             checkpoints):
  """sla_jax's SLA step (float32) for every batch; per-step losses and snapshots."""
  from sla_jax import (config_lib, losses as losses_lib, models, preprocess,  # pylint: disable=g-import-not-at-top
                       train, transforms)
  model = models.CifarResNet(depth=depth, heads={"joint": 40},
                             conv_weight_grad=conv_weight_grad)
  config = config_lib.base_config()
  config.total_steps = steps
  tx, _ = train.make_optimizer(config)
  rotation = transforms.get("rotation")

  @jax.jit
  def step_fn(params, batch_stats, opt_state, images, labels):
    def loss_fn(p):
      views = rotation.apply(preprocess.normalize(images))
      out, state = model.apply({"params": p, "batch_stats": batch_stats},
                               views, train=True, mutable=["batch_stats"])
      return losses_lib.sla_loss(out["joint"], labels, 4), state["batch_stats"]
    (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), new_stats, opt_state, loss

  params = jax.tree.map(jnp.asarray, initial_variables["params"])
  batch_stats = jax.tree.map(jnp.asarray, initial_variables["batch_stats"])
  opt_state = tx.init(params)
  losses, snapshots = [], {}
  for step, (images, labels) in enumerate(batches, start=1):
    params, batch_stats, opt_state, loss = step_fn(
        params, batch_stats, opt_state, images, labels.astype(np.int32))
    losses.append(float(loss))
    if step in checkpoints:
      snapshots[step] = jax.tree.map(np.asarray, params)
  return losses, snapshots, {"params": params, "batch_stats": batch_stats}


def sla_test_accuracy(variables, depth, test_split, batch_size=1000):
  """SI and AG test accuracy of ``variables``: the trainer's own evaluator, the same for every side."""
  from sla_jax import distributed, evaluation, models, objectives  # pylint: disable=g-import-not-at-top
  model = models.CifarResNet(depth=depth, heads={"joint": 40})
  evaluate = evaluation.make_evaluator(
      model, objectives.make("sla", 10, "rotation"), jnp.float32, batch_size,
      distributed.make_mesh(1))
  metrics = evaluate(variables, test_split)
  return {"acc_si": metrics["acc_si"], "acc_ag": metrics["acc_ag"]}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  original_side_by_side.add_source_arguments(parser)
  parser.add_argument("--steps", type=int, default=300)
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--depth", type=int, default=20)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--check_every", type=int, default=25)
  parser.add_argument("--conv_weight_grad", default="matmul,xla",
                      help="our variants, comma-separated")
  parser.add_argument("--threads", type=int, default=0,
                      help="torch threads (0: torch's default)")
  args = parser.parse_args()
  if args.steps < 4 or args.check_every < 1:
    parser.error("--steps must be >= 4 and --check_every >= 1")
  try:
    mods = original_side_by_side.import_official(args.official)
  except original_side_by_side.OfficialCodeError as e:
    parser.error(str(e))

  import torch  # pylint: disable=g-import-not-at-top
  if args.threads:
    torch.set_num_threads(args.threads)
  from sla_jax import config_lib, data, models  # pylint: disable=g-import-not-at-top
  config = config_lib.base_config()
  config.dataset = f"folder:{args.data}"
  dataset = data.load(config)
  if dataset.num_classes != 10:
    parser.error(f"--data: expected 10 classes (CIFAR-10); got {dataset.num_classes}")
  train_images, train_labels = dataset.train.read_all()
  batches = make_batches(train_images, train_labels, args.steps,
                         args.batch_size, args.seed)
  checkpoints = set(range(args.check_every, args.steps + 1, args.check_every))
  checkpoints.add(args.steps)

  torch.manual_seed(args.seed)
  initial = mods[0].check_model(f"cresnet{args.depth}", 40)
  initial_state = {"depth": args.depth,
                   "state_dict": {k: v.clone() for k, v in initial.state_dict().items()}}
  initial_variables = models.from_torch_state_dict(initial.state_dict(),
                                                   head_names=("joint",))

  runs, finals, walls = {}, {}, {}
  for name, dtype in (("original_f64", torch.float64),
                      ("original_f32", torch.float32)):
    start = time.perf_counter()
    loss, snaps, state_dict = run_original(mods, initial_state, batches,
                                           args.steps, dtype, checkpoints)
    walls[name] = time.perf_counter() - start
    runs[name] = (loss, snaps)
    finals[name] = models.from_torch_state_dict(
        {k: v.float() for k, v in state_dict.items()}, head_names=("joint",))
    print(f"{name}: final loss {loss[-1]:.5f} ({walls[name]:.0f} s)", flush=True)
  for grad in args.conv_weight_grad.split(","):
    name = f"ours_{grad}"
    start = time.perf_counter()
    loss, snaps, final = run_ours(initial_variables, batches, args.steps,
                                  args.depth, grad, checkpoints)
    walls[name] = time.perf_counter() - start
    runs[name], finals[name] = (loss, snaps), final
    print(f"{name}: final loss {loss[-1]:.5f} ({walls[name]:.0f} s)", flush=True)

  reference_loss, reference = runs["original_f64"]
  result = {"steps": args.steps, "batch_size": args.batch_size,
            "depth": args.depth, "seed": args.seed,
            "official": str(pathlib.Path(args.official).resolve()),
            "checkpoints": sorted(checkpoints), "wall_s": walls,
            "runs": {}}
  for name, (loss, snaps) in runs.items():
    result["runs"][name] = {
        "losses": loss,
        "max_abs_loss_diff_vs_f64": float(np.max(np.abs(
            np.asarray(loss) - np.asarray(reference_loss)))),
        "param_distance_vs_f64": {
            step: relative_distance(snaps[step], reference[step])
            for step in sorted(checkpoints)},
        "test": sla_test_accuracy(finals[name], args.depth, dataset.test)}
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  (out / "trajectory.json").write_text(json.dumps(result, indent=1) + "\n")
  print(format_table(result))


def format_table(result) -> str:
  steps = result["checkpoints"]
  shown = sorted({steps[0], steps[len(steps) // 4], steps[len(steps) // 2],
                  steps[-1]})
  lines = ["| trajectory | " + " | ".join(f"distance to f64 @ {s}" for s in shown)
           + " | max loss diff | test SI | test AG |",
           "|---|" + "---:|" * (len(shown) + 3)]
  for name, run in result["runs"].items():
    dist = run["param_distance_vs_f64"]
    lines.append(f"| {name} | " + " | ".join(f"{dist[s]:.2e}" for s in shown)
                 + f" | {run['max_abs_loss_diff_vs_f64']:.2e} | "
                 f"{100 * run['test']['acc_si']:.2f} | "
                 f"{100 * run['test']['acc_ag']:.2f} |")
  return "\n".join(lines)


if __name__ == "__main__":
  main()
