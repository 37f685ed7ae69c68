"""Fine-grained recognition with ResNet-18 at 224 px (CUB-200-2011, Stanford Dogs, MIT-67; paper Table 6).

    # TFDS (prepared offline in DATA_DIR): caltech_birds2011, stanford_dogs, ...
    python -m sla_jax.main --config configs/fine_grained.py:dataset=caltech_birds2011,objective=sla_sd \
        --config.data_dir=DATA_DIR --workdir workdirs/cub_sla_sd
    # Any image folder root/{train,test}/<class>/*.jpg of mixed-size photos (MIT-67 ...):
    python -m sla_jax.main --config configs/fine_grained.py:dataset=folder:/data/indoor67 \
        --workdir workdirs/indoor_sla

The original's recipe for cub200 / dogs / indoor (hankook/SLA train.py,
datasets.py): ResNet-18 from scratch, random resized crops of 224 px + flip,
evaluation at the 224 px centre of the image resized to 256, batch 32 (its
fine-grained runs), SGD lr 0.1 x0.1 at 50 % / 75 % of the steps, weight decay
1e-4, 80 000 steps; a seeded 10 % validation split (val_size) for model
selection. Args: dataset, objective, transform, model, steps, batch_size,
seed, val_size, dtype.

Expected result: the paper's fine-grained table (ResNet-18, rotation), where
SLA+AG and SLA+SD gain several points over the baseline on CUB-200, Stanford
Dogs and MIT-67. Not run here yet: it needs an accelerator.
"""

from sla_jax import config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, dataset="caltech_birds2011", objective="sla",
                             transform="rotation", model="resnet18",
                             steps=80_000, batch_size=32, seed=0, val_size=600,
                             dtype="bfloat16")
  c = config_lib.large_image_config(arg.model, image_size=224)
  c.dataset = arg.dataset
  c.objective = arg.objective
  c.transform = arg.transform
  c.model.dtype = arg.dtype
  c.total_steps = arg.steps
  c.batch_size = arg.batch_size
  c.seed = arg.seed
  c.val_size = arg.val_size
  return c
