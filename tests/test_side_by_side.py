"""benchmarks/side_by_side_report.py on hand-made run folders; the --official checks."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from benchmarks import original_side_by_side, side_by_side_report

REPO = pathlib.Path(__file__).resolve().parents[1]


def _run(root, name, test, best_step=600):
  path = root / "runs" / name
  path.mkdir(parents=True)
  (path / "results.json").write_text(json.dumps(
      {"best_step": best_step, "test": {**test, "loss": 1.0}}))


def test_report_pairs_runs_and_computes_the_gap(tmp_path):
  original = [0.40, 0.42, 0.44]
  ours = [0.37, 0.38, 0.42]
  for seed, (a, b) in enumerate(zip(original, ours)):
    _run(tmp_path / "original", f"sla_rotation_seed{seed}", {"acc_si": a, "acc_ag": a + .01})
    _run(tmp_path / "ours", f"sla_rotation_seed{seed}", {"acc_si": b, "acc_ag": b + .01})
  _run(tmp_path / "ours_xla", "sla_rotation_xla_seed0", {"acc_si": 0.41, "acc_ag": 0.42})
  text = side_by_side_report.report(tmp_path)
  row = next(l for l in text.splitlines() if l.startswith("| sla_rotation | default | acc_si"))
  p = stats.ttest_ind(original, ours, equal_var=False).pvalue
  assert f"| 42.00 ± 2.00 (3) | {np.mean(ours) * 100:.2f} ± " \
         f"{np.std(np.array(ours) * 100, ddof=1):.2f} (3) | " \
         f"{(np.mean(ours) - 0.42) * 100:+.2f} | {p:.3f} |" in row
  xla = next(l for l in text.splitlines() if "conv_weight_grad=xla | acc_si" in l)
  assert "| 41.00 (1) |" in xla and xla.endswith("| – |")
  assert "| ours | sla_rotation_xla | 0 | acc_si 41.00, acc_ag 42.00 | 600 |" in text


def _fake_checkout(root, models_source):
  root.mkdir()
  (root / "trainers.py").write_text("# the original's engine\n")
  (root / "models.py").write_text(models_source)
  return root


@pytest.mark.parametrize("module", ["benchmarks.original_side_by_side",
                                    "benchmarks.paired_trajectory"])
@pytest.mark.parametrize("case,message", [
    ("empty", "no trainers.py there; pass a checkout of hankook/SLA"),
    ("missing", "its code needs the module 'sla_test_not_installed', which is "
                "not installed (pip install sla_test_not_installed)"),
])
def test_an_unusable_official_checkout_is_one_line_and_exit_2(
    tmp_path, module, case, message):
  if case == "empty":
    official = tmp_path / "empty"
    official.mkdir()
  else:
    official = _fake_checkout(tmp_path / "checkout",
                              "import sla_test_not_installed\n")
  out = tmp_path / "out"
  run = subprocess.run(
      [sys.executable, "-m", module, "--official", str(official),
       "--data", str(tmp_path / "no_data"), "--out", str(out)],
      cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
  assert run.returncode == 2, run.stderr
  lines = run.stderr.strip().splitlines()  # argparse: the usage, then one error line
  assert lines[0].startswith("usage:") and "Traceback" not in run.stderr, run.stderr
  assert [l for l in lines if "error:" in l] == [lines[-1]]
  assert message in lines[-1] and "error: --official " in lines[-1]
  assert not out.exists()  # nothing written


def test_the_original_needs_pytorch_ignite_by_its_pip_name():
  assert original_side_by_side._PIP_NAMES["ignite"] == "pytorch-ignite"  # pylint: disable=protected-access


def test_the_torchvision_stand_in_does_not_outlive_the_originals_import(tmp_path):
  """Without torchvision, the original's models import against empty modules,
  which leave sys.modules afterwards: later code finds torchvision absent, not
  hollow (a hollow one once failed the torchvision tests in the same worker)."""
  official = _fake_checkout(
      tmp_path / "checkout",
      "import torchvision.models.resnet\nRESNET = torchvision.models.resnet\n")
  (official / "augmentations.py").write_text("")
  script = (
      "import importlib.util, sys\n"
      "from benchmarks import original_side_by_side\n"
      "real = importlib.util.find_spec('torchvision') is not None\n"
      f"models, _, _ = original_side_by_side.import_official({str(official)!r})\n"
      "tv = sys.modules.get('torchvision')\n"
      "assert (tv is not None) == real and (tv is None or tv.__spec__), tv\n"
      "assert 'torchvision._meta_registrations' not in sys.modules or real\n"
      "assert models.RESNET.__name__ == 'torchvision.models.resnet'\n"
      "print('real' if real else 'stand-in')\n")
  run = subprocess.run([sys.executable, "-c", script], cwd=REPO,
                       capture_output=True, text=True, timeout=300, check=False)
  assert run.returncode == 0, run.stderr
  assert run.stdout.strip() in ("real", "stand-in")
