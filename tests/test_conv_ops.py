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
