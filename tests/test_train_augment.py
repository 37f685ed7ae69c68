"""Strong augmentation (sla_jax.augment) in the trainer: config, mixed (joint) targets, DRW weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sla_jax import augment, objectives, spec, train
from tests import subprocess_util as sp


def test_config_names_and_parameters_are_checked():
  assert spec.resolve(sp.make_config(), 10).augment is None
  for name in ("cutout", "cutmix", "mixup", "randaugment", "randaugment+cutout",
               "cutout+cutmix", "autoaugment", "autoaugment+cutout"):
    assert callable(spec.resolve(sp.make_config(**{"augment.name": name}),
                                 10).augment)
  for bad, match in (("nope", "Unknown augmentation"),
                     ("cutmix+cutout", "must come last"),
                     ("mixup+cutmix", "at most one mixing")):
    with pytest.raises(spec.ConfigError, match=match):
      spec.resolve(sp.make_config(**{"augment.name": bad}), 10)
  config = sp.make_config(**{"augment.name": "cutout"})
  config.augment.cutout.unknown = 1
  with pytest.raises(spec.ConfigError, match="unknown"):
    spec.resolve(config, 10)


def test_bad_augmentation_values_stop_the_trainer_before_training(tmp_path):
  config = sp.make_config(**{"augment.name": "autoaugment",
                             "augment.autoaugment.policy": "foo"})
  with pytest.raises(train.ConfigError, match="augment 'autoaugment'.*unknown policy 'foo'"):
    train.train_and_evaluate(config, tmp_path / "w")
  assert not (tmp_path / "w").exists()


def test_chain_runs_ops_in_order_with_their_parameters():
  key = jax.random.key(0)
  images = jnp.full((4, 8, 8, 3), 0.25)
  labels = jnp.arange(4)
  fn = augment.chain("cutout", {"cutout": {"size": 4, "fill": 1.0}})
  out, mixed = fn(key, images, labels)
  expected = augment.cutout(jax.random.fold_in(key, 0), images, 4, 1.0)
  np.testing.assert_array_equal(out, expected)
  np.testing.assert_array_equal(mixed.weight, np.ones(4))
  out, mixed = augment.chain("cutout+mixup", {"cutout": {"size": 4},
                                              "mixup": {"alpha": 1.0}})(
                                                  key, images, labels)
  assert out.shape == images.shape and float(mixed.weight.min()) < 1.0
  assert augment.chain("none") is None
  # A parameter an op needs is asked for when the chain is built, not traced.
  with pytest.raises(ValueError, match=r"'cutout' needs size: pass params=\{'cutout'"):
    augment.chain("cutout")
  with pytest.raises(ValueError, match="'mixup' needs alpha"):
    augment.chain("randaugment+mixup", {"randaugment": {}})


def test_sla_mixed_loss_is_the_mixture_of_joint_labels():
  rng = np.random.RandomState(0)
  n, m, b = 5, 4, 6
  objective = objectives.make("sla", n, "rotation")
  joint = jnp.asarray(rng.randn(b * m, n * m), jnp.float32)
  mixed = augment.MixedLabels(jnp.asarray(rng.randint(0, n, b)),
                              jnp.asarray(rng.randint(0, n, b)),
                              jnp.asarray(rng.rand(b), jnp.float32))
  got = train.mixed_image_losses(objective, {"joint": joint}, mixed)
  rows = augment.mixed_cross_entropy(joint, augment.joint_mixed_labels(mixed, m))
  np.testing.assert_allclose(got, rows.reshape(b, m).mean(1), rtol=1e-5)
  unmixed = augment.MixedLabels.unmixed(mixed.labels)
  np.testing.assert_allclose(
      train.mixed_image_losses(objective, {"joint": joint}, unmixed),
      objective.loss({"joint": joint}, mixed.labels, reduce=False), rtol=1e-6)


def test_drw_weights_of_a_mix_are_the_mixture_of_class_weights():
  config = sp.make_config(**{"drw.start": 0.0})
  counts = np.array([100, 10, 1])
  resolved = spec.resolve(config, 3, counts)
  reduce = train.make_image_reduction(resolved)
  cw = np.asarray(resolved.class_weights)
  mixed = augment.MixedLabels(jnp.array([0, 1]), jnp.array([2, 2]),
                              jnp.array([0.25, 1.0]))
  per_image = jnp.array([2.0, 3.0])
  w = np.array([0.25 * cw[0] + 0.75 * cw[2], cw[1]])
  assert float(reduce(per_image, mixed, 5)) == pytest.approx(
      float((w * [2.0, 3.0]).sum() / w.sum()), rel=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("objective,name", [("sla", "cutmix"),
                                            ("baseline", "randaugment+cutout"),
                                            ("sla", "autoaugment")])
def test_training_with_strong_augmentation_runs_and_learns(tmp_path, objective,
                                                           name):
  config = sp.make_config(objective=objective, total_steps=100, eval_every=100,
                          checkpoint_every=100, **{"augment.name": name,
                                                  "augment.cutout.size": 3})
  results = train.train_and_evaluate(config, tmp_path)
  rows = sp.metric_rows(tmp_path)
  losses = [r["train/loss"] for r in rows if "train/loss" in r]
  assert all(np.isfinite(losses))
  metric = results["selection_metric"].split("/")[1]
  assert results["test"][metric] > 0.2  # 8x8 digits: chance is 0.1
