"""models.to_nnx: our Linen models as Flax NNX modules, trained the NNX way."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from sla_jax import models, objectives, optim, transforms

GROUP = transforms.get("rotation")
OBJECTIVE = objectives.make("sla_sd", num_classes=10, transform="rotation")
IMAGES = jax.random.normal(jax.random.key(0), (4, 8, 8, 3))
LABELS = jnp.array([1, 2, 3, 9])
VIEWS = GROUP.apply(IMAGES)


@pytest.fixture(scope="module")
def linen():
  """The Linen model and variables (from one jitted init through to_nnx)."""
  model = models.get("cifar_resnet", depth=8, heads=OBJECTIVE.heads)
  net = models.to_nnx(model, VIEWS, rngs=nnx.Rngs(3))
  variables = {"params": nnx.to_pure_dict(nnx.state(net, nnx.Param)),
               "batch_stats": nnx.to_pure_dict(nnx.state(net, nnx.BatchStat))}
  return model, variables


def test_an_nnx_optimizer_step_is_the_linen_step_bit_for_bit(linen):
  model, variables = linen
  tx = optim.sgd(0.1, momentum=0.9, weight_decay=1e-4)
  net = models.to_nnx(model, VIEWS, variables=variables)
  optimizer = nnx.Optimizer(net, tx, wrt=nnx.Param)

  @nnx.jit
  def nnx_step(net, optimizer, images, labels):
    def loss_fn(net):
      return OBJECTIVE.loss(net(GROUP.apply(images), train=True,
                                mutable=["batch_stats"]), labels)
    loss, grads = nnx.value_and_grad(loss_fn)(net)
    optimizer.update(net, grads)
    return loss

  @jax.jit
  def linen_step(variables, opt_state, images, labels):
    def loss_fn(params):
      out, new = model.apply({**variables, "params": params}, GROUP.apply(images),
                             train=True, mutable=["batch_stats"])
      return OBJECTIVE.loss(out, labels), new
    (loss, new), grads = jax.value_and_grad(loss_fn, has_aux=True)(variables["params"])
    updates, opt_state = tx.update(grads, opt_state, variables["params"])
    return loss, {"params": optax.apply_updates(variables["params"], updates),
                  **new}, opt_state

  opt_state = tx.init(variables["params"])
  for _ in range(2):
    nnx_loss = nnx_step(net, optimizer, IMAGES, LABELS)
    loss, variables, opt_state = linen_step(variables, opt_state, IMAGES, LABELS)
    assert float(nnx_loss) == float(loss)
  for cls, collection in ((nnx.Param, "params"), (nnx.BatchStat, "batch_stats")):
    jax.tree.map(np.testing.assert_array_equal,
                 nnx.to_pure_dict(nnx.state(net, cls)), variables[collection])
  start = linen[1]["batch_stats"]["bn_1"]["mean"]
  assert not np.array_equal(variables["batch_stats"]["bn_1"]["mean"], start)
  ours, theirs = net(VIEWS, train=False), model.apply(variables, VIEWS, train=False)
  assert set(ours) == {"features", "joint", "single"}
  for k in theirs:
    np.testing.assert_array_equal(ours[k], theirs[k])


def test_a_fresh_init_has_the_linen_shapes_and_follows_the_seed(linen):
  model, _ = linen
  net = models.to_nnx(model, VIEWS, rngs=nnx.Rngs(0))
  shapes = lambda tree: jax.tree.map(jnp.shape, tree)
  expected = jax.eval_shape(lambda: model.init(jax.random.key(0), VIEWS, train=False))
  assert shapes(nnx.to_pure_dict(nnx.state(net, nnx.Param))) == shapes(expected["params"])
  assert shapes(nnx.to_pure_dict(nnx.state(net, nnx.BatchStat))) == shapes(
      expected["batch_stats"])
  assert nnx.eval_shape(lambda n: n(VIEWS, train=False), net)["joint"].shape == (16, 40)
  kernel = lambda n: np.asarray(n.conv_1_3x3["kernel"])
  np.testing.assert_array_equal(
      kernel(models.to_nnx(model, VIEWS, rngs=nnx.Rngs(0))), kernel(net))
  assert not np.array_equal(
      kernel(models.to_nnx(model, VIEWS, rngs=nnx.Rngs(1))), kernel(net))


def test_variables_that_do_not_fit_are_one_clear_error(linen):
  model, variables = linen
  other = models.get("cifar_resnet", depth=8, heads={"joint": 8})
  with pytest.raises(ValueError, match=r"variables\['params'\]\['joint_head'\]\['bias'\] "
                                       r"has shape \(40,\), the model wants \(8,\)"):
    models.to_nnx(other, VIEWS, variables=variables)
  with pytest.raises(ValueError, match=r"variables\['batch_stats'\].*missing"):
    models.to_nnx(model, VIEWS, variables={"params": variables["params"]})
  with pytest.raises(ValueError, match=r"variables must be Linen's variables, "
                                       r"\{'params': ..., 'batch_stats': ...\}"):
    models.to_nnx(model, VIEWS, variables=variables["params"])  # one collection
  as_bf16 = jax.tree.map(lambda a: a.astype(jnp.bfloat16), variables)
  with pytest.raises(ValueError, match=r"is bfloat16, the model keeps float32"):
    models.to_nnx(model, VIEWS, variables=as_bf16)  # was loaded as bf16 Params
  scalars = {"params": jax.tree.map(lambda a: 1.0, variables["params"]),
             "batch_stats": variables["batch_stats"]}
  with pytest.raises(ValueError, match=r"\['bn_1'\]\['bias'\] is a float, not an array"):
    models.to_nnx(model, VIEWS, variables=scalars)
  with pytest.raises(ValueError, match="to_nnx takes a Linen module"):
    models.to_nnx(None, VIEWS)
  # A key (or a seed) stands for nnx.Rngs of it, with variables too.
  net = models.to_nnx(model, VIEWS, variables=variables, rngs=jax.random.key(0))
  np.testing.assert_array_equal(net(VIEWS, train=False)["joint"],
                                model.apply(variables, VIEWS, train=False)["joint"])


@pytest.mark.slow  # three ResNet-12 compiles; DropBlock itself: test_fewshot.py
def test_dropblock_draws_from_the_dropout_stream():
  x = jax.random.normal(jax.random.key(1), (4, 16, 16, 3))
  model = models.get("resnet12", widths=(8, 12, 16, 20), heads={"joint": 4},
                     drop_rate=0.3, dropblock_size=2)
  net = models.to_nnx(model, x, rngs=nnx.Rngs(params=0, dropout=1))
  loaded = models.to_nnx(model, x, rngs=nnx.Rngs(params=5, dropout=1), variables={
      "params": nnx.to_pure_dict(nnx.state(net, nnx.Param)),
      "batch_stats": nnx.to_pure_dict(nnx.state(net, nnx.BatchStat))})
  train = nnx.jit(lambda n: n(x, train=True, mutable=["batch_stats"])["features"])
  evaluate = nnx.jit(lambda n: n(x, train=False)["features"])
  np.testing.assert_array_equal(evaluate(loaded), evaluate(net))  # before training
  assert not np.allclose(train(net), train(net))  # the stream advances each call
  assert not np.allclose(train(loaded), train(loaded))  # loaded with its streams too
  np.testing.assert_array_equal(evaluate(net), evaluate(net))
