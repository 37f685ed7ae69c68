"""benchmarks/side_by_side_report.py on hand-made run folders."""

import json

import numpy as np
from scipy import stats

from benchmarks import side_by_side_report


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
