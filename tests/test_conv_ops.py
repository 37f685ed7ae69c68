"""sla_jax.models.conv_ops: the matmul weight gradient equals XLA's."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sla_jax import losses, models
from sla_jax.models import conv_ops


@pytest.mark.parametrize("stride,cin,cout", [(1, 3, 8), (2, 8, 16)])
def test_gradients_equal_xla(stride, cin, cout):
  x = jax.random.normal(jax.random.key(0), (4, 16, 16, cin))
  w = jax.random.normal(jax.random.key(1), (3, 3, cin, cout))
  args = ((stride, stride), ((1, 1), (1, 1)))
  dn = ("NHWC", "HWIO", "NHWC")
  ours = lambda x, w: conv_ops.conv_general_dilated(x, w, *args, dimension_numbers=dn)
  xla = lambda x, w: jax.lax.conv_general_dilated(x, w, *args, dimension_numbers=dn)
  np.testing.assert_allclose(ours(x, w), xla(x, w), rtol=1e-6)
  loss = lambda f: lambda x, w: jnp.sum(jnp.sin(f(x, w)))
  g_ours = jax.jit(jax.grad(loss(ours), argnums=(0, 1)))(x, w)
  g_xla = jax.jit(jax.grad(loss(xla), argnums=(0, 1)))(x, w)
  for a, b in zip(g_ours, g_xla):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_small_inputs_keep_xla_gradient(monkeypatch):
  calls = []
  monkeypatch.setattr(conv_ops, "_conv3x3", lambda *a: calls.append(a) or None)
  dn = ("NHWC", "HWIO", "NHWC")
  w = jnp.zeros((3, 3, 2, 2))
  conv_ops.conv_general_dilated(jnp.zeros((1, 8, 8, 2)), w, (1, 1), ((1, 1), (1, 1)),
                                dimension_numbers=dn)
  assert not calls
  conv_ops.conv_general_dilated(jnp.zeros((1, 16, 16, 2)), w, (1, 1),
                                ((1, 1), (1, 1)), dimension_numbers=dn)
  assert len(calls) == 1


def test_other_convolutions_fall_back_to_lax():
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 4))
  w = jax.random.normal(jax.random.key(1), (5, 5, 4, 4))
  out = conv_ops.conv_general_dilated(x, w, (1, 1), ((2, 2), (2, 2)),
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  ref = jax.lax.conv_general_dilated(x, w, (1, 1), ((2, 2), (2, 2)),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_array_equal(out, ref)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_model_gradients_match_with_either_implementation(dtype):
  x = jax.random.normal(jax.random.key(0), (16, 16, 16, 3))
  labels = jnp.arange(4) % 10
  variables = models.CifarResNet(8, heads={"joint": 40}).init(
      jax.random.key(1), x[:2], train=False)
  grads = {}
  for impl in ("xla", "matmul"):
    model = models.CifarResNet(8, heads={"joint": 40}, dtype=dtype,
                               conv_weight_grad=impl)

    def loss(params):
      out, _ = model.apply({"params": params,
                            "batch_stats": variables["batch_stats"]}, x,
                           train=True, mutable=["batch_stats"])
      return losses.sla_loss(out["joint"], labels, 4)

    grads[impl] = jax.jit(jax.grad(loss))(variables["params"])
  tol = 1e-4 if dtype == jnp.float32 else 5e-2
  jax.tree.map(lambda a, b: np.testing.assert_allclose(
      a, b, rtol=tol, atol=tol * np.abs(b).max()), grads["matmul"], grads["xla"])
  assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads["matmul"]))


def test_unknown_implementation_is_refused():
  with pytest.raises(ValueError, match="conv_weight_grad must be one of"):
    models.CifarResNet(8, conv_weight_grad="winograd").init(
        jax.random.key(0), jnp.zeros((1, 8, 8, 3)), train=False)


@pytest.mark.parametrize("batch,per_image,budget,expected", [
    (512, 100, 800, 8), (12, 100, 500, 4), (12, 100, 50, 1), (7, 100, 10**6, 7),
    (6, 10**9, 10**6, 1)])
def test_images_per_chunk_is_the_largest_divisor_that_fits(batch, per_image,
                                                           budget, expected):
  assert conv_ops._images_per_chunk(batch, per_image, budget) == expected


def _xla_weight_grad(x, dy, stride):
  conv = lambda w: jax.lax.conv_general_dilated(
      x, w, (stride, stride), ((1, 1), (1, 1)),
      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  w = jnp.zeros((3, 3, x.shape[-1], dy.shape[-1]))
  return jax.vjp(conv, w)[1](dy)[0]


@pytest.mark.parametrize("stride,images_per_chunk", [(1, 2), (1, 4), (2, 3)])
def test_chunked_weight_gradient_equals_xla(stride, images_per_chunk):
  x = jax.random.normal(jax.random.key(0), (12, 16, 16, 8))
  dy = jax.random.normal(jax.random.key(1), (12, 16 // stride, 16 // stride, 5))
  per_image = (16 // stride) ** 2 * 9 * 8 * 4
  chunked = jax.jit(conv_ops.weight_grad_matmul, static_argnums=(2, 3))(
      x, dy, stride, images_per_chunk * per_image)
  whole = conv_ops.weight_grad_matmul(x, dy, stride, chunk_bytes=None)
  np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(chunked, _xla_weight_grad(x, dy, stride),
                             rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("axis_type", ["Auto", "Explicit"])
def test_chunked_weight_gradient_of_a_sharded_batch(axis_type):
  """Batch sharded over the devices: same gradient; with chunks of a multiple
  of the device count each device builds the patches of its own images."""
  n = len(jax.devices())
  mesh = jax.make_mesh((n,), ("data",),
                       axis_types=(getattr(jax.sharding.AxisType, axis_type),))
  rows = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  x = jax.device_put(jax.random.normal(jax.random.key(0), (4 * n, 8, 8, 4)),
                     rows)
  dy = jax.device_put(jax.random.normal(jax.random.key(1), (4 * n, 8, 8, 6)),
                      rows)
  per_image = 8 * 8 * 9 * 4 * 4
  grad = jax.jit(conv_ops.weight_grad_matmul, static_argnums=(2, 3))
  hlo = grad.lower(x, dy, 1, n * per_image).compile().as_text()
  assert "all-gather" not in hlo  # no device gathers the others' images
  expected = _xla_weight_grad(*jax.device_get((x, dy)), 1)
  for chunk_bytes in (n * per_image, 2 * per_image, None):
    np.testing.assert_allclose(grad(x, dy, 1, chunk_bytes), expected,
                               rtol=1e-5, atol=1e-4)
