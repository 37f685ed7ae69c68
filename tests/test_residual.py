"""residual.materialize: the same values and gradients, and block outputs that XLA:CPU stops recomputing."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sla_jax import models
from sla_jax.models import residual


def test_values_are_unchanged_and_the_gradient_is_the_identity():
  x = jnp.array([0.0, -0.0, 1.5, -2.5, 1e38, -3e38, np.inf, -np.inf, 2e-38,
                 1e-45, np.nan], jnp.float32)
  y = np.asarray(jax.jit(residual.materialize)(x))
  np.testing.assert_array_equal(y[:9].view(np.int32),
                                np.asarray(x)[:9].view(np.int32))  # -0.0 too
  # The subnormal 1e-45 is flushed to zero, as by every XLA:CPU add (so a
  # block output never holds one).
  flushed = jax.jit(lambda a, b: a + b)(x[9:10], jnp.zeros(1))
  assert y[9] == 0.0 and float(flushed[0]) == 0.0
  assert np.isnan(y[-1])
  weights = jnp.arange(x.size, dtype=jnp.float32)
  grad = jax.jit(jax.grad(lambda x: (residual.materialize(x) * weights).sum()))(x)
  np.testing.assert_array_equal(grad, weights)


def _stage_one_reads(depth: int, materialize: bool, monkeypatch):
  """(the most stage-1 activations any fused computation of the compiled
  loss-and-gradient reads, the loss and gradients)."""
  with monkeypatch.context() as m:
    if not materialize:
      m.setattr(residual, "materialize", lambda x: x)
    model = models.get("cifar_resnet", depth=depth, heads={"joint": 8})
    x = jax.random.normal(jax.random.key(0), (8, 16, 16, 3))
    variables = model.init(jax.random.key(1), x, train=False)

    def loss(params):
      out, _ = model.apply({"params": params,
                            "batch_stats": variables["batch_stats"]},
                           x, train=True, mutable=["batch_stats"])
      return out["joint"].sum()

    step = jax.jit(jax.value_and_grad(loss))
    hlo = step.lower(variables["params"]).compile().as_text()
    result = step(variables["params"])
  activation = re.escape("f32[8,16,16,16]") + r"(\{[^}]*\})? parameter\("
  reads = [len(re.findall(activation, body))
           for body in re.split(r"\n(?=\S)", hlo) if body.startswith("%fused")]
  return max(reads), result, hlo


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU fusions")
def test_deeper_stages_are_not_recomputed_and_training_is_bit_identical(
    monkeypatch):
  reads, stored, _ = _stage_one_reads(20, True, monkeypatch)
  shallow_reads, _, _ = _stage_one_reads(14, True, monkeypatch)
  plain_reads, plain, _ = _stage_one_reads(20, False, monkeypatch)
  # Without it, XLA re-reads one more convolution output per block deeper in
  # the stage; with it the count stays that of a shallower network.
  assert reads == shallow_reads < plain_reads, (reads, shallow_reads, plain_reads)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), stored, plain)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU fusions")
def test_one_block_per_stage_compiles_to_the_same_program(monkeypatch):
  # Only a block that the next block of its stage reads is stored: ResNet-8's
  # program (the CPU grids' network) does not change.
  programs = [_instructions(_stage_one_reads(8, m, monkeypatch)[2])
              for m in (True, False)]
  assert programs[0] == programs[1]


def _instructions(hlo: str) -> list[str]:
  """The HLO's instructions without their source locations."""
  return [re.sub(r", metadata=\{[^}]*\}", "", line)
          for line in hlo.splitlines() if " = " in line]
