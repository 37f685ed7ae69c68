"""sla_jax.optim against PyTorch's SGD update rule and MultiStepLR, written in numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sla_jax import optim


def test_sgd_matches_pytorch_rule_over_several_steps():
  lr, mom, wd = 0.1, 0.9, 1e-2
  rng = np.random.default_rng(0)
  p = rng.normal(size=5)
  grads = rng.normal(size=(4, 5))
  tx = optim.sgd(lr, mom, wd)
  params = jnp.asarray(p, jnp.float32)
  state = tx.init(params)
  buf = None
  for g in grads:
    # torch.optim.SGD: d = g + wd p; buf = mom buf + d (buf = d at first); p -= lr buf
    d = g + wd * p
    buf = d if buf is None else mom * buf + d
    p = p - lr * buf
    updates, state = tx.update(jnp.asarray(g, jnp.float32), state, params)
    params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(params, p, rtol=1e-6)


def test_step_decay_matches_multisteplr():
  sched = optim.step_decay_schedule(0.1, 80_000)
  for step, lr in [(0, 0.1), (39_999, 0.1), (40_000, 0.01), (59_999, 0.01),
                   (60_000, 0.001), (79_999, 0.001)]:
    assert float(sched(step)) == pytest.approx(lr, rel=1e-6), step


@pytest.mark.parametrize("kwargs,name", [
    ({"learning_rate": -0.1}, "learning_rate"), ({"momentum": -0.9}, "momentum"),
    ({"weight_decay": -1e-4}, "weight_decay")])
def test_sgd_refuses_negative_numbers_as_pytorch_does(kwargs, name):
  args = {"learning_rate": 0.1, "momentum": 0.9, "weight_decay": 1e-4, **kwargs}
  with pytest.raises(ValueError, match=f"{name} must be >= 0"):
    optim.sgd(**args)
  optim.sgd(optim.step_decay_schedule(0.1, 10), 0.0, 0.0)  # a schedule, zeros: fine


def test_sgd_under_inject_hyperparams_takes_traced_numbers():
  tx = optax.inject_hyperparams(optim.sgd)(learning_rate=0.1, momentum=0.9,
                                           weight_decay=1e-4)
  params = {"w": jnp.ones(3)}
  state = tx.init(params)
  updates, _ = jax.jit(tx.update)({"w": jnp.ones(3)}, state, params)
  np.testing.assert_allclose(updates["w"], -0.1 * (1 + 1e-4), rtol=1e-6)
