"""benchmarks.layer_costs: ResNet-32's step layer by layer, ours beside PyTorch's."""

import subprocess
import sys

import pytest

from benchmarks import layer_costs
from conftest import REPO

PIECES = {"fwd", "dx", "dw", "bn_fwd", "bn_fwd_bwd"}


def _check_sums(result, side):
  for piece in PIECES:
    expected = sum(r["count"] * r[side][piece] for r in result["layers"])
    assert result["resnet32"][side][piece] == pytest.approx(expected)


def test_every_resnet32_layer_is_timed_and_summed():
  result = layer_costs.measure(views=2, repeats=1, with_torch=False)
  assert [r["count"] for r in result["layers"]] == [1, 10, 1, 9, 1, 9]
  assert sum(r["count"] for r in result["layers"]) == 31  # ResNet-32's convs
  for row in result["layers"]:
    assert set(row["jax"]) == PIECES and all(v > 0 for v in row["jax"].values())
  _check_sums(result, "jax")
  table = layer_costs.format_table(result)
  assert table.count("\n| ") == 1 + 6 + 1 and "ResNet-32, summed" in table


def test_torch_side_times_the_same_pieces():
  pytest.importorskip("torch")
  result = layer_costs.measure(views=2, repeats=1, with_torch=True)
  assert all(set(r["torch"]) == PIECES for r in result["layers"])
  _check_sums(result, "torch")


def test_cli_bad_input_is_one_line_and_exit_2():
  proc = subprocess.run(
      [sys.executable, "-m", "benchmarks.layer_costs", "--views", "0"],
      capture_output=True, text=True, cwd=REPO, timeout=300)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1].startswith(
      "layer_costs: error: --views and --repeats must be >= 1")
