#!/usr/bin/env bash
# The Python wheels a lent GPU machine lacks for sla_jax, downloaded into .whl/.
#
#   bash launch/gpu_wheels.sh            # here, with pip and the package registry
#
# The lent machines' image (Python 3.12, jax/jaxlib with CUDA, flax, optax,
# orbax, chex, torch, torchvision) cannot reach a registry, so what sla_jax
# needs beyond it travels as wheels (ignored by git; about 5 MB). Usually run
# through launch/gpu_prepare.sh, which also stages the data and prints the
# device command (its install line first; carry `.whl`).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WHEELS=(ml-collections==1.1.0 dm-pix==0.4.5 grain==0.2.18 array-record==0.8.6
        portpicker==1.6.0 tensorboardX==2.6.5
        pytorch-ignite==0.5.5)  # ignite: the original code's engine (compare_torch --official)
mkdir -p .whl
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 \
  --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any -d .whl "${WHEELS[@]}"
ls .whl
du -sh .whl
