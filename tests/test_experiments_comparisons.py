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


def grid(*entries, runs=("sla/rotation", "sla_sd/rotation"), seeds=(0, 1, 2)):
  g = ml_collections.ConfigDict()
  g.title = "comparisons"
  g.config = "configs/quickstart.py"
  g.runs = runs
  g.seeds = seeds
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


def _write_runs(out, accs):
  """Finished runs' results.json under ``out/runs``: group -> {metric: [per seed]}."""
  for group, metrics in accs.items():
    objective, transform = group.split("/")
    for seed, _ in enumerate(next(iter(metrics.values()))):
      workdir = out / "runs" / f"{objective}_{transform}_seed{seed}"
      workdir.mkdir(parents=True)
      (workdir / "results.json").write_text(json.dumps({
          "selection_metric": f"val/{next(iter(metrics))}", "best_step": 10,
          "final_step": 10, "test": {m: v[seed] for m, v in metrics.items()}}))


def test_results_tabulate_each_comparison_with_its_welch_test(tmp_path):
  _write_runs(tmp_path, ACCS)
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


# A grid paired with another's folder: the same groups, other data.
HERE = {"baseline/rotation": {"acc": [0.745, 0.741, 0.750]},
        "sla/rotation": {"acc_si": [0.760, 0.752, 0.771], "acc_ag": [0.771, 0.760, 0.779]}}
THERE = {"baseline/rotation": {"acc": [0.267, 0.263, 0.272]},
         "sla/rotation": {"acc_si": [0.283, 0.288, 0.275], "acc_ag": [0.294, 0.303, 0.297]}}


def _paired_rows(text):
  return {tuple(c.strip() for c in line.split("|")[1:3]):
          [c.strip() for c in line.split("|")[3:12]]
          for line in text.split("## Gains here and in", 1)[1].splitlines()
          if line.startswith("| sla/")}


def test_gains_are_set_beside_the_paired_grids_with_a_test_of_their_gap(tmp_path):
  _write_runs(tmp_path / "here", HERE)
  _write_runs(tmp_path / "there", THERE)
  g = grid(runs=("baseline/rotation", "sla/rotation"))
  g.paired_with = str(tmp_path / "there")
  text = experiments.write_results(g, "g.py", tmp_path / "here").read_text()
  rows = _paired_rows(text)
  assert set(rows) == {("sla/rotation", "acc_si"), ("sla/rotation", "acc_ag")}
  mean = lambda v: 100 * sum(v) / len(v)
  for (group, metric), cells in rows.items():
    gain = mean(HERE[group][metric]) - mean(HERE["baseline/rotation"]["acc"])
    other = mean(THERE[group][metric]) - mean(THERE["baseline/rotation"]["acc"])
    for side, (points, base) in enumerate(((gain, HERE), (other, THERE))):
      base = mean(base["baseline/rotation"]["acc"])
      cell = cells[3 * side:3 * side + 3]
      assert float(cell[0]) == pytest.approx(points, abs=0.005)
      assert float(cell[1].rstrip(" %")) == pytest.approx(100 * points / base, abs=0.05)
      assert float(cell[2].rstrip(" %")) == pytest.approx(
          100 * points / (100 - base), abs=0.05)
    assert float(cells[6]) == pytest.approx(other - gain, abs=0.01)
    assert 0 < float(cells[7]) < 1
    assert cells[8] == "3 / 3, 3 / 3"


def test_the_gap_test_is_welchs_when_the_baselines_do_not_vary(tmp_path):
  """With constant baselines the gap's test is Welch's between the two
  predictions, one shifted by the baselines' difference (an independent check
  of the four-sample degrees of freedom)."""
  here = {"baseline/rotation": {"acc": [0.50, 0.50, 0.50]},
          "sla/rotation": {"acc_ag": [0.55, 0.53, 0.58]}}
  there = {"baseline/rotation": {"acc": [0.20, 0.20]},
           "sla/rotation": {"acc_ag": [0.29, 0.26, 0.30, 0.24]}}
  _write_runs(tmp_path / "here", here)
  _write_runs(tmp_path / "there", there)
  g = grid(runs=("baseline/rotation", "sla/rotation"), seeds=(0, 1, 2, 3))
  g.paired_with = str(tmp_path / "there")
  text = experiments.write_results(g, "g.py", tmp_path / "here").read_text()
  cells = _paired_rows(text)[("sla/rotation", "acc_ag")]
  shifted = [100 * v + 30 for v in there["sla/rotation"]["acc_ag"]]
  assert float(cells[7]) == pytest.approx(
      welch_p(shifted, [100 * v for v in here["sla/rotation"]["acc_ag"]]), abs=0.0005)
  assert cells[8] == "3 / 3, 4 / 2"


def test_a_paired_folder_without_runs_says_so_and_a_bad_value_fails_early(tmp_path):
  _write_runs(tmp_path / "here", HERE)
  g = grid(runs=("baseline/rotation", "sla/rotation"))
  g.paired_with = str(tmp_path / "missing")
  text = experiments.write_results(g, "g.py", tmp_path / "here").read_text()
  assert ("No prediction has finished runs and a baseline both here and "
          f"under `{tmp_path / 'missing'}` yet.") in text
  del g.paired_with
  assert "Gains here and in" not in experiments.write_results(
      g, "g.py", tmp_path / "here").read_text()
  g.paired_with = ("results/a", "results/b")
  with pytest.raises(ValueError, match="paired_with must be one folder as a string"):
    experiments.run_grid(g, tmp_path / "out", log=lambda _: None)
  assert not (tmp_path / "out").exists()


def test_results_table_has_no_column_for_a_metric_no_run_reports(tmp_path):
  _write_runs(tmp_path, {"sla/rotation": ACCS["sla/rotation"]})
  header = lambda g: next(line for line in experiments.write_results(
      g, "g.py", tmp_path).read_text().splitlines()
                          if line.startswith("| objective/transform | n |"))
  # Default: only what the finished runs report (no sla_sd run: no acc_sd).
  assert header(grid(runs=("sla/rotation",))) == (
      "| objective/transform | n | acc_ag | acc_si |")
  # grid.metrics is kept as given, a column of dashes included.
  chosen = grid(runs=("sla/rotation",))
  chosen.metrics = ("acc_ag", "acc_sd")
  assert header(chosen) == "| objective/transform | n | acc_ag | acc_sd |"
