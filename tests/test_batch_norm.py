"""FusedBatchNorm: Flax's BatchNorm with a closed-form backward pass."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sla_jax import models
from sla_jax.models.batch_norm import (FusedBatchNorm, _joint_sums, _separate_sums,
                                       batch_statistics)

SETTINGS = [(dtype, fast) for dtype in (jnp.float32, jnp.bfloat16)
            for fast in (False, True)]


def _pair(dtype, fast, train=True):
  kwargs = dict(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                dtype=dtype, use_fast_variance=fast)
  return nn.BatchNorm(**kwargs), FusedBatchNorm(**kwargs)


def _inputs(dtype):
  x = jax.random.normal(jax.random.key(0), (8, 5, 5, 6)) * 3.0 + 1.0
  variables = {"params": {"scale": jnp.linspace(0.5, 2.0, 6),
                          "bias": jnp.linspace(-1.0, 1.0, 6)},
               "batch_stats": {"mean": jnp.linspace(-0.2, 0.3, 6),
                               "var": jnp.linspace(0.5, 1.5, 6)}}
  return x.astype(dtype), variables


@pytest.mark.parametrize("dtype,fast", SETTINGS)
def test_same_variables_values_and_statistics_as_flax(dtype, fast):
  x, variables = _inputs(dtype)
  flax_bn, fused_bn = _pair(dtype, fast)
  shapes = lambda v: jax.tree.map(lambda a: (a.shape, a.dtype), v)
  assert shapes(fused_bn.init(jax.random.key(1), x)) == shapes(
      flax_bn.init(jax.random.key(1), x))
  (y_flax, stats_flax), (y_fused, stats_fused) = (
      bn.apply(variables, x, mutable=["batch_stats"])
      for bn in (flax_bn, fused_bn))
  assert y_fused.dtype == y_flax.dtype == dtype
  np.testing.assert_array_equal(np.asarray(y_fused, np.float32),
                                np.asarray(y_flax, np.float32))
  jax.tree.map(np.testing.assert_array_equal, stats_fused, stats_flax)
  eval_flax, eval_fused = (bn.apply(variables, x)
                           for bn in _pair(dtype, fast, train=False))
  np.testing.assert_array_equal(np.asarray(eval_fused, np.float32),
                                np.asarray(eval_flax, np.float32))


def _grads(bn, variables, x):
  weights = jax.random.normal(jax.random.key(2), x.shape)

  def loss(params, x):
    y, _ = bn.apply({"params": params,
                     "batch_stats": variables["batch_stats"]}, x,
                    mutable=["batch_stats"])
    return (y.astype(jnp.float32) * weights).sum()

  return jax.jit(jax.grad(loss, argnums=(0, 1)))(variables["params"], x)


@pytest.mark.parametrize("dtype,fast", SETTINGS)
def test_gradients_equal_autodiff(dtype, fast):
  x, variables = _inputs(dtype)
  flax_bn, fused_bn = _pair(dtype, fast)
  # bfloat16 input gradients round to 8 bits in both.
  rtol = 1e-5 if dtype == jnp.float32 else 1e-2
  expected, got = _grads(flax_bn, variables, x), _grads(fused_bn, variables, x)
  for e, g in zip(jax.tree.leaves(expected), jax.tree.leaves(got)):
    e, g = np.asarray(e, np.float32), np.asarray(g, np.float32)
    np.testing.assert_allclose(g, e, atol=rtol * np.abs(e).max(), rtol=0)


@pytest.mark.parametrize("platform,backward_reductions", [("cpu", 2),
                                                          ("cuda", 1)])
def test_backward_is_two_sums_not_autodiff_through_the_statistics(
    platform, backward_reductions):
  """The point of the module: its gradient program holds fewer reductions
  (for a GPU both backward sums in one; lowered here without one)."""
  x, variables = _inputs(jnp.float32)

  def reductions(bn):
    def loss(params, x):
      y, _ = bn.apply({"params": params,
                       "batch_stats": variables["batch_stats"]}, x,
                      mutable=["batch_stats"])
      return y.sum()
    text = jax.jit(jax.grad(loss, argnums=(0, 1))).trace(
        variables["params"], x).lower(
            lowering_platforms=(platform,)).as_text()
    return text.count("stablehlo.reduce")

  flax_bn, fused_bn = _pair(jnp.float32, False)
  # 2 statistics + the backward sums (the loss's own sum is not in a gradient).
  assert reductions(fused_bn) == 2 + backward_reductions < reductions(flax_bn)


def test_joint_sums_equal_separate_sums():
  """The GPU's one reduction of both backward sums, run here on the CPU."""
  a, b = jax.random.normal(jax.random.key(3), (2, 16, 7, 7, 6))
  axes = (0, 1, 2)
  joint = _joint_sums(a, b, axes)
  for got, want in zip(joint, _separate_sums(a, b, axes)):
    assert got.shape == want.shape == (6,)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_vmap_of_the_gradient():
  x, variables = _inputs(jnp.float32)
  _, fused_bn = _pair(jnp.float32, False)
  xs = jnp.stack([x, 2.0 * x - 1.0])
  per_row = jax.vmap(lambda x: _grads(fused_bn, variables, x)[1])(xs)
  for i in range(2):
    np.testing.assert_allclose(per_row[i], _grads(fused_bn, variables, xs[i])[1],
                               rtol=1e-6, atol=1e-6)


def test_batch_statistics_two_pass_and_fast():
  x = jnp.asarray([[1.0, 10.0], [3.0, 14.0]])
  for fast in (False, True):
    mean, var = batch_statistics(x, fast)
    np.testing.assert_allclose(mean, [2.0, 12.0])
    np.testing.assert_allclose(var, [1.0, 4.0])


@pytest.mark.parametrize("name", ["cifar_resnet", "wide_resnet", "resnet18",
                                  "conv4", "resnet12"])
def test_every_model_takes_the_fused_batch_norm(name):
  """Same variables and loss; gradients equal to float rounding."""
  kwargs = {"cifar_resnet": {"depth": 8}, "wide_resnet": {"depth": 10, "width": 1},
            "resnet12": {"widths": (8, 8, 8, 8)}, "conv4": {"widths": (8, 8)}
            }.get(name, {})
  x = jax.random.uniform(jax.random.key(0), (4, 16, 16, 3))
  plain, fused = (models.get(name, heads={"joint": 5}, fused_batch_norm=f,
                             conv_weight_grad="xla", **kwargs)
                  for f in (False, True))
  variables = plain.init({"params": jax.random.key(1),
                          "dropout": jax.random.key(2)}, x, train=False)
  assert jax.tree.structure(fused.init(
      {"params": jax.random.key(1), "dropout": jax.random.key(2)}, x,
      train=False)) == jax.tree.structure(variables)

  def loss(model, params):
    out, new = model.apply({"params": params,
                            "batch_stats": variables["batch_stats"]}, x,
                           train=True, mutable=["batch_stats"],
                           rngs={"dropout": jax.random.key(3)})
    return (out["joint"] ** 2).mean(), new

  (l_plain, s_plain), g_plain = jax.value_and_grad(
      lambda p: loss(plain, p), has_aux=True)(variables["params"])
  (l_fused, s_fused), g_fused = jax.value_and_grad(
      lambda p: loss(fused, p), has_aux=True)(variables["params"])
  np.testing.assert_array_equal(l_fused, l_plain)
  jax.tree.map(np.testing.assert_array_equal, s_fused, s_plain)
  jax.tree.map(lambda g, e: np.testing.assert_allclose(
      g, e, rtol=1e-4, atol=1e-5 * float(np.abs(e).max()) + 1e-7),
               g_fused, g_plain)
