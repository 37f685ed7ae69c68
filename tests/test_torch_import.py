"""sla_jax.models.from_torch_state_dict on both namings of the original code."""

import numpy as np
import pytest

from sla_jax import models


def _canonical_state_dict(rng, depth=20):
  """A random state dict in the original module names, PyTorch layouts."""
  sd = {"conv_1_3x3.weight": rng.normal(size=(16, 3, 3, 3))}
  bn = lambda c: {"weight": rng.normal(size=c), "bias": rng.normal(size=c),
                  "running_mean": rng.normal(size=c),
                  "running_var": rng.uniform(size=c),
                  "num_batches_tracked": np.array(3)}
  sd.update({f"bn_1.{k}": v for k, v in bn(16).items()})
  cin = 16
  for s, width in enumerate((16, 32, 64), 1):
    for i in range((depth - 2) // 6):
      sd[f"stage_{s}.{i}.conv_a.weight"] = rng.normal(size=(width, cin, 3, 3))
      sd[f"stage_{s}.{i}.conv_b.weight"] = rng.normal(size=(width, width, 3, 3))
      for b in ("bn_a", "bn_b"):
        sd.update({f"stage_{s}.{i}.{b}.{k}": v for k, v in bn(width).items()})
      cin = width
  sd["joint_head.weight"] = rng.normal(size=(40, 64))
  sd["joint_head.bias"] = rng.normal(size=40)
  sd["single_head.weight"] = rng.normal(size=(10, 64))
  sd["single_head.bias"] = rng.normal(size=10)
  return {k: v.astype(np.float32) if v.dtype == np.float64 else v
          for k, v in sd.items()}


def _as_original_checkpoint(sd):
  """The names in the original's model-best.pth (DataParallel(PredictionModel))."""
  out = {}
  for k, v in sd.items():
    k = (k.replace("conv_1_3x3.", "base_model.0.").replace("bn_1.", "base_model.1.")
         .replace("stage_1.", "base_model.3.").replace("stage_2.", "base_model.4.")
         .replace("stage_3.", "base_model.5.").replace("joint_head.", "classifiers.0.")
         .replace("single_head.", "classifiers.1."))
    out["module." + k] = v
  return out


def test_layouts_and_tree_match_the_flax_model():
  import jax
  import jax.numpy as jnp
  sd = _canonical_state_dict(np.random.default_rng(0))
  variables = models.from_torch_state_dict(sd)
  model = models.CifarResNet(20, heads={"joint": 40, "single": 10})
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0),
                                             jnp.zeros((1, 8, 8, 3)), train=False))
  assert jax.tree.structure(shapes) == jax.tree.structure(variables)
  jax.tree.map(lambda s, v: np.testing.assert_equal(s.shape, v.shape), shapes, variables)
  np.testing.assert_array_equal(variables["params"]["stage_2_0"]["conv_a"]["kernel"],
                                sd["stage_2.0.conv_a.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(variables["params"]["joint_head"]["kernel"],
                                sd["joint_head.weight"].T)
  np.testing.assert_array_equal(variables["batch_stats"]["stage_3_2"]["bn_b"]["var"],
                                sd["stage_3.2.bn_b.running_var"])


def test_original_checkpoint_names_give_the_same_variables():
  sd = _canonical_state_dict(np.random.default_rng(1))
  direct = models.from_torch_state_dict(sd)
  original = models.from_torch_state_dict(_as_original_checkpoint(sd),
                                          head_names=("joint", "single"))
  import jax
  jax.tree.map(np.testing.assert_array_equal, direct, original)


def test_errors_name_the_problem():
  sd = _as_original_checkpoint(_canonical_state_dict(np.random.default_rng(2)))
  with pytest.raises(ValueError, match="pass head_names"):
    models.from_torch_state_dict(sd)
  with pytest.raises(ValueError, match="Cannot map state-dict entry 'fc.weight'"):
    models.from_torch_state_dict({"fc.weight": np.zeros((10, 64))})
