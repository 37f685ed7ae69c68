"""The shared real 100-class data: tinyimagenet100-32 (100 ImageNet classes at 32 px, 500 / 50 per class).

    tar xzf ../shared/data/tinyimagenet100-32.tar.gz -C /tmp
    python -m sla_jax.main --config configs/tinyimagenet100_32.py:objective=sla_sd \
        --workdir workdirs/tin100_sla_sd
    # ImageNet-layout ResNet-18 instead of the CIFAR ResNet:
    python -m sla_jax.main --config configs/tinyimagenet100_32.py:model=resnet18 \
        --workdir workdirs/tin100_resnet18_sla

CIFAR-shaped, so the CIFAR protocol of configs/cifar.py applies unchanged: the
images live on the device, crop 32 with 4-pixel padding + flip, batch 128 x M
views, SGD lr 0.1 x0.1 at 50 % / 75 %, weight decay 1e-4, 80 000 steps, a
seeded 5 000-image validation split (10 % of the 50 000 training images), the
5 000 test images. Args: data (the unpacked folder), model (cifar_resnet or any
other registry model that takes 32 px: resnet18/34/50, wide_resnet28_10,
resnet12, conv4), depth (cifar_resnet), objective, transform, steps,
batch_size, seed.

Expected result: a 100-class problem where the paper finds SLA's largest gains
(CIFAR-100: SLA+AG several points above the baseline) after the full 80k
steps, not yet run (it needs a GPU: benchmarks/gpu_suite.sh train). The CPU
grid on it, configs/grid_tinyimagenet100_cpu.py (ResNet-8, 3 epochs), reached
~10 % with no gain from SLA (RESULTS.md).
"""

from sla_jax import config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, data="/tmp/tinyimagenet100-32",
                             model="cifar_resnet", depth=32, objective="sla",
                             transform="rotation", steps=80_000,
                             batch_size=128, seed=0)
  c = config_lib.base_config()
  if arg.model != "cifar_resnet":
    c.model = config_lib.large_image_config(arg.model, 32).model
  else:
    c.model.depth = arg.depth
  c.dataset = f"folder:{arg.data}"
  c.objective = arg.objective
  c.transform = arg.transform
  c.total_steps = arg.steps
  c.batch_size = arg.batch_size
  c.seed = arg.seed
  return c
