"""Evidence grid: few-shot ProtoNet vs ProtoNet + SLA on tinyimagenet100-32, Conv-4, 2 CPU cores.

    tar xzf ../shared/data/tinyimagenet100-32.tar.gz -C /tmp
    python -m sla_jax.experiments \
        --grid configs/grid_fewshot_cpu.py:data=/tmp/tinyimagenet100-32 \
        --out results/fewshot_cpu

Each run is ``python -m sla_jax.fewshot_main`` (the grid's ``program``) with
configs/fewshot.py's CPU schedule: Conv-4, 300 steps of one 5-way 5-shot
15-query episode (Adam 1e-3), the best of three 100-episode meta-validations
tested on 600 5-way 1-shot and 5-shot meta-test episodes (the same episodes
for every run). Seeds 0-2 of ProtoNet and of ProtoNet + SLA (4 rotations,
SI and AG), about 2 + 7 minutes per seed on 2 CPU cores.

Result (2026-11-23, 3 seeds, mean +- std, %): ProtoNet 1-shot 30.67 +- 0.14,
5-shot 41.79 +- 0.40; + SLA SI 32.87 +- 0.58 / 44.84 +- 0.90; + SLA AG
34.00 +- 0.43 / 46.74 +- 0.95 (results/fewshot_cpu/RESULTS.md).
"""

import ml_collections

from sla_jax import config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, data="/tmp/tinyimagenet100-32", steps=300)
  g = ml_collections.ConfigDict()
  g.title = (f"tinyimagenet100-32 few-shot (64/16/20 classes), Conv-4, "
             f"{arg.steps} 5-way episodes, CPU")
  g.program = "sla_jax.fewshot_main"
  g.config = f"configs/fewshot.py:data={arg.data},steps={arg.steps}"
  g.runs = ("protonet/rotation", "sla/rotation")
  g.seeds = (0, 1, 2)
  g.overrides = {}
  g.metrics = tuple(f"5way{k}shot/{m}" for k in (1, 5)
                    for m in ("acc", "acc_si", "acc_ag"))
  g.metrics_note = (
      "Meta-test accuracy on 600 5-way episodes (15 queries per class) at the "
      "best meta-validation step. `acc`: ProtoNet (identity images); "
      "`acc_si`: SLA's single inference (identity views against the identity "
      "prototypes); `acc_ag`: SLA's aggregation over the 4 rotations. Each "
      "run's 95 % interval over episodes is in its results.json (`_ci95`).")
  g.description = (
      "Data: tinyimagenet100-32 with its fewshot_split.json (64 meta-train, "
      "16 meta-val, 20 meta-test classes; all 550 images of a class in its "
      "pool). Schedule: configs/fewshot.py (300 episodes): far from the "
      "usual tens of thousands, so this compares the objectives early in "
      "meta-training only.")
  return g
