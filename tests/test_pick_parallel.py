"""benchmarks.pick_parallel: how many runs share one accelerator, from the bench's rows."""

import json
import os
import pathlib
import subprocess
import sys

from benchmarks import pick_parallel

REPO = pathlib.Path(__file__).resolve().parents[1]


def _row(views_per_s, concurrent=None, **changes):
  row = {"what": "train_step", "objective": "sla", "transform": "rotation",
         "model": "cifar_resnet", "depth": 32, "dtype": "bfloat16",
         "batch_size": 128, "steps_per_call": 16, "batch_draw": "permutation",
         "use_fast_variance": False, "fused_batch_norm": False, "xla_flags": "",
         "views_per_s": views_per_s, **changes}
  if concurrent is not None:
    row["concurrent"] = concurrent
  return row


def test_picks_the_highest_summed_throughput_that_pays():
  rows = [_row(86_000), _row(60_000, 2), _row(62_000, 2),
          _row(45_000, 3), _row(44_000, 3), _row(46_000, 3)]
  n, reason = pick_parallel.pick(rows)
  assert n == 3, reason  # 135 000 vs 122 000 (2) vs 86 000 (1)
  assert "3 runs at a time (1.57x)" in reason


def test_one_run_when_sharing_does_not_pay():
  rows = [_row(86_000), _row(47_000, 2), _row(48_000, 2)]
  n, reason = pick_parallel.pick(rows)
  assert n == 1 and "1.10x < 1.15" in reason
  assert pick_parallel.pick(rows, min_gain=1.05)[0] == 2


def test_compares_only_rows_of_the_same_step():
  # The kernel-cut and command-buffer rows are SLA K = 16 too, but another step.
  rows = [_row(200_000, fused_batch_norm=True),
          _row(150_000, xla_flags="--xla_gpu_enable_command_buffer="),
          _row(50_000, 2), _row(52_000, 2)]
  n, reason = pick_parallel.pick(rows)
  assert n == 1 and "no single run" in reason
  n, _ = pick_parallel.pick(rows + [_row(60_000)])
  assert n == 2  # 102 000 vs 60 000


def test_an_incomplete_concurrent_part_is_no_measurement():
  rows = [_row(86_000), _row(80_000, 2)]  # the second bench was stopped
  n, reason = pick_parallel.pick(rows)
  assert n == 1 and "a part stopped early" in reason
  assert pick_parallel.pick([_row(86_000)])[0] == 1


def test_cli_prints_the_number_and_refuses_a_missing_file(tmp_path):
  bench = tmp_path / "bench.jsonl"
  bench.write_text("\n".join(["not json", json.dumps(_row(86_000)),
                              json.dumps(_row(60_000, 2)),
                              json.dumps(_row(61_000, 2)), '{"cut']) + "\n")
  env = dict(os.environ, PYTHONPATH=str(REPO))
  ok = subprocess.run([sys.executable, "-m", "benchmarks.pick_parallel", str(bench)],
                      cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
  assert ok.returncode == 0 and ok.stdout == "2\n"
  assert "2 runs at a time" in ok.stderr
  bad = subprocess.run([sys.executable, "-m", "benchmarks.pick_parallel",
                        str(tmp_path / "nope.jsonl")], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=60)
  assert bad.returncode == 2 and bad.stdout == ""
  assert "no file" in bad.stderr and len(bad.stderr.splitlines()) == 1


def test_gpu_suite_refuses_parallel_auto_outside_bench_then_grid(tmp_path):
  for parallel, says in (("auto", "PARALLEL=auto needs bench_then_grid"),
                         ("two", "PARALLEL='two' is not a number of runs")):
    bad = subprocess.run(
        ["bash", "benchmarks/gpu_suite.sh", "grid",
         "configs/grid_protocol_gpu.py:dataset=cifar10", str(tmp_path / "grid")],
        cwd=REPO, env=dict(os.environ, PARALLEL=parallel, OUT=str(tmp_path / "out")),
        capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and says in bad.stderr, bad.stderr
    assert not (tmp_path / "grid").exists()
