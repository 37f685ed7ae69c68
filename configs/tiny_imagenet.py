"""Tiny-ImageNet (200 classes, 64 px photos) with ResNet-18: random resized crops at 64 px.

    python -m sla_jax.main --config configs/tiny_imagenet.py:dataset=folder:/data/tiny-imagenet-200,objective=sla_sd \
        --workdir workdirs/tiny_imagenet_sla_sd

Data: an image folder root/{train,test}/<class>/*.JPEG (tiny-ImageNet's
labelled val images sorted into class folders as test/). ResNet-18 (ImageNet
layout), random resized crops of 64 px (area 0.35-1, milder than Inception's
0.08 at this resolution) + flip, evaluation at the 64 px centre of the image
resized to 73, batch 128 x M views, SGD lr 0.1 x0.1 at 50 % / 75 %, 80 000 steps,
a seeded 5 000-image validation split. Args: dataset, objective, transform,
model, steps, batch_size, seed, dtype.

Expected result: SLA+AG and SLA+SD above the baseline, as in the paper's
tiny-ImageNet row (ResNet-18 at 224 px, the original's large transform); this
64 px variant has not been run here (needs an accelerator). The CPU-sized
100-class relative is configs/tinyimagenet100_32.py.
"""

from sla_jax import config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, dataset="folder:/data/tiny-imagenet-200",
                             objective="sla", transform="rotation",
                             model="resnet18", steps=80_000, batch_size=128,
                             seed=0, dtype="bfloat16")
  c = config_lib.large_image_config(arg.model, image_size=64)
  c.crop_scale = (0.35, 1.0)
  c.dataset = arg.dataset
  c.objective = arg.objective
  c.transform = arg.transform
  c.model.dtype = arg.dtype
  c.total_steps = arg.steps
  c.batch_size = arg.batch_size
  c.seed = arg.seed
  return c
