"""What the command-line tools share: their ``--help`` and one-line flag errors (exit 2).

absl's ``--help`` lists only the flags of the ``__main__`` module, which for an
installed console script is the wrapper, so each tool names its own flags
here; a flag or config-file error (an unknown ``--config.FIELD``, named with
its nearest existing fields; a bad ``file.py:ARGS``) becomes one line on
stderr and exit status 2 instead of a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from absl import app, flags

from sla_jax import config_lib, malloc_env, xla_env

__all__ = ["run", "start_tool_process", "usage"]

_HELP = ("--help", "-h", "--helpshort", "-?")
# The tools' ml_collections config-file flags (loaded lazily: read once to
# surface a file that failed to load as a flag error).
_CONFIG_FILE_FLAGS = ("config", "grid")


def usage(doc: str, flag_names: Sequence[str]) -> str:
  """The tool's docstring summary and its own flags, one line each."""
  lines = [doc.strip().split("\n\n")[0], "", "flags:"]
  for name in flag_names:
    if name not in flags.FLAGS:  # "config" of a tool that parses its own overrides
      continue
    flag = flags.FLAGS[name]
    default = "" if flag.default is None else f" (default: {flag.default_as_str})"
    lines.append(f"  --{name}: {' '.join(flag.help.split())}{default}")
  if "config" in flag_names:
    lines.append("  --config.FIELD=VALUE: override any field of the config")
  lines += ["", "--helpfull lists absl's and JAX's flags too."]
  return "\n".join(lines)


# What a bad flag or config file raises while the flags are parsed.
_FLAG_ERRORS = (flags.Error, ValueError, KeyError, AttributeError, TypeError,
                OSError, SyntaxError)


def _config_file_text(argv: Sequence[str], name: str) -> str | None:
  """The value of ``--name=FILE[:ARGS]`` / ``--name FILE[:ARGS]`` in ``argv``."""
  for i, arg in enumerate(argv):
    if arg.startswith(f"--{name}="):
      return arg.split("=", 1)[1]
    if arg == f"--{name}" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _loaded_config(argv: Sequence[str], name: str):
  """The ConfigDict that config file flag ``name`` names in ``argv``, loaded
  without its overrides (None: not given or it does not load).

  Loaded here because ml_collections keeps no value once an override failed.
  """
  text = _config_file_text(argv, name)
  if text is None:
    return None
  try:
    return config_lib.load_file(text)
  except (*_FLAG_ERRORS, ImportError):
    return None


def _unknown_field(argv: Sequence[str]) -> str | None:
  """The first ``--config.PATH`` override in ``argv`` that names no field, with
  the nearest existing names (None when every path exists)."""
  for name in _CONFIG_FILE_FLAGS:
    config = _loaded_config(argv, name)
    prefix = f"--{name}."
    for arg in argv if config is not None else ():
      if not arg.startswith(prefix):
        continue
      unknown = config_lib.unknown_field(
          config, arg[len(prefix):].split("=", 1)[0])
      if unknown is not None:
        missing, close = unknown
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        return f"unknown config field '{missing}'{hint} (see --help)"
  return None


def _one_line(e: BaseException, argv: Sequence[str] = ()) -> str:
  """The error's message; for a config file that raised, the raised error's line."""
  text = str(e)
  if "Traceback" in text:  # config_flags embeds the config file's traceback
    flag = text.split(":", 1)[0]
    last = [line for line in text.splitlines() if line.strip()][-1].strip()
    return f"{flag}: {last}"
  if isinstance(e, (AttributeError, KeyError)):  # ml_collections: an unknown field
    first = str(e.args[0]).splitlines()[0] if e.args else text
    return _unknown_field(argv) or (
        f"unknown config field '{first.strip(chr(34) + chr(39))}' (see --help)")
  text = text.replace("Configuration is not available because of an earlier "
                      "failure to load: ", "")
  if text.startswith("Failed loading config file") and "[Errno 2] " in text:
    return "cannot read the config file: " + " ".join(
        text.split("[Errno 2] ", 1)[1].split())  # "No such file or directory: 'x.py'"
  return " ".join(text.split()) or type(e).__name__


def _parse(argv, prog: str):
  try:
    rest = flags.FLAGS(argv)
    for name in _CONFIG_FILE_FLAGS:
      if name in flags.FLAGS and flags.FLAGS[name].present:
        flags.FLAGS[name].value.keys()  # a config file that failed to load
    return rest
  except _FLAG_ERRORS as e:
    print(f"{prog}: error: {_one_line(e, argv)}", file=sys.stderr)
    sys.exit(2)


def start_tool_process() -> None:
  """What every tool's process starts with, before JAX starts a backend.

  Runs the process again with the tools' malloc setting if it lacks it
  (:mod:`sla_jax.malloc_env`), then sets the tools' default XLA flags
  (:mod:`sla_jax.xla_env`).
  """
  malloc_env.reexec_with_defaults()
  xla_env.apply_defaults()


def run(main: Callable, prog: str, flag_names: Sequence[str], doc: str,
        argv: Sequence[str] | None = None) -> None:
  """``app.run(main)`` with the tool's own ``--help`` and exit-2 flag errors.

  Arguments left after the flags are refused (exit 2), so ``main`` sees
  ``argv == [program]``. Starts with :func:`start_tool_process`.
  """
  start_tool_process()
  argv = list(sys.argv if argv is None else argv)
  if any(arg in _HELP for arg in argv[1:]):
    print(usage(doc, flag_names))
    sys.exit(0)

  def main_with_usage_errors(args):
    try:
      if len(args) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(args[1:])}")
      return main(args)
    except app.UsageError as e:  # one line, not absl's usage
      print(f"{prog}: error: {e}", file=sys.stderr)
      sys.exit(2)

  app.run(main_with_usage_errors, argv=list(argv),
          flags_parser=lambda a: _parse(a, prog))


# Path problems the user fixes by naming another path.
_PATH_ERRORS = (NotADirectoryError, IsADirectoryError, PermissionError,
                FileExistsError)


def exit_on_run_errors(prog: str, run_fn: Callable[[], object]) -> None:
  """Runs ``run_fn`` (a trainer); its expected failures end the process with one stderr line.

  Exit status 2: a bad config or input (``ConfigError``; a path that is
  missing, not a directory, or not writable);
  3: a non-finite loss (``FloatingPointError``); 75: preempted after saving
  (:class:`sla_jax.preemption.Preempted`). Only process 0 prints.
  """
  from sla_jax import distributed, preemption, spec  # pylint: disable=g-import-not-at-top

  def exit_with(code: int, message: str) -> None:
    if distributed.is_main():
      print(message, file=sys.stderr)
    sys.exit(code)

  try:
    run_fn()
  except (spec.ConfigError, FileNotFoundError) as e:
    exit_with(2, f"{prog}: error: {' '.join(str(e).split())}")
  except _PATH_ERRORS as e:  # e.g. --workdir through a file
    exit_with(2, f"{prog}: error: cannot write {e.filename}: {e.strerror}")
  except FloatingPointError as e:
    exit_with(3, f"{prog}: error: {e}")
  except preemption.Preempted as e:
    exit_with(preemption.EXIT_CODE, f"{prog}: {e}")

