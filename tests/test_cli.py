"""The command-line tools: their own --help, one-line errors with exit 2, bad image folders."""

import subprocess
import sys

import numpy as np
import pytest
from etils import epath
from PIL import Image

import subprocess_util as sp
from sla_jax import config_lib
from sla_jax import data as data_lib

TOOLS = {"sla_jax.main": ("--config", "--workdir"),
         "sla_jax.bench": ("--config", "--steps", "--json"),
         "sla_jax.eval_cli": ("--workdir", "--checkpoint", "--split"),
         "sla_jax.experiments": ("--grid", "--out", "--summarize_only")}


def _run(*args, timeout=sp.TIMEOUT_S):
  return subprocess.run([sys.executable, "-m", *args], capture_output=True,
                        text=True, cwd=sp.REPO, timeout=timeout)


@pytest.mark.slow
@pytest.mark.parametrize("module", sorted(TOOLS))
def test_help_lists_the_tools_own_flags(module):
  proc = _run(module, "--help")
  assert proc.returncode == 0, proc.stderr
  for flag in TOOLS[module]:
    assert f"  {flag}: " in proc.stdout, (flag, proc.stdout)
  assert "Try --helpfull" not in proc.stdout


# tool -> (its name in messages, the flag of the directory it would write)
_WRITERS = {"sla_jax.main": ("sla-train", "--workdir"),
            "sla_jax.experiments": ("sla-experiments", "--out")}


@pytest.mark.slow
@pytest.mark.parametrize("module,args,message", [
    ("sla_jax.main", ["--config", "configs/quickstart.py:dataset=digits"],
     "ValueError: Unknown config argument 'dataset'; valid arguments are"),
    ("sla_jax.main", ["--config", "configs/quickstart.py", "--config.no_such_field=1"],
     "unknown config field"),
    ("sla_jax.main", ["--config", "configs/quickstart.py", "--config.total_steps=many"],
     "--config.total_steps=many"),
    ("sla_jax.main", ["--config", "configs/no_such_config.py"], "No such file or directory"),
    ("sla_jax.main", ["--config", "configs/quickstart.py", "--config.optimizer.lr=1"],
     "unknown config field 'optimizer'"),
    ("sla_jax.main", ["--config", "configs/quickstart.py", "--config.model.dept=3"],
     "unknown config field 'model.dept'; did you mean model.depth? (see --help)"),
    ("sla_jax.main", ["--config", "configs/quickstart.py", "--config.log_every=0"],
     "log_every must be a whole number >= 1; got 0."),
    ("sla_jax.main", ["--config", "configs/quickstart.py", "surplus"],
     "Unexpected arguments: surplus"),
    ("sla_jax.main", ["--config", "configs/quickstart.py", "--config.num_devices=64"],
     "num_devices=64"),  # found after the data loaded: still nothing written
    ("sla_jax.main", ["--config", "configs/quickstart.py", "--config.image_size=16"],
     "digits are 8x8 arrays: drop --config.image_size."),
    ("sla_jax.main", ["--config", "configs/quickstart.py",
                      "--config.model.name=cifar_resnet20"],
     "Model 'cifar_resnet20' has depth=20 by its name; got depth=8."),
    # Start-up flags JAX would crash on (a traceback, or a segmentation fault).
    ("sla_jax.main", ["--config", "configs/quickstart.py", "--distributed",
                      "--coordinator_address=127.0.0.1:notaport",
                      "--num_processes=2", "--process_id=0"],
     "--coordinator_address must be host:port of process 0 (e.g. 10.0.0.1:1234); "
     "got '127.0.0.1:notaport'."),
    ("sla_jax.main", ["--config", "configs/quickstart.py", "--distributed",
                      "--coordinator_address=127.0.0.1:1234",
                      "--num_processes=2", "--process_id=2"],
     "--process_id must lie in [0, --num_processes) = [0, 2); got 2."),
    ("sla_jax.main", ["--config", "configs/quickstart.py", "--distributed"],
     "jax.distributed.initialize: coordinator_address should be defined. Outside "
     "Cloud TPU, Slurm and Open MPI give --coordinator_address"),
    ("sla_jax.main", ["--config", "configs/quickstart.py", "--distributed_timeout=9"],
     "--coordinator_address/--num_processes/--process_id/--distributed_timeout "
     "need --distributed."),
    ("sla_jax.experiments", ["--grid", "configs/no_such_grid.py"],
     "cannot read the config file: No such file or directory: 'configs/no_such_grid.py'"),
    ("sla_jax.experiments", ["--grid", "configs/grid_digits.py:seeds=3"],
     "Unknown config argument 'seeds'; this file takes no arguments."),
    ("sla_jax.experiments", ["--grid", "configs/grid_cifar_cpu.py:data=/tmp/x,steps=3"],
     "Unknown config argument 'steps'; valid arguments are: data"),
    ("sla_jax.experiments", ["--grid", "configs/grid_digits.py", "surplus"],
     "Unexpected arguments: surplus"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, module, args, message):
  prog, output_flag = _WRITERS[module]
  proc = _run(module, *args, f"{output_flag}={tmp_path / 'out'}")
  _assert_one_error_line(proc, prog, message)
  assert not (tmp_path / "out").exists()  # nothing started


@pytest.mark.parametrize("override,message", [
    ("--config.steps=3", "unknown config field 'steps'; did you mean total_steps?"),
    ("--config.model.dept=3", "unknown config field 'model.dept'; did you mean model.depth?"),
    ("--config.optimizer.lr=1", "unknown config field 'optimizer' (see --help)"),
])
@pytest.mark.parametrize("config_flag", [["--config", "configs/quickstart.py"],
                                         ["--config=configs/quickstart.py:seed=1"]])
def test_an_unknown_config_field_names_its_path_and_the_nearest_fields(
    monkeypatch, config_flag, override, message):
  from sla_jax import cli  # pylint: disable=g-import-not-at-top
  monkeypatch.chdir(sp.REPO)
  argv = ["sla-train", *config_flag, "--workdir=/tmp/unused", override]
  assert cli._unknown_field(argv).startswith(message)  # pylint: disable=protected-access
  assert cli._unknown_field(argv[:-1]) is None  # pylint: disable=protected-access


def test_run_refuses_surplus_arguments_before_main_runs():
  """cli.run, not each tool's main, refuses arguments left after the flags."""
  code = ("from sla_jax import cli; "
          "cli.run(lambda argv: print('main ran', argv), 'some-tool', (), "
          "'Some tool.', ['some-tool', 'surplus', 'more'])")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True,
                        text=True, cwd=sp.REPO, timeout=sp.TIMEOUT_S)
  _assert_one_error_line(proc, "some-tool", "Unexpected arguments: surplus more")
  assert "main ran" not in proc.stdout
  ok = subprocess.run([sys.executable, "-c", code.replace(", 'surplus', 'more'", "")],
                      capture_output=True, text=True, cwd=sp.REPO,
                      timeout=sp.TIMEOUT_S)
  assert ok.returncode == 0 and "main ran ['some-tool']" in ok.stdout, ok.stderr


def _assert_one_error_line(proc, prog, message):
  assert proc.returncode == 2, proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), lines
  assert message in lines[0]


@pytest.mark.slow
def test_a_workdir_or_out_through_a_file_is_one_line_and_exit_2(tmp_path):
  (tmp_path / "afile").write_text("")
  proc = _run("sla_jax.main", "--config", "configs/quickstart.py",
              f"--workdir={tmp_path / 'afile' / 'w'}")
  _assert_one_error_line(proc, "sla-train", "afile/w: Not a directory")


def test_eval_override_without_a_value_is_one_line_and_exit_2(tmp_path):
  proc = _run("sla_jax.eval_cli", f"--workdir={tmp_path}",
              "--config.batch_size")
  _assert_one_error_line(proc, "sla-eval",
                         "--config.batch_size: write --config.FIELD=VALUE.")


@pytest.mark.slow
@pytest.mark.parametrize("args,message", [
    (["--steps", "0"], "flag --steps=0: 0 is not a positive integer"),
    (["--warmup", "-1"], "flag --warmup=-1: -1 is not a non-negative integer"),
    (["--image_shape", "0,0,1"], "--image_shape must be H,W,C: three whole numbers >= 1"),
    (["--image_shape", "8,8"], "--image_shape must be H,W,C"),
])
def test_bad_bench_flags_are_one_line_and_exit_2(args, message):
  proc = _run("sla_jax.bench", "--config", "configs/quickstart.py", *args)
  _assert_one_error_line(proc, "sla-bench", message)


def test_an_unknown_tfds_name_is_a_short_line():
  """TFDS's own message lists every dataset it knows (thousands of characters)."""
  config = sp.make_config(dataset="nosuchds")
  with pytest.raises(ValueError, match="Unknown dataset 'nosuchds'") as e:
    data_lib.load(config)
  assert len(str(e.value)) < 400 and "\n" not in str(e.value)


def test_a_config_file_without_arguments_refuses_any():
  assert config_lib.parse_arg(None).to_dict() == {}
  with pytest.raises(ValueError, match="'x'; this file takes no arguments"):
    config_lib.parse_arg("x=1")


def _folder(root, classes=("a", "b"), test_classes=None, per_class=3):
  rng = np.random.default_rng(0)
  for split, names in (("train", classes), ("test", test_classes or classes)):
    for name in names:
      (root / split / name).mkdir(parents=True)
      for k in range(per_class):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), np.uint8)).save(
            root / split / name / f"{k}.png")
  return root


def _config(root, **fields):
  c = config_lib.base_config()
  c.dataset, c.val_size = f"folder:{root}", 1
  for k, v in fields.items():
    c[k] = v
  return c


def test_corrupt_image_is_named_or_skipped_and_counted(tmp_path, caplog):
  root = _folder(tmp_path / "imgs")
  bad = root / "train" / "b" / "1.png"
  bad.write_bytes(b"not an image at all")
  with pytest.raises(ValueError, match=r"Cannot read image .*train/b/1\.png.*"
                     r"skip_corrupt=True"):
    data_lib.load(_config(root))
  dataset = data_lib.load(_config(root, skip_corrupt=True))
  assert dataset.train.size + dataset.val.size == 5  # 6 images, 1 skipped
  assert "Skipped 1 unreadable image(s)" in caplog.text
  bad.unlink()
  truncated = root / "test" / "a" / "0.png"  # a valid header, cut short
  truncated.write_bytes(truncated.read_bytes()[:40])
  with pytest.raises(ValueError, match=r"Cannot read image .*test/a/0\.png"):
    data_lib.load(_config(root))


def test_train_and_test_class_sets_must_match(tmp_path):
  root = _folder(tmp_path / "imgs", classes=("a", "b", "c"),
                 test_classes=("a", "b", "d"))
  with pytest.raises(ValueError, match="only in train/: c; only in test/: d"):
    data_lib.load(_config(root))


@pytest.mark.slow
def test_trainer_cli_exit_2_on_a_corrupt_image(tmp_path):
  root = _folder(tmp_path / "imgs")
  (root / "train" / "a" / "2.png").write_bytes(b"\x89PNG broken")
  config = sp.write_config(tmp_path / "c.py", dataset=f"folder:{root}",
                           val_size=1, batch_size=2)
  proc = _run("sla_jax.main", "--config", str(config),
              f"--workdir={tmp_path / 'w'}")
  assert proc.returncode == 2
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("sla-train: error: Cannot read image ") and "2.png" in last
  assert "Traceback" not in proc.stderr


def test_describe_reads_shapes_without_loading(tmp_path):
  root = _folder(tmp_path / "imgs", classes=("a", "b", "c"))
  assert data_lib.describe(f"folder:{root}") == ((8, 8, 3), 3)
  assert data_lib.describe("digits") == ((8, 8, 1), 10)
  assert data_lib.describe("cifar100") == ((32, 32, 3), 100)  # TFDS metadata
  assert data_lib.describe("no_such_dataset_xyz") == (None, None)


def test_a_workdir_with_a_broken_config_json_names_the_file(tmp_path):
  from sla_jax import inference  # pylint: disable=g-import-not-at-top
  (tmp_path / "config.json").write_text("{bad")
  (tmp_path / "dataset.json").write_text("{}")
  with pytest.raises(ValueError, match=r"config.json is not valid JSON"):
    inference.read_workdir(tmp_path)


def test_resuming_over_a_broken_config_json_is_one_error_and_keeps_the_file(tmp_path):
  from sla_jax import train  # pylint: disable=g-import-not-at-top
  (tmp_path / "checkpoints").mkdir()
  for text in ("{bad", "[1]"):
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(train.ConfigError,
                       match=r"config.json is not a config the trainer wrote .*"
                       r"delete it to resume"):
      train.check_workdir(sp.make_config(), epath.Path(tmp_path))
    assert (tmp_path / "config.json").read_text() == text


def test_a_coordinator_port_in_use_is_one_line_and_exit_2(tmp_path):
  import socket  # pylint: disable=g-import-not-at-top
  with socket.socket() as busy:  # JAX crashed here (a traceback or a segfault)
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    proc = _run("sla_jax.main", "--config", "configs/quickstart.py", "--distributed",
                f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
                "--process_id=0", f"--workdir={tmp_path / 'out'}")
  _assert_one_error_line(proc, "sla-train", f"process 0 cannot listen on port {port}")
  assert not (tmp_path / "out").exists()
