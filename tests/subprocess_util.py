"""Helpers for tests that run the trainer CLI in subprocesses (bounded, always reaped)."""

import contextlib
import json
import os
import pathlib
import socket
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
TIMEOUT_S = 600  # generous: CI runs two test workers on 2 cores

TINY = {  # the tiny digits run every trainer test starts from
    "dataset": "digits", "val_size": 100, "crop_padding": 1, "objective": "sla",
    "model.depth": 8, "batch_size": 16, "total_steps": 20, "eval_every": 10,
    "eval_batch_size": 256, "log_every": 5, "checkpoint_every": 10,
    "num_devices": 1,
}


def metric_rows(workdir) -> list:
  """The rows of ``workdir/metrics.jsonl``, in order."""
  text = (pathlib.Path(workdir) / "metrics.jsonl").read_text()
  return [json.loads(line) for line in text.splitlines()]


def restore_params(workdir, step):
  """The parameters saved at ``step``, on one device whatever the saving topology."""
  import jax  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  checkpointer = ocp.StandardCheckpointer()
  path = pathlib.Path(workdir).absolute() / "checkpoints" / str(step) / "state"
  one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one),
      checkpointer.metadata(path).item_metadata)
  return checkpointer.restore(path, target)["params"]


def make_config(**overrides):
  """base_config + TINY + overrides (keys may be dotted: ``model.depth``)."""
  from sla_jax import config_lib  # pylint: disable=g-import-not-at-top
  c = config_lib.base_config()
  for key, value in dict(TINY, **overrides).items():
    *parents, name = key.split(".")
    node = c
    for parent in parents:
      node = node[parent]
    node[name] = value
  return c


def write_config(path: pathlib.Path, **overrides) -> pathlib.Path:
  """A config file with ``get_config()`` = base_config + TINY + overrides."""
  fields = dict(TINY, **overrides)
  lines = ["from sla_jax import config_lib", "", "def get_config(arg=None):",
           "  c = config_lib.base_config()"]
  lines += [f"  c.{k} = {v!r}" for k, v in fields.items()]
  lines += ["  return c", ""]
  path.write_text("\n".join(lines))
  return path


def env(local_devices: int = 1, **extra) -> dict:
  """Environment for a CPU trainer process importing this checkout."""
  e = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO),
           XLA_FLAGS=f"--xla_force_host_platform_device_count={local_devices}")
  e.update(extra)
  return e


def cli(config_file, workdir, *flags) -> list:
  return [sys.executable, "-m", "sla_jax.main", "--config", str(config_file),
          "--workdir", str(workdir), *flags]


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@contextlib.contextmanager
def reaped(*procs: subprocess.Popen):
  """Kills (SIGKILL) and waits for every process still running on exit."""
  try:
    yield procs
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
      p.wait(timeout=30)
