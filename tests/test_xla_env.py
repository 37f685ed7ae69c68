"""The tools' default XLA flags: added to XLA_FLAGS unless given; the scheduler flag order-only (same training), the dot flag the same training to float rounding."""

import os
import subprocess
import sys

import numpy as np
import pytest

import subprocess_util as sp
from sla_jax import xla_env

FLAG = "xla_cpu_enable_concurrency_optimized_scheduler"
DOT_FLAG = "xla_cpu_experimental_ynn_fusion_type"
DEVICES = "xla_force_host_platform_device_count"


@pytest.mark.parametrize("cpus, devices", [(1, 1), (2, 2), (3, 2), (4, 4),
                                           (6, 4), (12, 8), (96, 8), (0, 1)])
def test_one_cpu_device_per_core_as_a_power_of_two_up_to_8(cpus, devices):
  assert xla_env.host_device_count(cpus) == devices
  assert xla_env.default_flags(cpus)[DEVICES] == str(devices)


def test_defaults_are_appended_to_the_users_flags():
  flags = xla_env.with_defaults("--xla_force_host_platform_device_count=8")
  assert flags.split() == ["--xla_force_host_platform_device_count=8",
                           f"--{FLAG}=false", f"--{DOT_FLAG}=-individual_dot"]
  assert xla_env.with_defaults(flags) == flags  # idempotent


@pytest.mark.parametrize("given", [f"--{FLAG}=true", f"-{FLAG}=true",
                                   f"--{FLAG}"])
def test_a_flag_the_user_names_is_kept(given):
  assert xla_env.with_defaults(given, {FLAG: "false"}) == given
  assert xla_env.with_defaults(given).split()[0] == given  # others appended
  assert xla_env.with_defaults(given).count(FLAG) == 1


def test_apply_defaults_sets_the_environment_unless_turned_off():
  environ = {"XLA_FLAGS": "--xla_dump_to=/tmp/x"}
  xla_env.apply_defaults(environ, cpus=2)
  assert environ["XLA_FLAGS"] == (f"--xla_dump_to=/tmp/x --{FLAG}=false "
                                  f"--{DOT_FLAG}=-individual_dot "
                                  f"--{DEVICES}=2")
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
                         f"--{FLAG}=false", f"--{DOT_FLAG}=-individual_dot"]


def test_the_tools_split_the_cpu_into_devices_unless_told():
  code = ("from sla_jax import cli; import jax; "
          "cli.run(lambda argv: print(jax.device_count()), 'x', (), 'x')")
  for xla_flags, jax_num_cpu_devices, expected in (
      ("", None, xla_env.host_device_count()),
      (f"--{DEVICES}=1", None, 1),
      ("", "3", 3)):  # JAX's own setting wins over the flag
    env = {k: v for k, v in os.environ.items() if k != "JAX_NUM_CPU_DEVICES"}
    env.update(XLA_FLAGS=xla_flags, JAX_PLATFORMS="cpu")
    if jax_num_cpu_devices:
      env["JAX_NUM_CPU_DEVICES"] = jax_num_cpu_devices
    out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                         text=True, env=env, cwd=sp.REPO, check=True).stdout
    assert int(out) == expected, (xla_flags, jax_num_cpu_devices)


def test_the_tools_run_dots_outside_ynnpack():
  """Under the tools a dot compiles to XLA's own; with the flag turned back on, to a YNNPACK fusion."""
  code = ("from sla_jax import cli; import jax, jax.numpy as jnp; "
          "hlo = lambda: jax.jit(jnp.dot).lower(*[jnp.ones((256, 256))] * 2)"
          ".compile().as_text(); "
          "cli.run(lambda argv: print('__ynn' in hlo()), 'x', (), 'x')")
  for xla_flags, expected in (("", "False"),
                              (f"--{DOT_FLAG}=+individual_dot", "True")):
    env = dict(os.environ, XLA_FLAGS=xla_flags, JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                         text=True, env=env, cwd=sp.REPO, check=True).stdout
    assert out.strip() == expected, xla_flags


def _tiny_run_params(workdir, xla_flags):
  """The parameters after the same tiny run (one device) under the tools' defaults plus ``xla_flags``."""
  env = dict(os.environ, XLA_FLAGS=f"--{DEVICES}=1 {xla_flags}".strip())
  subprocess.run(
      [sys.executable, "-m", "sla_jax.main", "--config",
       "configs/quickstart.py", f"--workdir={workdir}",
       *(f"--config.{k}={v}" for k, v in sp.TINY.items())],
      cwd=sp.REPO, env=env, check=True, capture_output=True,
      timeout=sp.TIMEOUT_S)
  import jax  # pylint: disable=g-import-not-at-top
  return jax.tree.leaves(sp.restore_params(workdir, sp.TINY["total_steps"]))


@pytest.mark.slow
def test_the_default_flags_change_the_training_by_rounding_at_most(tmp_path):
  """The tiny run with each default flag overridden by XLA's own setting.

  The scheduler flag orders ops only: identical parameters. The dot flag
  sums the products in another order: the same parameters to float rounding.
  """
  defaults = _tiny_run_params(tmp_path / "defaults", "")
  xla_scheduler = _tiny_run_params(tmp_path / "scheduler", f"--{FLAG}=true")
  ynn_dots = _tiny_run_params(tmp_path / "dots", f"--{DOT_FLAG}=+individual_dot")
  for a, b, c in zip(defaults, xla_scheduler, ynn_dots):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_allclose(np.asarray(a), np.asarray(c), rtol=1e-4,
                               atol=1e-5)
