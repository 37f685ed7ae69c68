"""ImageNet with ResNet-50: the original's large-scale recipe (hankook/SLA train.py, datasets.py).

    # TFDS imagenet2012 prepared offline (array_record) in a bucket; one host:
    python -m sla_jax.main --config configs/imagenet.py:objective=sla \
        --config.data_dir=gs://BUCKET/tensorflow_datasets --workdir gs://BUCKET/sla/imagenet_sla
    # A TPU pod: launch/tpu_pod.sh (every host runs the same command).

ResNet-50 (torchvision layout, sla_jax.models.resnet), random resized crops of
224 px + flip, evaluation at the 224 px centre of the image resized to 256,
SGD (momentum 0.9, weight decay 1e-4 on every parameter), lr 0.1 x0.1 at each
third of training (the original's StepLR(num_iterations // 3)), large loss on
(SLA's loss summed over the M views, as the original's README advises for
ImageNet), a seeded 10 000-image validation split held out of the training
set for model selection, and TFDS's ``validation`` split (the usual ImageNet
"val") as the test set (``test_split``). Args: objective, transform, model
(resnet18/34/50), steps, batch_size (global, split over every device of
every host), seed, dtype.

Expected result: the paper's ImageNet / ResNet-50 comparison (SLA+AG and
SLA+SD above the baseline's top-1). Not run here yet: no session so far had the
accelerator time; RESULTS.md will carry the first run with its command.
"""

from sla_jax import config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, objective="sla", transform="rotation",
                             model="resnet50", steps=80_000, batch_size=256,
                             seed=0, dtype="bfloat16")
  c = config_lib.large_image_config(arg.model, image_size=224)
  c.dataset = "imagenet2012"
  c.test_split = "validation"
  c.objective = arg.objective
  c.transform = arg.transform
  c.large_loss = True
  c.model.dtype = arg.dtype
  c.total_steps = arg.steps
  c.batch_size = arg.batch_size
  c.seed = arg.seed
  c.lr_decay_at = (1 / 3, 2 / 3)
  c.val_size = 10_000
  c.eval_every = 5000
  c.checkpoint_every = 1000
  c.eval_batch_size = 1024
  return c
