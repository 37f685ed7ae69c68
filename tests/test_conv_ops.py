"""sla_jax.models.conv_ops: its gradients equal XLA's, and stay canonical inside loops."""

import contextlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sla_jax import losses, models
from sla_jax.models import conv_ops


DN = ("NHWC", "HWIO", "NHWC")


@pytest.mark.parametrize("size,kernel,stride,padding", [
    (16, 3, 1, ((1, 1), (1, 1))),  # 3x3, padding 1: matmul or not (below)
    (16, 3, 2, ((1, 1), (1, 1))),  # matmul, strided
    (8, 3, 1, ((1, 1), (1, 1))),
    (9, 3, 2, ((1, 1), (1, 1))),   # odd size, strided
    (8, 1, 2, ((0, 0), (0, 0))),   # 1x1 projection shortcut
    (15, 7, 2, ((3, 3), (3, 3))),  # the ImageNet stem, odd size
    (10, 5, 1, "SAME"),
    (11, 3, 2, "VALID"),
    (12, 3, 3, ((2, 0), (0, 1))),  # uneven padding, stride 3
])
@pytest.mark.parametrize("matmul_from", [0, 2**40])  # matmul always / never
def test_gradients_equal_xla(size, kernel, stride, padding, matmul_from,
                             monkeypatch):
  monkeypatch.setattr(conv_ops, "MIN_MATMUL_PIXELS", matmul_from)
  monkeypatch.setattr(conv_ops, "MIN_MATMUL_PATCH_BYTES", matmul_from)
  x = jax.random.normal(jax.random.key(0), (4, size, size, 3))
  w = jax.random.normal(jax.random.key(1), (kernel, kernel, 3, 5))
  args = ((stride, stride), padding)
  ours = lambda x, w: conv_ops.conv_general_dilated(x, w, *args, dimension_numbers=DN)
  xla = lambda x, w: jax.lax.conv_general_dilated(x, w, *args, dimension_numbers=DN)
  np.testing.assert_array_equal(ours(x, w), xla(x, w))
  loss = lambda f: lambda x, w: jnp.sum(jnp.sin(f(x, w)))
  g_ours = jax.jit(jax.grad(loss(ours), argnums=(0, 1)))(x, w)
  g_xla = jax.jit(jax.grad(loss(xla), argnums=(0, 1)))(x, w)
  for a, b in zip(g_ours, g_xla):
    assert a.shape == b.shape and a.dtype == b.dtype
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def _grad_step(conv):
  def step(w, x):
    loss = lambda w: jnp.mean(conv(jax.nn.relu(conv(x, w)), w) ** 2)
    return w - 1e-3 * jax.grad(loss)(w)
  return step


def _conv_dim_labels(compiled_text):
  return {line.split("dim_labels=")[1].split(",")[0]
          for line in compiled_text.splitlines()
          if " convolution(" in line}


@pytest.mark.parametrize("size", [8, 16])
def test_backward_convs_stay_canonical_inside_a_loop(size):
  """In a ``fori_loop`` body (steps_per_call > 1) XLA:CPU leaves its own backward
  convs non-canonical (generic, slow thunks); ours are NHWC/HWIO convs there too."""
  x = jax.random.normal(jax.random.key(0), (4, size, size, 8))
  w = jax.random.normal(jax.random.key(1), (3, 3, 8, 8))
  conv = lambda f: lambda x, w: f(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=DN)

  def looped(f):
    step = _grad_step(conv(f))
    return jax.jit(lambda w, x, n: jax.lax.fori_loop(0, n, lambda i, w: step(w, x), w))

  text = lambda f: looped(f).lower(w, x, 2).compile().as_text()
  assert _conv_dim_labels(text(conv_ops.conv_general_dilated)) <= {"b01f_01io->b01f"}
  if jax.default_backend() == "cpu":  # what this module works around
    assert _conv_dim_labels(text(jax.lax.conv_general_dilated)) - {"b01f_01io->b01f"}
  ours = looped(conv_ops.conv_general_dilated)(w, x, 3)
  ref = looped(jax.lax.conv_general_dilated)(w, x, 3)
  np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)


def test_matmul_weight_gradient_for_large_inputs_or_patches(monkeypatch):
  calls = []
  real = conv_ops.weight_grad_matmul
  monkeypatch.setattr(conv_ops, "weight_grad_matmul",
                      lambda *a, **k: calls.append(a[0].shape) or real(*a, **k))
  # 2 images x 8 x 8 output pixels x 9 taps x 2 channels x 4 bytes
  monkeypatch.setattr(conv_ops, "MIN_MATMUL_PATCH_BYTES", 2 * 64 * 9 * 2 * 4)
  w = jnp.zeros((3, 3, 2, 2))
  for batch, size, stride in ((1, 8, 1), (2, 8, 1), (4, 9, 2), (6, 9, 2),
                              (1, 16, 2)):
    loss = lambda w, s=(batch, size, size, 2), t=stride: jnp.sum(
        conv_ops.conv_general_dilated(jnp.ones(s), w, (t, t), ((1, 1), (1, 1)),
                                      dimension_numbers=DN))
    jax.eval_shape(jax.grad(loss), w)
  # 9 px at stride 2: 5 x 5 outputs, so 4 images are 100 rows, 6 are 150;
  # 16 x 16 inputs always (MIN_MATMUL_PIXELS)
  assert calls == [(2, 8, 8, 2), (6, 9, 9, 2), (1, 16, 16, 2)]


def test_other_convolutions_fall_back_to_lax():
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 4))
  w = jax.random.normal(jax.random.key(1), (3, 3, 4, 4))
  cases = [(x, w, {"rhs_dilation": (2, 2), "dimension_numbers": DN}),
           (x, w, {"feature_group_count": 2, "dimension_numbers": DN}),
           (x.transpose(0, 3, 1, 2), w.transpose(3, 2, 0, 1),
            {"dimension_numbers": ("NCHW", "OIHW", "NCHW")})]
  for lhs, rhs, kwargs in cases:
    if kwargs.get("feature_group_count"):
      rhs = rhs[:, :, :2]
    out = conv_ops.conv_general_dilated(lhs, rhs, (1, 1), ((2, 2), (2, 2)), **kwargs)
    ref = jax.lax.conv_general_dilated(lhs, rhs, (1, 1), ((2, 2), (2, 2)), **kwargs)
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
  per_image = conv_ops.operand_bytes_per_image(x, dy, stride)
  chunked = jax.jit(conv_ops.weight_grad_matmul, static_argnums=(2, 3))(
      x, dy, stride, images_per_chunk * per_image)
  whole = conv_ops.weight_grad_matmul(x, dy, stride, chunk_bytes=None)
  expected = _xla_weight_grad(x, dy, stride)
  # float32 sums of ~3 000 products in different orders
  atol = 1e-5 * float(np.abs(expected).max())
  np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=atol)
  np.testing.assert_allclose(chunked, expected, rtol=1e-5, atol=atol)


def _sharded_batch(axis_type):
  """``(mesh, x, dy)``: 4 images per device, the batch split over all devices."""
  n = len(jax.devices())
  mesh = jax.make_mesh((n,), ("data",),
                       axis_types=(getattr(jax.sharding.AxisType, axis_type),))
  rows = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  x = jax.device_put(jax.random.normal(jax.random.key(0), (4 * n, 8, 8, 4)),
                     rows)
  dy = jax.device_put(jax.random.normal(jax.random.key(1), (4 * n, 8, 8, 6)),
                      rows)
  return mesh, x, dy


@pytest.mark.parametrize("axis_type", ["Auto", "Explicit"])
def test_chunked_weight_gradient_of_a_sharded_batch(axis_type):
  """Batch sharded over the devices: same gradient; with chunks of a multiple
  of the device count each device builds the patches of its own images."""
  _, x, dy = _sharded_batch(axis_type)
  n = len(jax.devices())
  per_image = conv_ops.operand_bytes_per_image(x, dy, 1)
  grad = jax.jit(conv_ops.weight_grad_matmul, static_argnums=(2, 3))
  hlo = grad.lower(x, dy, 1, n * per_image).compile().as_text()
  assert "all-gather" not in hlo  # no device gathers the others' images
  expected = _xla_weight_grad(*jax.device_get((x, dy)), 1)
  for chunk_bytes in (n * per_image, 2 * per_image, None):
    np.testing.assert_allclose(grad(x, dy, 1, chunk_bytes), expected,
                               rtol=1e-5, atol=1e-4)


def _all_reduces_in_loops(compiled_text):
  """How many all-reduces a compiled program has inside ``while`` bodies."""
  bodies = set(re.findall(r"body=%?([\w.\-]+)", compiled_text))
  count, current = 0, None
  for line in compiled_text.splitlines():
    header = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
    if header:
      current = header.group(1)
    elif current in bodies and re.search(r" all-reduce(-start)?\(", line):
      count += 1
  return count


@pytest.mark.parametrize("axis_type,context,once", [
    ("Explicit", False, True),  # the batch's sharding in its type
    ("Auto", True, True),       # the mesh in context (as the trainer traces)
    ("Auto", False, False),     # neither: each chunk summed across devices
])
def test_weight_gradient_sums_each_devices_images_apart(axis_type, context,
                                                          once):
  """Where the batch is split over devices (conv_ops.batch_axes), each device
  sums its own images' chunks and one all-reduce after the loop adds them;
  the gradient is the same either way."""
  mesh, x, dy = _sharded_batch(axis_type)
  chunk_bytes = 2 * conv_ops.operand_bytes_per_image(x, dy, 1)  # 2 chunks
  grad = jax.jit(conv_ops.weight_grad_matmul, static_argnums=(2, 3))
  with (jax.sharding.use_abstract_mesh(mesh.abstract_mesh) if context
        else contextlib.nullcontext()):
    assert bool(_traced_batch_axes(x)) == once
    text = grad.lower(x, dy, 1, chunk_bytes).compile().as_text()
    result = grad(x, dy, 1, chunk_bytes)
  assert text.count(" all-reduce(") + text.count(" all-reduce-start(") == 1
  assert _all_reduces_in_loops(text) == (0 if once else 1)
  np.testing.assert_allclose(result, _xla_weight_grad(*jax.device_get((x, dy)), 1),
                             rtol=1e-5, atol=1e-4)


def _traced_batch_axes(x):
  """``conv_ops.batch_axes(x)`` as seen while tracing under ``jax.jit``."""
  found = []
  jax.jit(lambda x: found.append(conv_ops.batch_axes(x)) or x).lower(x)
  return found[0]


def test_batch_axes():
  """The mesh axes that split a batch: from an explicit sharding's batch
  axis, else every axis larger than 1 of an Auto context mesh; () otherwise."""
  n = len(jax.devices())
  P = jax.sharding.PartitionSpec
  explicit = jax.make_mesh((n,), ("data",),
                           axis_types=(jax.sharding.AxisType.Explicit,))
  put = lambda shape, spec: jax.device_put(
      jnp.zeros(shape), jax.sharding.NamedSharding(explicit, spec))
  assert conv_ops.batch_axes(put((n, 4, 4, 2), P("data"))) == ("data",)
  assert conv_ops.batch_axes(put((n, 4, 4, 2), P())) == ()
  assert conv_ops.batch_axes(put((2, 4, 4, n), P(None, None, None, "data"))) == ()
  auto = jax.make_mesh((n // 2, 2, 1), ("a", "b", "c"),
                       axis_types=(jax.sharding.AxisType.Auto,) * 3)
  assert _traced_batch_axes(jnp.zeros((n, 4))) == ()  # no mesh in context
  with jax.sharding.use_abstract_mesh(auto.abstract_mesh):
    assert _traced_batch_axes(jnp.zeros((n, 4))) == ("a", "b")
    assert _traced_batch_axes(jnp.zeros((n + 1, 4))) == ()  # does not divide


def _dot_contracting_dims(compiled_text):
  """``(lhs, rhs)`` contracting dims of every dot in a compiled CPU program."""
  return {(line.split("lhs_contracting_dims=")[1].split(",")[0],
           line.split("rhs_contracting_dims=")[1].split(",")[0])
          for line in compiled_text.splitlines()
          if " dot(" in line and "lhs_contracting_dims=" in line}


@pytest.mark.parametrize("channels,stride", [(8, 1), (1, 1), (8, 2)])
@pytest.mark.parametrize("chunked", [True, False])
def test_weight_gradient_matmul_is_in_standard_form(channels, stride, chunked):
  """The matmul contracts its left operand's last axis and its right
  operand's first (``dy^T @ patches``), the form XLA:CPU gives YNNPACK; as
  ``patches^T @ dy`` (both first axes) it ran as a slower generic dot. Both
  forms (split taps: 8 channels at stride 1; nine taps: otherwise). Under
  the tools' XLA defaults (which conftest applies) the dot runs in XLA's own
  matmul, not YNNPACK (``sla_jax.xla_env``)."""
  x = jnp.ones((6, 8, 8, channels))
  dy = jnp.ones((6, 8 // stride, 8 // stride, 4))
  chunk_bytes = (2 * conv_ops.operand_bytes_per_image(x, dy, stride)
                 if chunked else None)
  text = jax.jit(conv_ops.weight_grad_matmul, static_argnums=(2, 3)).lower(
      x, dy, stride, chunk_bytes).compile().as_text()
  # The weight gradient's matmul, and the identity matmul that transposes dy
  # (conv_ops._transposed: contracts both operands' last axis).
  assert _dot_contracting_dims(text) == {("{1}", "{0}"), ("{1}", "{1}")}
  if jax.default_backend() == "cpu":
    assert "__ynn_fusion" not in text and " dot(" in text


@pytest.mark.parametrize("shape", [(1000, 16), (37, 3), (512, 64)])
def test_transposed_by_the_identity_matmul_is_exact(shape):
  """``conv_ops._transposed`` gives ``a.T`` bit for bit (finite values, any magnitude)."""
  rng = np.random.default_rng(0)
  a = (rng.standard_normal(shape) * 10.0 ** rng.integers(-30, 30, shape)
       ).astype(np.float32)
  np.testing.assert_array_equal(jax.jit(conv_ops._transposed)(a), a.T)
  b = jnp.asarray(a, jnp.bfloat16)
  np.testing.assert_array_equal(conv_ops._transposed(b), b.T)


@pytest.mark.parametrize("size,channels,out_channels,stride", [
    (8, 4, 4, 1), (7, 5, 3, 1), (6, 3, 16, 1), (9, 4, 6, 2), (8, 2, 2, 2)])
def test_both_matmul_forms_equal_xla(size, channels, out_channels, stride):
  """The nine-tap patches and (at stride 1) the split taps give XLA's gradient."""
  x = jax.random.normal(jax.random.key(0), (3, size, size, channels))
  out = -(-size // stride)
  dy = jax.random.normal(jax.random.key(1), (3, out, out, out_channels))
  expected = _xla_weight_grad(x, dy, stride)
  forms = [conv_ops._NINE_TAPS] + [conv_ops._SPLIT_TAPS] * (stride == 1)
  for form in forms:
    grad = form.to_kernel(form.product(x, dy, stride), channels)
    assert grad.shape == (3, 3, channels, out_channels)
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("size,channels,out_channels,stride,split", [
    (32, 16, 16, 1, True),    # ResNet stages: three copies of each operand
    (8, 64, 64, 1, True),
    (32, 3, 16, 1, False),    # the 3-channel stem: dy's copies would dominate
    (32, 16, 32, 2, False),   # strided: nine taps
])
def test_matmul_form_is_the_one_with_fewer_operand_bytes(
    size, channels, out_channels, stride, split):
  dy_shape = (2, size // stride, size // stride, out_channels)
  form = conv_ops._matmul_form(channels, dy_shape, stride)
  assert (form is conv_ops._SPLIT_TAPS) == split
  x = jnp.zeros((2, size, size, channels))
  out = size // stride
  split_bytes = (out + 2) * out * 3 * (channels + out_channels) * 4
  nine_bytes = out * out * (9 * channels + out_channels) * 4
  assert conv_ops.operand_bytes_per_image(
      x, jnp.zeros(dy_shape), stride) == (split_bytes if split else nine_bytes)
