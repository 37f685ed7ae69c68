"""The evidence harness on a two-run toy grid: runs, skips finished runs, writes RESULTS.md and plots."""

import json

import ml_collections
import pytest

from conftest import REPO, welch_p
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


def test_each_group_is_compared_with_the_baseline_of_its_variant():
  accs = {"baseline/rotation": [0.50, 0.52, 0.49], "sla/rotation": [0.55, 0.58, 0.56],
          "baseline/rotation/cutout": [0.40, 0.45, 0.41],
          "sla/rotation/cutout": [0.42, 0.44, 0.47], "sla_sd/identity/fg4": [0.51, 0.48]}
  records = []
  for group, values in accs.items():
    objective, transform, *variant = group.split("/")
    metric = "acc" if objective == "baseline" else "acc_ag"
    records += [{"run": experiments.Run(objective, transform, seed, *variant),
                 "results": {"test": {metric: v}}} for seed, v in enumerate(values)]
  lines = experiments._baseline_table(records, ("acc", "acc_ag"))  # pylint: disable=protected-access
  rows = {tuple(c.strip() for c in line.split("|")[1:4]): line.split("|")[4:7]
          for line in lines if line.startswith("| ") and "---" not in line}
  expected = {("sla/rotation", "acc_ag", "baseline/rotation"),
              ("sla/rotation/cutout", "acc_ag", "baseline/rotation/cutout"),
              ("sla_sd/identity/fg4", "acc_ag", "baseline/rotation")}
  assert set(rows) - {("objective/transform", "prediction", "baseline")} == expected
  for group, metric, reference in expected:
    difference, p, n = (c.strip() for c in rows[(group, metric, reference)])
    ours, base = [100 * v for v in accs[group]], [100 * v for v in accs[reference]]
    assert float(difference) == pytest.approx(sum(ours) / len(ours) - sum(base) / len(base), abs=0.005)
    assert float(p) == pytest.approx(welch_p(ours, base), abs=0.0005)
    assert n == f"{len(ours)} / {len(base)}"


def test_bad_grid_entries_fail_clearly(tmp_path):
  with pytest.raises(ValueError, match="objective/transform"):
    experiments.expand(toy_grid(runs=("sla",)))
  with pytest.raises(ValueError, match="unknown objective 'nope'; use one of"):
    experiments.expand(toy_grid(runs=("nope/rotation",)))
  with pytest.raises(ValueError, match="'sla/spin': Unknown transform 'spin'"):
    experiments.expand(toy_grid(runs=("sla/spin",)))
  seeds = toy_grid()
  seeds.seeds = ("abc",)
  with pytest.raises(ValueError, match="seeds must be whole numbers; got 'abc'"):
    experiments.expand(seeds)
  failing = toy_grid(runs=("sla/rotation",))
  failing.overrides.val_size = 100_000  # found by the trainer, not the grid
  # The trainer's own error line is in the message.
  with pytest.raises(RuntimeError, match=r"sla_rotation_seed0 failed \(exit 2: "
                     r"val_size=100000 must be in \[0, "):
    experiments.run_grid(failing, tmp_path, log=lambda _: None)
  assert "val_size" in (tmp_path / "runs" / "sla_rotation_seed0" /
                        "log.txt").read_text()
  with pytest.raises(RuntimeError, match="No finished runs"):
    experiments.write_results(failing, "g", tmp_path)


def test_fields_and_objectives_the_trainer_lacks_fail_before_any_run(tmp_path):
  grid = toy_grid(runs=("baseline/rotation", "sla/rotation/bad"))
  grid.variants = {"bad": {"model": {"dept": 3}}}
  with pytest.raises(ValueError, match=r"variant 'bad' set 'model.dept', which "
                     r".*quickstart.py:steps=20' has no field for; did you mean "
                     r"model.depth\?"):
    experiments.run_grid(grid, tmp_path / "out", log=lambda _: None)
  grid = toy_grid()
  grid.overrides.no_such_field = 1
  with pytest.raises(ValueError, match="The grid's overrides set 'no_such_field'"):
    experiments.run_grid(grid, tmp_path / "out", log=lambda _: None)
  assert not (tmp_path / "out").exists()  # nothing started
  grid = toy_grid()
  grid.metrics = ("acc", "acc_nosuch")  # was a column of dashes, or max() of nothing
  with pytest.raises(ValueError, match="Grid metric 'acc_nosuch' is not one "
                     "sla-train reports .*; did you mean acc_si or acc_sd"):
    experiments.run_grid(grid, tmp_path / "out", log=lambda _: None)
  grid.metrics = ("acc_si_few", "loss")  # long-tailed groups and the loss: fine
  assert experiments.metric_names(grid) == ("acc_si_few", "loss")
  fewshot = toy_grid(runs=("protonet/rotation", "sla_sd/rotation"))
  fewshot.program = "sla_jax.fewshot_main"
  with pytest.raises(ValueError, match="unknown objective 'sla_sd'; use one of "
                     "protonet, sla"):
    experiments.expand(fewshot)


def test_a_run_without_validation_is_read_at_its_first_accuracy():
  selection = experiments._selection  # pylint: disable=protected-access
  assert selection({"selection_metric": "val/acc_sd", "test": {}}) == "acc_sd"
  assert selection({"selection_metric": None, "test": {
      "5way1shot/acc_si_ci95": 0.1, "5way1shot/acc_si": 0.3,
      "loss": 2.0}}) == "5way1shot/acc_si"


def test_a_missing_trainer_config_fails_before_any_run(tmp_path, monkeypatch):
  grid = toy_grid()
  grid.config = "configs/quickstart.py:steps=20"  # relative to the repo root
  monkeypatch.chdir(tmp_path)
  with pytest.raises(ValueError, match=f"'configs/quickstart.py' does not exist in {tmp_path}"):
    experiments.run_grid(grid, tmp_path / "out", log=lambda _: None)
  assert not (tmp_path / "out").exists()  # nothing started
  grid.config = "/no/such/config.py"
  with pytest.raises(ValueError, match="'/no/such/config.py' does not exist;"):
    experiments.check_trainer_config(grid)
  monkeypatch.chdir(REPO)
  grid.config = "configs/quickstart.py:steps=20"
  experiments.check_trainer_config(grid)  # found from the repository root


def test_the_error_line_of_any_trainer_is_found(tmp_path):
  log = tmp_path / "log.txt"
  log.write_text("I1207 starting\nsla-fewshot: error: Unknown objective 'x'.\n")
  assert experiments._error_line(log) == ": Unknown objective 'x'."  # pylint: disable=protected-access
  log.write_text("Traceback ...\n")
  assert experiments._error_line(log) == ""  # pylint: disable=protected-access
