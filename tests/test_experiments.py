"""The evidence harness on a two-run toy grid: runs, skips finished runs, writes RESULTS.md and plots."""

import json

import ml_collections
import pytest

from conftest import REPO
from sla_jax import experiments

pytestmark = pytest.mark.slow


def toy_grid(runs=("baseline/rotation", "sla/rotation")):
  g = ml_collections.ConfigDict()
  g.title = "toy"
  g.config = f"{REPO / 'configs' / 'quickstart.py'}:steps=20"
  g.runs = runs
  g.seeds = (0,)
  g.overrides = {"eval_every": 10, "checkpoint_every": 10, "log_every": 10,
                 "num_devices": 1}
  return g


def test_toy_grid_writes_results_and_plots_and_resumes(tmp_path):
  grid = toy_grid()
  logs = []
  runs = experiments.run_grid(grid, tmp_path, log=logs.append)
  assert [r.name for r in runs] == ["baseline_rotation_seed0",
                                    "sla_rotation_seed0"]
  path = experiments.write_results(grid, "toy.py", tmp_path)

  text = path.read_text()
  for run in runs:
    results = json.loads(
        (tmp_path / "runs" / run.name / "results.json").read_text())
    assert results["final_step"] == 20
    metric = results["selection_metric"].split("/")[1]
    # The table holds the run's own number (one seed: std 0).
    assert f"{results['test'][metric] * 100:.2f} ± 0.00" in text
  assert "| baseline/rotation | 1 |" in text and "| sla/rotation | 1 |" in text
  assert "Runs finished: 2 of 2" in text
  for png in ("curves.png", "final.png"):
    data = (tmp_path / png).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000

  # A rerun skips both finished runs: no new trainer invocation.
  walls = [(tmp_path / "runs" / r.name / "wall_time.json").read_text()
           for r in runs]
  logs.clear()
  experiments.run_grid(grid, tmp_path, log=logs.append)
  assert all("done, skipped" in line for line in logs) and len(logs) == 2
  assert walls == [(tmp_path / "runs" / r.name / "wall_time.json").read_text()
                   for r in runs]


def test_summary_statistics_over_seeds():
  run = lambda seed: experiments.Run("sla", "rotation", seed)
  records = [{"run": run(s), "results": {"test": {"acc_si": v, "acc_ag": v + .1}}}
             for s, v in enumerate([0.5, 0.7, 0.6])]
  summary = experiments.summarize(records)
  mean, std, n = summary["sla/rotation"]["acc_si"]
  assert (round(mean, 6), round(std, 6), n) == (0.6, 0.1, 3)  # sample std
  assert round(summary["sla/rotation"]["acc_ag"][0], 6) == 0.7


def test_bad_grid_entries_fail_clearly(tmp_path):
  with pytest.raises(ValueError, match="objective/transform"):
    experiments.expand(toy_grid(runs=("sla",)))
  with pytest.raises(RuntimeError, match="nope_rotation_seed0 failed"):
    experiments.run_grid(toy_grid(runs=("nope/rotation",)), tmp_path,
                         log=lambda _: None)
  assert "objective" in (tmp_path / "runs" / "nope_rotation_seed0" /
                         "log.txt").read_text()
  with pytest.raises(RuntimeError, match="No finished runs"):
    experiments.write_results(toy_grid(runs=("nope/rotation",)), "g", tmp_path)
