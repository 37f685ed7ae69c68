"""Config helpers: the paper-protocol defaults and big_vision-style ``arg`` parsing.

Config files (``configs/*.py``) define ``get_config(arg=None)``; ``arg`` is the
text after the colon in ``--config configs/cifar.py:objective=sla,depth=20``,
parsed by :func:`parse_arg`. Any field can then be overridden on the command
line with ``--config.field=value``.
"""

from __future__ import annotations

import difflib

import ml_collections


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """Parses ``"k1=v1,k2=v2,flag"`` into a ConfigDict typed by ``defaults``.

  A bare ``flag`` sets a boolean default to True. Unknown keys and values that
  do not fit the default's type raise ValueError naming the valid keys.
  """
  result = ml_collections.ConfigDict(dict(defaults))
  if not arg:
    return result
  for item in arg.split(","):
    if not item:
      continue
    key, has_value, value = item.partition("=")
    if key not in defaults:
      valid = (f"valid arguments are: {', '.join(sorted(defaults))}" if defaults
               else "this file takes no arguments")
      raise ValueError(f"Unknown config argument {key!r}; {valid}.")
    default = defaults[key]
    if not has_value:
      if not isinstance(default, bool):
        raise ValueError(f"Config argument {key!r} needs a value ({key}=...).")
      result[key] = True
    else:
      result[key] = _typed(f"Config argument {key}", default, value)
  return result


def _typed(what: str, default, value: str):
  """``value`` (text) converted to the type of ``default``; ValueError if it cannot."""
  try:
    if isinstance(default, bool):
      if value.lower() not in ("true", "false", "1", "0"):
        raise ValueError
      return value.lower() in ("true", "1")
    if isinstance(default, int):
      return int(value)
    if isinstance(default, float):
      return float(value)
    if isinstance(default, (tuple, list)):
      if len(value.split(",")) != len(default):
        raise ValueError
      return type(default)(float(v) if isinstance(d, float) else int(v)
                           if isinstance(d, int) else v
                           for d, v in zip(default, value.split(",")))
  except ValueError:
    like = (",".join(map(str, default)) if isinstance(default, (tuple, list))
            else repr(default))
    raise ValueError(f"{what}={value!r}: expected a value like {like}.") from None
  return value


def dotted(tree, prefix: str = "") -> dict:
  """``{"model": {"depth": 8}}`` -> ``{"model.depth": 8}`` (flag names; an
  empty group adds nothing)."""
  flat = {}
  for key, value in tree.items():
    if hasattr(value, "items"):
      flat.update(dotted(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def load_file(text: str) -> ml_collections.ConfigDict:
  """The config of ``FILE.py[:ARGS]``, as ``--config FILE.py:ARGS`` loads it
  (the file's own errors propagate)."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  path, has_arg, arg = text.partition(".py:")
  module_spec = importlib.util.spec_from_file_location(
      "_config_file", path + ".py" if has_arg else path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None) if has_arg else module.get_config()


def unknown_field(config, key: str) -> tuple[str, list[str]] | None:
  """None if ``config`` has the dotted field ``key``; else the first missing
  dotted path and the nearest existing ones."""
  node, parts = config, key.split(".")
  for i, part in enumerate(parts):
    if not hasattr(node, "keys") or part not in node:
      names = list(node.keys()) if hasattr(node, "keys") else []
      return (".".join(parts[:i + 1]),
              [".".join([*parts[:i], c]) for c in
               difflib.get_close_matches(part, names, n=3, cutoff=0.6)])
    node = node[part]
  return None


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: dict[str, str]) -> ml_collections.ConfigDict:
  """A copy of ``config`` with ``{"a.b": "text"}`` set, typed like the fields they replace.

  Unknown fields raise ValueError naming the valid ones.
  """
  config = ml_collections.ConfigDict(config.to_dict())
  for key, value in overrides.items():
    unknown = unknown_field(config, key)
    if unknown is not None:
      missing, close = unknown
      *group, _ = missing.split(".")
      node = config
      for part in group:  # the fields beside the missing one
        node = node[part]
      hint = (f"did you mean {' or '.join(close)}?" if close else
              f"fields here: {', '.join(sorted(node.keys()))}."
              if hasattr(node, "keys") else
              f"{'.'.join(group)} is a single value, not a group of fields.")
      raise ValueError(f"Unknown config field {key!r}; {hint}")
    *parents, name = key.split(".")
    node = config
    for parent in parents:
      node = node[parent]
    default = node[name]
    if isinstance(default, ml_collections.ConfigDict):
      raise ValueError(f"--config.{key} is a group of fields: set one of them, "
                       f"--config.{key}.FIELD=VALUE (fields: "
                       f"{', '.join(sorted(default.keys()))}).")
    try:
      node[name] = value if default is None else _typed(
          f"--config.{key}", default, value)
    except TypeError as e:  # ml_collections: a typed field refused the value
      raise ValueError(f"--config.{key}={value!r}: {e}") from None
  return config


def base_config() -> ml_collections.ConfigDict:
  """The original CIFAR protocol (Lee et al. 2020, hankook/SLA ``train.py``)."""
  c = ml_collections.ConfigDict()
  c.seed = 0

  # Data. dataset: "digits" (scikit-learn, offline), a TFDS name ("cifar10",
  # "cifar100", ...), or "folder:<root>" with root/{train,test}/<class>/*.jpg.
  c.dataset = "cifar10"
  c.data_dir = ml_collections.FieldReference(None, field_type=str)  # TFDS dir
  c.test_split = "test"         # the TFDS split evaluated as "test"
  c.val_size = 5000             # held out of the training split, seeded
  c.data_seed = 0               # val split / subsample; fixed across c.seed
  c.samples_per_class = ml_collections.FieldReference(None, field_type=int)
  c.skip_corrupt = False        # folder: skip unreadable images (counted)
  # Long-tailed training set (sla_jax.long_tail): class i keeps
  # n_max * ratio^(-i/(N-1)) of its images (seeded); validation and test stay
  # balanced. 1.0 = all images.
  c.imbalance_ratio = 1.0
  # Images of any size (sla_jax.image_ops, data_on_device=False): > 0 reads
  # random resized crops of image_size x image_size for training (area
  # fraction crop_scale, aspect ratio crop_ratio: Inception-style) and, for
  # evaluation, the shorter side resized to eval_resize (0: image_size / 0.875)
  # and the central crop. 0: images are used at their stored (common) size.
  c.image_size = 0
  c.crop_scale = (0.08, 1.0)
  c.crop_ratio = (3 / 4, 4 / 3)
  c.eval_resize = 0
  c.crop_padding = 4            # random crop with zero padding
  c.flip = True                 # random horizontal flip
  # Strong augmentation on the device after crop / flip and before the M views
  # (sla_jax.augment): name = none | cutout | cutmix | mixup | randaugment |
  # autoaugment, or several joined by "+" (e.g. "randaugment+cutout",
  # "autoaugment+cutout"; a mixing op last). Each
  # op takes its parameters from its own block. Mixing ops train on mixtures
  # of the (joint) labels.
  c.augment = ml_collections.ConfigDict({
      "name": "none",
      "cutout": {"size": 16, "fill": 0.0},   # DeVries & Taylor: 16 px on CIFAR
      "cutmix": {"alpha": 1.0},              # Yun et al.
      "mixup": {"alpha": 1.0},               # Zhang et al. on CIFAR
      "randaugment": {"num_ops": 2, "magnitude": 9.0, "fill": 0.5},
      # Cubuk et al. (2019): cifar10 | imagenet | svhn (learned policies).
      "autoaugment": {"policy": "cifar10", "fill": 0.5},
  })
  # True: the training set lives on the devices (uint8) and batches are drawn
  # inside the step. False: a grain host pipeline reads each process's share of
  # every batch from the (lazy, for TFDS) source, for datasets too big for that.
  c.data_on_device = True
  # How the on-device step draws its batch: "permutation" (shuffle all, every
  # recorded run) or "top_k" (same distribution, no sort; input_pipeline).
  c.batch_draw = "permutation"
  c.host_threads = 8            # grain reader threads (data_on_device=False)

  # Objective: baseline | da | mt | sla | sla_sd.
  c.objective = "sla"
  c.transform = "rotation"      # any name from sla_jax.transforms
  c.large_loss = False
  c.temperature = 1.0
  # LDAM-DRW (Cao et al. 2019; sla_jax.long_tail), for joint labels too:
  # ldam.max_margin: the rarest class's margin in logit units (0 = plain
  # cross-entropy; Cao et al.'s 0.5 on a cosine head of scale 30 is 15.0 with
  # --config.model.cosine_scale=30). drw.start: fraction of total_steps after
  # which each image's loss is weighted by its class's effective-number weight
  # (negative = never; Cao et al.: 0.8).
  c.ldam = ml_collections.ConfigDict({"max_margin": 0.0})
  c.drw = ml_collections.ConfigDict({"start": -1.0, "beta": 0.9999})
  # Feature-level pretext task (sla / sla_sd; sla_jax.feature_transforms): after
  # model stage `stage` (0 = stem, 1-3), each row becomes V variants, each
  # discarding one of `groups` channel groups (+ the untouched map first if
  # `identity`); joint labels over class x input view x variant. 0: off.
  c.feature_transform = ml_collections.ConfigDict()
  c.feature_transform.groups = 0
  c.feature_transform.stage = 2
  c.feature_transform.identity = True

  # The model: a sla_jax.models registry name and its keyword arguments.
  c.model = ml_collections.ConfigDict()
  c.model.name = "cifar_resnet"
  c.model.depth = 32
  c.model.dtype = "float32"     # "bfloat16": bf16 compute, f32 parameters
  # Conv weight gradients: "xla", "matmul" (faster on XLA:CPU), or "auto"
  # (matmul on the CPU backend, xla on GPU/TPU). Same values to rounding.
  c.model.conv_weight_grad = "auto"
  # BatchNorm variance in one pass (E[x^2] - E[x]^2, faster) instead of
  # PyTorch's two-pass numerics.
  c.model.use_fast_variance = False
  # BatchNorm with a closed-form backward pass (sla_jax.models.batch_norm):
  # same forward values, gradients equal to float rounding, fewer GPU kernels.
  c.model.fused_batch_norm = False

  # Optimisation: SGD, lr x0.1 at 50 % and 75 % of the steps.
  c.batch_size = 128            # original images per step (x M views)
  c.total_steps = 80_000
  c.lr = 0.1
  c.momentum = 0.9
  c.weight_decay = 1e-4
  c.lr_decay_at = (0.5, 0.75)

  # Evaluation, logging, checkpoints.
  # Steps per jitted call (on-device data only): fewer host round-trips on
  # accelerators; K > 1 runs a rolled loop (on the CPU the same run bit for
  # bit for every K, 1 included). Pick K dividing log / eval / checkpoint_every
  # (20, 25, 50, 100 here) so that every call has a compile-time trip count.
  c.steps_per_call = 1
  c.eval_every = 1000
  c.eval_batch_size = 500       # images per eval step (rounded up to devices x M)
  c.log_every = 100
  c.checkpoint_every = 1000
  c.keep_checkpoints = 2
  c.num_devices = -1            # -1: all devices JAX sees (on a CPU the tools
                                # make one per core: sla_jax.xla_env)
  return c


def large_image_config(model: str, image_size: int) -> ml_collections.ConfigDict:
  """:func:`base_config` for photos of any size and an ImageNet-layout model.

  The original's large-data recipe (hankook/SLA ``datasets.py``):
  ``RandomResizedCrop(image_size)`` + flip for training, ``Resize`` +
  ``CenterCrop`` for evaluation, read by the host pipeline; ``model`` is any
  registry name (``resnet18``, ``resnet50``, ``wide_resnet``, ...), and its
  scalar arguments become ``config.model`` fields with their defaults (e.g. a
  wide ResNet's ``depth``, ``width`` and ``dropout_rate``). The
  input scaling stays the CIFAR one, ``(x - 0.5) / 0.5``, where the original
  uses the ImageNet mean and std: a per-channel affine change of the input
  that the first convolution's BatchNorm absorbs (up to the zero padding).
  """
  c = base_config()
  c.image_size = image_size
  c.data_on_device = False
  c.crop_padding = 0
  c.model = ml_collections.ConfigDict({
      "name": model, "dtype": "float32", "conv_weight_grad": "auto",
      "use_fast_variance": False, "fused_batch_norm": False})
  from sla_jax import models  # pylint: disable=g-import-not-at-top  (keeps configs light)
  for arg, default in models.defaults(model).items():  # depth, width, ...
    if arg not in c.model and isinstance(default, (bool, int, float, str)):
      c.model[arg] = default
  return c
