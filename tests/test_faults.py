"""Faults: kill -9 and rerun, a corrupt newest checkpoint, nan loss, SIGTERM."""

import json
import logging
import random
import re
import shutil
import signal
import subprocess
import time

import jax
import numpy as np
import pytest

import subprocess_util as sp
from sla_jax import train

pytestmark = pytest.mark.slow

# Long enough that a run is still going when it is killed; evals kept rare.
LONG = dict(total_steps=120, log_every=10, eval_every=60, checkpoint_every=10)



def _assert_same_run(a, b):
  """Same results.json metrics and metrics.jsonl rows (timings aside)."""
  ra = json.loads((a / "results.json").read_text())
  rb = json.loads((b / "results.json").read_text())
  assert rb["best_step"] == ra["best_step"] and rb["final_step"] == ra["final_step"]
  assert rb["test"] == pytest.approx(ra["test"], rel=1e-5)
  assert rb["val"] == pytest.approx(ra["val"], rel=1e-5)
  rows_a, rows_b = sp.metric_rows(a), sp.metric_rows(b)
  assert [r["step"] for r in rows_b] == [r["step"] for r in rows_a]
  for x, y in zip(rows_a, rows_b):
    for k in x:
      if "per_s" not in k:
        assert y[k] == pytest.approx(x[k], rel=1e-5), (x["step"], k)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
  """An uninterrupted run of the LONG config."""
  workdir = tmp_path_factory.mktemp("straight")
  train.train_and_evaluate(sp.make_config(**LONG), workdir)
  return workdir


def _start(config_file, workdir):
  return subprocess.Popen(sp.cli(config_file, workdir), env=sp.env(),
                          cwd=config_file.parent, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def _wait_for(predicate, proc, timeout=sp.TIMEOUT_S):
  deadline = time.monotonic() + timeout
  while not predicate():
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    assert time.monotonic() < deadline, "timed out"
    time.sleep(0.02)


def test_kill_9_then_rerun_equals_uninterrupted_run(tmp_path, straight):
  config_file = sp.write_config(tmp_path / "config.py", **LONG)
  workdir = tmp_path / "run"
  proc = _start(config_file, workdir)
  with sp.reaped(proc):
    _wait_for(lambda: (workdir / "checkpoints" / "20").exists(), proc)
    time.sleep(random.uniform(0, 0.3))  # a random step after the 2nd checkpoint
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
  assert proc.returncode == -signal.SIGKILL
  assert not (workdir / "results.json").exists()
  rerun = subprocess.run(sp.cli(config_file, workdir), env=sp.env(),
                         cwd=tmp_path, capture_output=True, text=True,
                         timeout=sp.TIMEOUT_S)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  _assert_same_run(straight, workdir)


def test_sigterm_saves_a_checkpoint_and_the_rerun_resumes(tmp_path, straight,
                                                          caplog):
  config_file = sp.write_config(tmp_path / "config.py", **LONG)
  workdir = tmp_path / "run"
  proc = _start(config_file, workdir)
  with sp.reaped(proc):
    # The first metrics row is written inside the loop (handler installed).
    _wait_for(lambda: (workdir / "metrics.jsonl").exists(), proc)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=sp.TIMEOUT_S)
  assert proc.returncode == 75, stderr[-3000:]
  last_line = stderr.strip().splitlines()[-1]
  step = int(re.fullmatch(r"sla-train: preempted \(SIGTERM\) at step (\d+); "
                          r"saved a checkpoint in .*; rerun the same command "
                          r"to resume\.", last_line).group(1))
  assert 10 <= step < LONG["total_steps"]
  assert (workdir / "checkpoints" / str(step)).exists()
  assert not (workdir / "results.json").exists()
  with caplog.at_level(logging.INFO):
    train.train_and_evaluate(sp.make_config(**LONG), workdir)
  assert f"at step {step}." in caplog.text  # "Resumed from ... at step N."
  _assert_same_run(straight, workdir)


def test_corrupt_newest_checkpoint_falls_back_with_a_warning(tmp_path, caplog):
  config = sp.make_config(total_steps=20, eval_every=20)
  workdir = tmp_path / "run"
  train.train_and_evaluate(config, workdir)
  reference = tmp_path / "reference"  # the uninterrupted run's outputs
  reference.mkdir()
  (workdir / "results.json").rename(reference / "results.json")
  shutil.copy(workdir / "metrics.jsonl", reference / "metrics.jsonl")
  data = max((workdir / "checkpoints" / "20" / "state").rglob("d/*"),
             key=lambda p: p.stat().st_size)
  data.write_bytes(data.read_bytes()[:100])  # truncate the largest array file

  with caplog.at_level(logging.WARNING):
    train.train_and_evaluate(config, workdir)
  assert re.search(r"Checkpoint step 20 in .* is unusable.*falling back",
                   caplog.text)
  moved = list((workdir / "checkpoints_unusable").iterdir())
  assert [p.name.split("-")[0] for p in moved] == ["20"]  # kept, not deleted
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["10", "20"]
  assert [r["step"] for r in sp.metric_rows(workdir)] == [5, 10, 15, 20]  # 15, 20 redone
  _assert_same_run(reference, workdir)


def test_nan_loss_stops_with_the_step_and_keeps_good_checkpoints(tmp_path):
  # Checkpoints every step, logs rarely: the check must run before each save.
  config_file = sp.write_config(tmp_path / "config.py", lr=1e30, total_steps=10,
                                checkpoint_every=1, log_every=100,
                                eval_every=100)
  workdir = tmp_path / "run"
  proc = subprocess.run(sp.cli(config_file, workdir), env=sp.env(),
                        cwd=tmp_path, capture_output=True, text=True,
                        timeout=sp.TIMEOUT_S)
  assert proc.returncode == 3, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr
  last_line = proc.stderr.strip().splitlines()[-1]
  match = re.fullmatch(r"sla-train: error: non-finite training loss or "
                       r"parameters at step (\d+); .* The last good checkpoint "
                       r"is step (\d+) in .*", last_line)
  assert match, last_line
  bad, good = int(match.group(1)), int(match.group(2))
  saved = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir())
  assert saved and max(saved) == good < bad
  for step in saved:
    params = sp.restore_params(workdir, step)
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(params)), step
  assert not (workdir / "results.json").exists()
