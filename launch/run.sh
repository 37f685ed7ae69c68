#!/usr/bin/env bash
# Single host, all local accelerators (or the CPU): install into a venv once, then train.
#
#   bash launch/run.sh --config configs/cifar.py:objective=sla_sd --workdir workdirs/sla_sd
#
# On a GPU host set JAX_EXTRA to the jax extra of its CUDA (e.g. cuda12; see the JAX
# install guide) before the first run; the step is one jit over
# a ('data',) mesh of every local device, so batch_size must divide by their number.
# Multi-host TPU pods / GPU clusters: launch/tpu_pod.sh, launch/gpu_host.sh (README "Scaling out").
# Paths in the arguments are the caller's (relative to where it runs); the venv
# is the repository's .venv unless VENV names another.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
VENV=${VENV:-$repo/.venv}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  if [ -n "${JAX_EXTRA:-}" ]; then "$VENV/bin/pip" install -q "jax[${JAX_EXTRA}]>=0.10.2,<0.11"; fi
  "$VENV/bin/pip" install -q -e "$repo[train]"
fi
exec "$VENV/bin/python" -m sla_jax.main "$@"
