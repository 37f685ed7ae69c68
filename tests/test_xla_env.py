"""The tools' default XLA flags: added to XLA_FLAGS unless given, and order-only (same training)."""

import os
import subprocess
import sys

import numpy as np
import pytest

import subprocess_util as sp
from sla_jax import xla_env

FLAG = "xla_cpu_enable_concurrency_optimized_scheduler"


def test_defaults_are_appended_to_the_users_flags():
  flags = xla_env.with_defaults("--xla_force_host_platform_device_count=8")
  assert flags.split() == ["--xla_force_host_platform_device_count=8",
                           f"--{FLAG}=false"]
  assert xla_env.with_defaults(flags) == flags  # idempotent


@pytest.mark.parametrize("given", [f"--{FLAG}=true", f"-{FLAG}=true",
                                   f"--{FLAG}"])
def test_a_flag_the_user_names_is_kept(given):
  assert xla_env.with_defaults(given) == given


def test_apply_defaults_sets_the_environment_unless_turned_off():
  environ = {"XLA_FLAGS": "--xla_dump_to=/tmp/x"}
  xla_env.apply_defaults(environ)
  assert environ["XLA_FLAGS"] == f"--xla_dump_to=/tmp/x --{FLAG}=false"
  environ = {"SLA_XLA_DEFAULTS": "0"}
  xla_env.apply_defaults(environ)
  assert "XLA_FLAGS" not in environ


def test_the_tools_start_with_the_defaults():
  code = ("import os; from sla_jax import cli; "
          "cli.run(lambda argv: print(os.environ['XLA_FLAGS']), 'x', (), 'x')")
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                       text=True, env=env, cwd=sp.REPO, check=True).stdout
  assert out.split() == ["--xla_force_host_platform_device_count=2",
                         f"--{FLAG}=false"]


@pytest.mark.slow
def test_the_default_scheduler_flag_changes_no_value(tmp_path):
  """The same tiny run with and without the defaults: identical parameters."""
  params = {}
  for name, off in (("defaults", "1"), ("xla_own", "0")):
    workdir = tmp_path / name
    env = dict(os.environ, SLA_XLA_DEFAULTS=off, XLA_FLAGS="")
    subprocess.run(
        [sys.executable, "-m", "sla_jax.main", "--config",
         "configs/quickstart.py", f"--workdir={workdir}",
         *(f"--config.{k}={v}" for k, v in sp.TINY.items())],
        cwd=sp.REPO, env=env, check=True, capture_output=True,
        timeout=sp.TIMEOUT_S)
    params[name] = sp.restore_params(workdir, sp.TINY["total_steps"])
  import jax  # pylint: disable=g-import-not-at-top
  for a, b in zip(jax.tree.leaves(params["defaults"]),
                  jax.tree.leaves(params["xla_own"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
