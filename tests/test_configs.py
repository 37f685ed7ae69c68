"""Every config file builds a runnable spec, and every registered model gives joint logits at 32 and 224 px."""

import importlib.util

import jax
import pytest

from conftest import REPO, evidence_grids
from sla_jax import config_lib, models, objectives, spec

# Trainer configs (fewshot*.py configure sla_jax.fewshot_main: tests/test_fewshot_train.py).
CONFIGS = sorted(p for p in (REPO / "configs").glob("*.py")
                 if not p.name.startswith(("grid_", "fewshot")))
GRIDS = sorted(p for p in (REPO / "configs").glob("grid_*.py")
               if "fewshot" not in p.name)
CLASSES = {"imagenet.py": 1000, "fine_grained.py": 200}


def _load(path):
  module_spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module


def _joint_logits_shape(model, objective, size):
  x = jax.ShapeDtypeStruct((2, size, size, 3), "float32")
  views = jax.eval_shape(objective.group.apply, x)
  out = jax.eval_shape(
      lambda v: model.init_with_output(jax.random.key(0), v, train=False)[0],
      views)
  return out["joint"].shape


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_resolves_to_a_model_with_joint_logits(path):
  config = _load(path).get_config(None)
  if config.objective not in ("sla", "sla_sd"):
    config.objective = "sla"
  n = CLASSES.get(path.name, 10)
  resolved = spec.resolve(config, n)
  assert resolved.objective.num_views == 4
  size = config.get("image_size") or (8 if config.dataset == "digits" else 32)
  assert _joint_logits_shape(resolved.model, resolved.objective, size) == (
      2 * 4, n * 4)
  assert "python -m sla_jax" in _load(path).__doc__  # its command


# Every grid file with its defaults, and as launch/cpu_evidence.sh runs it.
GRID_ARGS = [(path, None) for path in GRIDS] + [
    (REPO / path, arg) for _, path, arg in evidence_grids()
    if "fewshot" not in path] + [
    (REPO / "configs/grid_protocol_gpu.py", "dataset=tinyimagenet100")]


@pytest.mark.parametrize("path,arg", GRID_ARGS,
                         ids=lambda a: a.name if hasattr(a, "name") else a)
def test_grid_runs_are_valid_trainer_configs(path, arg, monkeypatch):
  from sla_jax import experiments  # pylint: disable=g-import-not-at-top
  grid = _load(path).get_config(arg)
  monkeypatch.chdir(REPO)
  experiments.check_trainer_config(grid)  # what run_grid checks first
  experiments.comparisons(grid)  # each names the grid's runs and metrics
  paired = experiments.paired_folder(grid)  # a committed grid's results folder
  assert paired is None or (REPO / paired / "code_commit").exists(), paired
  config_file, _, config_arg = grid.config.partition(":")
  base = _load(REPO / config_file).get_config(config_arg or None)
  for run in experiments.expand(grid):
    overrides = {k: str(v) for k, v in experiments._overrides(grid, run).items()}  # pylint: disable=protected-access
    config = config_lib.apply_overrides(base, {
        **overrides, "objective": run.objective, "transform": run.transform})
    spec.resolve(config, 10)


@pytest.mark.parametrize("name", [n for n in models.names()
                                  if not n.startswith("cifar_resnet")]
                         + ["cifar_resnet32"])
@pytest.mark.parametrize("size", [32, 224])
def test_every_model_gives_joint_logits(name, size):
  if name.startswith("cifar_resnet") and size == 224:
    size = 64  # global pooling: any size works; keep the CPU test small
  objective = objectives.make("sla", 10, "rotation")
  model = models.get(name, heads=objective.heads)
  assert _joint_logits_shape(model, objective, size) == (8, 40)


def _wrn_params(depth, k, classes):
  """WRN-d-k parameter count by formula (conv weights, BN scale+bias, head)."""
  total, cin = 3 * 3 * 3 * 16, 16
  for channels in (16 * k, 32 * k, 64 * k):
    for _ in range((depth - 4) // 6):
      total += 2 * cin + 9 * cin * channels + 2 * channels + 9 * channels ** 2
      total += cin * channels if cin != channels else 0
      cin = channels
  return total + 2 * cin + cin * classes + classes


def test_wide_resnet28_10_has_the_paper_parameter_count():
  model = models.get("wide_resnet28_10", heads={"class": 10})
  variables = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jax.numpy.zeros((1, 32, 32, 3)), train=False))
  count = sum(x.size for x in jax.tree.leaves(variables["params"]))
  assert count == _wrn_params(28, 10, 10) == 36_479_194  # "36.5M" in the paper
  with pytest.raises(ValueError, match="6n \\+ 4"):
    models.get("wide_resnet", depth=27)


@pytest.mark.parametrize("name", ["resnet18", "wide_resnet28_10", "resnet12",
                                  "conv4"])
def test_tinyimagenet100_32_takes_any_32px_model(name):
  config = _load(REPO / "configs/tinyimagenet100_32.py").get_config(
      f"model={name}")
  resolved = spec.resolve(config, 100)
  assert _joint_logits_shape(resolved.model, resolved.objective, 32) == (8, 400)
  # Only the ImageNet ResNets take zero_init_residual.
  assert ("zero_init_residual" in config.model) == (name == "resnet18")


def test_large_image_configs_expose_the_models_own_arguments():
  config = _load(REPO / "configs/tinyimagenet100_32.py").get_config(
      "model=wide_resnet")
  assert (config.model.depth, config.model.width,
          config.model.dropout_rate) == (28, 10, 0.0)
  config.model.depth, config.model.width = 10, 1  # WRN-10-1 from the command line
  resolved = spec.resolve(config, 100)
  assert (resolved.model.depth, resolved.model.width) == (10, 1)
  assert _joint_logits_shape(resolved.model, resolved.objective, 32) == (8, 400)
  # Fixed by its name: the registry's partial leaves only dropout_rate.
  fixed = _load(REPO / "configs/tinyimagenet100_32.py").get_config(
      "model=wide_resnet28_10")
  assert "depth" not in fixed.model and "dropout_rate" in fixed.model


def test_model_defaults_are_the_arguments_defaults():
  assert models.defaults("wide_resnet")["depth"] == 28
  assert models.defaults("resnet12")["widths"] == (64, 160, 320, 640)
  assert set(models.defaults("cifar_resnet32")) == set(
      models.arguments("cifar_resnet32"))
  with pytest.raises(ValueError, match="Unknown model 'nope'"):
    models.defaults("nope")


def test_a_name_that_fixes_an_argument_refuses_another_value():
  assert models.fixed("cifar_resnet20") == {"depth": 20}
  assert models.fixed("cifar_resnet") == {}
  assert models.get("cifar_resnet20", depth=20).depth == 20  # the same: fine
  with pytest.raises(ValueError, match=r"depth=20 by its name; got depth=8\. "
                     r"Pass depth=20, or name 'cifar_resnet'"):
    models.get("cifar_resnet20", depth=8)
  with pytest.raises(ValueError, match="width=10 by its name"):
    models.get("wide_resnet28_10", width=2)
  with pytest.raises(ValueError, match="takes no argument 'depth'; it takes heads"):
    models.get("resnet18", depth=8)


def test_a_config_naming_another_model_is_refused_with_its_fix():
  config = _load(REPO / "configs/quickstart.py").get_config(None)
  config.model.name = "cifar_resnet20"  # the config's depth is 8
  with pytest.raises(spec.ConfigError, match="Pass depth=20"):
    spec.resolve(config, 10)
  config.model.depth = 20
  assert spec.resolve(config, 10).model.depth == 20
  config.model.name = "resnet18"  # takes no depth at all
  with pytest.raises(spec.ConfigError, match=r"takes no 'depth'.*"
                     r"configs/tinyimagenet100_32\.py:model=resnet18"):
    spec.resolve(config, 10)


def test_model_arguments_lists_what_each_model_takes():
  assert "zero_init_residual" in models.arguments("resnet50")
  assert "depth" in models.arguments("cifar_resnet")
  assert "depth" not in models.arguments("cifar_resnet32")  # fixed by its name
  assert {"widths", "drop_rate"} <= set(models.arguments("resnet12"))
  for name in models.names():  # every model takes what the registry promises
    assert {"heads", "dtype", "conv_weight_grad", "use_fast_variance",
            "fused_batch_norm"} <= set(
        models.arguments(name)), name
  with pytest.raises(ValueError, match="Unknown model 'nope'"):
    models.arguments("nope")


def test_the_gpu_protocol_grid_names_its_datasets():
  module = _load(REPO / "configs/grid_protocol_gpu.py")
  cifar = module.get_config("dataset=cifar10")
  assert cifar.config == "configs/cifar.py:dataset=folder:/tmp/cifar10"
  assert len(cifar.runs) * len(cifar.seeds) == 9
  tin = module.get_config("dataset=tinyimagenet100,data=/data/tin")
  assert tin.config == "configs/tinyimagenet100_32.py:data=/data/tin"
  assert tin.runs == ("baseline/rotation", "sla_sd/rotation")
  assert "sla_sd/rotation:acc_sd vs sla/rotation:acc_ag" in cifar.comparisons
  assert not tin.get("comparisons")  # no plain SLA to compare with
  with pytest.raises(ValueError, match="Unknown dataset 'cifar100'; use one of"):
    module.get_config("dataset=cifar100")
