"""ImageNet-layout ResNets from the model registry: torchvision's structure, shapes at 32 and 224 px."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sla_jax import models, objectives

# torchvision's parameter counts with a 1000-way fc (weights + BN scale/bias).
TORCHVISION_PARAMS = {"resnet18": 11_689_512, "resnet34": 21_797_672,
                      "resnet50": 25_557_032}
FEATURES = {"resnet18": 512, "resnet34": 512, "resnet50": 2048}


def _shapes(model, size, batch=2):
  x = jnp.zeros((batch, size, size, 3))
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
  out = jax.eval_shape(lambda v: model.apply(v, x, train=False), variables)
  return variables, out


@pytest.mark.parametrize("name", sorted(TORCHVISION_PARAMS))
def test_parameter_count_equals_torchvision(name):
  variables, out = _shapes(models.get(name, heads={"fc": 1000}), 224)
  count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables["params"]))
  assert count == TORCHVISION_PARAMS[name]
  assert out["features"].shape == (2, FEATURES[name])


@pytest.mark.parametrize("name", sorted(TORCHVISION_PARAMS))
@pytest.mark.parametrize("size", [32, 224])
def test_joint_logits_for_sla_at_32_and_224_px(name, size):
  objective = objectives.make("sla_sd", 200, "rotation")
  model = models.get(name, heads=objective.heads, dtype="bfloat16")
  _, out = _shapes(model, size, batch=2 * 4)
  assert out["joint"].shape == (8, 200 * 4)
  assert out["single"].shape == (8, 200)
  assert out["joint"].dtype == jnp.bfloat16


@pytest.mark.slow
def test_resnet18_forward_and_zero_init_residual():
  model = models.get("resnet18", heads={"class": 10}, zero_init_residual=True)
  x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
  variables = model.init(jax.random.key(1), x, train=False)
  params = variables["params"]
  assert float(jnp.abs(params["layer1_0"]["bn2"]["scale"]).max()) == 0.0
  assert "downsample_conv" in params["layer2_0"] and "downsample_conv" not in params["layer1_1"]
  assert params["conv1"]["kernel"].shape == (7, 7, 3, 64)
  out, state = model.apply(variables, x, train=True, mutable=["batch_stats"])
  assert out["class"].shape == (2, 10) and np.isfinite(np.asarray(out["class"])).all()
  # He-normal fan_out init of the stem: std sqrt(2 / (7 * 7 * 64)).
  kernel = np.asarray(models.get("resnet18").init(
      jax.random.key(2), x, train=False)["params"]["conv1"]["kernel"])
  assert kernel.std() == pytest.approx((2 / (7 * 7 * 64)) ** 0.5, rel=0.05)


def test_unknown_arguments_are_refused():
  with pytest.raises(ValueError, match="Model 'resnet50'.*feature_groups"):
    models.get("resnet50", feature_groups=4)
