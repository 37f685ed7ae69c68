"""The trainer end to end on tiny digits configs: outputs, resume, devices, errors."""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest
from etils import epath

import subprocess_util as sp
from conftest import interrupt_after
from sla_jax import evaluation, input_pipeline, train
from sla_jax.models import conv_ops

REPO = sp.REPO


def tiny_config(objective="sla", **overrides):
  """subprocess_util's TINY digits run with ``objective`` (one device, the
  quickest on 2 cores; test_eight_devices_match_one covers the sharded path,
  tests/test_cpu_collectives.py the deadlock 8 devices once ran into)."""
  return sp.make_config(objective=objective, **overrides)


EXPECTED_METRICS = {
    "baseline": {"acc"},
    "da": {"acc", "acc_ag"},
    "mt": {"acc", "acc_ag"},
    "sla": {"acc_si", "acc_ag"},
    "sla_sd": {"acc_si", "acc_ag", "acc_sd"},
}


# The fast tier's one end-to-end run is sla_sd (every output and metric).
@pytest.mark.parametrize("objective", [
    o if o == "sla_sd" else pytest.param(o, marks=pytest.mark.slow)
    for o in sorted(EXPECTED_METRICS)])
def test_end_to_end_outputs(tmp_path, objective):
  results = train.train_and_evaluate(tiny_config(objective), tmp_path)
  expected = EXPECTED_METRICS[objective] | {"loss"}
  rows = sp.metric_rows(tmp_path)
  assert [r["step"] for r in rows] == [5, 10, 15, 20]
  for row in rows:
    assert {"train/loss", "train/lr", "train/images_per_s"} <= set(row)
  evals = [r for r in rows if "test/loss" in r]
  assert [r["step"] for r in evals] == [10, 20]
  for row in evals:
    got = {k.split("/", 1)[1] for k in row if k.startswith(("val/", "test/"))}
    assert got == expected
    assert all(0 <= row[f"test/{m}"] <= 1 for m in expected - {"loss"})
  on_disk = json.loads((tmp_path / "results.json").read_text())
  assert on_disk == json.loads(json.dumps(results))
  assert set(on_disk["test"]) == expected and set(on_disk["val"]) == expected
  assert on_disk["best_step"] in (10, 20) and on_disk["final_step"] == 20
  best_row = next(r for r in evals if r["step"] == on_disk["best_step"])
  assert on_disk["test"] == {k: best_row[f"test/{k}"] for k in expected}
  assert on_disk["config"]["objective"] == objective
  assert on_disk["devices"] == 1  # tiny_config's num_devices
  assert on_disk["device_kind"] == jax.devices()[0].device_kind
  assert list((tmp_path / "checkpoints").iterdir())
  assert [p.name for p in (tmp_path / "best").iterdir()] == [str(on_disk["best_step"])]
  events = list(tmp_path.glob("events.out.tfevents.*"))
  assert events
  assert json.loads((tmp_path / "config.json").read_text())["objective"] == objective
  again = train.train_and_evaluate(tiny_config(objective), tmp_path)  # finished
  assert again["test"] == results["test"]
  assert list(tmp_path.glob("events.out.tfevents.*")) == events  # none added


@pytest.mark.slow
@pytest.mark.parametrize("data_on_device", [True, False])
def test_interrupted_run_resumes_to_the_same_result(tmp_path, monkeypatch,
                                                    data_on_device):
  config = tiny_config("sla_sd", total_steps=30, data_on_device=data_on_device)
  train.train_and_evaluate(config, tmp_path / "straight")

  undo = interrupt_after(monkeypatch, 25)  # after the step-20 checkpoint
  with pytest.raises(KeyboardInterrupt):
    train.train_and_evaluate(config, tmp_path / "resumed")
  undo()
  assert not (tmp_path / "resumed" / "results.json").exists()
  resumed = train.train_and_evaluate(config, tmp_path / "resumed")

  straight = json.loads((tmp_path / "straight" / "results.json").read_text())
  assert resumed["best_step"] == straight["best_step"]
  assert resumed["test"] == pytest.approx(straight["test"], rel=1e-6)
  assert resumed["val"] == pytest.approx(straight["val"], rel=1e-6)
  rows_a = sp.metric_rows(tmp_path / "straight")
  rows_b = sp.metric_rows(tmp_path / "resumed")
  assert [r["step"] for r in rows_b] == [r["step"] for r in rows_a]
  for a, b in zip(rows_a, rows_b):
    for k in a:
      if "per_s" not in k:
        assert b[k] == pytest.approx(a[k], rel=1e-5), (a["step"], k)


@pytest.mark.slow
def test_eight_devices_match_one(tmp_path):
  assert jax.device_count() == 8  # tests/conftest.py simulates 8 CPU devices
  config = tiny_config("sla", total_steps=3, log_every=1, eval_every=3,
                       checkpoint_every=3)
  one = train.train_and_evaluate(_with(config, num_devices=1), tmp_path / "one")
  eight = train.train_and_evaluate(_with(config, num_devices=8), tmp_path / "eight")
  losses_one = [r["train/loss"] for r in sp.metric_rows(tmp_path / "one")]
  losses_eight = [r["train/loss"] for r in sp.metric_rows(tmp_path / "eight")]
  np.testing.assert_allclose(losses_eight, losses_one, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               sp.restore_params(tmp_path / "eight", 3), sp.restore_params(tmp_path / "one", 3))
  assert eight["test"] == pytest.approx(one["test"], abs=1e-3)
  assert (one["devices"], eight["devices"]) == (1, 8)


def test_the_step_sums_weight_gradients_per_device(tmp_path, monkeypatch):
  """The trainer traces its step with the batch's mesh in context, so the
  matmul weight gradient (forced here for the digits' 8x8 layers) sums each
  device's images apart (conv_ops.batch_axes); 8 devices still match one."""
  monkeypatch.setattr(conv_ops, "MIN_MATMUL_PIXELS", 0)
  seen, original = [], conv_ops.weight_grad_matmul

  def recording(x, dy, stride, *args, **kwargs):
    seen.append(conv_ops.batch_axes(x))
    return original(x, dy, stride, *args, **kwargs)

  monkeypatch.setattr(conv_ops, "weight_grad_matmul", recording)
  config = tiny_config("sla", total_steps=2, log_every=1, eval_every=2,
                       checkpoint_every=2)
  train.train_and_evaluate(_with(config, num_devices=1), tmp_path / "one")
  assert seen and set(seen) == {()}
  seen.clear()
  train.train_and_evaluate(_with(config, num_devices=8), tmp_path / "eight")
  assert seen and set(seen) == {("data",)}
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               sp.restore_params(tmp_path / "eight", 2),
               sp.restore_params(tmp_path / "one", 2))


def _with(config, **fields):
  config = config.copy_and_resolve_references()
  for k, v in fields.items():
    config[k] = v
  return config


@pytest.mark.parametrize("fields,message", [
    ({"objective": "simclr"}, "Unknown objective 'simclr'; valid objectives are"),
    ({"transform": "jigsaw"}, "Unknown transform 'jigsaw'; valid names are"),
    ({"transform": "color_perm"}, "dataset 'digits' with transform 'color_perm'.*C=1"),
    ({"batch_size": 12, "num_devices": 8},
     "batch_size=12 is not divisible by the 8 devices"),
    ({"dataset": "folder:/nonexistent"}, "has no train/ directory"),
    ({"dataset": "no_such_dataset_xyz"}, "Unknown dataset 'no_such_dataset_xyz'"),
    ({"val_size": 5000}, "val_size=5000 must be in"),
    ({"log_every": 0}, "log_every must be a whole number >= 1; got 0"),
    ({"eval_every": 0}, "eval_every must be a whole number >= 1"),
    ({"checkpoint_every": -1}, "checkpoint_every must be a whole number >= 1"),
    ({"eval_batch_size": 0}, "eval_batch_size must be a whole number >= 1"),
    ({"lr": -0.1}, r"lr must be > 0; got -0.1"),
    ({"momentum": 1.0}, r"momentum must be in \[0, 1\); got 1.0"),
    ({"weight_decay": -1e-4}, "weight_decay must be >= 0"),
    ({"lr_decay_at": (0.5, 1.5)}, r"lr_decay_at lists fractions .* got \(0.5, 1.5\)"),
    ({"objective": "sla_sd", "temperature": 0.0}, "temperature must be > 0; got 0.0"),
    ({"crop_padding": -2}, "crop_padding must be >= 0; got -2"),
    ({"samples_per_class": -1}, r"samples_per_class must be >= 1 \(None: every"),
])
def test_bad_config_stops_before_training(tmp_path, fields, message):
  with pytest.raises((train.ConfigError, FileNotFoundError), match=message):
    train.train_and_evaluate(_with(tiny_config(), **fields), tmp_path)
  assert not (tmp_path / "metrics.jsonl").exists()
  assert not list(tmp_path.glob("checkpoints/*"))


def test_unknown_tfds_dataset_offline(tmp_path, caplog):
  with pytest.raises((train.ConfigError, FileNotFoundError, ValueError),
                     match="cifar10.*not prepared.*tfds build cifar10"):
    train.train_and_evaluate(
        _with(tiny_config(), dataset="cifar10", data_dir=str(tmp_path / "tfds")),
        tmp_path / "run")
  # Only the error line: TFDS's own warning about the folder is kept quiet.
  assert not [r for r in caplog.records if "dataset_info.json" in r.getMessage()]


@pytest.mark.slow
def test_resuming_with_another_config_is_refused(tmp_path):
  train.train_and_evaluate(tiny_config(total_steps=10), tmp_path)
  with pytest.raises(train.ConfigError, match="different config.*objective"):
    train.train_and_evaluate(tiny_config("sla_sd", total_steps=10), tmp_path)
  assert (tmp_path / "results.json").exists()  # nothing already written is lost


@pytest.mark.slow
def test_cli_reports_one_clear_error(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "sla_jax.main", "--config",
       f"{REPO}/configs/quickstart.py:transform=color_perm",
       "--workdir", str(tmp_path)], capture_output=True, text=True, cwd=REPO,
      timeout=300)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1].startswith(
      "sla-train: error: dataset 'digits' with transform 'color_perm'")
  assert "Traceback" not in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("data_on_device", [True, False])
def test_tfds_source_trains_under_mock_data(tmp_path, data_on_device):
  """The TFDS path (array_record data source, no TensorFlow) on mocked cifar10,
  in memory and streamed lazily through the host pipeline."""
  import tensorflow_datasets as tfds
  with tfds.testing.mock_data(num_examples=48,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    results = train.train_and_evaluate(
        _with(tiny_config("sla"), dataset="cifar10", val_size=8, batch_size=8,
              total_steps=2, eval_every=2, log_every=1, checkpoint_every=2,
              data_on_device=data_on_device, samples_per_class=4),
        tmp_path)
  assert results["config"]["dataset"] == "cifar10"
  assert set(results["test"]) == {"acc_si", "acc_ag", "loss"}
  assert (tmp_path / "results.json").exists()


def test_host_batch_indices_split_one_global_batch_across_processes():
  whole = input_pipeline.host_batch_indices(3, 17, 1000, 64)
  assert len(set(whole.tolist())) == 64 and whole.max() < 1000
  shares = [input_pipeline.host_batch_indices(3, 17, 1000, 64, p, 4) for p in range(4)]
  np.testing.assert_array_equal(np.concatenate(shares), whole)
  np.testing.assert_array_equal(input_pipeline.host_batch_indices(3, 17, 1000, 64), whole)
  assert not np.array_equal(input_pipeline.host_batch_indices(3, 18, 1000, 64), whole)


def test_samples_per_class_keeps_k_images_of_each_class():
  from sla_jax import data
  dataset = data.load(_with(tiny_config(), samples_per_class=7))
  _, labels = dataset.train.read_all()
  np.testing.assert_array_equal(np.bincount(labels, minlength=10), [7] * 10)
  again = data.load(_with(tiny_config(), samples_per_class=7, seed=5))
  np.testing.assert_array_equal(again.train.read_all()[0], dataset.train.read_all()[0])
  _, val_labels = dataset.val.read_all()
  assert len(val_labels) == 100


def test_eval_outputs_equal_one_pass_over_all_views():
  from sla_jax import models, transforms
  group = transforms.get("rotation")
  model = models.CifarResNet(8, heads={"joint": 40})
  x = jax.random.normal(jax.random.key(0), (8, 8, 8, 3))
  variables = model.init(jax.random.key(1), x, train=False)
  ours = jax.jit(lambda v, x: evaluation.eval_outputs(model, group, v, x))(variables, x)
  one_pass = model.apply(variables, group.apply(x), train=False)
  for k in ("joint", "features"):
    np.testing.assert_allclose(ours[k], one_pass[k], rtol=1e-5, atol=1e-5)
  odd = evaluation.eval_outputs(model, group, variables, x[:7])  # not a multiple of M
  np.testing.assert_allclose(odd["joint"], one_pass["joint"][:28], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("batch,devices,views,expected", [
    (500, 2, 4, 504), (500, 1, 1, 500), (500, 8, 4, 512), (7, 1, 4, 8),
    (3, 2, 1, 4), (64, 8, 4, 64)])
def test_padded_eval_batch_is_a_multiple_of_devices_times_views(
    batch, devices, views, expected):
  assert evaluation.padded_batch_size(batch, devices, views) == expected


@pytest.mark.parametrize("batch_size", [40, 64])
def test_eval_passes_of_a_padded_batch_split_evenly_over_the_devices(batch_size):
  """Each of the M passes holds a whole number of images per device, so no
  device gathers the batch (a batch of 40 on 8 devices did: 10 images a pass)."""
  from jax.sharding import NamedSharding, PartitionSpec as P  # pylint: disable=g-import-not-at-top
  from sla_jax import models, transforms  # pylint: disable=g-import-not-at-top
  n = jax.device_count()
  mesh = jax.make_mesh((n,), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))
  group = transforms.get("rotation")
  model = models.CifarResNet(8, heads={"joint": 40})
  b = evaluation.padded_batch_size(batch_size, n, group.num_views)
  x = jax.device_put(np.zeros((b, 8, 8, 3), np.float32),
                     NamedSharding(mesh, P("data")))
  variables = model.init(jax.random.key(1), x[:2], train=False)
  text = jax.jit(lambda v, x: evaluation.eval_outputs(model, group, v, x)[
      "joint"]).lower(variables, x).compile().as_text()
  assert " all-gather(" not in text and " all-gather-start(" not in text


@pytest.mark.parametrize("bad_label", [-1, 10])
def test_trainer_validates_the_datasets_labels(tmp_path, monkeypatch, bad_label):
  from sla_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  load = data_lib.load

  def load_with_a_bad_label(config):
    dataset = load(config)
    images, labels = dataset.val.read_all()
    labels = labels.copy()
    labels[3] = bad_label
    return data_lib.Dataset(dataset.name, dataset.num_classes,
                            dataset.image_shape, dataset.train,
                            data_lib.Split.from_arrays(images, labels),
                            dataset.test)

  monkeypatch.setattr(data_lib, "load", load_with_a_bad_label)
  with pytest.raises(train.ConfigError,
                     match=rf"dataset 'digits' val labels must lie in \[0, 10\).*e\.g\. {bad_label}"):
    train.train_and_evaluate(tiny_config(), tmp_path)
  assert not list(tmp_path.glob("checkpoints/*"))


def _assert_same_run(dir_a, dir_b, checkpoints=(10, 20)):
  """Bit for bit: every logged loss and metric, and the saved parameters."""
  rows_a, rows_b = sp.metric_rows(dir_a), sp.metric_rows(dir_b)
  assert [r["step"] for r in rows_b] == [r["step"] for r in rows_a]
  for a, b in zip(rows_a, rows_b):
    for k in a:
      if "per_s" not in k:
        assert b[k] == a[k], (a["step"], k, a[k], b[k])
  for step in checkpoints:
    for x, y in zip(jax.tree.leaves(sp.restore_params(dir_a, step)),
                    jax.tree.leaves(sp.restore_params(dir_b, step))):
      np.testing.assert_array_equal(x, y)


@pytest.mark.slow  # two compiles of the initial state
def test_the_quickly_compiled_init_gives_the_same_bits():
  from sla_jax import models, optim  # pylint: disable=g-import-not-at-top
  model = models.get("cifar_resnet", depth=8, heads={"joint": 40, "single": 10})
  init = train.make_init(model, optim.sgd(0.1), (32, 32, 3))
  key = jax.random.key(7)
  quick, default = train.jit_init(init)(key), jax.jit(init)(key)
  leaves = jax.tree.leaves(default)
  assert len(leaves) == len(jax.tree.leaves(quick)) > 20
  for a, b in zip(jax.tree.leaves(quick), leaves):
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_steps_per_call_gives_the_same_run(tmp_path):
  """K = 1 (the step alone), K = 8 and K = 3 steps per call (calls of 4, 3, 2,
  1 steps, cut at the logs every 4 and the saves every 10), and K = 16 in full
  calls on two devices give the same run bit for bit: every logged loss,
  metric and saved parameter."""
  config = tiny_config("sla_sd", log_every=4, checkpoint_every=10)
  one = train.train_and_evaluate(config, tmp_path / "k1")
  for k in (8, 3):
    results = train.train_and_evaluate(_with(config, steps_per_call=k), tmp_path / f"k{k}")
    assert results["test"] == one["test"] and results["best_step"] == one["best_step"]
    _assert_same_run(tmp_path / "k1", tmp_path / f"k{k}")
  # Full calls of K = 16 (compile-time trip count), the batch split over 2 devices.
  config = _with(config, total_steps=32, log_every=16, eval_every=16,
                 checkpoint_every=16, num_devices=2)
  train.train_and_evaluate(config, tmp_path / "two_devices_k1")
  train.train_and_evaluate(_with(config, steps_per_call=16), tmp_path / "two_devices_k16")
  _assert_same_run(tmp_path / "two_devices_k1", tmp_path / "two_devices_k16",
                   checkpoints=(16, 32))


@pytest.mark.slow
def test_steps_per_call_resumes_after_preemption(tmp_path, monkeypatch):
  config = _with(tiny_config("sla", log_every=4, checkpoint_every=10),
                 steps_per_call=8)
  train.train_and_evaluate(config, tmp_path / "straight")
  from sla_jax import preemption  # pylint: disable=g-import-not-at-top
  original = preemption.Watcher.reached

  def preempt_at_step_12(self, step):  # a call boundary (log step), not a save step
    return step == 12 or original(self, step)

  monkeypatch.setattr(preemption.Watcher, "reached", preempt_at_step_12)
  with pytest.raises(preemption.Preempted, match="at step 12"):
    train.train_and_evaluate(config, tmp_path / "resumed")
  monkeypatch.setattr(preemption.Watcher, "reached", original)
  train.train_and_evaluate(config, tmp_path / "resumed")
  _assert_same_run(tmp_path / "straight", tmp_path / "resumed", checkpoints=(20,))


@pytest.mark.parametrize("fields,message", [
    ({"steps_per_call": 0}, "steps_per_call must be >= 1"),
    ({"steps_per_call": 4, "data_on_device": False}, "needs data_on_device=True"),
])
def test_bad_steps_per_call(tmp_path, fields, message):
  with pytest.raises(train.ConfigError, match=message):
    train.train_and_evaluate(_with(tiny_config(), **fields), tmp_path)


def test_a_full_call_has_a_trip_count_known_at_compile_time():
  """XLA:GPU reads a while loop's predicate back to the host after every trip
  unless the trip count is known: the K-step call must have a constant bound,
  the shorter calls a run-time one; both loops give the same steps."""
  def step(state, images, labels, seed_key):
    del labels, seed_key
    new = state * 1.5 + images.sum()
    return new, new.sum()
  calls = train.jit_multi_step(step, 4)
  x = jax.numpy.ones((2,), "float32")
  args = (jax.numpy.zeros((3,)), x, x, jax.random.key(0))
  full_hlo = calls.full.lower(*args).as_text()
  partial_hlo = calls.partial.lower(*args, 3).as_text()
  assert "while" in full_hlo and "while" in partial_hlo
  compiled = calls.full.lower(*args).compile().as_text()
  assert "known_trip_count" in compiled and '"n":"4"' in compiled
  assert "known_trip_count" not in calls.partial.lower(*args, 3).compile().as_text()
  state4, losses4 = calls(*args, 4)
  state2, losses2 = calls(*args, 2)
  state4b, _ = calls(state2, *args[1:], 2)
  np.testing.assert_array_equal(state4, state4b)
  assert losses4.shape == losses2.shape == (4,) and losses2[2:].tolist() == [0, 0]


@pytest.mark.parametrize("k, warned", [(3, True), (5, False), (1, False)])
def test_a_steps_per_call_that_cuts_calls_short_is_warned(k, warned, caplog):
  config = _with(tiny_config(), steps_per_call=k)  # log 5, eval / save 10
  with caplog.at_level("WARNING"):
    train.warn_if_calls_cut_short(config)
  hits = [r for r in caplog.records if "does not divide" in r.getMessage()]
  assert bool(hits) == warned
  if warned:
    assert "log_every=5, eval_every=10, checkpoint_every=10" in hits[0].getMessage()


def test_a_start_that_fails_its_checks_writes_nothing(tmp_path):
  """A bad resumable value leaves the saved config.json as it was; a bad fresh
  start leaves no workdir."""
  config = tiny_config()
  saved = config.to_json(indent=2)
  (tmp_path / "config.json").write_text(saved)
  (tmp_path / "checkpoints").mkdir()
  for field, value in (("num_devices", 64), ("steps_per_call", 0)):
    with pytest.raises(train.ConfigError, match=field):
      train.train_and_evaluate(_with(config, **{field: value}), tmp_path)
    assert (tmp_path / "config.json").read_text() == saved
  assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints",
                                                        "config.json"]
  fresh = tmp_path / "new"
  with pytest.raises((train.ConfigError, FileNotFoundError), match="nonexist"):
    train.train_and_evaluate(
        _with(config, dataset="folder:/nonexistent"), fresh)
  assert not fresh.exists()


def test_a_run_saved_before_a_field_was_added_still_resumes(tmp_path):
  """A saved config.json without a field added since reads as having its old-behaviour value."""
  config = tiny_config()
  saved = json.loads(config.to_json())
  del saved["model"]["fused_batch_norm"]  # written by the code of before
  del saved["augment"]["autoaugment"]
  (tmp_path / "config.json").write_text(json.dumps(saved))
  (tmp_path / "checkpoints").mkdir()
  train.check_workdir(config, epath.Path(tmp_path))  # resumes
  config.model.fused_batch_norm = True
  with pytest.raises(train.ConfigError,
                     match=r"different config \(fields: model.fused_batch_norm\)"):
    train.check_workdir(config, epath.Path(tmp_path))
  config.model.fused_batch_norm = False
  config.augment.autoaugment.policy = "svhn"
  with pytest.raises(train.ConfigError,
                     match=r"different config \(fields: augment.autoaugment.policy\)"):
    train.check_workdir(config, epath.Path(tmp_path))


def test_the_results_table_says_how_the_step_was_chosen(capsys):
  results = {"objective": "sla_sd", "transform": "identity", "num_views": 5,
             "feature_views": 5, "selection_metric": "val/acc_sd",
             "best_step": 20, "final_step": 20, "val": {},
             "test": {"acc_sd": 0.5}}
  train.print_results(results)
  header = capsys.readouterr().out.strip().splitlines()[0]
  assert header == ("sla_sd / identity (M=1 x 5 feature variants): no "
                    "validation split: the last evaluation, step 20 of 20")
  train.print_results({**results, "transform": "rotation", "num_views": 4,
                       "feature_views": 1, "val": {"acc_sd": 0.6},
                       "best_step": 10})
  assert capsys.readouterr().out.strip().splitlines()[0] == (
      "sla_sd / rotation (M=4): best val/acc_sd at step 10 of 20")
