"""The objective registry: every entry on fixed logits, against sla_jax.losses."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from sla_jax import losses, objectives

B, N, M = 3, 5, 4

EXPECTED = {  # name: (heads, metric names, selection metric)
    "baseline": ({"class": N}, ("acc",), "acc"),
    "da": ({"class": N}, ("acc", "acc_ag"), "acc"),
    "mt": ({"class": N, "transform": M}, ("acc", "acc_ag"), "acc"),
    "sla": ({"joint": N * M}, ("acc_si", "acc_ag"), "acc_si"),
    "sla_sd": ({"joint": N * M, "single": N}, ("acc_si", "acc_ag", "acc_sd"),
               "acc_sd"),
}


def _outputs(objective):
  rng = np.random.default_rng(0)
  rows = B * objective.num_views
  return {head: jnp.asarray(rng.normal(size=(rows, size)), jnp.float32)
          for head, size in objective.heads.items()}


def test_registry_holds_the_five_objectives():
  assert objectives.names()[:5] == tuple(EXPECTED)
  assert objectives.metric_names()[:4] == ("acc", "acc_ag", "acc_si", "acc_sd")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_heads_metrics_and_selection(name):
  heads, metrics, selection = EXPECTED[name]
  objective = objectives.make(name, N, "rotation")
  assert objective.heads == heads
  assert objective.metric_names == metrics
  assert objective.selection_metric == selection == metrics[
      metrics.index(selection)]
  preds = objective.predictions(_outputs(objective))
  assert tuple(preds) == metrics
  for logits in preds.values():
    assert logits.shape == (B, N)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_loss_is_the_documented_function(name):
  objective = objectives.make(name, N, "rotation", temperature=2.0)
  out = _outputs(objective)
  labels = np.array([4, 0, 2])
  m = objective.num_views
  expected = {
      "baseline": lambda: losses.da_loss(out["class"], labels, 1),
      "da": lambda: losses.da_loss(out["class"], labels, M),
      "mt": lambda: losses.mt_loss(out["class"], out["transform"], labels, M),
      "sla": lambda: losses.sla_loss(out["joint"], labels, M),
      "sla_sd": lambda: losses.self_distillation_loss(
          out["joint"], out["single"][::m], labels, M, 2.0),
  }[name]()
  np.testing.assert_allclose(objective.loss(out, labels), expected, rtol=1e-6)
  per_image = objective.loss(out, labels, reduce=False)
  assert per_image.shape == (B,)
  np.testing.assert_allclose(per_image.mean(), expected, rtol=1e-6)


def test_predictions_read_the_right_columns():
  sd = objectives.make("sla_sd", N, "rotation")
  out = _outputs(sd)
  preds = sd.predictions(out)
  np.testing.assert_array_equal(preds["acc_si"], out["joint"][::M, ::M])
  np.testing.assert_allclose(preds["acc_ag"],
                             losses.aggregated_logits(out["joint"], M))
  np.testing.assert_array_equal(preds["acc_sd"], out["single"][::M])
  da = objectives.make("da", N, "rotation")
  out = _outputs(da)
  np.testing.assert_allclose(da.predictions(out)["acc_ag"],
                             out["class"].reshape(B, M, N).mean(1), rtol=1e-6)


def test_single_view_objectives_ignore_the_transform_and_drop_ag():
  assert objectives.make("baseline", N, "rotation").num_views == 1
  da = objectives.make("da", N, "identity")
  assert da.metric_names == ("acc",)


def test_feature_views_need_joint_labels():
  assert objectives.make("sla", N, "rotation", feature_views=3).num_views == 12
  with pytest.raises(ValueError, match="needs objective sla or sla_sd"):
    objectives.make("mt", N, "rotation", feature_views=3)


def test_a_new_objective_is_one_registered_class():
  @dataclasses.dataclass(frozen=True)
  class JointOnlyAG(objectives.SLA):
    name = "test_sla_ag_select"
    selection_metric = "acc_ag"

  objectives.register(JointOnlyAG)
  try:
    objective = objectives.make("test_sla_ag_select", N, "rotation")
    assert objective.heads == {"joint": N * M}
    assert objective.selection_metric == "acc_ag"
    assert "test_sla_ag_select" in objectives.names()
    with pytest.raises(ValueError, match="already registered"):
      objectives.register(JointOnlyAG)
  finally:
    objectives._REGISTRY.pop("test_sla_ag_select")  # pylint: disable=protected-access


def test_unknown_objective_lists_the_registry():
  with pytest.raises(ValueError, match="Unknown objective 'simclr'; valid "
                     "objectives are: baseline, da, mt, sla, sla_sd"):
    objectives.get("simclr")


@pytest.mark.parametrize("name,feature_views", [
    (name, v) for name in sorted(EXPECTED) for v in (1, 3)
    if v == 1 or objectives.get(name).joint_labels])
def test_single_pass_predictions_equal_the_all_view_ones(name, feature_views):
  objective = objectives.make(name, N, "rotation", feature_views=feature_views)
  out = _outputs(objective)  # rows (b * M + j) * V + v
  v, rows_per_image = feature_views, objective.num_views
  identity_rows = np.concatenate(
      [np.arange(b * rows_per_image, b * rows_per_image + v) for b in range(B)])
  single = objective.single_pass_predictions(
      {k: x[identity_rows] for k, x in out.items()})
  full = objective.predictions(out)
  assert set(single) == set(full) - {"acc_ag"}
  for k in single:
    np.testing.assert_array_equal(single[k], full[k], err_msg=k)


@pytest.mark.parametrize("temperature", [0.0, -1.0])
def test_a_temperature_that_is_not_positive_is_refused(temperature):
  with pytest.raises(ValueError, match="temperature must be > 0"):
    objectives.make("sla_sd", 10, "rotation", temperature=temperature)


@pytest.mark.parametrize("field,value", [("num_classes", -1), ("num_classes", 0),
                                         ("num_classes", 2.5), ("num_classes", True),
                                         ("feature_views", 0)])
def test_sizes_that_are_not_positive_integers_are_refused(field, value):
  kwargs = {"num_classes": 10, "feature_views": 1, field: value}
  with pytest.raises(ValueError, match=f"{field} must be an integer >= 1; got {value!r}"):
    objectives.make("sla", transform="rotation", **kwargs)
  assert objectives.make("sla", np.int64(10), "rotation").heads == {"joint": 40}
