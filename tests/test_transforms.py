"""sla_jax.transforms: view layout, the original's views, jit/vmap/shard_map/bf16, errors."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from conftest import nchw_to_nhwc
from sla_jax import transforms

# Independent numpy definitions of each group's views, from the issue text.
_ROT = [lambda x, k=k: np.rot90(x, k, axes=(0, 1)) for k in range(4)]
_PERM6 = [(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)]
_PERM3 = [(0, 1, 2), (1, 2, 0), (2, 0, 1)]
_perm = lambda order: (lambda x: x[..., list(order)])


def _product(outer, inner):
  return [lambda x, a=a, b=b: b(a(x)) for a, b in itertools.product(outer, inner)]


EXPECTED_VIEWS = {
    "identity": [lambda x: x],
    "rotation": _ROT,
    "rotation2": [_ROT[0], _ROT[2]],
    "color_perm": [_perm(o) for o in _PERM6],
    "color_perm3": [_perm(o) for o in _PERM3],
    "rot_color_perm6": _product([_ROT[0], _ROT[2]], [_perm(o) for o in _PERM3]),
    "rot_color_perm12": _product(_ROT, [_perm(o) for o in _PERM3]),
    "rot_color_perm24": _product(_ROT, [_perm(o) for o in _PERM6]),
}


def _images(b=3, h=5, c=3, seed=0):
  return np.random.default_rng(seed).normal(size=(b, h, h, c)).astype(np.float32)


def test_names_are_the_documented_groups():
  assert set(transforms.NAMES) == set(EXPECTED_VIEWS)


@pytest.mark.parametrize("name", sorted(EXPECTED_VIEWS))
def test_view_layout_row_b_times_m_plus_j(name):
  x = _images()
  group = transforms.get(name)
  views = np.asarray(group.apply(jnp.asarray(x)))
  expected = EXPECTED_VIEWS[name]
  assert group.num_views == len(expected)
  assert views.shape == (x.shape[0] * group.num_views,) + x.shape[1:]
  for b in range(x.shape[0]):
    for j, t in enumerate(expected):
      np.testing.assert_array_equal(views[b * group.num_views + j], t(x[b]))
  np.testing.assert_array_equal(views[::group.num_views], x)  # t_0 = identity


@pytest.mark.parametrize("name,key", [
    ("rotation", "views_rotation_nchw"),
    ("color_perm", "views_color_perm_nchw"),
    ("rot_color_perm24", "views_rot_color_perm24_nchw"),
])
def test_views_equal_the_original_implementation(reference, name, key):
  x = nchw_to_nhwc(reference["images_nchw"])
  views = transforms.get(name).apply(jnp.asarray(x))
  np.testing.assert_array_equal(np.asarray(views), nchw_to_nhwc(reference[key]))


def test_compose_is_a_major_and_user_extensible():
  flip = transforms.TransformGroup(
      "hflip", 2, lambda x: jnp.stack([x, x[:, :, ::-1]], 1).reshape(
          (-1,) + x.shape[1:]))
  group = transforms.compose(transforms.get("rotation2"), flip)
  assert group.num_views == 4 and group.name == "rotation2*hflip"
  x = _images(b=2)
  views = np.asarray(group.apply(jnp.asarray(x)))
  for b, (r, f) in itertools.product(range(2), itertools.product(range(2), range(2))):
    expected = np.rot90(x[b], 2 * r, axes=(0, 1))
    expected = expected[:, ::-1] if f else expected
    np.testing.assert_array_equal(views[b * 4 + r * 2 + f], expected)


@pytest.mark.parametrize("name", sorted(EXPECTED_VIEWS))
def test_jit_vmap_and_dtypes(name):
  group = transforms.get(name)
  x = jnp.asarray(_images(b=2, h=4))
  eager = group.apply(x)
  np.testing.assert_array_equal(jax.jit(group.apply)(x), eager)
  stacked = jnp.stack([x, -x])  # vmap over an outer axis of batches
  batched = jax.vmap(group.apply)(stacked)
  np.testing.assert_array_equal(batched[0], eager)
  np.testing.assert_array_equal(batched[1], group.apply(-x))
  for dtype in (jnp.bfloat16, jnp.float16, jnp.uint8):
    out = jax.jit(group.apply)(x.astype(dtype))
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, eager.astype(dtype))


def test_shard_map_expands_each_shard_locally():
  mesh = jax.make_mesh((jax.device_count(),), ("data",))
  group = transforms.get("rot_color_perm12")
  x = jax.device_put(_images(b=2 * jax.device_count(), h=4),
                     jax.NamedSharding(mesh, P("data")))
  sharded = jax.jit(jax.shard_map(group.apply, mesh=mesh, in_specs=P("data"),
                                  out_specs=P("data")))
  out = sharded(x)
  assert out.sharding.spec[0] == "data"
  np.testing.assert_array_equal(out, group.apply(x))


def test_no_host_round_trip_under_transfer_guard():
  x = jnp.asarray(_images())
  with jax.transfer_guard("disallow"):
    jax.jit(transforms.get("rot_color_perm24").apply)(x).block_until_ready()


@pytest.mark.parametrize("name", ["rotation", "rotation2", "rot_color_perm12"])
def test_rotation_needs_square_images(name):
  with pytest.raises(ValueError, match=r"square images \(H == W\); got H=4, W=6"):
    jax.jit(transforms.get(name).apply)(jnp.zeros((2, 4, 6, 3)))


@pytest.mark.parametrize("name", ["color_perm", "color_perm3", "rot_color_perm24"])
def test_colour_permutation_needs_three_channels(name):
  with pytest.raises(ValueError, match=r"3-channel \(RGB\) images; got C=1"):
    jax.jit(transforms.get(name).apply)(jnp.zeros((2, 4, 4, 1)))


def test_unknown_name_lists_valid_ones():
  with pytest.raises(ValueError, match="Unknown transform 'rot'; valid names "
                     "are: identity, rotation, rotation2, color_perm"):
    transforms.get("rot")


def test_non_batched_input_is_refused():
  with pytest.raises(ValueError, match=r"NHWC batch \[B, H, W, C\]"):
    transforms.get("rotation").apply(jnp.zeros((4, 4, 3)))
  with pytest.raises(ValueError, match=r"expects an array \[B, H, W, C\]; got list"):
    transforms.get("rotation").apply([[0.0]])
  with pytest.raises(ValueError, match="give at least one channel order"):
    transforms.channel_permutation_group("mine", ())


def test_get_returns_one_hashable_group_per_name():
  a, b = transforms.get("rotation"), transforms.get("rotation")
  assert a == b and hash(a) == hash(b)
  traces = []

  def views(x, group):
    traces.append(1)
    return group.apply(x)

  fn = jax.jit(views, static_argnums=1)
  x = jnp.zeros((2, 4, 4, 3))
  fn(x, transforms.get("rotation"))
  fn(x, transforms.get("rotation"))
  assert len(traces) == 1  # a static group from get() does not retrace
