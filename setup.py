"""sla_jax: Self-supervised Label Augmentation (ICML 2020) in JAX/Flax."""

import pathlib
import re

from setuptools import find_packages, setup

_ROOT = pathlib.Path(__file__).parent
_VERSION = re.search(r'__version__ = "([^"]+)"',
                     (_ROOT / "sla_jax" / "__init__.py").read_text()).group(1)

# sla-train, sla-eval, sla-bench: checkpoints, configs, data sources, logging.
_TRAIN = [
    "orbax-checkpoint>=0.12.8,<0.13",
    "ml-collections>=1.1",
    "tensorflow-datasets>=4.9.10,<5",
    "importlib_resources",  # an undeclared import of tensorflow-datasets
    "absl-py",
    "etils[epath]",
    "grain>=0.2.18",  # host input pipeline for data that stays off device
    "scikit-learn",   # the bundled digits dataset of the offline quickstart
    "pillow",         # image-folder datasets
    "tensorboardX",   # TensorBoard event files without TensorFlow
    "tqdm",
    "flatbuffers",    # jax.export serialization (sla_jax.inference export)
]
# sla_jax.fewshot.svm_logits: MetaOptNet's SVM head (a QP solved by OSQP).
_FEWSHOT = ["jaxopt>=0.8.5"]
# sla-experiments: plots and the Welch test of RESULTS.md.
_EXPERIMENTS = ["matplotlib", "scipy"]

setup(
    name="sla_jax",
    version=_VERSION,
    description=("Self-supervised label augmentation (joint labels over "
                 "classes x input transformations) in JAX/Flax."),
    long_description=(_ROOT / "README.md").read_text(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["sla_jax", "sla_jax.*"]),
    python_requires=">=3.10",
    # The library core (transforms, losses, models, objectives, optim,
    # augment, long_tail, fewshot): what `import sla_jax` needs.
    install_requires=[
        "jax>=0.10.2,<0.11",
        "flax>=0.12.8,<0.13",
        "optax>=0.2.8,<0.3",
        "numpy",
        "dm-pix>=0.4.5",  # sla_jax.augment: RandAugment's geometric ops
    ],
    entry_points={"console_scripts": [
        "sla-train = sla_jax.entry_points:train",
        "sla-bench = sla_jax.entry_points:bench",
        "sla-eval = sla_jax.entry_points:evaluate",
        "sla-experiments = sla_jax.entry_points:experiments",
        "sla-fewshot = sla_jax.entry_points:fewshot"]},
    extras_require={
        "train": _TRAIN,
        "experiments": _TRAIN + _EXPERIMENTS,
        # The PyTorch re-implementation of the original step (benchmarks/).
        # torchvision: the ResNet parity test (tests/test_torchvision_parity.py).
        "bench": _TRAIN + ["torch==2.13.0", "torchvision==0.28.0"],
        "fewshot": _FEWSHOT,
        "test": _TRAIN + _EXPERIMENTS + _FEWSHOT + ["pytest>=8",
                                                   "pytest-xdist>=3"],
    },
)
