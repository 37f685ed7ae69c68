"""Shared test set-up: 8 simulated CPU devices and the ../shared material."""

import os
import pathlib

# Must run before jax is imported anywhere: simulate 8 devices on the CPU so
# sharding code is exercised (tests that need one device use jax.devices()[0]).
# The tools' default XLA flags too (sla_jax.xla_env), so tests run what users run.
from sla_jax import xla_env  # pylint: disable=g-import-not-at-top,wrong-import-position
os.environ["XLA_FLAGS"] = xla_env.with_defaults(
    os.environ.get("XLA_FLAGS", ""), {"xla_force_host_platform_device_count": "8"})
xla_env.apply_defaults()
# The tools' malloc setting (sla_jax.malloc_env), so that the tools the tests
# start find it and do not run themselves again.
from sla_jax import malloc_env  # pylint: disable=g-import-not-at-top,wrong-import-position
os.environ["GLIBC_TUNABLES"] = malloc_env.with_hugetlb(
    os.environ.get("GLIBC_TUNABLES", ""))

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("SLA_SHARED_DIR", REPO.parent / "shared"))
REFERENCE = SHARED / "reference" / "official_resnet32_rotation.npz"
CIFAR10_JPEG = SHARED / "data" / "cifar10-jpeg.tar.gz"


def evidence_grids() -> list[tuple[str, str, str]]:
  """launch/cpu_evidence.sh's GRIDS entries, in order: (name, grid file, its argument)."""
  text = (REPO / "launch" / "cpu_evidence.sh").read_text()
  body = text.split("GRIDS=(", 1)[1].split("\n)", 1)[0]
  grids = []
  for line in filter(None, map(str.strip, body.splitlines())):
    name, _, grid = line.strip('"').partition(":")
    path, _, arg = grid.partition(":")
    grids.append((name, path, arg))
  return grids


def welch_p(a, b) -> float:
  """Welch's two-sided p from the formula (t and Welch-Satterthwaite df)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from scipy import stats  # pylint: disable=g-import-not-at-top
  va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
  t = (np.mean(a) - np.mean(b)) / np.sqrt(va + vb)
  df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
  return 2 * stats.t.sf(abs(t), df)


def stand_in_grid(trainer_config: str) -> str:
  """A grid file's text whose runs execute the module ``fake_trainer`` (a
  stand-in trainer a test writes beside it): sla and baseline with rotations,
  seed 0, or seeds 0 and 1 with the argument ``two_seeds``."""
  return f"""
import ml_collections
def get_config(arg=None):
  g = ml_collections.ConfigDict()
  g.title = "stand-in"
  g.config = {trainer_config!r}
  g.program = "fake_trainer"
  g.runs = ("sla/rotation", "baseline/rotation")
  g.seeds = (0, 1) if arg == "two_seeds" else (0,)
  g.overrides = {{}}
  return g
"""


@pytest.fixture(scope="session")
def reference():
  """The original PyTorch implementation's numbers (skips if absent)."""
  if not REFERENCE.exists():
    pytest.skip(f"reference numbers not found at {REFERENCE}")
  with np.load(REFERENCE) as data:
    return {k: data[k] for k in data.files}


def nchw_to_nhwc(x):
  return np.asarray(x).transpose(0, 2, 3, 1)


def extract_shared(tarball, tmp_path_factory, folder: str):
  """``tarball`` (under ../shared) unpacked into a fresh temp dir -> its ``folder``; skips if absent."""
  import tarfile  # pylint: disable=g-import-not-at-top
  if not tarball.exists():
    pytest.skip(f"shared data not found at {tarball}")
  root = tmp_path_factory.mktemp(folder)
  with tarfile.open(tarball) as tar:
    tar.extractall(root, filter="data")
  return root / folder


def interrupt_after(monkeypatch, step: int):
  """Makes the trainer's metric writer raise KeyboardInterrupt right after writing ``step``.

  Returns a function that undoes it (call it before resuming).
  """
  from sla_jax import metric_writers  # pylint: disable=g-import-not-at-top
  original = metric_writers.MetricWriter.write

  def write_then_die(self, at, metrics):
    original(self, at, metrics)
    if at == step:
      raise KeyboardInterrupt

  monkeypatch.setattr(metric_writers.MetricWriter, "write", write_then_die)
  return lambda: monkeypatch.setattr(metric_writers.MetricWriter, "write",
                                     original)
