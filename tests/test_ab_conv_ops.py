"""benchmarks.ab_conv_ops: this checkout's convolutions against another conv_ops file, in one process."""

import pathlib
import subprocess
import sys

import pytest

from benchmarks import ab_conv_ops
from conftest import REPO
from sla_jax.models import conv_ops, residual
from test_train import tiny_config

CONV_OPS = pathlib.Path(conv_ops.__file__)


def test_compare_alternates_both_steps():
  result = ab_conv_ops.compare(tiny_config("sla"), CONV_OPS, rounds=2, calls=2)
  assert len(result["this_s"]) == len(result["other_s"]) == 2  # 1 timed call a block
  assert result["this_median_s"] > 0 and result["other_median_s"] > 0
  assert result["other_over_this"] == pytest.approx(
      result["other_median_s"] / result["this_median_s"])
  assert len(result["other_sha256"]) == 64 and "load_1m" in result["machine_load_before"]
  assert conv_ops.conv_general_dilated is ab_conv_ops.conv_ops.conv_general_dilated


def test_the_other_files_convolutions_are_the_ones_traced(tmp_path):
  other = tmp_path / "conv_ops_other.py"
  other.write_text("def conv_general_dilated(*args, **kwargs):\n"
                   "  raise RuntimeError('the other file was traced')\n")
  saved = conv_ops.conv_general_dilated
  with pytest.raises(RuntimeError, match="other file was traced"):
    ab_conv_ops.compare(tiny_config("sla"), other, rounds=1, calls=2)
  assert conv_ops.conv_general_dilated is saved  # restored after the error


def test_the_other_side_can_trace_a_plain_residual_stream(monkeypatch):
  calls = []
  stored = residual.materialize

  def spy(x):
    calls.append(1)
    return stored(x)

  monkeypatch.setattr(residual, "materialize", spy)
  config = tiny_config("sla")
  config.model.depth = 14  # stores the first of the two blocks of each stage
  counts = []
  for plain in (False, True):
    calls.clear()
    result = ab_conv_ops.compare(config, CONV_OPS if not plain else None,
                                 rounds=1, calls=2, plain_residual=plain)
    counts.append(len(calls))
    assert result["other_plain_residual"] is plain
  assert result["other"] is None
  assert 0 < counts[1] < counts[0]  # only this side traced it
  assert residual.materialize is spy  # restored


def test_nothing_to_compare_is_refused():
  with pytest.raises(ValueError, match="nothing to compare"):
    ab_conv_ops.compare(tiny_config("sla"), None, rounds=1, calls=2)


@pytest.mark.parametrize("content,message", [
    (None, "no such file"),
    ("X = 1\n", "defines no conv_general_dilated"),
])
def test_bad_other_is_refused(tmp_path, content, message):
  path = tmp_path / "other.py"
  if content is not None:
    path.write_text(content)
  with pytest.raises((FileNotFoundError, ValueError), match=message):
    ab_conv_ops.load_module(path)


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "benchmarks.ab_conv_ops", "--config",
       f"{REPO}/configs/quickstart.py", f"--other={tmp_path}/missing.py"],
      capture_output=True, text=True, cwd=REPO, timeout=300)
  assert proc.returncode == 2
  lines = proc.stderr.strip().splitlines()
  assert lines[-1].startswith("ab_conv_ops: error: --other") and "no such file" in lines[-1]
