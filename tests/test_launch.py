"""launch/tpu_pod.sh as a dry run: the gcloud calls it makes for the ImageNet config on a pod."""

import json
import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import tarfile

import pytest

from conftest import REPO, evidence_grids, stand_in_grid
from tests import torch_util


def test_tpu_pod_dry_run_for_imagenet(tmp_path):
  calls_dir = tmp_path / "calls"
  calls_dir.mkdir()
  fake = tmp_path / "gcloud"  # records each call's arguments, NUL-separated
  fake.write_text("#!/usr/bin/env bash\n"
                  f'n=$(ls {calls_dir} | wc -l)\n'
                  f'printf "%s\\0" "$@" > {calls_dir}/$(printf %03d $n)\n')
  fake.chmod(0o755)
  args = ["--config", "configs/imagenet.py:objective=sla",
          "--workdir", "gs://bucket/sla/imagenet sla",  # a space survives quoting
          "--config.data_dir=gs://bucket/tensorflow_datasets"]
  env = dict(os.environ, TPU="my-v4-32", ZONE="us-central2-b",
             GCLOUD=str(fake))
  subprocess.run(["bash", str(REPO / "launch" / "tpu_pod.sh"), *args],
                 env=env, check=True, timeout=60, cwd=tmp_path)
  calls = [p.read_text().split("\0")[:-1] for p in sorted(calls_dir.iterdir())]
  assert [c[:4] for c in calls] == [["compute", "tpus", "tpu-vm", "ssh"],
                                    ["compute", "tpus", "tpu-vm", "scp"],
                                    ["compute", "tpus", "tpu-vm", "ssh"]]
  assert all("--worker=all" in c and "my-v4-32" in " ".join(c) for c in calls)
  assert {"setup.py", "sla_jax", "configs"} <= set(calls[1])
  remote = calls[2][calls[2].index("--command") + 1]
  assert "SLA_DISTRIBUTED=1 .venv/bin/python -m sla_jax.main" in remote
  command = remote[remote.index("-m sla_jax.main") + len("-m sla_jax.main"):]
  assert shlex.split(command) == args  # every argument arrives intact
  bare = subprocess.run(["bash", str(REPO / "launch" / "tpu_pod.sh")], env=env,
                        capture_output=True, text=True, timeout=60, cwd=tmp_path)
  assert bare.returncode == 2 and "pass the trainer's arguments" in bare.stderr
  no_zone = subprocess.run(["bash", str(REPO / "launch" / "tpu_pod.sh"), *args],
                           env={k: v for k, v in env.items() if k != "ZONE"},
                           capture_output=True, text=True, timeout=60, cwd=tmp_path)
  assert no_zone.returncode == 2 and "ZONE is not set" in no_zone.stderr
  helped = subprocess.run(["bash", str(REPO / "launch" / "tpu_pod.sh"), "--help"],
                          env=env, capture_output=True, text=True, timeout=60)
  assert helped.returncode == 0 and helped.stdout.startswith("Cloud TPU VM or pod slice")
  assert len(list(calls_dir.iterdir())) == 3  # no gcloud call for any of them


def _fake_venv(tmp_path):
  """A VENV whose python prints its working directory and arguments."""
  python = tmp_path / "venv" / "bin" / "python"
  python.parent.mkdir(parents=True)
  python.write_text('#!/usr/bin/env bash\necho "cwd=$PWD"; printf "%s\\n" "$@"\n')
  python.chmod(0o755)
  return dict(os.environ, VENV=str(tmp_path / "venv"))


def test_run_sh_takes_paths_from_where_it_is_called(tmp_path):
  out = subprocess.run(["bash", str(REPO / "launch" / "run.sh"), "--config",
                        "my.py", "--workdir", "w"], env=_fake_venv(tmp_path),
                       cwd=tmp_path, capture_output=True, text=True, timeout=60)
  assert out.returncode == 0, out.stderr
  assert out.stdout.splitlines() == [f"cwd={tmp_path}", "-m", "sla_jax.main",
                                     "--config", "my.py", "--workdir", "w"]


def test_gpu_host_needs_all_three_job_variables_or_none(tmp_path):
  env = dict(_fake_venv(tmp_path), COORDINATOR="10.0.0.1:1234", PROCESS_ID="1")
  args = ["bash", str(REPO / "launch" / "gpu_host.sh"), "--config", "c.py"]
  missing = subprocess.run(args, env=env, cwd=tmp_path, capture_output=True,
                           text=True, timeout=60)  # trained alone before
  assert missing.returncode == 2 and "NUM_PROCESSES is not set" in missing.stderr
  out = subprocess.run(args, env=dict(env, NUM_PROCESSES="2"), cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
  assert out.stdout.splitlines()[3:8] == [
      "--distributed", "--coordinator_address=10.0.0.1:1234", "--num_processes=2",
      "--process_id=1", "--config"]


@pytest.mark.slow
def test_the_pod_command_parses_locally(tmp_path):
  """The same flags parse (config file, overrides) in this checkout: exit 2 only for the missing data."""
  import sys  # pylint: disable=g-import-not-at-top
  proc = subprocess.run(
      [sys.executable, "-m", "sla_jax.main", "--config",
       "configs/imagenet.py:objective=sla", "--workdir", str(tmp_path / "w"),
       f"--config.data_dir={tmp_path / 'no_tfds'}"],
      cwd=REPO, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert proc.returncode == 2
  assert "imagenet2012" in proc.stderr and "not prepared" in proc.stderr


def _evidence(tmp_path, *args):
  env = dict(os.environ, EVIDENCE=str(tmp_path / "evidence"),
             RESULTS=str(tmp_path / "results"), PYTHON=sys.executable,
             WORKTREES=str(tmp_path / "worktrees"))
  return subprocess.run(["bash", str(REPO / "launch" / "cpu_evidence.sh"), *args],
                        env=env, capture_output=True, text=True, timeout=300)


def test_cpu_evidence_status_and_collect(tmp_path):
  runs = tmp_path / "evidence" / "fewshot_cpu" / "runs"
  finished = runs / "protonet_rotation_seed0"
  finished.mkdir(parents=True)
  (runs / "sla_rotation_seed0").mkdir()  # started, not finished
  (finished / "results.json").write_text(json.dumps({
      "best_step": 300, "final_step": 300, "selection_metric": "val/5way5shot/acc",
      "test": {"5way1shot/acc": 0.3, "5way5shot/acc": 0.4}}))
  (finished / "metrics.jsonl").write_text('{"step": 300, "test/5way1shot/acc": 0.3}\n')
  (finished / "checkpoints").mkdir()
  status = _evidence(tmp_path, "status")
  assert status.returncode == 0, status.stderr
  assert "fewshot_cpu: 1 finished, 2 started" in status.stdout
  names = [name for name, _, _ in evidence_grids()]
  assert len(names) >= 9 and "tinyimagenet100_long_cpu" in names
  assert [line.split(":")[0] for line in status.stdout.splitlines()] == names  # every grid
  collect = _evidence(tmp_path, "collect", "fewshot_cpu")
  assert collect.returncode == 0, collect.stderr
  dst = tmp_path / "results" / "fewshot_cpu"
  assert sorted(p.name for p in (dst / "runs").iterdir()) == ["protonet_rotation_seed0"]
  assert sorted(p.name for p in (dst / "runs" / "protonet_rotation_seed0").iterdir()) == [
      "metrics.jsonl", "results.json"]  # no checkpoints
  assert "30.00" in (dst / "RESULTS.md").read_text()
  bad = _evidence(tmp_path, "train")
  assert bad.returncode == 2 and "usage: cpu_evidence.sh" in bad.stderr
  for mode in ("status", "keep", "pin", "run"):  # exit 0 and nothing done, before
    bad = _evidence(tmp_path, mode, "no_such_grid")
    assert bad.returncode == 2, (mode, bad.stdout)
    assert "unknown grid 'no_such_grid'; the grids: fewshot_cpu" in bad.stderr
  assert not (tmp_path / "results" / "no_such_grid").exists()


def test_cpu_evidence_restore_puts_back_collected_runs(tmp_path):
  """A new session's empty $EVIDENCE gets the collected finished runs back, nothing else."""
  collected = tmp_path / "results" / "fewshot_cpu" / "runs"
  (collected / "protonet_rotation_seed0").mkdir(parents=True)
  (collected / "protonet_rotation_seed0" / "results.json").write_text("{}")
  (collected / "protonet_rotation_seed0" / "metrics.jsonl").write_text("{}\n")
  (collected / "sla_rotation_seed0").mkdir()  # no results.json: not finished
  interrupted = tmp_path / "evidence" / "fewshot_cpu" / "runs" / "sla_rotation_seed1"
  (interrupted / "checkpoints").mkdir(parents=True)
  restore = _evidence(tmp_path, "restore", "fewshot_cpu")
  assert restore.returncode == 0, restore.stderr
  assert "fewshot_cpu: 1 finished runs restored" in restore.stdout
  runs = tmp_path / "evidence" / "fewshot_cpu" / "runs"
  assert sorted(p.name for p in runs.iterdir()) == ["protonet_rotation_seed0",
                                                    "sla_rotation_seed1"]
  assert sorted(p.name for p in (runs / "protonet_rotation_seed0").iterdir()) == [
      "metrics.jsonl", "results.json"]
  assert (interrupted / "checkpoints").is_dir()  # an interrupted run is left to resume
  again = _evidence(tmp_path, "restore", "fewshot_cpu")
  assert again.returncode == 0 and "restored" not in again.stdout  # nothing twice
  status = _evidence(tmp_path, "status", "fewshot_cpu")
  assert "fewshot_cpu: 1 finished, 2 started" in status.stdout


def test_cpu_evidence_keeps_unfinished_runs_across_sessions(tmp_path):
  """keep: an unfinished run's newest checkpoint and logs (not best/, not older
  checkpoints) -> results/NAME/in_progress; restore puts it back where the run
  has no checkpoint of its own; collect deletes it once the run is finished."""
  runs = tmp_path / "evidence" / "fewshot_cpu" / "runs"
  unfinished = runs / "sla_rotation_seed1"
  for step in ("480", "960"):
    (unfinished / "checkpoints" / step / "state").mkdir(parents=True)
    (unfinished / "checkpoints" / step / "state" / "d").write_text(step)
  (unfinished / "checkpoints" / "1440.orbax-checkpoint-tmp-7").mkdir()  # half written
  (unfinished / "best" / "480").mkdir(parents=True)
  (unfinished / "metrics.jsonl").write_text('{"step": 960}\n')
  (unfinished / "wall_time.json").write_text('{"s": 1234.5}\n')
  results = json.dumps({
      "best_step": 300, "final_step": 300, "selection_metric": "val/5way5shot/acc",
      "test": {"5way1shot/acc": 0.3, "5way5shot/acc": 0.4}})
  finished = runs / "protonet_rotation_seed0"
  (finished / "checkpoints" / "300").mkdir(parents=True)
  (finished / "results.json").write_text(results)
  (runs / "sla_rotation_seed2").mkdir()  # started, no checkpoint yet: nothing to keep
  keep = _evidence(tmp_path, "keep", "fewshot_cpu")
  assert keep.returncode == 0, keep.stderr
  kept = tmp_path / "results" / "fewshot_cpu" / "in_progress"
  assert sorted(p.name for p in kept.iterdir()) == ["sla_rotation_seed1.tgz"]
  assert "kept sla_rotation_seed1 at step 960" in keep.stdout
  with tarfile.open(kept / "sla_rotation_seed1.tgz") as tar:
    assert sorted(m.name for m in tar.getmembers() if m.isfile()) == [
        "checkpoints/960/state/d", "metrics.jsonl", "wall_time.json"]
  # A new session: $EVIDENCE is empty.
  shutil.rmtree(tmp_path / "evidence")
  restore = _evidence(tmp_path, "restore", "fewshot_cpu")
  assert restore.returncode == 0, restore.stderr
  assert "fewshot_cpu: 1 unfinished runs restored" in restore.stdout
  assert (unfinished / "checkpoints" / "960" / "state" / "d").read_text() == "960"
  assert (unfinished / "wall_time.json").read_text() == '{"s": 1234.5}\n'
  # A run that has moved on in this session keeps its own checkpoints.
  shutil.rmtree(unfinished / "checkpoints" / "960")
  (unfinished / "checkpoints" / "1440").mkdir()
  again = _evidence(tmp_path, "restore", "fewshot_cpu")
  assert again.returncode == 0 and "restored" not in again.stdout
  assert not (unfinished / "checkpoints" / "960").exists()
  # Finished and collected: its kept checkpoint goes.
  (unfinished / "results.json").write_text(results)
  collect = _evidence(tmp_path, "collect", "fewshot_cpu")
  assert collect.returncode == 0, collect.stderr
  assert not kept.exists()


def test_cpu_evidence_pins_a_grid_to_one_commit(tmp_path):
  """The first pin records HEAD; later pins reuse that commit's worktree, whatever HEAD is."""
  head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                        text=True, check=True).stdout.strip()
  first = _evidence(tmp_path, "pin", "fewshot_cpu")
  assert first.returncode == 0, first.stderr
  tree = pathlib.Path(first.stdout.strip())
  assert tree == tmp_path / "worktrees" / head
  assert (tmp_path / "results" / "fewshot_cpu" / "code_commit").read_text().strip() == head
  try:
    assert (tree / "sla_jax" / "train.py").is_file()
    again = _evidence(tmp_path, "pin", "fewshot_cpu")
    assert again.returncode == 0 and again.stdout.strip() == str(tree)
    (tmp_path / "results" / "augment_cpu").mkdir(parents=True)
    (tmp_path / "results" / "augment_cpu" / "code_commit").write_text("0" * 40 + "\n")
    bad = _evidence(tmp_path, "pin", "augment_cpu")
    assert bad.returncode == 2 and "cannot check out 0000" in bad.stderr
  finally:
    subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO,
                   capture_output=True, check=False)


@pytest.mark.slow
def test_gpu_suite_runs_every_part_at_toy_sizes(tmp_path):
  """SMOKE=1 benchmarks/gpu_suite.sh bench on the CPU: every part writes its
  file, so a lent GPU's minutes go to measuring, not to fixing the suite."""
  out = tmp_path / "out"
  env = dict(os.environ, SMOKE="1", OUT=str(out), DEADLINE="1200",
             STEP_TIMEOUT="400")
  subprocess.run(["bash", "benchmarks/gpu_suite.sh", "bench"], cwd=REPO,
                 env=env, check=True, timeout=1500, capture_output=True)
  rows = [json.loads(l) for l in (out / "bench.jsonl").read_text().splitlines()
          if l.startswith("{")]
  concurrent = [r["concurrent"] for r in rows
                if "concurrent" in r and r["what"] == "train_step"]
  assert concurrent == [2] * 2 + [3] * 3  # the last parts: 2, then 3 at once
  rows = [r for r in rows if "concurrent" not in r]
  train = [(r["objective"], r["dtype"], r["steps_per_call"]) for r in rows
           if r["what"] == "train_step"]
  assert train == [("sla", "bfloat16", 1), ("sla", "bfloat16", 16),
                   ("baseline", "bfloat16", 16), ("sla_sd", "bfloat16", 16),
                   ("sla", "float32", 16), ("sla", "bfloat16", 16),
                   ("sla", "bfloat16", 16), ("sla", "bfloat16", 16),
                   ("sla", "bfloat16", 16), ("sla", "bfloat16", 16),
                   ("baseline", "bfloat16", 16), ("sla", "bfloat16", 16),
                   ("sla", "bfloat16", 16)]
  options = [(r["batch_draw"], r["fused_batch_norm"], r["use_fast_variance"])
             for r in rows if r["what"] == "train_step"]
  assert options[5] == ("top_k", False, False)  # the top_k part
  assert options[-5:] == [("permutation", True, False), ("top_k", True, True),
                          ("top_k", True, True), ("permutation", False, False),
                          ("top_k", True, True)]  # fused_bn, cuts, conv fusion
  flags = [r["xla_flags"] for r in rows if r["what"] == "train_step"][-7:]
  assert "--xla_gpu_enable_command_buffer=" in flags[0].split()
  assert any(f.startswith("--xla_gpu_enable_command_buffer=FUSION,")
             and "WHILE" in f for f in flags[1].split())
  conv_fusion = "--xla_gpu_experimental_enable_conv_fusion=true"
  assert [conv_fusion in f.split() for f in flags[2:]] == [False] * 3 + [True] * 2
  for k in (1, 16):
    profile = json.loads((out / f"profile_k{k}.json").read_text())
    assert profile["steps_per_call"] == k and profile["processes"]
  draws = [json.loads(l) for l in (out / "batch_draw.jsonl").read_text().splitlines()]
  assert {d["num_items"] for d in draws} == {50_000, 1_281_167}
  assert {d["calls"] for d in draws} == {3}  # SMOKE's toy count
  try:
    import torch  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    return  # the side-by-side parts need the [bench] extra
  compare = [json.loads(l) for l in (out / "compare.jsonl").read_text().splitlines()]
  assert [c["torch_variant"] for c in compare] == ["fp32", "bf16_channels_last"]
  if torch_util.import_torchvision_or_none() is None:
    return  # torch alone: the ResNet-50 part needs torchvision too
  r50 = json.loads((out / "resnet50.jsonl").read_text().splitlines()[-1])
  assert r50["model"] == "resnet50" and r50["jax_median_s"] > 0


@pytest.mark.slow
def test_gpu_suite_parts_runs_only_the_named_parts(tmp_path):
  out = tmp_path / "out"
  env = dict(os.environ, SMOKE="1", OUT=str(out),
             PARTS="batch_draw sla_k16 sla_k1")
  subprocess.run(["bash", "benchmarks/gpu_suite.sh", "bench"], cwd=REPO,
                 env=env, check=True, timeout=900, capture_output=True)
  rows = [json.loads(l) for l in (out / "bench.jsonl").read_text().splitlines()
          if l.startswith("{")]
  assert [(r["objective"], r["steps_per_call"]) for r in rows  # PARTS' order
          if r["what"] == "train_step"] == [("sla", 16), ("sla", 1)]
  assert (out / "batch_draw.jsonl").read_text().strip()
  assert not (out / "compare.jsonl").exists()
  assert not (out / "profile_k16.json").exists()
  rows_before = len(rows)
  subprocess.run(["bash", "benchmarks/gpu_suite.sh", "bench"], cwd=REPO,
                 env=dict(env, PARTS="concurrent_2"), check=True, timeout=900,
                 capture_output=True)
  rows = [json.loads(l) for l in (out / "bench.jsonl").read_text().splitlines()
          if l.startswith("{")][rows_before:]
  train = [r for r in rows if r["what"] == "train_step"]
  assert [(r["concurrent"], r["steps_per_call"], r["objective"]) for r in train] == [
      (2, 16, "sla")] * 2
  bad = subprocess.run(["bash", "benchmarks/gpu_suite.sh", "bench"], cwd=REPO,
                       env=dict(env, PARTS="sla_k1 profile"), timeout=60,
                       capture_output=True, text=True)
  assert bad.returncode == 2
  assert "unknown part 'profile' in PARTS" in bad.stderr


def test_batch_draw_benchmark_refuses_fewer_than_one_call():
  bad = subprocess.run([sys.executable, "-m", "benchmarks.batch_draw", "--calls", "0"],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
  assert bad.returncode == 2 and not bad.stdout
  assert bad.stderr.strip().endswith("--calls must be at least 1; got 0.")


def test_gpu_suite_refuses_an_unknown_part_before_running_any(tmp_path):
  """The part table is the one list of names: a wrong name exits 2 at once."""
  out = tmp_path / "out"
  bad = subprocess.run(["bash", "benchmarks/gpu_suite.sh", "bench"], cwd=REPO,
                       env=dict(os.environ, OUT=str(out), PARTS="sla_k1 sla_k2"),
                       timeout=60, capture_output=True, text=True)
  assert bad.returncode == 2, bad.stderr
  message = bad.stderr.strip()
  assert message.startswith("gpu_suite.sh: unknown part 'sla_k2' in PARTS")
  names = message.split("the parts:")[1].split()
  assert names[:3] == ["sla_k1", "sla_k16", "baseline_k16"]
  assert len(names) == len(set(names)) == 22
  assert not (out / "env.txt").exists()  # nothing ran


def test_gpu_prepare_puts_the_data_and_the_original_in_an_ignored_folder(tmp_path):
  repo = tmp_path / "repo"
  (repo / "launch").mkdir(parents=True)
  script = repo / "launch" / "gpu_prepare.sh"
  script.write_text((REPO / "launch" / "gpu_prepare.sh").read_text())
  subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
  shared = tmp_path / "shared" / "data"
  shared.mkdir(parents=True)
  (shared / "cifar10-jpeg.tar.gz").write_bytes(b"x" * 1000)
  (tmp_path / "shared" / "reference").mkdir()
  (tmp_path / "shared/reference/official_resnet32_rotation.npz").write_bytes(b"r")
  official = tmp_path / "SLA"
  (official / ".git").mkdir(parents=True)
  (official / "trainers.py").write_text("# the original's engine\n")
  (official / ".git" / "HEAD").write_text("ref\n")
  env = dict(os.environ, SLA_SHARED_DIR=str(tmp_path / "shared"),
             OFFICIAL=str(official), NO_WHEELS="1")
  (repo / ".gpu/runs").mkdir(parents=True)  # an earlier call's runs to resume
  (repo / ".gpu/runs/runs.tgz.0").write_bytes(b"runs")
  (repo / ".gpu/shared").mkdir()
  (repo / ".gpu/shared/stale.tar.gz").write_bytes(b"old data")
  (repo / "results/gpu_runs_in_progress").mkdir(parents=True)  # kept runs
  (repo / "results/gpu_runs_in_progress/sla_seed1.tgz").write_bytes(b"run")
  out = subprocess.run(["bash", str(script)], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=60)
  assert out.returncode == 0, out.stderr
  assert (repo / ".gpu/runs/runs.tgz.0").read_bytes() == b"runs"
  assert not (repo / ".gpu/shared/stale.tar.gz").exists()
  assert (repo / ".gpu/shared/data/cifar10-jpeg.tar.gz").stat().st_size == 1000
  assert (repo / ".gpu/shared/reference/official_resnet32_rotation.npz").exists()
  assert (repo / ".gpu/official/trainers.py").exists()
  assert not (repo / ".gpu/official/.git").exists()
  assert ("resumes: sla_seed1 (results/gpu_runs_in_progress/sla_seed1.tgz)"
          in out.stdout)
  command = lambda out: next(l for l in out.stdout.splitlines()
                             if l.startswith("command: "))
  # No wheels in .whl/ (NO_WHEELS=1): carry .gpu alone, no pip install line.
  assert 'carry: [".gpu"] (no wheels in .whl/' in out.stdout
  assert command(out) == ("command: SLA_SHARED_DIR=.gpu/shared OFFICIAL=.gpu/official "
                          "RUNS=.gpu/runs KEPT=results/gpu_runs_in_progress "
                          "OUT=$OUT bash benchmarks/gpu_suite.sh bench")
  (repo / ".whl").mkdir()
  (repo / ".whl/jax-0.10.2-py3-none-any.whl").write_bytes(b"w")
  out = subprocess.run(["bash", str(script)], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=60)
  assert 'carry: [".whl", ".gpu"]' in out.stdout
  assert command(out).startswith("command: python3 -m pip install -q --no-index")
  assert command(out).endswith("SLA_SHARED_DIR=.gpu/shared OFFICIAL=.gpu/official "
                               "RUNS=.gpu/runs KEPT=results/gpu_runs_in_progress "
                               "OUT=$OUT bash benchmarks/gpu_suite.sh bench")
  assert len(command(out)) - len("command: ") <= 2000  # the device tool's limit
  for args, extra, message in (
      (["imagenet"], {}, "unknown data 'imagenet'"),
      (["tinyimagenet100"], {}, "no "),
      ([], {"OFFICIAL": str(tmp_path / "nowhere")}, "is not a hankook/SLA checkout")):
    bad = subprocess.run(["bash", str(script), *args], cwd=tmp_path,
                         env=dict(env, **extra), capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and message in bad.stderr
    # A refused call replaces nothing already staged.
    assert (repo / ".gpu/shared/data/cifar10-jpeg.tar.gz").stat().st_size == 1000
    assert (repo / ".gpu/official/trainers.py").exists()


def _returned_runs(tmp_path, runs):
  """The files a train_many call returns: {name: (last step, finished)} as
  workdirs packed into runs.tgz.* pieces; returns their folder."""
  work, out = tmp_path / "work", tmp_path / "files_at"
  shutil.rmtree(work, ignore_errors=True)
  shutil.rmtree(out, ignore_errors=True)
  out.mkdir(parents=True)
  for name, (step, finished) in runs.items():
    run = work / name
    (run / "checkpoints" / str(step)).mkdir(parents=True)
    (run / "checkpoints" / str(step) / "params").write_bytes(b"p" * 100)
    (run / "best").mkdir()
    (run / "best" / "params").write_bytes(b"b")
    rows = [{"step": s, "train/loss": 1.0} for s in range(0, step + 1, 10)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if finished:
      (run / "results.json").write_text(json.dumps({"final_step": step}))
  tarball = subprocess.run(["tar", "czf", "-", "-C", str(work), *runs],
                           check=True, capture_output=True).stdout
  (out / "runs.tgz.0").write_bytes(tarball[:len(tarball) // 2])
  (out / "runs.tgz.1").write_bytes(tarball[len(tarball) // 2:])
  return out


def test_gpu_keep_commits_finished_runs_and_keeps_unfinished_ones(tmp_path):
  """launch/gpu_keep.sh: finished runs' logs go to results/GPU/NAME, unfinished
  workdirs (without best/) to results/gpu_runs_in_progress/NAME.tgz, which is
  deleted once the run finishes; an older call's files are refused."""
  repo = tmp_path / "repo"
  (repo / "launch").mkdir(parents=True)
  script = repo / "launch" / "gpu_keep.sh"
  script.write_text((REPO / "launch" / "gpu_keep.sh").read_text())
  keep = lambda *args: subprocess.run(["bash", str(script), *map(str, args)],
                                      capture_output=True, text=True, timeout=60)
  kept = repo / "results/gpu_runs_in_progress"
  files = _returned_runs(tmp_path, {"sla_seed0": (40, False),
                                    "baseline_seed0": (80, True)})
  out = keep(files, "h100")
  assert out.returncode == 0, out.stderr
  done = repo / "results/h100/baseline_seed0"
  assert json.loads((done / "results.json").read_text()) == {"final_step": 80}
  assert len((done / "metrics.jsonl").read_text().splitlines()) == 9
  assert not (kept / "baseline_seed0.tgz").exists()
  members = subprocess.run(["tar", "tzf", str(kept / "sla_seed0.tgz")], check=True,
                           capture_output=True, text=True).stdout.split()
  assert "sla_seed0/checkpoints/40/params" in members
  assert "sla_seed0/metrics.jsonl" in members
  assert not any("/best" in m for m in members)
  assert not (repo / "results/h100/sla_seed0/results.json").exists()
  assert "sla_seed0: at step 40, kept to resume" in out.stdout
  # An older call's files (step 20 < 40) are refused; nothing is overwritten.
  before = (kept / "sla_seed0.tgz").read_bytes()
  old = keep(_returned_runs(tmp_path, {"sla_seed0": (20, False)}), "h100")
  assert old.returncode == 2 and "before the kept one" in old.stderr
  assert (kept / "sla_seed0.tgz").read_bytes() == before
  # The next session finishes it, on another GPU: its tgz goes, its logs come
  # to where it started.
  out = keep(_returned_runs(tmp_path, {"sla_seed0": (80, True)}), "h200")
  assert out.returncode == 0, out.stderr
  assert "kept in results/h100/sla_seed0" in out.stdout
  assert (repo / "results/h100/sla_seed0/results.json").exists()
  assert not (repo / "results/h200").exists()
  assert not kept.exists()
  for args, message in (([], "usage: gpu_keep.sh"),
                        ([tmp_path / "nothing", "h100"], "no runs.tgz.*"),
                        ([files, "../h100"], "must be a folder name")):
    bad = keep(*args)
    assert bad.returncode == 2 and message in bad.stderr, bad.stderr


# A stand-in trainer for the grid mode: stopped by SIGTERM it "saves" a step-10
# checkpoint (exit 75); started on one, it finishes at step 20; with
# FAKE_SECONDS=0 it finishes at once.
FAKE_TRAINER = """
import json, os, pathlib, signal, sys, time
workdir = pathlib.Path(next(a.split("=", 1)[1] for a in sys.argv
                            if a.startswith("--workdir=")))
checkpoint = workdir / "checkpoints" / "10"
def log(step):
  with (workdir / "metrics.jsonl").open("a") as f:
    f.write(json.dumps({"step": step}) + "\\n")
def stop(signum, frame):
  checkpoint.mkdir(parents=True, exist_ok=True)
  (checkpoint / "state").write_text("saved")
  log(10)
  sys.exit(75)
signal.signal(signal.SIGTERM, stop)
(workdir / "config.json").write_text("{}")
resumed = checkpoint.exists()
if not resumed and os.environ["FAKE_SECONDS"] != "0":
  time.sleep(float(os.environ["FAKE_SECONDS"]))
log(20)
(workdir / "results.json").write_text(json.dumps({"resumed": resumed}))
"""


@pytest.mark.slow
def test_gpu_suite_grid_resumes_across_sessions_through_gpu_keep(tmp_path):
  """gpu_suite.sh grid + launch/gpu_keep.sh --grid: a call stopped at
  TRAIN_TIMEOUT leaves its unfinished run kept as a tarball beside the grid's
  folder; the next call (a new checkout: that folder and the tarball only)
  resumes it and finishes the grid."""
  repo = tmp_path / "repo"
  (repo / "launch").mkdir(parents=True)
  (repo / "launch/gpu_keep.sh").write_text((REPO / "launch/gpu_keep.sh").read_text())
  (tmp_path / "fake_trainer.py").write_text(FAKE_TRAINER)
  (tmp_path / "trainer_config.py").write_text("")
  (tmp_path / "grid.py").write_text(stand_in_grid(str(tmp_path / "trainer_config.py")))
  grid_out = repo / "results" / "fake_gpu"
  kept = repo / "results" / "gpu_runs_in_progress"
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [str(tmp_path), str(REPO), os.environ.get("PYTHONPATH", "")]))

  def device_call(out, **extra):
    # The device gets a copy of the checkout: here, of its results/.
    device = out.parent / (out.name + "_device")
    if (repo / "results").exists():
      shutil.copytree(repo / "results", device / "results")
    cmd = ["bash", "benchmarks/gpu_suite.sh", "grid", str(tmp_path / "grid.py"),
           str(device / "results/fake_gpu")]
    call = subprocess.run(
        cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
        env=dict(env, OUT=str(out), KEPT=str(device / "results/gpu_runs_in_progress"),
                 **extra))
    assert call.returncode == 0, call.stderr + call.stdout
    keep = subprocess.run(["bash", str(repo / "launch/gpu_keep.sh"), str(out),
                           "--grid", "results/fake_gpu"], capture_output=True,
                          text=True, timeout=60)
    assert keep.returncode == 0, keep.stderr
    summary = [json.loads(l) for l in (out / "summary.jsonl").read_text().splitlines()]
    return {r["name"]: r for r in summary}, keep.stdout

  # Session 1: stopped at TRAIN_TIMEOUT during the first run.
  first, kept_lines = device_call(tmp_path / "out1", TRAIN_TIMEOUT="20",
                                  FAKE_SECONDS="200")
  assert list(first) == ["sla_rotation_seed0"]
  assert first["sla_rotation_seed0"]["last_step"] == 10
  assert "sla_rotation_seed0: unfinished, kept to resume" in kept_lines
  run = grid_out / "runs" / "sla_rotation_seed0"
  assert sorted(p.name for p in run.iterdir()) == [
      "config.json", "metrics.jsonl", "wall_time.json"]  # no checkpoint here
  members = subprocess.run(["tar", "tzf", str(kept / "fake_gpu.tgz")], check=True,
                           capture_output=True, text=True).stdout.split()
  assert "sla_rotation_seed0/checkpoints/10/state" in members
  # Session 2: a new checkout holds only what is committed under results/.
  second, _ = device_call(tmp_path / "out2", FAKE_SECONDS="0")
  assert sorted(second) == ["baseline_rotation_seed0", "sla_rotation_seed0"]
  assert json.loads((run / "results.json").read_text()) == {"resumed": True}
  assert [json.loads(l)["step"] for l in (run / "metrics.jsonl").read_text().splitlines()] == [10, 20]
  assert json.loads((grid_out / "runs/baseline_rotation_seed0/results.json").read_text()) == {"resumed": False}
  assert not kept.exists()  # nothing in progress
  pieces = subprocess.run(["tar", "tzf", str(tmp_path / "out2/runs.tgz.0")], check=True,
                          capture_output=True, text=True).stdout.split()
  assert not any("checkpoints" in m for m in pieces)  # finished: logs only
  # Session 3: the bench parts first, then the (finished) grid, in one call,
  # with as many runs at a time as the bench's concurrent rows say pay.
  out3 = tmp_path / "out3"
  call = subprocess.run(["bash", "benchmarks/gpu_suite.sh", "bench_then_grid",
                         str(tmp_path / "grid.py"), str(grid_out)], cwd=REPO,
                        env=dict(env, OUT=str(out3), SMOKE="1", END="1000",
                                 PARTS="sla_k16 concurrent_2", PARALLEL="auto"),
                        check=True, capture_output=True, text=True, timeout=600)
  assert sorted(p.name for p in out3.iterdir()) == [
      "bench.tgz", "logs.txt", "runs.tgz.0", "summary.jsonl"]
  reason = subprocess.run(["tar", "xzOf", str(out3 / "bench.tgz"), "bench/parallel.txt"],
                          check=True, capture_output=True, text=True).stdout
  assert reason.startswith("pick_parallel: views/s: 1 run ") and "2 at once" in reason
  assert reason in call.stderr
  runs_at_once = reason.rstrip().rsplit(": ", 1)[1].split()[0]
  assert (out3 / "logs.txt").read_text().startswith(
      f"gpu_suite.sh grid: {runs_at_once} run(s) at a time\n")
  for mode in ("grid", "bench_then_grid"):  # a bad grid stops before any timing
    bad = subprocess.run(["bash", "benchmarks/gpu_suite.sh", mode, "configs/nope.py",
                          str(tmp_path / "o")], cwd=REPO,
                         env=dict(env, OUT=str(tmp_path / "bad")),
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "gpu_suite.sh: grid 'configs/nope.py'" in bad.stderr
    assert not (tmp_path / "bad" / "bench").exists()


@pytest.mark.slow
def test_gpu_suite_train_any_config_and_resume_from_its_tgz(tmp_path):
  out, runs = tmp_path / "out", tmp_path / "runs"
  env = dict(os.environ, OUT=str(out), RUNS=str(runs), NAME="qs_seed1",
             CONFIG="configs/quickstart.py:seed=1")
  cmd = ["bash", "benchmarks/gpu_suite.sh", "train", "sla", "20",
         "--config.eval_every=10", "--config.checkpoint_every=10",
         "--config.log_every=10"]
  subprocess.run(cmd, cwd=REPO, env=env, check=True, timeout=600,
                 capture_output=True)
  results = json.loads((out / "qs_seed1.results.json").read_text())
  assert results["final_step"] == 20 and results["config"]["seed"] == 1
  assert (out / "qs_seed1.metrics.jsonl").exists()
  # A later machine: only the returned tgz, carried in RUNS: the run resumes
  # from its last checkpoint (here the end: nothing left to train).
  saved = runs / "qs_seed1" / "checkpoints" / "20"
  mtime = saved.stat().st_mtime
  shutil.rmtree(runs)
  runs.mkdir()
  shutil.copy(out / "qs_seed1.tgz", runs / "qs_seed1.tgz")
  subprocess.run(cmd, cwd=REPO, env=env, check=True, timeout=600,
                 capture_output=True)
  assert int(saved.stat().st_mtime) == int(mtime)  # from the tgz, not retrained
  assert json.loads((out / "qs_seed1.results.json").read_text()) == results
  bad = subprocess.run(["bash", "benchmarks/gpu_suite.sh", "fly"], cwd=REPO,
                       env=env, capture_output=True, text=True, timeout=60)
  assert bad.returncode == 2 and "usage: gpu_suite.sh" in bad.stderr


@pytest.mark.slow
def test_gpu_suite_trains_several_runs_at_once_and_resumes_them(tmp_path):
  """train_many: two quickstart runs side by side, packed into the pieces the
  device tool returns; a later call resumes both from those pieces alone."""
  out, runs = tmp_path / "out", tmp_path / "runs"
  env = dict(os.environ, OUT=str(out), RUNS=str(runs), PREFIX="qs_",
             CONFIG="configs/quickstart.py")
  cmd = ["bash", "benchmarks/gpu_suite.sh", "train_many", "20", "sla:0",
         "baseline:3", "--", "--config.eval_every=10",
         "--config.checkpoint_every=10", "--config.log_every=10"]
  subprocess.run(cmd, cwd=REPO, env=env, check=True, timeout=600,
                 capture_output=True)
  summary = {r["name"]: r for r in map(
      json.loads, (out / "summary.jsonl").read_text().splitlines())}
  assert sorted(summary) == ["qs_baseline_seed3", "qs_sla_seed0"]
  for name, objective, seed in (("qs_sla_seed0", "sla", 0),
                                ("qs_baseline_seed3", "baseline", 3)):
    run = summary[name]
    assert run["exit_status"] == 0 and run["last_step"] == 20
    config = run["results"]["config"]
    assert (config["objective"], config["seed"]) == (objective, seed)
    assert config["keep_checkpoints"] == 1
    assert f"== {name} (exit status 0)" in (out / "logs.txt").read_text()
  pieces = sorted(out.glob("runs.tgz.*"))
  assert [p.name for p in pieces] == ["runs.tgz.0"]
  members = subprocess.run(["tar", "tzf", str(pieces[0])], check=True,
                           capture_output=True, text=True).stdout.split()
  assert "qs_sla_seed0/results.json" in members
  assert "qs_baseline_seed3/metrics.jsonl" in members
  assert not any("/best/" in m for m in members)
  # A later machine: only the pieces, carried in RUNS; nothing is retrained.
  saved = {name: (runs / name / "checkpoints" / "20").stat().st_mtime
           for name in summary}
  shutil.rmtree(runs)
  runs.mkdir()
  shutil.copy(pieces[0], runs / pieces[0].name)
  subprocess.run(cmd, cwd=REPO, env=env, check=True, timeout=600,
                 capture_output=True)
  again = {r["name"]: r for r in map(
      json.loads, (out / "summary.jsonl").read_text().splitlines())}
  for name in summary:
    assert again[name]["results"] == summary[name]["results"]
    checkpoint = runs / name / "checkpoints" / "20"
    assert int(checkpoint.stat().st_mtime) == int(saved[name])  # not retrained
  # A later session: one run kept in the repository as NAME.tgz
  # (launch/gpu_keep.sh), found through KEPT; nothing is retrained.
  kept = tmp_path / "kept"
  kept.mkdir()
  subprocess.run(["tar", "czf", str(kept / "qs_sla_seed0.tgz"), "-C", str(runs),
                  "qs_sla_seed0"], check=True)
  shutil.rmtree(runs)
  runs.mkdir()
  subprocess.run(cmd[:5] + cmd[6:], cwd=REPO, env=dict(env, KEPT=str(kept)),
                 check=True, timeout=600, capture_output=True)
  (row,) = map(json.loads, (out / "summary.jsonl").read_text().splitlines())
  assert row["results"] == summary["qs_sla_seed0"]["results"]
  checkpoint = runs / "qs_sla_seed0" / "checkpoints" / "20"
  assert int(checkpoint.stat().st_mtime) == int(saved["qs_sla_seed0"])
  for bad_args, message in ((["train_many", "20"], "usage: gpu_suite.sh train_many"),
                            (["train_many", "x", "sla:0"], "usage: gpu_suite.sh train_many"),
                            (["train_many", "20", "sla"], "'sla' is not OBJECTIVE:SEED")):
    bad = subprocess.run(["bash", "benchmarks/gpu_suite.sh", *bad_args],
                         cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and message in bad.stderr, bad.stderr


@pytest.mark.slow
def test_gpu_suite_bench_then_train_many_in_one_call(tmp_path):
  """bench_then_train_many: the named bench parts packed as bench.tgz, then the
  runs until END; bad run arguments stop it before any timing."""
  out = tmp_path / "out"
  env = dict(os.environ, SMOKE="1", PARTS="sla_k1", OUT=str(out),
             RUNS=str(tmp_path / "runs"), CONFIG="configs/quickstart.py",
             END="1000")
  subprocess.run(["bash", "benchmarks/gpu_suite.sh", "bench_then_train_many",
                  "10", "sla:0", "--", "--config.eval_every=10",
                  "--config.checkpoint_every=10", "--config.log_every=10"],
                 cwd=REPO, env=env, check=True, timeout=900, capture_output=True)
  assert sorted(p.name for p in out.iterdir()) == [
      "bench.tgz", "logs.txt", "runs.tgz.0", "summary.jsonl"]
  bench_rows = subprocess.run(["tar", "xzOf", str(out / "bench.tgz"),
                               "bench/bench.jsonl"], check=True,
                              capture_output=True, text=True).stdout
  assert [json.loads(l)["steps_per_call"] for l in bench_rows.splitlines()
          if '"train_step"' in l] == [1]
  run = json.loads((out / "summary.jsonl").read_text())
  assert run["name"] == "sla_seed0" and run["last_step"] == 10
  assert run["exit_status"] == 0
  bad = subprocess.run(["bash", "benchmarks/gpu_suite.sh",
                        "bench_then_train_many", "10", "sla"], cwd=REPO,
                       env=dict(env, OUT=str(tmp_path / "bad")),
                       capture_output=True, text=True, timeout=60)
  assert bad.returncode == 2 and "'sla' is not OBJECTIVE:SEED" in bad.stderr
  assert not (tmp_path / "bad" / "bench").exists()
