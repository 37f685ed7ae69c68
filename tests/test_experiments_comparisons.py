"""A grid's chosen comparisons: checked before any run, tabulated in RESULTS.md with Welch's p."""

import json
import re

import ml_collections
import pytest

from conftest import welch_p
from sla_jax import experiments

# Test accuracies of three seeds a group (the shape of the SD grid's question).
ACCS = {"sla/rotation": {"acc_si": [0.283, 0.288, 0.275], "acc_ag": [0.294, 0.303, 0.294]},
        "sla_sd/rotation": {"acc_sd": [0.285, 0.280, 0.276], "acc_ag": [0.265, 0.262, 0.257]}}


def grid(*entries, runs=("sla/rotation", "sla_sd/rotation")):
  g = ml_collections.ConfigDict()
  g.title = "comparisons"
  g.config = "configs/quickstart.py"
  g.runs = runs
  g.seeds = (0, 1, 2)
  g.overrides = {}
  g.comparisons = entries
  return g


def test_comparisons_are_parsed_and_bad_entries_named():
  g = grid("sla_sd/rotation:acc_sd vs sla/rotation:acc_ag",
           " sla_sd/rotation:acc_ag  vs  sla/rotation:acc_ag ")
  assert experiments.comparisons(g) == [
      (("sla_sd/rotation", "acc_sd"), ("sla/rotation", "acc_ag")),
      (("sla_sd/rotation", "acc_ag"), ("sla/rotation", "acc_ag"))]
  assert experiments.comparisons(grid()) == []
  for entry, message in [
      ("sla_sd/rotation:acc_sd", "must be 'GROUP:METRIC vs GROUP:METRIC'"),
      ("sla_sd/rotation vs sla/rotation:acc_ag", "must be 'GROUP:METRIC vs"),
      ("a:acc vs b:acc vs c:acc", "must be 'GROUP:METRIC vs"),
      ("sla/colorperm:acc_ag vs sla/rotation:acc_ag",
       "'sla/colorperm' is not one of the grid's runs (sla/rotation, sla_sd/rotation)"),
      ("sla_sd/rotation:acc_top5 vs sla/rotation:acc_ag",
       "'acc_top5' is not one of the grid's metrics")]:
    with pytest.raises(ValueError, match=re.escape(message)) as error:
      experiments.comparisons(grid(entry))
    assert str(error.value).startswith(f"Grid comparison {entry!r}")
  one_string = grid()
  del one_string.comparisons
  one_string.comparisons = "sla_sd/rotation:acc_sd vs sla/rotation:acc_ag"
  with pytest.raises(ValueError, match="must be a tuple of strings; got the string"):
    experiments.comparisons(one_string)


def test_a_bad_comparison_fails_before_any_run(tmp_path, monkeypatch):
  monkeypatch.chdir(experiments.pathlib.Path(__file__).parents[1])
  with pytest.raises(ValueError, match="'sla/spin' is not one of the grid's runs"):
    experiments.run_grid(grid("sla/spin:acc_ag vs sla/rotation:acc_ag"),
                         tmp_path / "out", log=lambda _: None)
  assert not (tmp_path / "out").exists()


def _finished_runs(out):
  for group, metrics in ACCS.items():
    objective, transform = group.split("/")
    for seed in range(3):
      workdir = out / "runs" / f"{objective}_{transform}_seed{seed}"
      workdir.mkdir(parents=True)
      (workdir / "results.json").write_text(json.dumps({
          "selection_metric": f"val/{next(iter(metrics))}", "best_step": 10,
          "final_step": 10, "test": {m: v[seed] for m, v in metrics.items()}}))


def test_results_tabulate_each_comparison_with_its_welch_test(tmp_path):
  _finished_runs(tmp_path)
  g = grid("sla_sd/rotation:acc_sd vs sla/rotation:acc_ag",
           "sla_sd/rotation:acc_sd vs sla/rotation:acc_si")
  text = experiments.write_results(g, "g.py", tmp_path).read_text()
  assert "## Chosen comparisons" in text
  rows = {tuple(c.strip() for c in line.split("|")[1:5]): line.split("|")[5:8]
          for line in text.splitlines()
          if line.startswith("| sla_sd/rotation | acc_sd | sla/rotation |")}
  assert set(rows) == {("sla_sd/rotation", "acc_sd", "sla/rotation", "acc_ag"),
                       ("sla_sd/rotation", "acc_sd", "sla/rotation", "acc_si")}
  for (group, metric, other, other_metric), cells in rows.items():
    ours = [100 * v for v in ACCS[group][metric]]
    base = [100 * v for v in ACCS[other][other_metric]]
    difference, p, n = (c.strip() for c in cells)
    assert float(difference) == pytest.approx(
        sum(ours) / 3 - sum(base) / 3, abs=0.005)
    assert float(p) == pytest.approx(welch_p(ours, base), abs=0.0005)
    assert n == "3 / 3"
  # Without comparisons, or with no runs on one side yet: no section.
  assert "Chosen comparisons" not in experiments.write_results(
      grid(), "g.py", tmp_path).read_text()
  one_side = grid("sla_sd/rotation:acc_sd vs baseline/rotation:acc",
                  runs=("sla/rotation", "sla_sd/rotation", "baseline/rotation"))
  assert "Chosen comparisons" not in experiments.write_results(
      one_side, "g.py", tmp_path).read_text()
