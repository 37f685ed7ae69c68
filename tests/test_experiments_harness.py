"""The evidence harness, fast tier: SIGTERM stops the running trainer at a checkpoint (exit 75);
the summary names the machines the runs ran on."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, stand_in_grid
from sla_jax import experiments

# A stand-in trainer: marks its start, and on SIGTERM "saves" and exits 75 as
# sla_jax.main does after a preemption checkpoint (each SIGTERM it gets is
# counted: one sent to the process group and one forwarded make two).
FAKE_TRAINER = """
import json, os, pathlib, signal, sys, time
workdir = pathlib.Path(next(a.split("=", 1)[1] for a in sys.argv
                            if a.startswith("--workdir=")))
def stop(signum, frame):
  with (workdir / "sigterms").open("a") as f:
    f.write("1")
  (workdir / "checkpoint").write_text("saved")
  time.sleep(0.5)  # saving takes a while: the harness must wait for it
  sys.exit(75)
signal.signal(signal.SIGTERM, stop)
(workdir / "started").write_text(json.dumps({
    "t": time.time(), "fraction": os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION")}))
if os.environ.get("FAKE_FAIL", "-") in workdir.name:
  sys.exit(1)
time.sleep(float(os.environ.get("FAKE_TRAINER_SECONDS", "60")))
(workdir / "results.json").write_text(json.dumps({"t": time.time()}))
"""


def _harness_env(tmp_path, **extra):
  (tmp_path / "fake_trainer.py").write_text(FAKE_TRAINER)
  (tmp_path / "grid.py").write_text(stand_in_grid("trainer_config.py"))
  (tmp_path / "trainer_config.py").write_text("")
  return dict(os.environ, PYTHONPATH=os.pathsep.join(
      [str(tmp_path), str(REPO), os.environ.get("PYTHONPATH", "")]), **extra)


def _started_harness(tmp_path, names, *flags, **popen):
  """``sla-experiments`` on the stand-in grid, once the trainers of ``names``
  have started."""
  harness = subprocess.Popen(
      [sys.executable, "-m", "sla_jax.experiments", "--grid", "grid.py",
       "--out", "out", *flags], cwd=tmp_path, env=_harness_env(tmp_path),
      stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, **popen)
  runs = tmp_path / "out" / "runs"
  deadline = time.monotonic() + 120
  while not all((runs / n / "started").exists() for n in names):
    assert harness.poll() is None, harness.communicate()
    assert time.monotonic() < deadline, "the stand-in trainers never started"
    time.sleep(0.1)
  return harness


def test_stopped_says_when_no_run_was_going():
  assert "stopped (SIGTERM) between runs; rerun" in str(experiments.Stopped([]))


def test_runs_only_runs_the_grid_and_writes_no_summary(tmp_path):
  env = _harness_env(tmp_path, FAKE_TRAINER_SECONDS="0")
  cmd = [sys.executable, "-m", "sla_jax.experiments", "--grid", "grid.py",
         "--out", "out"]
  out = subprocess.run(cmd + ["--runs_only"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr
  assert "Finished the runs of out/runs" in out.stdout
  for name in ("sla_rotation_seed0", "baseline_rotation_seed0"):
    assert (tmp_path / "out" / "runs" / name / "results.json").exists()
  assert not (tmp_path / "out" / "RESULTS.md").exists()
  both = subprocess.run(cmd + ["--runs_only", "--summarize_only"], cwd=tmp_path,
                        env=env, capture_output=True, text=True, timeout=120)
  assert both.returncode == 2 and "exclude each other" in both.stderr


@pytest.mark.parametrize("to_group", [False, True], ids=["harness", "group"])
def test_sigterm_stops_the_running_trainer_at_a_checkpoint(tmp_path, to_group):
  harness = _started_harness(tmp_path, ["sla_rotation_seed0"],
                             start_new_session=True)
  workdir = tmp_path / "out" / "runs" / "sla_rotation_seed0"
  if to_group:  # as `timeout` does: the harness and the trainer both get it
    os.killpg(harness.pid, signal.SIGTERM)
  else:
    harness.send_signal(signal.SIGTERM)
  _, stderr = harness.communicate(timeout=60)
  assert harness.returncode == 75, stderr
  assert "stopped (SIGTERM) during sla_rotation_seed0" in stderr
  assert (workdir / "checkpoint").read_text() == "saved"
  assert (workdir / "sigterms").read_text() in ("1", "11")
  assert json.loads((workdir / "wall_time.json").read_text())["s"] > 0
  # The harness stopped with the run: the next one never started, no summary.
  assert not (tmp_path / "out" / "runs" / "baseline_rotation_seed0").exists()
  assert not (tmp_path / "out" / "RESULTS.md").exists()


def test_the_summary_names_the_devices_the_runs_ran_on():
  here = experiments._device_kind()  # pylint: disable=protected-access
  local = experiments._machine()  # pylint: disable=protected-access
  record = lambda **kw: {"results": kw}
  line = experiments._machine_line  # pylint: disable=protected-access
  assert line([record(), record(device_kind=here)]) == local
  gpu = [record(device_kind="NVIDIA H100 80GB HBM3"),
         record(device_kind="NVIDIA H200"), record(device_kind="NVIDIA H200"),
         record()]
  assert line(gpu) == ("runs: 1 on NVIDIA H100 80GB HBM3, 2 on NVIDIA H200, "
                       f"1 not recorded; summarised on {local}")


def test_the_harness_leaves_the_accelerator_to_its_trainers(tmp_path):
  """The harness process never starts a JAX backend: on a GPU, one would hold
  most of its memory (XLA's preallocation) beside the trainer it runs."""
  env = _harness_env(tmp_path, FAKE_TRAINER_SECONDS="0")
  script = (
      "import importlib.util, pathlib\n"
      "from sla_jax import experiments\n"
      "from jax._src import xla_bridge\n"
      "s = importlib.util.spec_from_file_location('g', 'grid.py')\n"
      "m = importlib.util.module_from_spec(s); s.loader.exec_module(m)\n"
      "experiments.run_grid(m.get_config(), pathlib.Path('out'), log=print)\n"
      "print('backends:', sorted(xla_bridge._backends))\n")
  out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr
  assert "backends: []" in out.stdout
  assert (tmp_path / "out/runs/baseline_rotation_seed0/results.json").exists()


def _grid(tmp_path, arg=None):
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location("grid", tmp_path / "grid.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def test_parallel_runs_overlap_and_share_the_device_memory(tmp_path, monkeypatch):
  for k, v in _harness_env(tmp_path, FAKE_TRAINER_SECONDS="1.5").items():
    monkeypatch.setenv(k, v)
  monkeypatch.delenv("XLA_PYTHON_CLIENT_MEM_FRACTION", raising=False)
  monkeypatch.chdir(tmp_path)
  out = tmp_path / "out"
  experiments.run_grid(_grid(tmp_path, "two_seeds"), out, log=lambda _: None,
                       parallel=2)
  names = ["sla_rotation_seed0", "baseline_rotation_seed0",
           "sla_rotation_seed1", "baseline_rotation_seed1"]
  started = {n: json.loads((out / "runs" / n / "started").read_text()) for n in names}
  ended = {n: json.loads((out / "runs" / n / "results.json").read_text())["t"]
           for n in names}
  assert started["baseline_rotation_seed0"]["t"] < ended["sla_rotation_seed0"]
  assert started["sla_rotation_seed1"]["t"] >= min(ended[n] for n in names[:2])
  assert {s["fraction"] for s in started.values()} == {"0.45"}
  with pytest.raises(ValueError, match="parallel must be at least 1"):
    experiments.run_grid(_grid(tmp_path), out, parallel=0)


def test_a_failed_parallel_run_lets_the_others_finish_and_starts_no_more(
    tmp_path, monkeypatch):
  for k, v in _harness_env(tmp_path, FAKE_TRAINER_SECONDS="1",
                           FAKE_FAIL="sla_rotation_seed0").items():
    monkeypatch.setenv(k, v)
  monkeypatch.chdir(tmp_path)
  out = tmp_path / "out"
  with pytest.raises(RuntimeError, match="Run sla_rotation_seed0 failed .exit 1."):
    experiments.run_grid(_grid(tmp_path, "two_seeds"), out, log=lambda _: None,
                         parallel=2)
  assert (out / "runs/baseline_rotation_seed0/results.json").exists()  # finished
  assert not (out / "runs/sla_rotation_seed1").exists()  # never started


def test_sigterm_stops_every_parallel_trainer(tmp_path):
  names = ("sla_rotation_seed0", "baseline_rotation_seed0")
  harness = _started_harness(tmp_path, names, "--parallel", "2")
  runs = tmp_path / "out" / "runs"
  harness.send_signal(signal.SIGTERM)
  _, stderr = harness.communicate(timeout=60)
  assert harness.returncode == 75, stderr
  assert "exit status 75, 75" in stderr
  for name in names:
    assert (runs / name / "checkpoint").read_text() == "saved"
    assert (runs / name / "wall_time.json").exists()


def test_a_killed_harness_keeps_the_wall_time_so_far(tmp_path):
  """SIGKILL (the session or machine gone) gives the harness no chance to
  write at the end: the running run's wall time is saved as it goes, and the
  resumed run adds its own to it."""
  script = ("import importlib.util, pathlib\n"
            "from sla_jax import experiments\n"
            "experiments.WALL_TIME_EVERY_S = 0.2\n"
            "s = importlib.util.spec_from_file_location('g', 'grid.py')\n"
            "m = importlib.util.module_from_spec(s); s.loader.exec_module(m)\n"
            "experiments.run_grid(m.get_config(), pathlib.Path('out'), log=print)\n")
  harness = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path,
                             env=_harness_env(tmp_path), start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  wall = tmp_path / "out" / "runs" / "sla_rotation_seed0" / "wall_time.json"
  deadline = time.monotonic() + 120
  while not (wall.exists() and json.loads(wall.read_text())["s"] >= 1.0):
    assert harness.poll() is None, harness.communicate()
    assert time.monotonic() < deadline, "no wall time saved while running"
    time.sleep(0.1)
  os.killpg(harness.pid, signal.SIGKILL)  # the harness and its trainer
  harness.wait(timeout=60)
  killed_s = json.loads(wall.read_text())["s"]
  assert 1.0 <= killed_s < 60
  assert not wall.with_name("results.json").exists()
  resumed = subprocess.run(
      [sys.executable, "-c", script], cwd=tmp_path, timeout=120,
      env=_harness_env(tmp_path, FAKE_TRAINER_SECONDS="0"), capture_output=True)
  assert resumed.returncode == 0, resumed.stderr
  assert wall.with_name("results.json").exists()
  assert json.loads(wall.read_text())["s"] > killed_s
