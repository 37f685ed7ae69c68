"""Two local CPU processes (jax.distributed, gloo) train like one process."""

import json
import subprocess
import time

import numpy as np
import pytest

import subprocess_util as sp
from sla_jax import train

pytestmark = pytest.mark.slow



def _gloo_available() -> bool:
  try:
    from jax._src.lib import _jax  # pylint: disable=g-import-not-at-top
    return hasattr(_jax, "make_gloo_tcp_collectives")
  except ImportError:
    return False


def _two_processes(tmp_path, config_file, per_process, timeout_s=sp.TIMEOUT_S):
  """Starts 2 local trainer processes; ``per_process[i]`` = (cwd, workdir, flags).

  Returns their exit statuses and outputs once both ended.
  """
  port = sp.free_port()
  logs = [tmp_path / f"process_{i}.log" for i in range(2)]
  procs = []
  for i, (log, (cwd, workdir, flags)) in enumerate(zip(logs, per_process)):
    with log.open("w") as f:
      procs.append(subprocess.Popen(
          sp.cli(config_file, workdir, "--distributed",
                 f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
                 f"--process_id={i}", "--distributed_timeout=60", *flags),
          env=sp.env(local_devices=1), cwd=cwd, stdout=f,
          stderr=subprocess.STDOUT))
  deadline = time.monotonic() + timeout_s
  with sp.reaped(*procs):
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
      time.sleep(0.2)
  outputs = [log.read_text() for log in logs]
  assert time.monotonic() < deadline, "timed out:\n" + "\n---\n".join(
      o[-2000:] for o in outputs)
  return [p.returncode for p in procs], outputs


@pytest.mark.skipif(not _gloo_available(),
                    reason="jaxlib has no gloo CPU collectives")
def test_two_processes_match_one(tmp_path):
  fields = dict(total_steps=6, log_every=2, eval_every=6, checkpoint_every=3,
                num_devices=-1, data_on_device=False, host_threads=2)
  config_file = sp.write_config(tmp_path / "config.py", **fields)
  multi = tmp_path / "multi"
  codes, outputs = _two_processes(tmp_path, config_file,
                                  [(tmp_path, multi, [])] * 2)
  assert codes == [0, 0], [o[-3000:] for o in outputs]

  # The same config and global device count, one process.
  single = tmp_path / "single"
  one = train.train_and_evaluate(sp.make_config(**dict(fields, num_devices=2)),
                                 single)

  rows_multi, rows_one = sp.metric_rows(multi), sp.metric_rows(single)
  assert [r["step"] for r in rows_multi] == [2, 4, 6]
  assert [r["step"] for r in rows_multi] == [r["step"] for r in rows_one]
  for a, b in zip(rows_one, rows_multi):
    for k in a:
      if "per_s" not in k:
        assert b[k] == pytest.approx(a[k], rel=1e-5, abs=1e-6), (a["step"], k)
  results = json.loads((multi / "results.json").read_text())
  assert results["test"] == pytest.approx(one["test"], rel=1e-5)
  assert results["val"] == pytest.approx(one["val"], rel=1e-5)
  jax_tree_allclose(sp.restore_params(multi, 6), sp.restore_params(single, 6))
  assert sorted(p.name for p in (multi / "checkpoints").iterdir()) == ["3", "6"]
  # Only process 0 printed the results table.
  assert "best val/acc_si" in outputs[0] and "best val/acc_si" not in outputs[1]


def jax_tree_allclose(a, b):
  import jax  # pylint: disable=g-import-not-at-top
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6),
               a, b)


def test_workdir_paths_keep_gs_urls_and_make_local_ones_absolute(tmp_path,
                                                                 monkeypatch):
  assert str(train.workdir_path("gs://bucket/sla/run") / "checkpoints") == (
      "gs://bucket/sla/run/checkpoints")
  monkeypatch.chdir(tmp_path)
  assert str(train.workdir_path("runs/a")) == str(tmp_path / "runs" / "a")


def test_distributed_env_switch():
  from sla_jax import distributed  # pylint: disable=g-import-not-at-top
  assert distributed.requested_by_env({"SLA_DISTRIBUTED": "1"})
  assert not distributed.requested_by_env({"SLA_DISTRIBUTED": "0"})
  assert not distributed.requested_by_env({})


@pytest.mark.skipif(not _gloo_available(),
                    reason="jaxlib has no gloo CPU collectives")
def test_processes_with_other_flags_or_unshared_workdirs_stop_with_one_line(tmp_path):
  config_file = sp.write_config(tmp_path / "config.py", total_steps=4,
                                log_every=2, eval_every=4, checkpoint_every=2,
                                num_devices=-1, data_on_device=False)
  # Another learning rate on process 1: it trained silently before.
  codes, outputs = _two_processes(tmp_path, config_file, [
      (tmp_path, tmp_path / "w", []), (tmp_path, tmp_path / "w", ["--config.lr=0.5"])])
  assert codes == [2, 2], outputs
  assert ("sla-train: error: the config or --workdir of process 1 differs from "
          "process 0's: start every process with the same flags.") in outputs[0]
  assert not (tmp_path / "w").exists()  # nothing written
  # One relative --workdir from two folders: two workdirs, not one shared one
  # (each process waited at the first checkpoint for the other, for ever).
  for name in ("a", "b"):
    (tmp_path / name).mkdir()
  codes, outputs = _two_processes(tmp_path, config_file, [
      (tmp_path / "a", "w", []), (tmp_path / "b", "w", [])])
  assert codes == [2, 2], outputs
  assert (f"sla-train: error: process 1: --workdir {tmp_path / 'b' / 'w'} is not "
          f"one folder shared by every process") in outputs[0]
  assert not (tmp_path / "a" / "w" / "checkpoints").exists()
