"""sla_jax: Self-supervised Label Augmentation (ICML 2020) in JAX/Flax."""

import pathlib
import re

from setuptools import find_packages, setup

_ROOT = pathlib.Path(__file__).parent
_VERSION = re.search(r'__version__ = "([^"]+)"',
                     (_ROOT / "sla_jax" / "__init__.py").read_text()).group(1)

setup(
    name="sla_jax",
    version=_VERSION,
    description=("Self-supervised label augmentation (joint labels over "
                 "classes x input transformations) in JAX/Flax."),
    long_description=(_ROOT / "README.md").read_text(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["sla_jax", "sla_jax.*"]),
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.10.2,<0.11",
        "flax>=0.12.8,<0.13",
        "optax>=0.2.8,<0.3",
        "orbax-checkpoint>=0.12.8,<0.13",
        "ml-collections>=1.1",
        "tensorflow-datasets>=4.9.10,<5",
        # An undeclared import of tensorflow-datasets on Python 3.11.
        "importlib_resources",
        "numpy",
        "absl-py",
        "grain>=0.2.18",  # host input pipeline for data that stays off device
        "scikit-learn",   # the bundled digits dataset of the offline quickstart
        "pillow",         # image-folder datasets
        "tensorboardX",   # TensorBoard event files without TensorFlow
        "tqdm",
        "matplotlib",     # the evidence harness's plots (sla_jax.experiments)
    ],
    entry_points={"console_scripts": ["sla-train = sla_jax.main:run",
                                      "sla-bench = sla_jax.bench:run",
                                      "sla-experiments = sla_jax.experiments:run"]},
    extras_require={
        "test": ["pytest>=8", "pytest-xdist>=3"],
        # The PyTorch re-implementation of the original step (benchmarks/).
        "bench": ["torch==2.13.0"],
    },
)
