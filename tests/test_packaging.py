"""The library core imports nothing of the training stack (a light `pip install sla_jax`)."""

import subprocess
import sys

from conftest import REPO

TRAINING_STACK = ("orbax.checkpoint", "tensorflow_datasets", "grain",
                  "matplotlib", "sklearn", "PIL", "tensorboardX", "tqdm",
                  "ml_collections", "torch")


def test_core_modules_import_without_the_training_stack():
  code = ("import sys\n"
          "import sla_jax, sla_jax.losses, sla_jax.transforms, sla_jax.models, "
          "sla_jax.objectives, sla_jax.feature_transforms, sla_jax.optim, "
          "sla_jax.augment, sla_jax.long_tail, sla_jax.fewshot\n"
          f"loaded = [m for m in {TRAINING_STACK!r} if m in sys.modules]\n"
          "print(loaded)\n")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True,
                        text=True, cwd=REPO, timeout=300, check=True)
  assert proc.stdout.strip() == "[]", proc.stdout


def test_install_requires_is_the_core():
  setup_py = (REPO / "setup.py").read_text()
  core = setup_py[setup_py.index("install_requires=["):].split("]", 1)[0]
  for heavy in ("orbax", "tensorflow-datasets", "grain", "matplotlib",
                "scikit-learn", "pillow", "torch"):
    assert heavy not in core, heavy
  for extra in ('"train"', '"experiments"', '"bench"', '"test"'):
    assert extra in setup_py


def test_all_lists_every_public_module():
  import sla_jax  # pylint: disable=g-import-not-at-top
  assert set(sla_jax.__all__) == {"augment", "feature_transforms", "fewshot",
                                  "long_tail", "losses", "models",
                                  "objectives", "optim", "transforms"}
  for name in sla_jax.__all__:
    module = getattr(sla_jax, name)
    for symbol in module.__all__:
      assert hasattr(module, symbol), (name, symbol)


def test_the_inference_module_loads_on_first_use_as_the_readme_writes_it():
  code = ("import sys, sla_jax\n"
          "assert 'sla_jax.inference' not in sys.modules\n"
          "print(sla_jax.inference.__name__, 'inference' in dir(sla_jax))\n")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True,
                        text=True, cwd=REPO, timeout=300, check=True)
  assert proc.stdout.split() == ["sla_jax.inference", "True"], proc.stderr[-2000:]
