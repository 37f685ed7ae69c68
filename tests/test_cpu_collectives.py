"""Several CPU devices: XLA:CPU's deadlock when collectives queue up, and the trainer's bound on calls in flight."""

import subprocess

import pytest

import subprocess_util as sp
from benchmarks import cpu_collective_deadlock as deadlock
from sla_jax import train

DEVICES_FLAG = "--xla_force_host_platform_device_count=2"
TIMEOUT_FLAG = "--xla_cpu_collective_call_terminate_timeout_seconds"


def test_waiting_for_old_calls_avoids_the_deadlock():
  result = deadlock.run_variant(2, 100, pjrt_nproc="2",
                                max_in_flight=train.MAX_CALLS_IN_FLIGHT,
                                timeout_s=60)
  assert result["finished"] and result["returncode"] == 0, result


@pytest.mark.slow
def test_unwaited_calls_deadlock_with_xlas_own_threads():
  """What the bound is for: the same loop without waiting aborts in XLA's rendezvous."""
  result = deadlock.run_variant(2, 100, pjrt_nproc="2", max_in_flight=0,
                                timeout_s=10)
  assert not result["finished"] and result["rendezvous_timeout"], result
  result = deadlock.run_variant(2, 100, pjrt_nproc="4", max_in_flight=0,
                                timeout_s=60)
  assert result["finished"], result  # or twice the threads


def _train_100_steps_between_logs(tmp_path, max_calls_in_flight=None,
                                  timeout_s=60) -> subprocess.CompletedProcess:
  """The tiny run on 2 CPU devices with XLA's own 2 PjRt threads, one log at step 100."""
  env = sp.env(2, PJRT_NPROC="2",  # XLA's own count on a 2-core machine
               XLA_FLAGS=f"{DEVICES_FLAG} {TIMEOUT_FLAG}={timeout_s}")
  config = sp.write_config(tmp_path / "config.py", total_steps=100,
                           log_every=100, eval_every=100,
                           checkpoint_every=100, num_devices=2)
  argv = sp.cli(config, tmp_path / "w")
  if max_calls_in_flight is not None:  # the trainer with another bound
    argv[1:3] = ["-c", "import sys; from sla_jax import main, train; "
                 f"train.MAX_CALLS_IN_FLIGHT = {max_calls_in_flight}; "
                 "sys.argv[0] = 'sla-train'; main.run()"]
  return subprocess.run(argv, cwd=sp.REPO, env=env, capture_output=True,
                        text=True, timeout=sp.TIMEOUT_S)


def test_the_trainer_on_two_cpu_devices_finishes_with_100_calls_between_logs(
    tmp_path):
  proc = _train_100_steps_between_logs(tmp_path)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert [r["step"] for r in sp.metric_rows(tmp_path / "w")] == [100]


@pytest.mark.slow
def test_the_trainer_without_its_bound_deadlocks(tmp_path):
  proc = _train_100_steps_between_logs(tmp_path, max_calls_in_flight=10**6,
                                       timeout_s=10)
  assert proc.returncode != 0 and "Termination timeout" in proc.stderr, (
      proc.returncode, proc.stderr[-2000:])
