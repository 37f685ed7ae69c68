"""benchmarks/gpu_kernel_census.py: counting what one train step launches on a GPU."""

import importlib.util
import json
import pathlib
import subprocess
import sys

import pytest

from benchmarks import gpu_kernel_census as census

REPO = pathlib.Path(__file__).resolve().parents[1]
HAS_CUDA_PLUGIN = any(importlib.util.find_spec(name) is not None
                      for name in ("jax_cuda12_plugin", "jax_cuda13_plugin"))

# The layout XLA:GPU dumps (abridged from a real dump of the protocol step).
K_STEP_CALL = """\
000: kCommandBuffer [source       | next=065 (1)]
    001: kCopy         [source | sink] kCopy
    002: kCustomKernel [source | sink] loop_broadcast_fusion grid: [1, 1, 1] threads: [16, 1, 1]  shared_memory: 0 bytes
065: kWhile         [prev=000 (1) | next=000 (1)]
condition:
    066: kCustomKernel [source | sink] loop_compare_fusion grid: [1, 1, 1] threads: [1, 1, 1]  shared_memory: 0 bytes
  body:
    000: kCommandBuffer [source       | next=140 (1)]
        136: kCustomKernel [prev=135 (1)  | next=137 (1) ] sort_31_1__13 grid: [64, 1, 1] threads: [128, 1, 1]  shared_memory: 0 bytes
        137: kCustomKernel [prev=136 (1)  | next=138 (1) ] loop_convert_fusion_31 grid: [768, 1, 1] threads: [128, 1, 1]  shared_memory: 0 bytes
        138: kCopy         [prev=137 (1)  | sink        ] kCopy
    140: kConvolution   [prev=000 (1) | next=000 (1)] kConvolution
    000: kCommandBuffer [prev=140 (1) | next=148 (1)]
        141: kCustomKernel [source       | next=142 (1)] input_reduce_fusion_129 grid: [512, 1, 1] threads: [128, 1, 1]  shared_memory: 0 bytes
    148: kConvolution   [prev=000 (1) | next=000 (1)] kConvolution
    666: kCustomKernel  [prev=000 (2) | sink        ] loop_add_fusion_74 grid: [1, 1, 1] threads: [32, 1, 1]  shared_memory: 0 bytes
    667: kGemm          [prev=666 (1) | sink        ] kGemm
000: kCommandBuffer [prev=065 (1) | sink]
    811: kCustomKernel [source | sink] loop_add_fusion_97 grid: [1, 1, 1] threads: [1, 1, 1]  shared_memory: 0 bytes
    812: kCustomKernel [source | sink] input_transpose_fusion_61 grid: [1, 1, 1] threads: [128, 1, 1]  shared_memory: 0 bytes
"""


def test_counts_the_loop_body_as_one_step():
  result = census.step_census(K_STEP_CALL)
  step = result["per_step"]
  assert step["kernels_in_command_buffers"] == 3
  assert step["kernels_alone"] == 1
  assert step["kernels"] == 4
  assert step["convolutions"] == 2
  assert step["copies"] == 1
  assert step["command_buffers"] == 2
  assert step["other"] == {"kGemm": 1}
  assert step["launches"] == 4 + 2 + 1 + 1
  outside = result["outside_loop"]
  assert (outside["kernels"], outside["copies"], outside["command_buffers"],
          outside["loops"]) == (3, 1, 2, 0)


ONE_STEP_CALL = """\
000: kCommandBuffer [source       | next=065 (1)]
    001: kCustomKernel [source | sink] loop_convert_fusion grid: [4, 1, 1] threads: [128, 1, 1]  shared_memory: 0 bytes
    002: kCustomKernel [source | sink] input_reduce_fusion grid: [1, 1, 1] threads: [128, 1, 1]  shared_memory: 0 bytes
003: kConvolution   [prev=000 (1) | next=000 (1)] kConvolution
004: kCopy         [source | sink] kCopy
"""


def test_a_call_without_a_loop_is_one_step():
  result = census.step_census(ONE_STEP_CALL)
  assert result["outside_loop"] is None
  step = result["per_step"]
  assert (step["kernels"], step["convolutions"], step["copies"],
          step["command_buffers"], step["launches"]) == (2, 1, 1, 1, 4)


def test_nested_names_and_kinds():
  top = census.parse_thunks(K_STEP_CALL)
  assert [t.kind for t in top] == ["kCommandBuffer", "kWhile", "kCommandBuffer"]
  loop = top[1]
  assert [t.kind for t in loop.body] == ["kCommandBuffer", "kConvolution",
                                         "kCommandBuffer", "kConvolution",
                                         "kCustomKernel", "kGemm"]
  assert loop.body[0].children[0].name == "sort_31_1__13"
  assert not loop.children  # the condition's kernel is not a step's


def _run(*args, env=None):
  return subprocess.run([sys.executable, "-m", "benchmarks.gpu_kernel_census",
                         *args], capture_output=True, text=True, cwd=REPO,
                        timeout=600, env=env)


def test_bad_target_is_one_clear_line():
  proc = _run("--config", "configs/quickstart.py", "--target", "tpu9")
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1] == (
      "gpu_kernel_census: error: --target must be local or one of h100, "
      "h200; got 'tpu9'.")


def test_missing_config_is_one_clear_line():
  proc = _run("--target", "h200")
  assert proc.returncode == 2
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("gpu_kernel_census: error: ")
  assert "--config" in lines[0]


@pytest.mark.skipif(HAS_CUDA_PLUGIN, reason="JAX's CUDA plugin is installed")
def test_without_the_cuda_plugin_says_what_to_install():
  proc = _run("--config", "configs/quickstart.py", "--target", "h200")
  assert proc.returncode == 2
  assert "needs JAX's CUDA plugin" in proc.stderr.strip().splitlines()[-1]


@pytest.mark.skipif(not HAS_CUDA_PLUGIN,
                    reason="needs JAX's CUDA plugin (no GPU needed)")
def test_fused_batch_norm_launches_fewer_kernels_per_step():
  def per_step(*flags):
    proc = _run("--config", "configs/quickstart.py", "--target", "h200",
                "--json", "--config.steps_per_call=4", *flags)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])["per_step"]

  plain = per_step()
  fused = per_step("--config.model.fused_batch_norm=true")
  assert plain["convolutions"] == fused["convolutions"] > 0
  assert fused["kernels"] < plain["kernels"]


def test_local_target_without_a_gpu_is_one_clear_line():
  import jax  # pylint: disable=g-import-not-at-top
  if jax.default_backend() == "gpu":
    pytest.skip("this machine has a GPU")
  proc = _run("--config", "configs/quickstart.py")
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1].startswith(
      "gpu_kernel_census: error: JAX sees no GPU here; pass --target")
