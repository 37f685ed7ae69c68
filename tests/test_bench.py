"""sla-bench on a tiny config: every measurement and its fields."""

import json
import pathlib
import subprocess
import sys

import pytest

from sla_jax import bench
from test_train import tiny_config

pytestmark = pytest.mark.slow

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_run_benchmark_fields():
  rows = bench.run_benchmark(tiny_config("sla_sd"), steps=2, warmup=1)
  assert [r["what"] for r in rows] == [
      "train_step", "eval_identity_view", "eval_all_views",
      "input_device_put", "input_host_pipeline"]
  step = rows[0]
  for key in ("compile_s", "first_call_s", "median_s", "p10_s", "p90_s",
              "images_per_s", "views_per_s", "flops_per_step", "flops_per_s",
              "peak_host_bytes"):
    assert step[key] is not None and step[key] > 0, key
  assert step["views_per_s"] == pytest.approx(4 * step["images_per_s"])
  assert step["p10_s"] <= step["median_s"] <= step["p90_s"]
  # The M-view forward has ~M times the FLOPs of the identity-view forward.
  ratio = rows[2]["flops_per_step"] / rows[1]["flops_per_step"]
  assert 3.5 < ratio < 4.5
  assert rows[2]["cost_vs_identity_view"] > 0
  assert "AG (all 4 views) costs" in bench.format_table(rows)
  load = step["machine_load_before"]
  assert set(load) == {"load_1m", "load_5m", "load_15m", "cpu_count", "busy"}
  assert "load before the run" in bench.format_table(rows)
  assert "nan" not in bench.format_table(rows)  # a dash where a cell does not apply


@pytest.mark.parametrize("fresh_mib,at_least", [(64, 16), (0, 0)])
def test_time_calls_counts_page_faults_per_call(fresh_mib, at_least):
  """64 MiB touched afresh per call (glibc maps it anew each time): at least
  its 2 MiB huge pages in faults, more with 4 KiB pages."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  timing = bench._time_calls(  # pylint: disable=protected-access
      lambda: np.ones(fresh_mib * 2**18, np.float32).sum(), steps=4, warmup=1)
  assert timing["minor_faults"] >= at_least
  assert timing["system_s"] >= 0
  if not fresh_mib:
    assert timing["minor_faults"] < 16


def test_any_size_config_adds_the_host_decode_crop_row():
  config = tiny_config("baseline", image_size=12, data_on_device=False)
  rows = bench.run_benchmark(config, steps=2, warmup=1)
  host = rows[-1]
  assert host["what"] == "host_decode_crop" and host["images_per_s"] > 0
  assert host["cores_for_train_step"] == pytest.approx(
      rows[0]["images_per_s"] / host["images_per_s"])
  assert rows[0]["what"] == "train_step"  # on 12 x 12 synthetic crops
  assert "random resized crop" in bench.format_table(rows)


def test_machine_load_marks_a_busy_machine(monkeypatch):
  monkeypatch.setattr(bench.os, "getloadavg", lambda: (0.1, 0.2, 0.3))
  monkeypatch.setattr(bench.os, "cpu_count", lambda: 2)
  assert not bench.machine_load()["busy"]
  monkeypatch.setattr(bench.os, "getloadavg", lambda: (1.9, 0.2, 0.3))
  assert bench.machine_load()["busy"]
  monkeypatch.setattr(bench.os, "cpu_count", lambda: 16)
  assert not bench.machine_load()["busy"]  # 1.9 of 16 CPUs: quiet


def test_cli_json_lines():
  proc = subprocess.run(
      [sys.executable, "-m", "sla_jax.bench", "--config",
       f"{REPO}/configs/quickstart.py", "--config.model.depth=8",
       "--config.batch_size=8", "--config.eval_batch_size=16", "--steps=2",
       "--warmup=0", "--json"], capture_output=True, text=True, cwd=REPO,
      timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  rows = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
  assert rows[0]["what"] == "train_step" and rows[0]["batch_size"] == 8
  assert rows[0]["images_per_s"] > 0 and rows[0]["backend"] == "cpu"


def test_train_flops_count_one_whole_batch_step():
  """The FLOP count is that of one step over the whole batch as the model's
  math: the same on one device and on two, with K = 2 steps per call and with
  either weight gradient (a partitioned program's compiled count is one
  device's share; XLA:GPU's counts its cuDNN convolutions as nothing; loops
  count once)."""
  def flops(**overrides):
    rows = bench.run_benchmark(tiny_config("sla", **overrides), steps=1,
                               warmup=0)
    return rows[0]["flops_per_step"]

  one = flops(num_devices=1)
  assert one > 0
  assert flops(num_devices=2) == pytest.approx(one, rel=1e-3)
  assert flops(num_devices=1, steps_per_call=2) == pytest.approx(one, rel=1e-3)
  config = tiny_config("sla", num_devices=1)
  with config.unlocked():
    config.model.conv_weight_grad = "matmul"
  rows = bench.run_benchmark(config, steps=1, warmup=0)
  assert rows[0]["flops_per_step"] == pytest.approx(one, rel=1e-3)
