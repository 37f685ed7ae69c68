"""sla_jax.models.CifarResNet: topology, heads, init, dtypes, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sla_jax import models, objectives

# Parameter counts of the CIFAR ResNets (He et al. 2016, Table 6) without heads.
BACKBONE_PARAMS = {20: 0.27e6, 32: 0.46e6, 44: 0.66e6, 56: 0.85e6, 110: 1.7e6}


def _init(depth=8, heads=None, dtype=jnp.float32, size=8, **kw):
  model = models.CifarResNet(depth=depth, heads=heads or {}, dtype=dtype, **kw)
  x = jnp.zeros((2, size, size, 3))
  return model, jax.jit(lambda k: model.init(k, x, train=False))(jax.random.key(0))


@pytest.mark.parametrize("depth", models.DEPTHS)
def test_parameter_counts_and_blocks(depth):
  model = models.CifarResNet(depth=depth)
  variables = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))
  count = sum(x.size for x in jax.tree.leaves(variables["params"]))
  assert count == pytest.approx(BACKBONE_PARAMS[depth], rel=0.03)
  blocks = [k for k in variables["params"] if k.startswith("stage_")]
  assert len(blocks) == 3 * (depth - 2) // 6


@pytest.mark.parametrize("objective,expected", [
    ("baseline", {"class": 10}), ("da", {"class": 10}),
    ("mt", {"class": 10, "transform": 4}), ("sla", {"joint": 40}),
    ("sla_sd", {"joint": 40, "single": 10}),
])
def test_heads_per_objective(objective, expected):
  heads = objectives.make(objective, num_classes=10, transform="rotation").heads
  assert heads == expected
  model = models.CifarResNet(depth=8, heads=heads)
  x = jnp.ones((6, 8, 8, 3))
  # Shapes only: traced, not run (an eager ResNet apply costs seconds).
  out, variables = jax.eval_shape(
      lambda k: model.init_with_output(k, x, train=False), jax.random.key(0))
  assert set(out) == {"features", *expected}
  assert out["features"].shape == (6, 64)
  for name, size in expected.items():
    assert out[name].shape == (6, size)
    assert f"{name}_head" in variables["params"]


def test_unknown_objective_and_bad_depth():
  with pytest.raises(ValueError, match="valid objectives are: baseline, da, mt"):
    objectives.make("simclr", 10, "rotation")
  with pytest.raises(ValueError, match=r"depth must be 6n \+ 2"):
    models.CifarResNet(depth=33)  # refused when constructed, before any trace


def test_model_registry():
  assert {"cifar_resnet", "cifar_resnet20", "cifar_resnet32", "cifar_resnet44",
          "cifar_resnet56", "cifar_resnet110"} <= set(models.names())
  model = models.get("cifar_resnet20", heads={"joint": 40}, dtype="bfloat16")
  assert isinstance(model, models.CifarResNet) and model.depth == 20
  assert models.get("cifar_resnet", depth=44).depth == 44
  shapes = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((2, 32, 32, 3)),
                         train=False))
  assert shapes["params"]["joint_head"]["kernel"].shape == (64, 40)
  out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((2, 32, 32, 3)),
                                             train=False), shapes)
  assert out["joint"].shape == (2, 40) and out["joint"].dtype == jnp.bfloat16
  with pytest.raises(ValueError, match="Unknown model 'resnet9000'; valid models are: cifar_resnet"):
    models.get("resnet9000")
  with pytest.raises(ValueError, match="Model 'cifar_resnet20'.*width"):
    models.get("cifar_resnet20", width=3)
  with pytest.raises(ValueError, match="conv_weight_grad must be one of auto, xla, matmul"):
    models.get("cifar_resnet", conv_weight_grad="fast")


def test_option_a_shortcut_halves_resolution_and_pads_channels():
  block = models.BasicBlock(32, strides=2)
  x = jax.random.normal(jax.random.key(1), (2, 8, 8, 16))
  variables = block.init(jax.random.key(0), x, train=False)
  assert set(variables["params"]) == {"conv_a", "bn_a", "conv_b", "bn_b"}
  # With the residual branch zeroed (bn_b scale 0, bias 0) the block is
  # relu(shortcut): the stride-2 subsample, then zero channels.
  params = jax.tree.map(lambda p: p, variables["params"])
  params["bn_b"] = {"scale": jnp.zeros(32), "bias": jnp.zeros(32)}
  y = block.apply({"params": params, "batch_stats": variables["batch_stats"]},
                  x, train=False)
  np.testing.assert_allclose(y[..., :16], jax.nn.relu(x[:, ::2, ::2]), atol=1e-6)
  np.testing.assert_array_equal(y[..., 16:], 0)


@pytest.mark.slow
def test_initialisation_follows_the_original():
  _, variables = _init(heads={"joint": 40})
  params = variables["params"]
  kernel = np.asarray(params["stage_3_0"]["conv_b"]["kernel"])  # 3x3, 64 -> 64
  assert kernel.std() == pytest.approx(np.sqrt(2.0 / (9 * 64)), rel=0.05)
  head = params["joint_head"]
  bound = 1.0 / np.sqrt(64)
  for leaf in (head["kernel"], head["bias"]):
    assert np.abs(leaf).max() <= bound and np.abs(leaf).max() > 0.8 * bound
  assert np.all(params["bn_1"]["scale"] == 1) and np.all(params["bn_1"]["bias"] == 0)
  _, zeroed = _init(heads={"joint": 40}, zero_init_heads=True,
                    zero_init_last_bn=True)
  assert not np.any(zeroed["params"]["joint_head"]["kernel"])
  assert not np.any(zeroed["params"]["stage_2_0"]["bn_b"]["scale"])


@pytest.mark.slow
def test_bf16_compute_with_float32_parameters():
  model, variables = _init(heads={"joint": 40}, dtype=jnp.bfloat16)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables))
  x = jax.random.normal(jax.random.key(2), (4, 8, 8, 3))
  out, state = model.apply(variables, x, train=True, mutable=["batch_stats"])
  assert out["joint"].dtype == jnp.bfloat16
  assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(state))
  ref_model = models.CifarResNet(depth=8, heads={"joint": 40})
  ref, _ = ref_model.apply(variables, x, train=True, mutable=["batch_stats"])
  np.testing.assert_allclose(np.asarray(out["joint"], np.float32), ref["joint"],
                             atol=0.1, rtol=0.1)


def test_train_mode_updates_batch_statistics_eval_mode_does_not():
  model, variables = _init(heads={"class": 10})
  x = jax.random.normal(jax.random.key(3), (4, 8, 8, 3)) * 3 + 1
  _, state = jax.jit(lambda v: model.apply(v, x, train=True,
                                           mutable=["batch_stats"]))(variables)
  mean = state["batch_stats"]["bn_1"]["mean"]
  assert np.abs(np.asarray(mean)).max() > 0  # 0.1 * batch mean folded in
  out = jax.jit(lambda v: model.apply(v, x, train=False))(variables)  # nothing mutable
  assert out["class"].shape == (4, 10)


@pytest.mark.parametrize("name,kwargs", [("cifar_resnet", {"depth": 8}), ("resnet18", {}),
                                         ("wide_resnet", {}), ("resnet12", {}),
                                         ("conv4", {})])
def test_heads_and_inputs_are_checked_by_every_model(name, kwargs):
  cls = type(models.get(name, **kwargs)).__name__
  for heads, message in (({"features": 3}, "cannot be named 'features'"),
                         (["joint"], "must map head names to output sizes"),
                         ({"joint": 0}, "must map names to output sizes >= 1; got 'joint': 0"),
                         ({"joint": 2.0}, "must map names to output sizes >= 1; got 'joint': 2.0")):
    with pytest.raises(ValueError, match=f"{cls} heads {message}"):
      models.get(name, heads=heads, **kwargs)
  model = models.get(name, heads={"joint": 4}, **kwargs)
  with pytest.raises(ValueError, match=rf"{cls} takes a batch of images "
                                       rf"\[B, H, W, C\]; got shape \(16, 16, 3\)"):
    jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((16, 16, 3)))
