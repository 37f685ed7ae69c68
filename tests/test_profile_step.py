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


def test_source_of_reads_phase_and_primitive():
  assert profile_step.source_of(
      "jit(f)/transpose(jvp(CifarResNet))/stage_1_0/conv_a/conv_general_dilated"
  ) == ("backward", "conv_general_dilated")
  assert profile_step.source_of("jit(f)/jvp(CifarResNet)/stage_2_1/max") == (
      "forward", "max")
  assert profile_step.source_of("jit(f)/add") == ("other", "add")


def test_source_breakdown_counts_self_time_by_jax_op():
  hlo = "\n".join([
      '  %while.3 = (f32[]) while(%t), metadata={op_name="jit(f)/transpose(jvp(M))/while"}',
      '  %dot.1 = f32[2]{0} dot(%a, %b), metadata={op_name="jit(f)/transpose(jvp(M))/dot_general"}',
      '  ROOT %fusion.2 = f32[2]{0} fusion(%c), kind=kLoop, metadata={op_name="jit(f)/jvp(M)/max"}',
      '  %copy.4 = f32[2]{0} copy(%c)'])
  sources = profile_step.source_ops(hlo)
  assert sources == {"while.3": "jit(f)/transpose(jvp(M))/while",
                     "dot.1": "jit(f)/transpose(jvp(M))/dot_general",
                     "fusion.2": "jit(f)/jvp(M)/max"}
  events = [
      {"ph": "M", "pid": 1, "name": "process_name", "args": {"name": "/host:CPU"}},
      # a loop of 1 000 us holding two dots of 300 us on the same thread
      {"ph": "X", "pid": 1, "tid": 7, "ts": 0.0, "dur": 1000.0, "name": "w", "args": {"hlo_op": "while.3"}},
      {"ph": "X", "pid": 1, "tid": 7, "ts": 100.0, "dur": 300.0, "name": "d", "args": {"hlo_op": "dot.1"}},
      {"ph": "X", "pid": 1, "tid": 7, "ts": 500.0, "dur": 300.0, "name": "d", "args": {"hlo_op": "dot.1"}},
      # on another thread at the same time: not inside the loop
      {"ph": "X", "pid": 1, "tid": 8, "ts": 200.0, "dur": 400.0, "name": "f", "args": {"hlo_op": "fusion.2"}},
      {"ph": "X", "pid": 1, "tid": 8, "ts": 700.0, "dur": 100.0, "name": "c", "args": {"hlo_op": "copy.4"}},
  ]
  (process, rows), = profile_step.source_breakdown(events, 2, sources).items()
  assert process == "/host:CPU"
  got = {(r["phase"], r["primitive"]): r["ms_per_step"] for r in rows}
  assert got == pytest.approx({("backward", "dot_general"): 0.3,
                               ("forward", "max"): 0.2,
                               ("backward", "while"): 0.2,
                               ("other", "?"): 0.05})
  assert sum(r["share"] for r in rows) == pytest.approx(1.0)


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
  sources = {(s["phase"], s["primitive"]) for s in info["sources"]}
  assert ("forward", "conv_general_dilated") in sources, sources
  assert ("backward", "conv_general_dilated") in sources, sources
  table = profile_step.format_table(result, top=5)
  assert "ms of ops per step" in table and "self time by JAX source" in table
  assert table.count("\n| ") == 2 * (5 + 1)


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
