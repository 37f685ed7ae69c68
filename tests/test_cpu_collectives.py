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


def test_the_trainer_on_two_cpu_devices_finishes_with_100_calls_between_logs(
    tmp_path):
  """The tiny run on 2 CPU devices with XLA's own 2 PjRt threads, one log at step 100.

  Without the loop's bound the same run deadlocked here once and finished
  once under heavier load: a race, which the repro above hits every time.
  """
  env = sp.env(2, PJRT_NPROC="2",  # XLA's own count on a 2-core machine
               XLA_FLAGS=f"{DEVICES_FLAG} {TIMEOUT_FLAG}=60")
  config = sp.write_config(tmp_path / "config.py", total_steps=100,
                           log_every=100, eval_every=100,
                           checkpoint_every=100, num_devices=2)
  proc = subprocess.run(sp.cli(config, tmp_path / "w"), cwd=sp.REPO, env=env,
                        capture_output=True, text=True, timeout=sp.TIMEOUT_S)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert [r["step"] for r in sp.metric_rows(tmp_path / "w")] == [100]
