"""The feature-level pretext task: channel-group discarding, joint labels, model, trainer."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import subprocess_util as sp
from sla_jax import (evaluation, feature_transforms, losses, models, objectives, train,
                     transforms)
from test_train import tiny_config


@pytest.mark.parametrize("identity", [True, False])
def test_each_variant_discards_exactly_its_group(identity):
  x = jax.random.normal(jax.random.key(0), (3, 2, 2, 12)) + 5.0  # no zeros
  out = feature_transforms.discard_channel_groups(x, 3, identity)
  v = 3 + identity
  assert out.shape == (3 * v, 2, 2, 12)
  for b in range(3):
    for k in range(v):
      row = np.asarray(out[b * v + k])  # adjacent layout: row b*V + k
      discarded = k - identity  # -1: the untouched identity variant
      for g in range(3):
        block = row[..., 4 * g:4 * (g + 1)]
        expected = 0 if g == discarded else np.asarray(x[b, ..., 4 * g:4 * (g + 1)])
        np.testing.assert_array_equal(block, expected)


def test_pure_and_traceable():
  x = jnp.ones((2, 4, 4, 8))
  f = lambda a: feature_transforms.discard_channel_groups(a, 4)
  np.testing.assert_array_equal(jax.jit(f)(x), f(x))
  batched = jax.vmap(f)(x[None])  # vmap over an extra leading axis
  assert batched.shape == (1, 10, 4, 4, 8)
  assert feature_transforms.discard_channel_groups(
      x.astype(jnp.bfloat16), 2).dtype == jnp.bfloat16


def test_bad_groups_fail_clearly():
  with pytest.raises(ValueError, match="equal groups"):
    feature_transforms.discard_channel_groups(jnp.ones((1, 2, 2, 10)), 4)
  with pytest.raises(ValueError, match=">= 2"):
    feature_transforms.num_variants(1)
  with pytest.raises(ValueError, match=r"a feature map \[B, ..., C\] .* got shape \(8,\)"):
    feature_transforms.discard_channel_groups(jnp.ones(8), 4)


def test_joint_labels_cover_class_input_view_and_variant():
  # M = 4 rotations, V = 3 feature variants: row ((b*M + j)*V + v).
  labels = jnp.array([2, 7])
  joint = losses.joint_labels(labels, 4 * 3)
  for b, y in enumerate([2, 7]):
    for j in range(4):
      for v in range(3):
        assert int(joint[(b * 4 + j) * 3 + v]) == y * 12 + j * 3 + v


def _capture_shapes(model, variables, x):
  _, state = jax.eval_shape(lambda v: model.apply(
      v, x, train=False, capture_intermediates=True, mutable=["intermediates"]),
                            variables)
  inter = state["intermediates"]
  return {name: inter[name]["__call__"][0].shape[0]
          for name in inter if name.startswith(("stage_", "bn_1"))}


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_only_the_later_stages_see_the_copies(stage):
  model = models.CifarResNet(8, heads={"joint": 10 * 3}, feature_groups=2,
                             feature_stage=stage)
  x = jnp.ones((5, 8, 8, 3))
  # Shapes only: traced, not run.
  out, variables = jax.eval_shape(
      lambda k: model.init_with_output(k, x, train=False), jax.random.key(0))
  rows = _capture_shapes(model, variables, x)
  assert rows["bn_1"] == 5  # the stem always runs once per row
  for s in (1, 2, 3):
    assert rows[f"stage_{s}_0"] == (15 if s > stage else 5), rows
  assert out["joint"].shape == (15, 30) and out["features"].shape == (15, 64)


def test_identity_variant_equals_the_plain_network():
  plain = models.CifarResNet(8, heads={"joint": 30})
  feat = models.CifarResNet(8, heads={"joint": 30}, feature_groups=2,
                            feature_stage=2)
  x = jax.random.normal(jax.random.key(1), (4, 8, 8, 3))
  variables = jax.jit(lambda k: plain.init(k, x, train=False))(
      jax.random.key(0))  # the same parameters serve both
  ours = jax.jit(lambda v: feat.apply(v, x, train=False))(variables)["joint"]
  theirs = jax.jit(lambda v: plain.apply(v, x, train=False))(variables)["joint"]
  np.testing.assert_allclose(ours[::3], theirs, rtol=1e-5, atol=1e-6)
  assert not np.allclose(ours[1::3], ours[::3])  # discarding changes outputs


@pytest.mark.slow
def test_gradients_reach_the_layers_before_the_transform():
  objective = objectives.make("sla_sd", 10, "rotation", feature_views=3)
  model = models.CifarResNet(8, heads=objective.heads, feature_groups=2,
                             feature_stage=2)
  x = jax.random.normal(jax.random.key(0), (4, 8, 8, 3))
  labels = jnp.arange(4)
  views = objective.group.apply(x)
  variables = model.init(jax.random.key(1), views, train=False)

  def loss(params):
    out, _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]},
                         views, train=True, mutable=["batch_stats"])
    assert out["joint"].shape == (4 * 4 * 3, 10 * 12)
    return objective.loss(out, labels)

  grads = jax.grad(loss)(variables["params"])
  for name in ("conv_1_3x3", "stage_1_0", "stage_3_0", "joint_head", "single_head"):
    norm = float(optax.tree.norm(grads[name]))
    assert np.isfinite(norm) and norm > 0, name


def test_eval_outputs_with_feature_variants_equal_one_pass():
  group = transforms.get("rotation")
  model = models.CifarResNet(8, heads={"joint": 10 * 12}, feature_groups=2,
                             feature_stage=1)
  x = jax.random.normal(jax.random.key(0), (8, 8, 8, 3))
  variables = model.init(jax.random.key(1), x, train=False)
  ours = jax.jit(lambda v, x: evaluation.eval_outputs(model, group, v, x))(variables, x)
  one_pass = model.apply(variables, group.apply(x), train=False)
  assert ours["joint"].shape == (8 * 12, 120)
  np.testing.assert_allclose(ours["joint"], one_pass["joint"], rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_trainer_end_to_end_with_input_and_feature_transforms(tmp_path):
  c = tiny_config("sla_sd")
  c.feature_transform.groups = 2
  c.feature_transform.stage = 2
  results = train.train_and_evaluate(c, tmp_path)
  assert results["num_views"] == 4 * 3
  assert set(results["test"]) == {"acc_si", "acc_ag", "acc_sd", "loss"}
  rows = sp.metric_rows(tmp_path)
  # views/s counts input views (M = 4), not feature variants.
  assert rows[0]["train/views_per_s"] == pytest.approx(4 * rows[0]["train/images_per_s"])
  assert np.isfinite(results["test"]["loss"])


@pytest.mark.parametrize("objective,groups,stage,message", [
    ("baseline", 2, 2, "needs objective sla or sla_sd"),
    ("sla", 3, 2, "divide the 32 channels"),
    ("sla", 2, 4, "stage must be"),
])
def test_bad_feature_configs_fail_clearly(tmp_path, objective, groups, stage,
                                          message):
  c = tiny_config(objective)
  c.feature_transform.groups = groups
  c.feature_transform.stage = stage
  with pytest.raises(train.ConfigError, match=message):
    train.train_and_evaluate(c, tmp_path)
