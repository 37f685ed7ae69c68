"""sla-eval, sla_jax.inference.load and export on a tiny trained workdir."""

import json
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

import subprocess_util as sp
from sla_jax import data as data_lib
from sla_jax import inference, train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("sla_sd_run")
  config = sp.make_config(objective="sla_sd")
  results = train.train_and_evaluate(config, workdir)
  return workdir, config, results


def test_eval_reproduces_results_json_exactly(trained):
  workdir, _, results = trained
  out = inference.evaluate_workdir(workdir, "best", "test")
  assert out["step"] == results["best_step"]
  assert out["metrics"] == results["test"]  # same evaluator, same numbers
  val = inference.evaluate_workdir(workdir, "best", "val")
  assert val["metrics"] == results["val"]
  for name in ("acc_si", "acc_ag", "acc_sd"):
    counts = np.asarray(out["confusion"][name])
    assert counts.shape == (10, 10) and counts.sum() == out["size"]
    assert np.trace(counts) / counts.sum() == pytest.approx(out["metrics"][name])
    per_class = out["per_class"][name]
    np.testing.assert_allclose(per_class, np.diag(counts) / counts.sum(1))


def test_eval_checks_only_what_evaluating_reads(trained):
  """Training-side numbers (batch_size, val_size) do not bar another (small)
  dataset from the test split."""
  workdir, _, results = trained
  out = inference.evaluate_workdir(workdir, "best", "test",
                                   {"batch_size": "100000", "val_size": "100000"})
  assert out["metrics"] == results["test"]


def test_eval_latest_and_other_checkpoints(trained):
  workdir, config, results = trained
  latest = inference.evaluate_workdir(workdir, "latest", "test")
  assert latest["step"] == config.total_steps
  earlier = inference.evaluate_workdir(workdir, str(config.total_steps), "test")
  assert earlier["metrics"] == latest["metrics"]
  with pytest.raises(train.ConfigError, match="eval_batch_size must be a whole number >= 1"):
    inference.evaluate_workdir(workdir, "best", "test", {"eval_batch_size": "0"})
  with pytest.raises(FileNotFoundError, match="No checkpoint '7'"):
    inference.evaluate_workdir(workdir, "7", "test")


def test_overrides_of_the_model_apply_and_a_misfit_is_one_line(trained):
  """sla-eval's --config.* reach the model: a model the checkpoint does not
  fit (another depth, objective or transform) is one ConfigError."""
  workdir, _, results = trained
  for field, value in (("model.depth", "20"), ("objective", "sla"),
                       ("transform", "color_perm")):
    with pytest.raises(train.ConfigError, match=r"does not fit the model"):
      inference.evaluate_workdir(workdir, "best", "test", {field: value})
  low = inference.evaluate_workdir(workdir, "best", "test",
                                   {"model.dtype": "bfloat16"})
  assert low["metrics"] != results["test"]  # evaluated in bfloat16 indeed
  assert abs(low["metrics"]["acc_si"] - results["test"]["acc_si"]) < 0.05


def test_a_workdir_without_best_points_to_latest(trained, tmp_path):
  """A run carried back without best/ (gpu_suite.sh train_many) says what to pass."""
  workdir, config, _ = trained
  copy = tmp_path / "run"
  shutil.copytree(workdir, copy)
  shutil.rmtree(copy / "best")
  with pytest.raises(FileNotFoundError,
                     match=r"No checkpoint 'best'.*checkpoint='latest'"):
    inference.load(copy)
  assert not (copy / "best").exists()  # looking did not create it
  assert inference.load(copy, checkpoint="latest").step == config.total_steps


def test_predictor_matches_the_evaluator_and_exports(trained, tmp_path):
  workdir, config, results = trained
  model = inference.load(workdir)
  assert model.heads == ("acc_si", "acc_ag", "acc_sd")
  dataset = data_lib.load(config)
  images, labels = dataset.test.read_all()
  for head, metric in (("si", "acc_si"), ("ag", "acc_ag"), ("sd", "acc_sd"),
                       (None, "acc_sd")):
    logits = model.predict(images, head)
    assert logits.shape == (len(labels), 10)
    accuracy = float(np.mean(np.argmax(logits, -1) == labels))
    assert accuracy == pytest.approx(results["test"][metric], abs=1e-6), head
  path = tmp_path / "sla_sd.jax"
  model.export(path, head="sd")
  served = inference.load_exported(path)
  np.testing.assert_array_equal(served(images[:7]), model.predict(images[:7], "sd"))
  np.testing.assert_array_equal(served(images[:3]), model.predict(images[:3], "sd"))
  with pytest.raises(ValueError, match="not one of this sla_sd model's"):
    model.predict(images, head="acc")
  with pytest.raises(ValueError, match=r"images must be \[B, 8, 8, 1\]"):
    model.predict(images[0])
  with pytest.raises(ValueError, match="images must be uint8 .* got float32"):
    model.predict(images.astype(np.float32) / 255)  # [0, 1] floats: refused
  with pytest.raises(ValueError, match="images must be uint8 .* got float32"):
    served(images.astype(np.float32) / 255)  # the exported one too
  with pytest.raises(ValueError, match=r"images must be \[B, 8, 8, 1\] .* got \(8, 8, 1\)"):
    served(images[0])
  # Under jit (no host conversion of tracers), and an empty batch as predict gives.
  np.testing.assert_allclose(jax.jit(served)(images[:5]),
                             model.predict(images[:5], "sd"), atol=1e-5)
  assert served(images[:0]).shape == model.predict(images[:0], "sd").shape == (0, 10)
  for name, content in (("config.json", b"{}"), ("empty.jax", b""),
                        ("list.jax", b"\x91\x01")):  # JSON, nothing, a msgpack list
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ValueError, match="is not a file written by Predictor.export"):
      inference.load_exported(tmp_path / name)


def test_eval_refuses_other_image_shapes_and_empty_splits(trained, tmp_path):
  workdir, config, _ = trained
  (tmp_path / "rgb").mkdir()
  _write_folder(tmp_path / "rgb", size=8, channels=3)  # 10 classes, RGB
  with pytest.raises(train.ConfigError, match=r"gives images of shape \(8, 8, 3\) "
                     r"but the model .* was trained on \(8, 8, 1\)"):
    inference.evaluate_workdir(workdir, "best", "test",
                               {"dataset": f"folder:{tmp_path / 'rgb'}"})
  with pytest.raises(train.ConfigError, match="the val split of 'digits' is empty "
                     r"\(the run held out no validation images"):
    inference.evaluate_workdir(workdir, "best", "val", {"val_size": "0"})


def _write_folder(root, size: int, channels: int) -> None:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  mode = {1: "L", 3: "RGB"}[channels]
  for split in ("train", "test"):
    for c in range(10):
      (root / split / str(c)).mkdir(parents=True)
      for i in range(2):
        Image.new(mode, (size, size), color=(c * 20) if channels == 1 else
                  (c * 20, i * 50, 0)).save(root / split / str(c) / f"{i}.png")


def test_a_trained_workdir_loads_into_an_nnx_module(trained):
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from sla_jax import models, preprocess  # pylint: disable=g-import-not-at-top
  workdir, config, _ = trained
  predictor = inference.load(workdir)
  images = data_lib.load(config).test.read_all()[0][:16]
  x = preprocess.normalize(images)
  net = models.to_nnx(predictor.spec.model, x, variables=predictor.variables)
  single = nnx.jit(lambda n, x: n(x, train=False)["single"])(net, x)
  np.testing.assert_allclose(single, predictor.predict(images, "sd"), rtol=1e-6, atol=1e-6)


def test_sla_eval_cli(trained, tmp_path):
  workdir, _, results = trained
  proc = subprocess.run(
      [sys.executable, "-m", "sla_jax.eval_cli", f"--workdir={workdir}",
       f"--out={tmp_path / 'e'}", "--config.eval_batch_size=64"],
      capture_output=True, text=True, timeout=sp.TIMEOUT_S, cwd=sp.REPO)
  assert proc.returncode == 0, proc.stderr
  metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
  for name, value in results["test"].items():
    if name != "loss":  # another batch size may round the loss sum otherwise
      assert metrics["metrics"][name] == value
  assert {p.name for p in (tmp_path / "e").glob("*.png")} == {
      "confusion_acc_si.png", "confusion_acc_ag.png", "confusion_acc_sd.png"}
  bad = subprocess.run(
      [sys.executable, "-m", "sla_jax.eval_cli", f"--workdir={workdir}",
       "--config.no_such_field=1"], capture_output=True, text=True,
      timeout=sp.TIMEOUT_S, cwd=sp.REPO)
  assert bad.returncode == 2
  assert bad.stderr.strip().splitlines()[-1].startswith(
      "sla-eval: error: Unknown config field 'no_such_field'")
  for arg, line in (
      ("--config.eval_batch_sise=3", "did you mean eval_batch_size"),
      ("--config.model=3", "--config.model is a group of fields: set one of them"),
      ("--config.crop_scale=0.5", "expected a value like 0.08,1.0"),
      ("--config.transform=color_perm", "does not fit the model")):
    bad = subprocess.run(
        [sys.executable, "-m", "sla_jax.eval_cli", f"--workdir={workdir}", arg],
        capture_output=True, text=True, timeout=sp.TIMEOUT_S, cwd=sp.REPO)
    # One line: a misfit checkpoint is found before Orbax starts reading it.
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, (
        arg, bad.stderr[-2000:])
    assert line in bad.stderr, (arg, bad.stderr)
  helped = subprocess.run(
      [sys.executable, "-m", "sla_jax.eval_cli", "--help"], capture_output=True,
      text=True, timeout=sp.TIMEOUT_S, cwd=sp.REPO)
  assert "--config.FIELD=VALUE" in helped.stdout
  missing = subprocess.run(
      [sys.executable, "-m", "sla_jax.eval_cli", f"--workdir={tmp_path}"],
      capture_output=True, text=True, timeout=sp.TIMEOUT_S, cwd=sp.REPO)
  assert missing.returncode == 2 and "has no config.json" in missing.stderr
