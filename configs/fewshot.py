"""Few-shot meta-training (ProtoNet / R2D2 / MetaOptNet heads, + SLA) on tinyimagenet100-32.

    tar xzf ../shared/data/tinyimagenet100-32.tar.gz -C /tmp
    python -m sla_jax.fewshot_main --config configs/fewshot.py \
        --workdir workdirs/fewshot_protonet
    python -m sla_jax.fewshot_main --config configs/fewshot.py:objective=sla \
        --workdir workdirs/fewshot_sla

Args: data (the unpacked folder, with fewshot_split.json and classes.txt),
objective (protonet | sla), head (protonet | ridge | svm), model (conv4 |
resnet12), steps, seed, ways, shots, queries (meta-training episodes; the
meta-test is always 5-way, 1 and 5 shots, 15 queries).

Data: the 64/16/20-class split of fewshot_split.json, all 550 images of a
class (train/ and test/ folders) in its pool. The default schedule is sized
for 2 CPU cores: 300 steps of one 5-way 5-shot 15-query episode, Adam lr 1e-3
(x0.1 at 50 % / 75 %), random crop (4-pixel padding) + flip, meta-validation
on 100 5-way 5-shot episodes every 100 steps (the best step is tested), and
the meta-test on 600 episodes per shot count (the same episodes for every
model: test_seed). ProtoNet's usual higher training way is ways=20 (4x the
images per step).

Expected result (seed 0, conv4, the two commands above; meta-test accuracy
in %, mean +- 95 % interval over 600 episodes, all at the last step, the
best meta-validation step):
  objective=protonet        1-shot 30.78 +- 0.58   5-shot 42.07 +- 0.64
  objective=sla  SI         1-shot 33.14 +- 0.66   5-shot 45.13 +- 0.68
                 AG         1-shot 34.14 +- 0.67   5-shot 46.88 +- 0.70
Chance is 20 %. Wall time of the whole command (data, compilation and
evaluation included) on 2 CPU cores shared with other jobs: ProtoNet 170 s,
SLA 732 s. 300 episodes is a tiny fraction of the usual meta-training (tens
of thousands), so these numbers compare the objectives early in training
only.
"""

import ml_collections

from sla_jax import config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, data="/tmp/tinyimagenet100-32",
                             objective="protonet", head="protonet",
                             model="conv4", steps=300, seed=0, ways=5,
                             shots=5, queries=15)
  c = ml_collections.ConfigDict()
  c.seed = arg.seed
  c.dataset = f"folder:{arg.data}"
  c.class_split = ""            # "": <data>/fewshot_split.json
  c.skip_corrupt = False

  c.objective = arg.objective   # sla_jax.fewshot_train.OBJECTIVES
  c.head = arg.head             # sla_jax.fewshot_train.HEADS
  c.transform = "rotation"      # the SLA views (any sla_jax.transforms name)
  c.model = ml_collections.ConfigDict({"name": arg.model, "dtype": "float32",
                                       "conv_weight_grad": "auto",
                                       "use_fast_variance": False,
                                       "fused_batch_norm": False})
  c.model.widths = ((64, 160, 320, 640) if arg.model == "resnet12"
                    else (64, 64, 64, 64))
  if arg.model == "resnet12":   # MetaOptNet's DropBlock at 32 px
    c.model.drop_rate = 0.1
    c.model.dropblock_size = 2
  c.crop_padding = 4
  c.flip = True

  c.fewshot = ml_collections.ConfigDict()
  c.fewshot.ways = arg.ways     # meta-training episodes
  c.fewshot.shots = arg.shots
  c.fewshot.queries = arg.queries
  c.fewshot.episodes_per_step = 1
  c.fewshot.test_ways = 5       # meta-val and meta-test episodes
  c.fewshot.test_shots = (1, 5)
  c.fewshot.test_queries = 15
  c.fewshot.test_episodes = 600
  c.fewshot.test_seed = 10_000  # the same test episodes for every model
  c.fewshot.val_shots = 5
  c.fewshot.val_episodes = 100  # 0: no meta-validation, test the last step
  c.fewshot.val_seed = 20_000
  c.fewshot.eval_batch_size = 500         # images per embedding call
  c.fewshot.eval_episodes_per_call = 100  # episodes scored per call

  c.optimizer = "adam"          # adam | sgd
  c.lr = 1e-3
  c.momentum = 0.9              # sgd only
  c.weight_decay = 0.0
  c.lr_decay_at = (0.5, 0.75)
  c.lr_decay_factor = 0.1
  c.total_steps = arg.steps

  c.eval_every = 100
  c.log_every = 25
  c.checkpoint_every = 100
  c.keep_checkpoints = 2
  return c
