"""Long-tailed data and LDAM-DRW (sla_jax.long_tail), in the library and the trainer."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sla_jax import data, long_tail, losses, objectives, spec
from sla_jax import train
from sla_jax.models import heads as heads_lib
from tests import subprocess_util as sp


def test_counts_are_cao_et_al_cifar10_lt_profile():
  # CIFAR-10-LT at ratio 100 (Cao et al. 2019): 12 406 training images.
  counts = long_tail.long_tailed_counts(5000, 10, 100)
  np.testing.assert_array_equal(
      counts, [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50])
  assert counts.sum() == 12406
  assert long_tail.long_tailed_counts(500, 100, 10)[[0, -1]].tolist() == [500, 50]
  with pytest.raises(ValueError, match=">= 1"):
    long_tail.long_tailed_counts(10, 3, 0.5)


def test_indices_keep_the_first_images_of_each_class_in_order():
  rng = np.random.RandomState(0)
  labels = rng.randint(0, 4, size=400)
  keep = long_tail.long_tailed_indices(labels, 4, ratio=8)
  n_max = np.bincount(labels).min()
  expected = long_tail.long_tailed_counts(n_max, 4, 8)
  np.testing.assert_array_equal(np.bincount(labels[keep], minlength=4), expected)
  for c in range(4):  # a prefix of each class in the given order
    np.testing.assert_array_equal(keep[labels[keep] == c],
                                  np.flatnonzero(labels == c)[:expected[c]])


def test_ldam_margins_follow_the_quarter_power_law():
  counts = [1000, 100, 10]
  m = long_tail.ldam_margins(counts, 0.5)
  np.testing.assert_allclose(m, 0.5 * (np.array(counts) / 10.0) ** -0.25,
                             rtol=1e-6)
  assert m.argmax() == 2 and m.max() == pytest.approx(0.5)
  with pytest.raises(ValueError, match=">= 1 training image"):
    long_tail.ldam_margins([5, 0], 0.5)


def _np_margin_ce(logits, labels, margins, num_views):
  logits = np.array(logits, np.float64)
  rows = np.arange(len(labels))
  logits[rows, labels] -= margins[labels // num_views]
  logz = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
  return logz - logits[rows, labels]


@pytest.mark.parametrize("num_views", [1, 4])
def test_margin_cross_entropy_matches_numpy(num_views):
  rng = np.random.RandomState(1)
  n = 5
  logits = rng.randn(12, n * num_views).astype(np.float32) * 3
  labels = rng.randint(0, n * num_views, size=12)
  margins = rng.rand(n).astype(np.float32)
  got = jax.jit(long_tail.margin_cross_entropy)(logits, labels, margins)
  np.testing.assert_allclose(got, _np_margin_ce(logits, labels, margins,
                                                num_views), rtol=1e-5)
  zero = long_tail.margin_cross_entropy(logits, labels, np.zeros(n))
  np.testing.assert_allclose(zero, _np_margin_ce(logits, labels, np.zeros(n),
                                                 num_views), rtol=1e-5)
  with pytest.raises(ValueError, match="multiple"):
    long_tail.margin_cross_entropy(np.zeros((2, n * num_views + 1)),
                                   np.zeros(2, int), margins)


def test_effective_number_weights_and_reweighted_mean():
  counts = np.array([5000, 500, 50])
  w = long_tail.effective_number_weights(counts, 0.9999)
  raw = (1 - 0.9999) / (1 - 0.9999 ** counts)
  np.testing.assert_allclose(w, raw / raw.sum() * 3, rtol=1e-6)
  assert w.sum() == pytest.approx(3) and w[0] < w[1] < w[2]
  per_image = jnp.array([1.0, 2.0, 3.0])
  assert float(long_tail.reweighted_mean(per_image, jnp.ones(3))) == pytest.approx(2)
  assert float(long_tail.reweighted_mean(per_image, jnp.array([0., 0., 2.]))) == (
      pytest.approx(3))


def test_groups_and_group_accuracies():
  counts = np.array([500, 101, 100, 20, 19, 1])
  groups = long_tail.class_groups(counts)
  assert groups["many"].tolist() == [True, True, False, False, False, False]
  assert groups["medium"].tolist() == [False, False, True, True, False, False]
  assert groups["few"].tolist() == [False, False, False, False, True, True]
  correct = np.array([10, 5, 3, 0, 1, 2])
  count = np.array([10, 10, 10, 10, 10, 10])
  acc = long_tail.group_accuracies(correct, count, groups)
  assert acc == pytest.approx({"many": 15 / 20, "medium": 3 / 20, "few": 3 / 20})


def test_sla_objective_with_margins_uses_class_margins_on_joint_labels():
  rng = np.random.RandomState(2)
  n, m, b = 3, 4, 5
  margins = (0.1, 0.5, 2.0)
  objective = objectives.make("sla", n, "rotation", class_margins=margins)
  joint = rng.randn(b * m, n * m).astype(np.float32)
  labels = rng.randint(0, n, size=b)
  joint_labels = np.asarray(losses.joint_labels(labels, m))
  expected = _np_margin_ce(joint, joint_labels, np.array(margins), m).reshape(
      b, m).mean(1)
  got = objective.loss({"joint": jnp.asarray(joint)}, labels, reduce=False)
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  plain = objectives.make("sla", n, "rotation")
  np.testing.assert_allclose(
      plain.loss({"joint": joint}, labels, reduce=False),
      _np_margin_ce(joint, joint_labels, np.zeros(n), m).reshape(b, m).mean(1),
      rtol=1e-5)
  with pytest.raises(ValueError, match="one per class"):
    objectives.make("sla", n, "rotation", class_margins=(1.0,))


def test_sla_sd_margins_leave_the_distillation_term_alone():
  rng = np.random.RandomState(3)
  n, m, b = 4, 4, 3
  joint = jnp.asarray(rng.randn(b * m, n * m), jnp.float32)
  single = jnp.asarray(rng.randn(b * m, n), jnp.float32)
  labels = rng.randint(0, n, size=b)
  margins = tuple(rng.rand(n).tolist())
  obj = objectives.make("sla_sd", n, "rotation", class_margins=margins)
  got = obj.loss({"joint": joint, "single": single}, labels, reduce=False)
  row = functools.partial(long_tail.margin_cross_entropy, margins=jnp.asarray(margins))
  kl = losses.distillation_kl(
      losses.aggregated_logits(joint, m), single[::m], reduce=False)
  expected = (losses.sla_loss(joint, labels, m, reduce=False, row_loss=row) +
              row(single[::m], jnp.asarray(labels)) + kl)
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_cosine_head_is_a_scaled_cosine():
  head = heads_lib.CosineDense(3, scale=30.0)
  x = np.random.RandomState(4).randn(5, 8).astype(np.float32)
  variables = head.init(jax.random.key(0), x)
  w = np.asarray(variables["params"]["kernel"])
  expected = 30 * (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (
      w / np.linalg.norm(w, axis=0, keepdims=True))
  np.testing.assert_allclose(head.apply(variables, x), expected, rtol=1e-5,
                             atol=1e-5)


def test_imbalanced_digits_split_and_balanced_test():
  config = sp.make_config(imbalance_ratio=10.0)
  dataset = data.load(config)
  balanced = data.load(sp.make_config())
  counts = np.bincount(dataset.train.labels, minlength=10)
  n_max = np.bincount(balanced.train.labels, minlength=10).min()
  np.testing.assert_array_equal(counts, long_tail.long_tailed_counts(n_max, 10, 10))
  np.testing.assert_array_equal(dataset.class_counts, counts)
  assert dataset.test.size == balanced.test.size
  np.testing.assert_array_equal(dataset.val.labels, balanced.val.labels)
  with pytest.raises(ValueError, match="imbalance_ratio"):
    data.load(sp.make_config(imbalance_ratio=0.5))


def test_spec_resolves_ldam_and_drw_from_class_counts():
  config = sp.make_config(**{"ldam.max_margin": 15.0, "drw.start": 0.5})
  counts = np.array([100, 50, 10])
  resolved = spec.resolve(config, 3, counts)
  np.testing.assert_allclose(resolved.objective.class_margins,
                             long_tail.ldam_margins(counts, 15.0), rtol=1e-6)
  np.testing.assert_allclose(resolved.class_weights,
                             long_tail.effective_number_weights(counts), rtol=1e-6)
  assert resolved.reweight_step == 10  # half of total_steps = 20
  reduce = train.make_image_reduction(resolved)
  per_image, labels = jnp.array([1.0, 4.0]), jnp.array([0, 2])
  assert float(reduce(per_image, labels, 9)) == pytest.approx(2.5)  # plain mean
  w = long_tail.effective_number_weights(counts)[[0, 2]]
  assert float(reduce(per_image, labels, 10)) == pytest.approx(
      (w[0] * 1 + w[1] * 4) / w.sum(), rel=1e-6)
  off = spec.resolve(sp.make_config(), 3, counts)
  assert off.objective.class_margins == () and off.class_weights == ()
  for bad in ({"ldam.max_margin": -1.0}, {"drw.start": 1.5},
              {"drw.beta": 1.0}):
    with pytest.raises(spec.ConfigError):
      spec.resolve(sp.make_config(**bad), 3, counts)


@pytest.mark.slow
def test_long_tailed_ldam_drw_sla_run_reports_groups_and_per_class(tmp_path):
  config = sp.make_config(imbalance_ratio=20.0, **{
      "ldam.max_margin": 15.0, "drw.start": 0.5, "model.cosine_scale": 30.0,
      "objective": "sla_sd"})
  results = train.train_and_evaluate(config, tmp_path)
  on_disk = json.loads((tmp_path / "results.json").read_text())
  assert on_disk["test"] == results["test"]
  counts = np.array(results["train_class_counts"])
  assert counts[0] > counts[-1] and len(counts) == 10
  for name in ("acc_si", "acc_ag", "acc_sd"):
    per_class = np.array(results["per_class"]["test"][name])
    assert per_class.shape == (10,) and ((0 <= per_class) & (per_class <= 1)).all()
    for group in ("many", "medium", "few"):
      assert f"{name}_{group}" in results["test"]
  rows = sp.metric_rows(tmp_path)
  assert all(isinstance(v, float) for r in rows for k, v in r.items()
             if k != "step")


def test_experiments_summarise_class_groups():
  from sla_jax import experiments  # pylint: disable=g-import-not-at-top
  run = lambda seed: experiments.Run("sla", "rotation", seed)
  records = [{"run": run(s), "results": {"test": {
      "acc_si": v, "acc_si_many": v + 0.2, "acc_si_medium": v,
      "acc_si_few": float("nan")}}} for s, v in enumerate([0.5, 0.7])]
  summary = experiments.summarize(records)
  assert summary["sla/rotation"]["acc_si_many"][:2] == pytest.approx(
      (0.8, np.std([0.7, 0.9], ddof=1)))
  table = "\n".join(experiments._group_table(summary))  # pylint: disable=protected-access
  assert "| sla/rotation | acc_si | 80.00 ± 14.14 | 60.00 ± 14.14 | – |" in table


def test_degenerate_profiles_and_weights_are_refused():
  with pytest.raises(ValueError, match="leaves the rarest class of n_max=10 images with 0"):
    long_tail.long_tailed_counts(10, 5, 1000)
  with pytest.raises(ValueError, match="class 1 has no images"):
    long_tail.long_tailed_indices(np.array([0, 0, 2, 2]), 3, 2.0)
  for beta, counts in ((1.0, [5, 3]), (0.99, [5, 0])):  # were NaNs
    with pytest.raises(ValueError, match="0 <= beta < 1 and >= 1 image per class"):
      long_tail.effective_number_weights(counts, beta)
