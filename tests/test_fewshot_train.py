"""The few-shot meta-trainer end to end on tiny striped image folders: outputs, resume, errors."""

import importlib.util
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import subprocess_util as sp
from conftest import REPO, SHARED, extract_shared, interrupt_after
from sla_jax import fewshot_train

TINYIMAGENET = SHARED / "data" / "tinyimagenet100-32.tar.gz"
SPLIT = {"train": 6, "val": 3, "test": 3}  # classes per meta-split


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> pathlib.Path:
  """12 classes x 12 striped 16x16 PNGs (9 in train/, 3 in test/), one
  orientation and frequency per class, and a 6/3/3 class split by name."""
  root = tmp_path_factory.mktemp("stripes")
  rng = np.random.default_rng(0)
  names = [f"c{i:02d}" for i in range(12)]
  grid = np.arange(16) - 8.0
  rows, cols = np.meshgrid(grid, grid, indexing="ij")
  for c, name in enumerate(names):
    angle, freq = np.pi * c / 12, 0.6 + 0.1 * (c % 4)
    colour = rng.uniform(0.3, 1.0, 3)
    for i in range(12):
      phase = rng.uniform(0, 2 * np.pi)
      stripes = np.sin(freq * (np.cos(angle) * cols + np.sin(angle) * rows) +
                       phase)
      image = (0.5 + 0.4 * stripes[..., None] * colour +
               0.05 * rng.normal(size=(16, 16, 3)))
      path = root / ("train" if i < 9 else "test") / name
      path.mkdir(parents=True, exist_ok=True)
      Image.fromarray(np.uint8(np.clip(image, 0, 1) * 255)).save(
          path / f"{i}.png")
  (root / "classes.txt").write_text("".join(f"{n}\tclass {n}\n" for n in names))
  order = iter(names)
  split = {k: [next(order) for _ in range(n)] for k, n in SPLIT.items()}
  (root / "fewshot_split.json").write_text(json.dumps({"method": "toy",
                                                       **split}))
  return root


def get_config(arg: str):
  """``configs/fewshot.py``'s ``get_config(arg)``."""
  spec = importlib.util.spec_from_file_location(
      "fewshot_config", REPO / "configs" / "fewshot.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def tiny_config(root, arg="", **fields):
  """configs/fewshot.py on ``root``: conv4 of width 8, 3-way 2-shot episodes,
  6 steps, a few evaluation episodes; ``fields`` override (dotted keys)."""
  config = get_config(f"data={root},ways=3,shots=2,queries=2,steps=6"
                              + (f",{arg}" if arg else ""))
  defaults = {"model.widths": (8, 8, 8, 8), "crop_padding": 2,
              "fewshot.test_ways": 3, "fewshot.test_shots": (1, 2),
              "fewshot.test_queries": 3, "fewshot.test_episodes": 6,
              "fewshot.val_shots": 2, "fewshot.val_episodes": 4,
              "fewshot.eval_batch_size": 32,
              "fewshot.eval_episodes_per_call": 4, "fewshot.episodes_per_step": 2,
              "eval_every": 3, "log_every": 1, "checkpoint_every": 2}
  for key, value in {**defaults, **fields}.items():
    *parents, name = key.split(".")
    node = config
    for parent in parents:
      node = node[parent]
    node[name] = value
  return config


def test_protonet_run_writes_outputs(folder, tmp_path):
  results = fewshot_train.meta_train_and_evaluate(tiny_config(folder), tmp_path)
  assert results == json.loads((tmp_path / "results.json").read_text())
  assert set(results["test"]) == {f"3way{k}shot/acc{ci}" for k in (1, 2)
                                  for ci in ("", "_ci95")}
  for key, value in results["test"].items():
    assert (value > 0) if key.endswith("_ci95") else (0 <= value <= 1)
  assert results["selection_metric"] == "val/3way2shot/acc"
  assert results["best_step"] in (3, 6) and results["final_step"] == 6
  rows = sp.metric_rows(tmp_path)
  assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6, 6]
  assert all("train/loss" in r for r in rows[:6])
  best_row = next(r for r in rows if r["step"] == results["best_step"])
  assert results["val"] == {k[4:]: v for k, v in best_row.items()
                            if k.startswith("val/")}
  assert rows[-1] == {"step": 6, **{f"test/{k}": v
                                    for k, v in results["test"].items()}}
  assert [p.name for p in (tmp_path / "best").iterdir()] == [
      str(results["best_step"])]
  assert json.loads((tmp_path / "config.json").read_text())["head"] == "protonet"
  events = sorted(tmp_path.glob("events.out.tfevents.*"))
  again = fewshot_train.meta_train_and_evaluate(tiny_config(folder), tmp_path)
  assert again == results  # a finished run rerun: the same meta-test ...
  assert sp.metric_rows(tmp_path) == rows  # ... not logged twice
  assert sorted(tmp_path.glob("events.out.tfevents.*")) == events


def test_train_batches_are_a_pure_function_of_seed_and_step(folder):
  config = tiny_config(folder)
  data = fewshot_train.load_data(config)
  images, support, query = fewshot_train.train_batch(config, data, 3)
  assert images.shape == (2, 3 * (2 + 2), 16, 16, 3) and images.dtype == np.uint8
  np.testing.assert_array_equal(support, [[0, 0, 1, 1, 2, 2]] * 2)
  np.testing.assert_array_equal(query, [[0, 0, 1, 1, 2, 2]] * 2)
  np.testing.assert_array_equal(
      fewshot_train.train_batch(config, data, 3)[0], images)
  assert not np.array_equal(fewshot_train.train_batch(config, data, 4)[0],
                            images)
  assert data.classes == {"train": tuple(range(6)), "val": (6, 7, 8),
                          "test": (9, 10, 11)}
  assert data.images.shape[0] == 12 * 12  # train/ and test/ pooled


@pytest.mark.parametrize("fields,message", [
    ({"objective": "simclr"},
     "Unknown objective 'simclr'; valid objectives are: protonet, sla"),
    ({"head": "lstm"}, "Unknown head 'lstm'; valid heads are: protonet, ridge"),
    ({"optimizer": "lion"}, "Unknown optimizer 'lion'"),
    ({"transform": "jigsaw"}, "Unknown transform 'jigsaw'"),
    ({"model.dtype": "foo"}, "model.dtype must be one of float32, bfloat16"),
    ({"fewshot.ways": 7},
     "7-way train episodes need 7 classes; the meta-train split has 6"),
    ({"fewshot.test_ways": 4}, "4-way test episodes need 4 classes"),
    ({"fewshot.shots": 8, "fewshot.queries": 5},
     "need 13 images per class; a meta-train class has 12"),
    ({"fewshot.test_episodes": 1}, "needs >= 2 episodes"),
])
def test_bad_config_stops_before_training(folder, tmp_path, fields, message):
  with pytest.raises(fewshot_train.ConfigError, match=message):
    fewshot_train.meta_train_and_evaluate(tiny_config(folder, **fields),
                                          tmp_path)
  assert not (tmp_path / "metrics.jsonl").exists()
  assert not (tmp_path / "checkpoints").exists()


def test_missing_split_file_is_a_clear_error(folder, tmp_path):
  config = tiny_config(folder, class_split=str(tmp_path / "none.json"))
  with pytest.raises(FileNotFoundError, match="none.json does not exist"):
    fewshot_train.meta_train_and_evaluate(config, tmp_path / "run")
  config = tiny_config(folder, dataset=f"folder:{tmp_path / 'no_data'}")
  with pytest.raises(FileNotFoundError, match="dataset folder .*no_data does not exist"):
    fewshot_train.meta_train_and_evaluate(config, tmp_path / "run")
  (tmp_path / "list.json").write_text("[1, 2, 3]")
  config = tiny_config(folder, class_split=str(tmp_path / "list.json"))
  with pytest.raises(fewshot_train.ConfigError, match="must be a JSON object"):
    fewshot_train.meta_train_and_evaluate(config, tmp_path / "run")
  assert not (tmp_path / "run").exists()


def test_a_split_file_of_class_names_elsewhere_maps_by_the_data_folder(folder, tmp_path):
  """A copy of the split (names, no classes.txt beside it) reads the data
  folder's classes.txt: the same classes as the file in the folder."""
  (tmp_path / "split.json").write_text((folder / "fewshot_split.json").read_text())
  moved = fewshot_train.load_data(tiny_config(
      folder, class_split=str(tmp_path / "split.json")))
  here = fewshot_train.load_data(tiny_config(folder))
  assert moved.classes == here.classes


@pytest.mark.slow
def test_interrupted_run_resumes_to_the_same_result(folder, tmp_path,
                                                    monkeypatch):
  config = tiny_config(folder)
  straight = fewshot_train.meta_train_and_evaluate(config, tmp_path / "straight")

  undo = interrupt_after(monkeypatch, 5)  # after the step-4 checkpoint
  with pytest.raises(KeyboardInterrupt):
    fewshot_train.meta_train_and_evaluate(config, tmp_path / "resumed")
  undo()
  assert not (tmp_path / "resumed" / "results.json").exists()
  resumed = fewshot_train.meta_train_and_evaluate(config, tmp_path / "resumed")

  assert resumed == straight  # best step, val and test metrics: bit for bit
  rows_a = sp.metric_rows(tmp_path / "straight")
  rows_b = sp.metric_rows(tmp_path / "resumed")
  assert [r["step"] for r in rows_b] == [r["step"] for r in rows_a]
  for a, b in zip(rows_a, rows_b):
    assert {k: v for k, v in a.items() if "per_s" not in k} == {
        k: v for k, v in b.items() if "per_s" not in k}
  import jax  # pylint: disable=g-import-not-at-top
  jax.tree.map(np.testing.assert_array_equal,
               sp.restore_params(tmp_path / "straight", 6),
               sp.restore_params(tmp_path / "resumed", 6))


@pytest.mark.slow
def test_resuming_with_another_config_is_refused(folder, tmp_path):
  fewshot_train.meta_train_and_evaluate(tiny_config(folder, total_steps=2),
                                        tmp_path)
  with pytest.raises(fewshot_train.ConfigError,
                     match="different config.*objective"):
    fewshot_train.meta_train_and_evaluate(
        tiny_config(folder, objective="sla", total_steps=2), tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("head", ["protonet", "ridge"])
def test_sla_reports_single_and_aggregated_inference(folder, tmp_path, head):
  results = fewshot_train.meta_train_and_evaluate(
      tiny_config(folder, objective="sla", head=head, total_steps=3,
                  eval_every=3), tmp_path)
  assert results["num_views"] == 4 and results["head"] == head
  assert results["selection_metric"] == "val/3way2shot/acc_ag"
  assert set(results["test"]) == {f"3way{k}shot/acc_{p}{ci}" for k in (1, 2)
                                  for p in ("si", "ag") for ci in ("", "_ci95")}
  assert all(0 <= v <= 1 for v in results["test"].values())


def _cli(folder, workdir, arg):
  return subprocess.run(
      [sys.executable, "-m", "sla_jax.fewshot_main", "--config",
       f"{REPO}/configs/fewshot.py:data={folder},{arg}",
       "--workdir", str(workdir)], capture_output=True, text=True, cwd=REPO,
      env=sp.env(), timeout=sp.TIMEOUT_S)


@pytest.mark.slow
@pytest.mark.parametrize("arg,message", [
    ("ways=7", "sla-fewshot: error: 7-way train episodes need 7 classes"),
    ("objective=simclr", "sla-fewshot: error: Unknown objective 'simclr'"),
    ("way=5", "sla-fewshot: error: flag --config="),
])
def test_cli_reports_one_clear_error(folder, tmp_path, arg, message):
  proc = _cli(folder, tmp_path, arg)
  assert proc.returncode == 2, proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert lines[-1].startswith(message), lines
  if arg == "way=5":
    assert "Unknown config argument 'way'; valid arguments are" in lines[-1]
  assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_experiments_harness_runs_a_fewshot_grid(folder, tmp_path):
  import ml_collections  # pylint: disable=g-import-not-at-top
  from sla_jax import experiments  # pylint: disable=g-import-not-at-top
  grid = ml_collections.ConfigDict({
      "title": "toy few-shot", "program": "sla_jax.fewshot_main",
      "config": (f"{REPO}/configs/fewshot.py:data={folder},ways=3,shots=2,"
                 f"queries=2,steps=2"),
      "runs": ("protonet/rotation",), "seeds": (0,),
      "metrics": ("3way2shot/acc", "3way2shot/acc_ag"),
      "overrides": {"model": {"widths": "8,8,8,8"}, "eval_every": 2,
                    "fewshot": {"test_ways": 3, "test_shots": "2",
                                "test_queries": 3, "test_episodes": 4,
                                "val_shots": 2, "val_episodes": 2}}})
  experiments.run_grid(grid, tmp_path, log=lambda _: None)
  results = json.loads(
      (tmp_path / "runs" / "protonet_rotation_seed0" / "results.json").read_text())
  assert set(results["test"]) == {"3way2shot/acc", "3way2shot/acc_ci95"}
  text = experiments.write_results(grid, "toy.py", tmp_path).read_text()
  assert (f"| protonet/rotation | 1 | {results['test']['3way2shot/acc'] * 100:.2f}"
          f" ± 0.00 | – |") in text


@pytest.fixture(scope="module")
def tinyimagenet(tmp_path_factory) -> pathlib.Path:
  return extract_shared(TINYIMAGENET, tmp_path_factory, "tinyimagenet100-32")


@pytest.mark.slow
def test_protonet_on_tinyimagenet_beats_chance(tinyimagenet, tmp_path):
  """100 5-way episodes of conv4 ProtoNet, tested on 100 meta-test episodes."""
  config = get_config(f"data={tinyimagenet},steps=100")
  config.fewshot.test_episodes = 100
  config.fewshot.test_shots = (5,)
  config.fewshot.val_episodes = 0
  results = fewshot_train.meta_train_and_evaluate(config, tmp_path)
  acc, ci = results["test"]["5way5shot/acc"], results["test"]["5way5shot/acc_ci95"]
  print(f"5-way 5-shot meta-test after 100 steps: {acc:.3f} +- {ci:.3f}")
  assert acc - ci > 0.3, (acc, ci)  # chance: 0.2
