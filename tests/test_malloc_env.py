"""sla_jax.malloc_env: the tools restart once with glibc.malloc.hugetlb=1, and only then."""

import os
import subprocess
import sys

import pytest

import subprocess_util as sp
from sla_jax import entry_points, malloc_env

HUGETLB = "glibc.malloc.hugetlb"


@pytest.mark.parametrize("given,expected", [
    ("", f"{HUGETLB}=1"),
    ("glibc.malloc.arena_max=2", f"glibc.malloc.arena_max=2:{HUGETLB}=1"),
    (f"{HUGETLB}=0", f"{HUGETLB}=0"),  # the user's choice stays
    (f"glibc.malloc.arena_max=2:{HUGETLB}=1", f"glibc.malloc.arena_max=2:{HUGETLB}=1"),
])
def test_with_hugetlb_appends_unless_named(given, expected):
  assert malloc_env.with_hugetlb(given) == expected


@pytest.mark.parametrize("environ,version,thp,expected", [
    ({}, (2, 36), True, True),
    ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, (2, 35), True, True),
    ({"GLIBC_TUNABLES": f"{HUGETLB}=0"}, (2, 36), True, False),
    ({"GLIBC_TUNABLES": f"{HUGETLB}=1"}, (2, 36), True, False),
    ({}, (2, 34), True, False),  # no such tunable yet
    ({}, None, True, False),  # not glibc
    ({}, (2, 36), False, False),  # transparent huge pages off
])
def test_wants_reexec(environ, version, thp, expected):
  assert malloc_env.wants_reexec(environ, version, thp) is expected


def _run_tool_code(env):
  """A tool that prints its pid when the interpreter starts and when main runs."""
  code = ("import os; print('start', os.getpid(), flush=True)\n"
          "from sla_jax import cli\n"
          "cli.run(lambda argv: print('main', os.getpid(), "
          "os.environ.get('GLIBC_TUNABLES')), 'some-tool', (), 'Some tool.')")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True,
                        text=True, env=env, cwd=sp.REPO, timeout=sp.TIMEOUT_S)
  assert proc.returncode == 0, proc.stderr
  return [line.split() for line in proc.stdout.splitlines()]


@pytest.mark.skipif(not malloc_env.wants_reexec({}),
                    reason="needs glibc >= 2.35 and transparent huge pages")
def test_a_tool_restarts_once_with_the_setting_in_the_same_process():
  env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
  lines = _run_tool_code(env)
  assert [line[0] for line in lines] == ["start", "start", "main"], lines
  assert len({line[1] for line in lines}) == 1  # exec: the same process id
  assert lines[-1][2] == f"{HUGETLB}=1"


def test_a_tool_keeps_the_users_setting():
  env = dict(os.environ, GLIBC_TUNABLES=f"{HUGETLB}=0")
  lines = _run_tool_code(env)
  assert [line[0] for line in lines] == ["start", "main"], lines
  assert lines[-1][2] == f"{HUGETLB}=0"


def test_every_console_script_runs_its_tool_module():
  setup = (sp.REPO / "setup.py").read_text()
  for script, module in entry_points.TOOLS.items():
    source = (sp.REPO / (module.replace(".", "/") + ".py")).read_text()
    assert "\ndef run():" in source, module
    function = {"sla-eval": "evaluate"}.get(script, script.split("-", 1)[1])
    assert callable(getattr(entry_points, function))
    assert f'"{script} = sla_jax.entry_points:{function}"' in setup
