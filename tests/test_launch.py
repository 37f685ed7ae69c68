"""launch/tpu_pod.sh as a dry run: the gcloud calls it makes for the ImageNet config on a pod."""

import os
import shlex
import subprocess

import pytest

from conftest import REPO


def test_tpu_pod_dry_run_for_imagenet(tmp_path):
  calls_dir = tmp_path / "calls"
  calls_dir.mkdir()
  fake = tmp_path / "gcloud"  # records each call's arguments, NUL-separated
  fake.write_text("#!/usr/bin/env bash\n"
                  f'n=$(ls {calls_dir} | wc -l)\n'
                  f'printf "%s\\0" "$@" > {calls_dir}/$(printf %03d $n)\n')
  fake.chmod(0o755)
  args = ["--config", "configs/imagenet.py:objective=sla",
          "--workdir", "gs://bucket/sla/imagenet sla",  # a space survives quoting
          "--config.data_dir=gs://bucket/tensorflow_datasets"]
  env = dict(os.environ, TPU="my-v4-32", ZONE="us-central2-b",
             GCLOUD=str(fake))
  subprocess.run(["bash", str(REPO / "launch" / "tpu_pod.sh"), *args],
                 env=env, check=True, timeout=60, cwd=tmp_path)
  calls = [p.read_text().split("\0")[:-1] for p in sorted(calls_dir.iterdir())]
  assert [c[:4] for c in calls] == [["compute", "tpus", "tpu-vm", "ssh"],
                                    ["compute", "tpus", "tpu-vm", "scp"],
                                    ["compute", "tpus", "tpu-vm", "ssh"]]
  assert all("--worker=all" in c and "my-v4-32" in " ".join(c) for c in calls)
  assert {"setup.py", "sla_jax", "configs"} <= set(calls[1])
  remote = calls[2][calls[2].index("--command") + 1]
  assert "SLA_DISTRIBUTED=1 .venv/bin/python -m sla_jax.main" in remote
  command = remote[remote.index("-m sla_jax.main") + len("-m sla_jax.main"):]
  assert shlex.split(command) == args  # every argument arrives intact


@pytest.mark.slow
def test_the_pod_command_parses_locally(tmp_path):
  """The same flags parse (config file, overrides) in this checkout: exit 2 only for the missing data."""
  import sys  # pylint: disable=g-import-not-at-top
  proc = subprocess.run(
      [sys.executable, "-m", "sla_jax.main", "--config",
       "configs/imagenet.py:objective=sla", "--workdir", str(tmp_path / "w"),
       f"--config.data_dir={tmp_path / 'no_tfds'}"],
      cwd=REPO, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert proc.returncode == 2
  assert "imagenet2012" in proc.stderr and "not prepared" in proc.stderr
