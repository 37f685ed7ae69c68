"""sla_jax.losses against numpy written from the formulas and the original trainer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sla_jax import losses

B, N, M = 3, 5, 4


def _np_ce(logits, labels):
  logits = np.asarray(logits, np.float64)
  shifted = logits - logits.max(1, keepdims=True)
  logp = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
  return -logp[np.arange(len(labels)), labels].mean()


def _np_log_softmax(z):
  z = np.asarray(z, np.float64)
  z = z - z.max(1, keepdims=True)
  return z - np.log(np.exp(z).sum(1, keepdims=True))


@pytest.fixture
def batch():
  rng = np.random.default_rng(0)
  joint = rng.normal(size=(B * M, N * M)).astype(np.float32) * 3
  single = rng.normal(size=(B, N)).astype(np.float32) * 2
  labels = np.array([4, 0, 2])
  return joint, single, labels


def test_joint_labels_layout():
  np.testing.assert_array_equal(
      losses.joint_labels(jnp.array([2, 0, 1]), 3),
      [6, 7, 8, 0, 1, 2, 3, 4, 5])
  # The original: torch.stack([labels*n+i for i in range(n)], 1).view(-1)
  labels = np.array([4, 0, 2])
  original = np.stack([labels * M + i for i in range(M)], 1).reshape(-1)
  np.testing.assert_array_equal(losses.joint_labels(labels, M), original)


def test_sla_loss_and_large_loss(batch):
  joint, _, labels = batch
  expected = _np_ce(joint, np.stack([labels * M + i for i in range(M)], 1).ravel())
  np.testing.assert_allclose(losses.sla_loss(joint, labels, M), expected, rtol=1e-6)
  np.testing.assert_allclose(losses.sla_loss(joint, labels, M, large_loss=True),
                             M * expected, rtol=1e-6)


def test_single_and_aggregated_logits_follow_the_original(batch):
  joint, _, _ = batch
  # The original trainer: preds[::n, ::n] and sum_i preds[i::n, i::n] / n.
  np.testing.assert_array_equal(losses.single_logits(joint, M), joint[::M, ::M])
  agg = sum(joint[i::M, i::M] / M for i in range(M))
  np.testing.assert_allclose(losses.aggregated_logits(joint, M), agg, rtol=1e-6)
  # Element by element from the definition.
  ag = np.asarray(losses.aggregated_logits(joint, M))
  for b in range(B):
    for i in range(N):
      want = np.mean([joint[b * M + j, i * M + j] for j in range(M)])
      assert ag[b, i] == pytest.approx(want, rel=1e-6)


def test_view_averaged_logits():
  logits = np.arange(12, dtype=np.float32).reshape(6, 2)  # B=2, M=3, K=2
  np.testing.assert_allclose(losses.view_averaged_logits(logits, 3),
                             [[2, 3], [8, 9]])


def test_da_loss_hand_computed():
  # B=1, M=2, N=2, y=1: views' logits [0, 0] and [0, ln 3].
  logits = np.array([[0.0, 0.0], [0.0, np.log(3.0)]], np.float32)
  # CE = -log(1/2) and -log(3/4): mean = (ln 2 + ln 4/3) / 2
  expected = (np.log(2.0) + np.log(4.0 / 3.0)) / 2
  assert float(losses.da_loss(logits, np.array([1]), 2)) == pytest.approx(expected, rel=1e-6)


def test_mt_loss_hand_computed():
  # B=1, M=2, N=2, y=0. Class logits as in the DA test; transform logits
  # [ln 3, 0] (view 0, label 0: p = 3/4) and [0, 0] (view 1, label 1: p = 1/2).
  class_logits = np.array([[0.0, 0.0], [0.0, np.log(3.0)]], np.float32)
  transform_logits = np.array([[np.log(3.0), 0.0], [0.0, 0.0]], np.float32)
  class_ce = (np.log(2.0) + np.log(4.0)) / 2          # p(y=0) = 1/2, 1/4
  transform_ce = (np.log(4.0 / 3.0) + np.log(2.0)) / 2
  got = losses.mt_loss(class_logits, transform_logits, np.array([0]), 2)
  assert float(got) == pytest.approx(class_ce + transform_ce, rel=1e-6)


def test_self_distillation_loss_formula(batch):
  joint, single, labels = batch
  t = 4.0
  agg = sum(joint[i::M, i::M] / M for i in range(M))
  log_teacher = _np_log_softmax(agg / t)
  kl = (np.exp(log_teacher) * (log_teacher - _np_log_softmax(single / t))).sum(1).mean()
  joint_ce = _np_ce(joint, np.stack([labels * M + i for i in range(M)], 1).ravel())
  expected = joint_ce + _np_ce(single, labels) + t * t * kl
  got = losses.self_distillation_loss(joint, single, labels, M, temperature=t)
  assert float(got) == pytest.approx(expected, rel=1e-5)
  np.testing.assert_allclose(losses.distillation_kl(agg, single, t), kl, rtol=1e-5)
  large = losses.self_distillation_loss(joint, single, labels, M, t, large_loss=True)
  assert float(large) == pytest.approx(expected + (M - 1) * joint_ce, rel=1e-5)


def test_teacher_is_detached(batch):
  joint, single, labels = batch
  joint, single = jnp.asarray(joint), jnp.asarray(single)
  sd_grad = jax.grad(losses.self_distillation_loss)(joint, single, labels, M, 4.0)
  sla_grad = jax.grad(losses.sla_loss)(joint, labels, M)
  # The KL and single-head terms add exactly nothing to the joint gradient...
  np.testing.assert_array_equal(sd_grad, sla_grad)
  kl_grad = jax.grad(lambda j: losses.distillation_kl(
      jax.lax.stop_gradient(losses.aggregated_logits(j, M)), single, 4.0))(joint)
  assert not np.any(np.asarray(kl_grad))
  # ...while the student (single head) is trained by the KL.
  student_grad = jax.grad(lambda s: losses.distillation_kl(
      losses.aggregated_logits(joint, M), s, 4.0))(single)
  assert np.abs(np.asarray(student_grad)).max() > 1e-4


def test_bf16_logits_are_upcast(batch):
  joint, _, labels = batch
  low = jnp.asarray(joint, jnp.bfloat16)
  got = losses.sla_loss(low, labels, M)
  assert got.dtype == jnp.float32
  expected = _np_ce(np.asarray(low, np.float32),
                    np.stack([labels * M + i for i in range(M)], 1).ravel())
  assert float(got) == pytest.approx(expected, rel=1e-5)


def test_jit_and_vmap(batch):
  joint, single, labels = batch
  fn = lambda j, s, y: losses.self_distillation_loss(j, s, y, M, 2.0)
  eager = fn(joint, single, labels)
  np.testing.assert_allclose(jax.jit(fn)(joint, single, labels), eager, rtol=1e-6)
  batched = jax.vmap(fn)(np.stack([joint, joint]), np.stack([single, single]),
                         np.stack([labels, labels]))
  np.testing.assert_allclose(batched, [eager, eager], rtol=1e-6)


def test_shard_map_over_images_with_a_pmean_equals_the_global_loss():
  from jax.sharding import PartitionSpec as P  # pylint: disable=g-import-not-at-top
  mesh = jax.make_mesh((jax.device_count(),), ("data",))
  images = 2 * jax.device_count()  # two images (2·M rows) per device
  rng = np.random.default_rng(7)
  joint = jnp.asarray(rng.normal(size=(images * M, N * M)) * 3, jnp.float32)
  single = jnp.asarray(rng.normal(size=(images, N)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, N, images), jnp.int32)

  def per_shard(joint, single, labels):
    mean = lambda x: jax.lax.pmean(x, "data")
    return (mean(losses.sla_loss(joint, labels, M)),
            mean(losses.self_distillation_loss(joint, single, labels, M, 2.0)),
            losses.single_logits(joint, M), losses.aggregated_logits(joint, M))

  sharded = jax.jit(jax.shard_map(
      per_shard, mesh=mesh, in_specs=(P("data"), P("data"), P("data")),
      out_specs=(P(), P(), P("data"), P("data"))))
  put = lambda x: jax.device_put(x, jax.NamedSharding(mesh, P("data")))
  sla, sd, si, ag = sharded(put(joint), put(single), put(labels))
  np.testing.assert_allclose(sla, losses.sla_loss(joint, labels, M), rtol=1e-6)
  np.testing.assert_allclose(
      sd, losses.self_distillation_loss(joint, single, labels, M, 2.0), rtol=1e-6)
  np.testing.assert_array_equal(si, losses.single_logits(joint, M))
  np.testing.assert_allclose(ag, losses.aggregated_logits(joint, M), rtol=1e-6)


def test_shape_errors_say_what_to_fix(batch):
  joint, single, labels = batch
  with pytest.raises(ValueError, match=r"has 12 rows but labels has 2 images x 4"):
    losses.sla_loss(joint, labels[:2], M)
  with pytest.raises(ValueError, match=r"not \[B\*M, N\*M\] for M = 5"):
    losses.aggregated_logits(joint, 5)
  with pytest.raises(ValueError, match=r"single_head_logits must be \[B, N\]"):
    losses.self_distillation_loss(joint, joint[:, :N], labels, M)
  with pytest.raises(ValueError, match=r"transform_logits must have M = 4"):
    losses.mt_loss(joint[:, :N], joint[:, :3], labels, M)


def test_per_image_losses_average_to_the_loss(batch):
  joint, single, labels = batch
  calls = {
      "sla": lambda **kw: losses.sla_loss(joint, labels, M, True, **kw),
      "sd": lambda **kw: losses.self_distillation_loss(joint, single, labels, M, 2.0, **kw),
      "da": lambda **kw: losses.da_loss(joint[:, :N], labels, M, **kw),
      "mt": lambda **kw: losses.mt_loss(joint[:, :N], joint[:, :M], labels, M, **kw),
  }
  for name, call in calls.items():
    per_image = call(reduce=False)
    assert per_image.shape == (B,), name
    np.testing.assert_allclose(per_image.mean(), call(), rtol=1e-6, err_msg=name)
  # Image 1's SLA loss only depends on its own views' rows.
  other = joint.copy()
  other[M:2 * M] += 5.0
  changed = losses.sla_loss(other, labels, M, reduce=False) != losses.sla_loss(
      joint, labels, M, reduce=False)
  np.testing.assert_array_equal(changed, [False, True, False])


def test_joint_labels_are_int32_whatever_the_label_dtype():
  # CIFAR-100 x rotation: 114 * 4 + 0 = 456 wraps to 200 in uint8.
  labels = np.array([114, 99], np.uint8)
  joint = losses.joint_labels(labels, 4)
  assert joint.dtype == jnp.int32
  np.testing.assert_array_equal(joint, [456, 457, 458, 459, 396, 397, 398, 399])
  # The uint8 labels train the same targets as the int32 ones.
  wide = np.zeros((8, 500), np.float32)
  wide[np.arange(8), np.asarray(joint)] = 50.0
  np.testing.assert_allclose(losses.sla_loss(wide, labels, 4),
                             losses.sla_loss(wide, labels.astype(np.int32), 4))
  assert float(losses.sla_loss(wide, labels, 4)) < 1e-3


@pytest.mark.parametrize("bad", [-1, N])
def test_labels_outside_the_classes_are_refused(batch, bad):
  joint, single, labels = batch
  labels = labels.copy()
  labels[1] = bad
  calls = [lambda: losses.sla_loss(joint, labels, M),
           lambda: losses.self_distillation_loss(joint, single, labels, M),
           lambda: losses.da_loss(joint[:, :N], labels, M),
           lambda: losses.mt_loss(joint[:, :N], joint[:, :M], labels, M),
           lambda: losses.cross_entropy(single, labels)]
  for call in calls:
    with pytest.raises(ValueError, match=rf"in \[0, {N}\).*e\.g\. {bad}"):
      call()
  with pytest.raises(ValueError, match="must be integers"):
    losses.check_labels(np.array([0.5]), N)
  losses.check_labels(np.array([0, N - 1]), N)  # in range: no error


def test_array_like_labels(batch):
  joint, single, labels = batch
  as_list = [int(y) for y in labels]
  np.testing.assert_allclose(losses.sla_loss(joint, as_list, M),
                             losses.sla_loss(joint, labels, M))
  np.testing.assert_allclose(
      losses.self_distillation_loss(joint, single, as_list, M),
      losses.self_distillation_loss(joint, single, labels, M))
  np.testing.assert_allclose(losses.da_loss(joint[:, :N], as_list, M),
                             losses.da_loss(joint[:, :N], labels, M))
  np.testing.assert_allclose(losses.cross_entropy(single, as_list),
                             losses.cross_entropy(single, labels))


def test_distillation_teacher_is_float32_for_bf16_logits(batch):
  joint, single, labels = batch
  low_joint = jnp.asarray(joint, jnp.bfloat16)
  got = losses.self_distillation_loss(low_joint, single, labels, M, 2.0)
  # Reference: the same bf16 values, every step in float64.
  j = np.asarray(low_joint, np.float64)
  teacher = sum(j[i::M, i::M] for i in range(M)) / M
  joint_ce = _np_ce(j, np.stack([labels * M + i for i in range(M)], 1).ravel())
  kl = (np.exp(_np_log_softmax(teacher / 2)) *
        (_np_log_softmax(teacher / 2) - _np_log_softmax(single / 2))).sum(1).mean()
  expected = joint_ce + _np_ce(single, labels) + 4 * kl
  assert float(got) == pytest.approx(expected, rel=2e-6)


@pytest.mark.parametrize("m", [0, -4, 2.0, True, jnp.int32(4)])
def test_a_view_count_that_is_not_a_positive_integer_is_refused(m):
  joint = jnp.zeros((8, 40))
  for call in (lambda: losses.aggregated_logits(joint, m),
               lambda: losses.sla_loss(joint, jnp.zeros(2, jnp.int32), m),
               lambda: losses.joint_labels(jnp.zeros(2, jnp.int32), m),
               lambda: losses.transform_labels(2, m),
               lambda: losses.view_averaged_logits(joint, m)):
    with pytest.raises(ValueError, match="num_transforms .M. must be an integer >= 1"):
      call()


def test_self_distillation_heads_must_cover_the_same_classes():
  with pytest.raises(ValueError, match=r"joint_logits has 40 columns but the "
                     r"single head has N = 5 classes x M = 4"):
    losses.self_distillation_loss(jnp.zeros((16, 40)), jnp.zeros((4, 5)),
                                  jnp.zeros(4, jnp.int32), 4)


def test_labels_of_another_dtype_are_refused_under_jit_too():
  joint, labels = jnp.zeros((16, 40)), jnp.arange(4)
  sla = jax.jit(losses.sla_loss, static_argnums=2)
  for bad, dtype in ((labels.astype(jnp.float32) + 0.9, "float32"), (labels > 1, "bool")):
    with pytest.raises(ValueError, match=f"labels must be integers; got dtype {dtype}"):
      sla(joint, bad, 4)  # was truncated to the integer labels, silently
    with pytest.raises(ValueError, match="labels must be integers"):
      jax.jit(losses.cross_entropy)(jnp.zeros((4, 10)), bad)
    with pytest.raises(ValueError, match="labels must be integers"):
      losses.joint_labels(bad, 4)
  # A list (of tracers, under jit) is labels like any array.
  assert float(sla(joint, [0, 1, 2, 3], 4)) == pytest.approx(float(sla(joint, labels, 4)))
  assert float(jax.jit(lambda j: losses.sla_loss(j, [0, 1, 2, 3], 4))(joint)) == (
      pytest.approx(float(sla(joint, labels, 4))))


def test_label_and_logit_shapes_temperature_and_batch_are_checked():
  with pytest.raises(ValueError, match=r"labels must be 1-D \[B\]; got shape \(4, 1\)"):
    losses.joint_labels(jnp.zeros((4, 1), jnp.int32), 4)
  for labels in (jnp.zeros(3, jnp.int32), jnp.zeros((4, 1), jnp.int32)):
    with pytest.raises(ValueError, match=r"labels must have the logits' shape less "
                                         r"its last axis, \(4,\)"):
      losses.cross_entropy(jnp.zeros((4, 10)), labels)
  with pytest.raises(ValueError, match="must have one shape; got .4, 10. and .4, 3."):
    losses.distillation_kl(jnp.zeros((4, 10)), jnp.zeros((4, 3)))
  for t in (0.0, -1.0):
    with pytest.raises(ValueError, match=r"temperature \(T\) must be a number > 0"):
      losses.distillation_kl(jnp.zeros((4, 10)), jnp.zeros((4, 10)), t)
    with pytest.raises(ValueError, match=r"temperature \(T\) must be a number > 0"):
      losses.self_distillation_loss(jnp.zeros((16, 40)), jnp.zeros((4, 10)),
                                    jnp.zeros(4, jnp.int32), 4, temperature=t)
  # A traced temperature is the caller's to keep positive.
  assert float(jax.jit(lambda t: losses.distillation_kl(
      jnp.zeros((4, 10)), jnp.ones((4, 10)), t))(2.0)) == pytest.approx(0.0, abs=1e-6)
  with pytest.raises(ValueError, match="batch_size .B. must be an integer >= 0"):
    losses.transform_labels(-1, 4)
