"""benchmarks.profile_step: the per-op breakdown of the trainer's step from a jax.profiler trace."""

import pytest

from benchmarks import profile_step
from test_train import tiny_config


def test_op_category_strips_the_numeric_suffix():
  assert profile_step.op_category("transpose_copy_fusion.7") == "transpose_copy_fusion"
  assert profile_step.op_category("convolution-base-dilated") == "convolution-base-dilated"
  assert profile_step.op_category("dot.1.2") == "dot"


def test_op_breakdown_groups_by_process_and_category():
  events = [
      {"ph": "M", "pid": 1, "name": "process_name", "args": {"name": "/host:CPU"}},
      {"ph": "M", "pid": 2, "name": "process_name", "args": {"name": "/device:GPU:0"}},
      {"ph": "X", "pid": 1, "dur": 300.0, "name": "a", "args": {"hlo_op": "fusion.1"}},
      {"ph": "X", "pid": 1, "dur": 100.0, "name": "b", "args": {"hlo_op": "fusion.2"}},
      {"ph": "X", "pid": 1, "dur": 600.0, "name": "c", "args": {"hlo_op": "dot.3"}},
      {"ph": "X", "pid": 1, "dur": 5.0, "name": "end: c", "args": {"hlo_op": "dot.3"}},
      {"ph": "X", "pid": 1, "dur": 9e6, "name": "ThunkExecutor::Execute", "args": {}},
      {"ph": "X", "pid": 2, "dur": 50.0, "name": "k", "args": {"hlo_op": "fusion.9"}},
  ]
  out = profile_step.op_breakdown(events, steps=2)
  assert set(out) == {"/host:CPU", "/device:GPU:0"}
  host = out["/host:CPU"]
  assert host["op_ms_per_step"] == pytest.approx(0.5)  # 1 000 us over 2 steps
  assert [c["name"] for c in host["categories"]] == ["dot", "fusion"]
  dot, fusion = host["categories"]
  assert dot["ms_per_step"] == pytest.approx(0.3) and dot["share"] == pytest.approx(0.6)
  assert fusion["ops_per_step"] == 1 and fusion["share"] == pytest.approx(0.4)
  assert out["/device:GPU:0"]["categories"][0]["ms_per_step"] == pytest.approx(0.025)


@pytest.mark.slow
def test_profile_traces_the_trainer_step(tmp_path):
  result = profile_step.profile(tiny_config("sla"), calls=2, out_dir=str(tmp_path))
  assert result["traced_steps"] == 2 and result["traced_wall_s_per_step"] > 0
  (process, info), = result["processes"].items()  # one CPU "process"
  assert "CPU" in process and info["op_ms_per_step"] > 0
  shares = [c["share"] for c in info["categories"]]
  assert sum(shares) == pytest.approx(1.0)
  names = {c["name"] for c in info["categories"]}
  assert any("conv" in n or "fusion" in n for n in names), names
  table = profile_step.format_table(result, top=5)
  assert "ms of ops per step" in table and table.count("\n| ") == 5 + 1


def test_importing_beside_other_tools_defines_no_flags():
  from absl import flags  # pylint: disable=g-import-not-at-top
  from sla_jax import experiments  # noqa: F401  pylint: disable=unused-import
  assert "calls" not in flags.FLAGS and "top" not in flags.FLAGS


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path):
  import subprocess, sys  # pylint: disable=g-import-not-at-top,multiple-imports
  from conftest import REPO  # pylint: disable=g-import-not-at-top
  proc = subprocess.run(
      [sys.executable, "-m", "benchmarks.profile_step", "--config",
       f"{REPO}/configs/quickstart.py", "--config.model.name=nope",
       f"--out={tmp_path}"], capture_output=True, text=True, cwd=REPO,
      timeout=300)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1].startswith(
      "profile_step: error: Unknown model 'nope'")
