"""Evidence grid: the 100-class data for 5 epochs of all its images on 2 CPU cores: does SLA's gain appear?

    tar xzf ../shared/data/tinyimagenet100-32.tar.gz -C /tmp
    python -m sla_jax.experiments --grid configs/grid_tinyimagenet100_long_cpu.py:data=/tmp/tinyimagenet100-32 \
        --out results/tinyimagenet100_long_cpu
    python -m sla_jax.experiments \
        --grid configs/grid_tinyimagenet100_long_cpu.py:data=/tmp/tinyimagenet100-32,depth=20 \
        --out results/tinyimagenet100_long_cpu_r20
    python -m sla_jax.experiments \
        --grid configs/grid_tinyimagenet100_long_cpu.py:data=/tmp/tinyimagenet100-32,depth=20,sd \
        --out results/tinyimagenet100_long_cpu_r20_sd

Baseline and SLA with rotations, seeds 0-2, on the network of
configs/grid_tinyimagenet100_cpu.py (CIFAR ResNet-8, batch 64 images x M views)
but on every training image (49 000 after a seeded 1 000-image validation
split, against 200 per class there) for 3 840 SGD steps = 5 epochs (lr 0.1,
x0.1 at 50 % / 75 %): four times the images seen by the 3-epoch grid, where
every network stayed near 10 % and SLA did not help. The 5 000 test images;
evaluation every 480 steps; the trainer's default of one CPU device per core.
The 6 runs took 93 minutes on the 2 cores (6-7 a baseline run, 23-27 an SLA
run; rerunning the command resumes). Results:
results/tinyimagenet100_long_cpu/RESULTS.md. Result reached (all 6 runs, code
of be80aa2): baseline 25.11 +- 0.44 %, SLA AG 23.61 +- 0.76 (SI 22.64 +- 0.92):
SLA stays below the baseline with this small network (analysis.md there).

``depth=20`` (CIFAR ResNet-20, 0.28 M parameters, 0.30 M with SLA's 400-way
head, against ResNet-8's 0.08 M / 0.10 M; same data, batch and schedule) tests that reading's likely cause, capacity:
results/tinyimagenet100_long_cpu_r20 (launch/cpu_evidence.sh runs it). On the
2 cores a baseline run took 18-30 minutes and an SLA run 1.1-1.8 hours
(2026-12-05/06, partly beside test runs), so a session finishes at most one
SLA run: start it early. Result reached (all 6 runs, code of 1affac1):
baseline 26.66 +- 0.48 %, SLA AG 29.70 +- 0.54 (+3.04, Welch p = 0.002), SI
28.32 +- 0.70 (+1.66, p = 0.033): with this capacity SLA helps (analysis.md
there).

``sd`` adds SLA+SD with rotations (3 seeds): does the single-pass SD head
keep AG's gain at 100 classes? results/tinyimagenet100_long_cpu_r20_sd holds
the six finished baseline and SLA runs of the ResNet-20 grid (copied from
results/tinyimagenet100_long_cpu_r20: trained by code 1affac1, whose training
code equals the later pin's) and the three SLA+SD runs, so that its
RESULTS.md compares all three objectives; its chosen comparisons test
SLA+SD's heads against plain SLA's. Result reached (all 9 runs, the
SLA+SD ones by code f9544d4, 1.0-1.5 hours each): SLA+SD's SD head 28.05 +-
0.48 % (+1.39, p = 0.024), level with SLA's SI but 1.65 below its AG (p =
0.017); its joint head's AG 26.13 +- 0.37 (analysis.md there).
"""

import ml_collections

from sla_jax import config_lib

# SLA+SD's heads against plain SLA's (the ``sd`` grid's chosen comparisons).
SD_AGAINST_SLA = ("sla_sd/rotation:acc_sd vs sla/rotation:acc_ag",
                  "sla_sd/rotation:acc_sd vs sla/rotation:acc_si",
                  "sla_sd/rotation:acc_si vs sla/rotation:acc_si",
                  "sla_sd/rotation:acc_ag vs sla/rotation:acc_ag")


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, data="/tmp/tinyimagenet100-32", depth=8,
                             sd=False)
  g = ml_collections.ConfigDict()
  g.title = (f"tinyimagenet100-32 (100 classes), ResNet-{arg.depth}, all 49 000 "
             "training images, 3 840 steps x 64 images (5 epochs), CPU")
  g.config = (f"configs/tinyimagenet100_32.py:data={arg.data},depth={arg.depth},"
              f"steps=3840,batch_size=64")
  g.runs = ("baseline/rotation", "sla/rotation") + (
      ("sla_sd/rotation",) if arg.sd else ())
  g.comparisons = SD_AGAINST_SLA if arg.sd else ()
  g.seeds = (0, 1, 2)
  g.overrides = {"val_size": 1000, "eval_every": 480, "checkpoint_every": 480,
                 "log_every": 96, "eval_batch_size": 1000}
  g.description = (
      "Data: the shared tinyimagenet100-32 (100 ImageNet classes at 32 px), a "
      "seeded 1 000-image validation split, the other 49 000 training images, "
      "the 5 000 test images. Schedule: configs/grid_tinyimagenet100_long_cpu."
      f"py (ResNet-{arg.depth}, 3 840 steps of 64 images x M views: 5 epochs).")
  return g
