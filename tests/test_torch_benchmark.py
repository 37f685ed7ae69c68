"""The PyTorch re-implementation of the original step (benchmarks/), with the bench extra.

Skipped unless torch is installed (``pip install -e .[bench]``).
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from benchmarks import compare_torch, torch_sla  # pylint: disable=g-import-not-at-top

pytestmark = pytest.mark.slow


def test_reimplementation_reproduces_the_original_loss_and_step(reference):
  model = torch_sla.CifarResNetSLA(32, 40).train()
  torch_sla.load_reference_weights(model, reference)
  images = torch.from_numpy(reference["images_nchw"])
  labels = torch.from_numpy(reference["labels"])
  loss = torch_sla.sla_loss(model, images, labels)
  np.testing.assert_allclose(float(loss), reference["sla.loss"], rtol=1e-6)
  opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
  loss.backward()
  opt.step()
  after = reference["sla.after.joint_head.weight"]
  np.testing.assert_allclose(model.joint_head.weight.detach().numpy(), after,
                             rtol=1e-5, atol=1e-6)
  assert compare_torch.check_against_reference() < 1e-6


def test_step_variants_run_and_learn():
  images = torch.rand(4, 3, 32, 32) * 2 - 1
  labels = torch.tensor([0, 1, 2, 3])
  for kw in ({}, {"channels_last": True}, {"channels_last": True, "bf16": True}):
    _, step = torch_sla.make_step(depth=8, **kw)
    first = float(step(images, labels))
    for _ in range(5):
      last = float(step(images, labels))
    assert last < first, kw


def test_official_step_is_the_original_code_update(capsys):
  """--official: the original's own engine update (needs a checkout of hankook/SLA)."""
  import os, pathlib  # pylint: disable=g-import-not-at-top,multiple-imports
  path = pathlib.Path(os.environ.get("SLA_OFFICIAL", "/tmp/SLA_orig"))
  if not (path / "trainers.py").exists():
    pytest.skip(f"no hankook/SLA checkout at {path} (set SLA_OFFICIAL)")
  pytest.importorskip("ignite")
  call = compare_torch.official_step(str(path), depth=20, batch_size=4,
                                     device="cpu")
  assert capsys.readouterr().out == ""  # its model's print: stderr, not --json's lines
  losses = [call() for _ in range(6)]  # the same batch: the loss must fall
  assert all(np.isfinite(losses)) and losses[-1] < losses[0]
  # Its first loss on 40-way joint logits starts near log(40).
  assert abs(losses[0] - np.log(40)) < 1.0


def _compare(*args):
  import subprocess, sys  # pylint: disable=g-import-not-at-top,multiple-imports
  import subprocess_util as sp  # pylint: disable=g-import-not-at-top
  return subprocess.run([sys.executable, "-m", "benchmarks.compare_torch",
                         "--depth", "8", "--rounds", "1", "--json", *args],
                        capture_output=True, text=True, cwd=sp.REPO,
                        timeout=sp.TIMEOUT_S)


def test_cli_times_our_step_on_every_cpu_device_by_default():
  import json  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  out = _compare("--batch_size", "8", "--fused_batch_norm")
  assert out.returncode == 0, out.stderr
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result["jax_fused_batch_norm"] is True
  assert result["jax_devices"] == jax.device_count()  # conftest's 8
  assert result["jax_median_s"] > 0 and result["torch_median_s"] > 0
  bad = _compare("--batch_size", "12")
  assert bad.returncode == 2
  assert "not divisible by the 8 JAX devices" in bad.stderr


def test_cli_times_one_contestant_alone_with_only():
  import json  # pylint: disable=g-import-not-at-top
  out = _compare("--batch_size", "8", "--only", "torch")
  assert out.returncode == 0, out.stderr
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result["only"] == "torch" and result["torch_median_s"] > 0
  assert not any(key.startswith(("jax_median", "jax_speed", "official"))
                 for key in result)


def test_jax_step_takes_the_batch_norm_options(monkeypatch):
  seen = []
  monkeypatch.setattr(compare_torch, "config_step",
                      lambda config, shape, n: seen.append(config))
  compare_torch.jax_step(8, 4, "float32", fast_variance=True,
                         fused_batch_norm=True)
  compare_torch.jax_step(8, 4, "float32")
  assert [(c.model.use_fast_variance, c.model.fused_batch_norm)
          for c in seen] == [(True, True), (False, False)]


@pytest.mark.parametrize("args,message", [
    (["--batch_size", "0"], "argument --batch_size: '0' is not a whole number >= 1"),
    (["--rounds", "0"], "argument --rounds: '0' is not a whole number >= 1"),
    (["--depth", "7"], "--depth 7: a CIFAR ResNet has depth 6n + 2"),
    (["--jax_devices", "64"], "--jax_devices 64: JAX sees 8 devices"),
    (["--torch_device", "bogus"], "'bogus': use cpu, cuda, cuda:N or auto"),
    (["--official", "/nonexistent"], "--official /nonexistent: no such directory"),
    (["--only", "official"], "--only official needs --official PATH"),
])
def test_bad_flags_are_one_line_and_exit_2(args, message):
  bad = _compare(*args)
  assert bad.returncode == 2, bad.stderr
  lines = bad.stderr.strip().splitlines()
  assert lines == [f"compare_torch: error: {lines[0].split('error: ', 1)[1]}"]
  assert message in lines[0]
