"""benchmarks/compare_resnet50.py: both ResNet-50 SLA steps learn, and the CLI reports them.

Skipped unless torch and torchvision are installed (``pip install -e .[bench]``).
"""

import json
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from benchmarks import compare_resnet50  # pylint: disable=g-import-not-at-top
from tests import torch_util  # pylint: disable=g-import-not-at-top
from tests.subprocess_util import REPO  # pylint: disable=g-import-not-at-top

torch_util.import_torchvision_or_skip()

pytestmark = pytest.mark.slow


def _learns(call, steps=4):  # a small lr: the loss must fall (the rotation part of a joint label is learnable on any image)
  first = call()
  losses = [call() for _ in range(steps)]
  assert min(losses) < first, (first, losses)


@pytest.mark.parametrize("variant", ["fp32", "bf16_channels_last"])
def test_torch_step_learns(variant):
  _learns(compare_resnet50.torch_step(2, 32, 10, variant, False, "cpu", lr=1e-3))


def test_jax_step_learns():
  _learns(compare_resnet50.jax_step(2, 32, 10, "float32", lr=1e-3))


def _cli(*args):
  return subprocess.run([sys.executable, "-m", "benchmarks.compare_resnet50", *args],
                        cwd=REPO, capture_output=True, text=True, timeout=600)


def test_cli_reports_both_sides():
  proc = _cli("--batch_size", "2", "--image_size", "32", "--num_classes", "10",
              "--rounds", "1", "--torch_variant", "bf16", "--json")
  assert proc.returncode == 0, proc.stderr
  row = json.loads(proc.stdout.strip().splitlines()[-1])
  assert row["views"] == 8 and row["torch_variant"] == "bf16"
  assert row["jax_median_s"] > 0 and row["torch_median_s"] > 0
  assert row["jax_speed_vs_torch"] == pytest.approx(
      row["torch_median_s"] / row["jax_median_s"])
  assert "load_1m" in row["machine_load_before"]


def test_cli_refuses_bad_sizes():
  proc = _cli("--batch_size", "0")
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1].startswith("compare_resnet50: error:")
