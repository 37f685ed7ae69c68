"""How many GPU kernels one train step launches, counted by compiling it for a GPU, with or without one.

    python -m benchmarks.gpu_kernel_census --config configs/cifar.py:objective=sla \
        --config.model.dtype=bfloat16 --config.steps_per_call=16 [--target h200] [--json]

Compiles the trainer's call of ``steps_per_call`` steps (what ``sla-train``
runs: :func:`sla_jax.bench._train_call` on abstract inputs: 50 000 images of the
config's shape on the device, as in the protocol) with XLA:GPU and reads the
thunk sequence XLA dumps after its thunk passes
(``*.thunk_sequence_after_thunk_passes.txt``): per step, i.e. in the body of
the call's loop, the kernels XLA launches (its fusions; in command buffers,
i.e. CUDA graphs, or alone), the cuDNN convolutions, the copies and the
command buffers that group them. A small network's step on a GPU costs about a
fixed time per kernel whatever the batch (BENCHMARKS.md, "Kernels per step on
a GPU"), so the count is what an optimisation of the per-step floor must cut.

``--target h100|h200`` compiles without a GPU for that GPU
(``benchmarks/gpu_targets/NAME.txtpb``, a deviceless XLA:GPU compile; needs the
CUDA plugin, ``pip install "jax[cuda12]"``, but no GPU); ``--target local``
(the default when JAX sees a GPU) compiles for this machine's GPU. Deviceless
compiles do not autotune: convolution algorithms and the sort are XLA's
defaults there, and the real compile may differ in those (BENCHMARKS.md).
``--config.model.conv_weight_grad=auto`` counts XLA's own gradients, as on a
GPU. Extra XLA flags (e.g. ``--xla_gpu_enable_command_buffer=...``) go in
``XLA_FLAGS`` as usual.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import pathlib
import re
import shutil
import tempfile
from typing import Any

from absl import app, flags, logging

TARGETS_DIR = pathlib.Path(__file__).resolve().parent / "gpu_targets"
_THUNK = re.compile(r"^(?P<indent> *)\d+: (?P<kind>k\w+)\b(?P<rest>.*)$")


def _define_flags():
  """This tool's flags, defined only when it runs."""
  from sla_jax import bench  # pylint: disable=g-import-not-at-top
  return {"config": bench._CONFIG,  # pylint: disable=protected-access
          "json": bench._JSON,  # pylint: disable=protected-access
          "target": flags.DEFINE_string(
              "target", None, "local (this machine's GPU), or a GPU to compile "
              f"for without one: {', '.join(target_names())}. Default: local "
              "when JAX sees a GPU."),
          "images": flags.DEFINE_integer(
              "images", 50_000, "Training images on the device (the batch "
              "draw's population).")}


def target_names() -> list[str]:
  return sorted(p.stem for p in TARGETS_DIR.glob("*.txtpb"))


# ------------------------------------------------------ the thunk sequence ---
@dataclasses.dataclass
class Thunk:
  kind: str                      # kKernel, kConvolution, kCommandBuffer, ...
  name: str                      # the kernel's name where the dump gives one
  children: list["Thunk"] = dataclasses.field(default_factory=list)
  body: list["Thunk"] = dataclasses.field(default_factory=list)  # kWhile


def parse_thunks(text: str) -> list[Thunk]:
  """The top-level thunks of a ``thunk_sequence_after_thunk_passes`` dump, nested by indentation.

  A ``kCommandBuffer``'s commands are its ``children``; the thunks after a
  ``kWhile``'s ``body:`` line its ``body`` (those after ``condition:`` are
  dropped: the loop's predicate, one tiny kernel per trip).
  """
  top: list[Thunk] = []
  stack: list[list[Any]] = []  # [indent, thunk, slot]; slot of a kWhile: its label
  for line in text.splitlines():
    label = line.strip()
    if label in ("condition:", "body:"):
      while stack and stack[-1][1].kind != "kWhile":
        stack.pop()
      if stack:
        stack[-1][2] = label[:-1]
      continue
    m = _THUNK.match(line)
    if not m:
      continue
    indent = len(m.group("indent"))
    rest = m.group("rest").split("]", 1)[-1].split()
    thunk = Thunk(m.group("kind"), rest[0] if rest else "")
    while stack and stack[-1][0] >= indent:
      stack.pop()
    if not stack:
      top.append(thunk)
    elif stack[-1][1].kind != "kWhile":
      stack[-1][1].children.append(thunk)
    elif stack[-1][2] == "body":
      stack[-1][1].body.append(thunk)
    stack.append([indent, thunk, None])
  return top


def _is_kernel(kind: str) -> bool:
  return kind in ("kKernel", "kCustomKernel")


def count(thunks: list[Thunk]) -> dict[str, Any]:
  """Launch counts of a thunk list: kernels (in command buffers and alone), convolutions, ...

  ``other`` counts the remaining kinds (cuBLAS gemms, memsets, sorts, ...).
  """
  out = collections.Counter()
  other = collections.Counter()

  def visit(thunk, in_buffer):
    if thunk.kind == "kCommandBuffer":
      out["command_buffers"] += 1
      for child in thunk.children:
        visit(child, True)
    elif thunk.kind == "kWhile":
      out["loops"] += 1
    elif _is_kernel(thunk.kind):
      out["kernels_in_command_buffers" if in_buffer else "kernels_alone"] += 1
    elif thunk.kind == "kConvolution":
      out["convolutions_in_command_buffers" if in_buffer
          else "convolutions"] += 1
    elif thunk.kind in ("kCopy", "kMemcpy"):
      out["copies"] += 1
    else:
      other[thunk.kind] += 1

  for thunk in thunks:
    visit(thunk, False)
  result = {k: out.get(k, 0) for k in (
      "kernels_in_command_buffers", "kernels_alone", "convolutions",
      "convolutions_in_command_buffers", "copies", "command_buffers", "loops")}
  result["kernels"] = (result["kernels_in_command_buffers"] +
                       result["kernels_alone"])
  result["launches"] = (result["kernels"] + result["convolutions"] +
                        result["convolutions_in_command_buffers"] +
                        result["copies"] + sum(other.values()))
  result["other"] = dict(other)
  return result


def step_census(text: str) -> dict[str, Any]:
  """``{"per_step": counts of the loop body, "outside_loop": ...}`` of a call's dump.

  A call of one step has no loop: its whole program is the step.
  """
  top = parse_thunks(text)
  loops = [t for t in top if t.kind == "kWhile"]
  # The K-step call's loop; a thunk without a loop (K = 1) is one step.
  if len(loops) > 1:
    raise ValueError(f"expected at most one loop at the top level, found "
                     f"{len(loops)}")
  if not loops:
    return {"per_step": count(top), "outside_loop": None}
  return {"per_step": count(loops[0].body),
          "outside_loop": count([t for t in top if t.kind != "kWhile"])}


# ------------------------------------------------------------- compiling ---
def _compile_dump(config, target: str, images: int, dump_dir: str) -> None:
  """Compiles the trainer's call for ``target``, its dumps in ``dump_dir``."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from jax.sharding import NamedSharding, PartitionSpec as P  # pylint: disable=g-import-not-at-top
  from sla_jax import bench, spec as spec_lib, train  # pylint: disable=g-import-not-at-top

  if target == "local":
    mesh = jax.make_mesh((1,), ("data",), devices=jax.devices()[:1])
  else:
    from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
    jax.config.update("jax_platforms", "cpu")
    topology = topologies.get_topology_desc(
        platform="cuda", topology="1x1x1",
        target_config=(TARGETS_DIR / f"{target}.txtpb").read_text())
    mesh = topologies.make_mesh(topology, (1,), ("data",))
  config = config.copy_and_resolve_references()
  if config.model.get("conv_weight_grad") == "auto":
    config.model.conv_weight_grad = "xla"  # what "auto" picks on a GPU
  _, _, image_shape, num_classes = bench.benchmark_data(config)
  spec = spec_lib.resolve(config, num_classes)
  tx, _ = train.make_optimizer(config)
  replicated = NamedSharding(mesh, P())
  abstract = lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype,
                                                       sharding=replicated)
  state = jax.eval_shape(train.make_init(spec.model, tx, tuple(image_shape)),
                         jax.random.key(0))
  state = jax.tree.map(lambda a: abstract(a.shape, a.dtype), state)
  call = bench._train_call(config, spec, tx, mesh)  # pylint: disable=protected-access
  call.full.lower(state, abstract((images,) + tuple(image_shape), jnp.uint8),
                  abstract((images,), jnp.int32),
                  abstract((), jax.random.key(0).dtype)).compile()


def census(config, target: str, images: int, dump_dir: str) -> dict[str, Any]:
  """Compiles the step for ``target`` and counts what one step launches.

  ``XLA_FLAGS`` must name ``--xla_dump_to=dump_dir`` before JAX starts a
  backend (XLA reads its flags once): :func:`main` sets it first.
  """
  _compile_dump(config, target, images, dump_dir)
  dumps = sorted(pathlib.Path(dump_dir).glob(
      "*.thunk_sequence_after_thunk_passes.txt"), key=lambda p: p.stat().st_size)
  if not dumps:
    raise RuntimeError(f"XLA wrote no thunk sequence to {dump_dir}: was "
                       f"--xla_dump_to={dump_dir} in XLA_FLAGS before JAX "
                       f"started?")
  return {"target": target, "objective": config.objective,
          "model": config.model.name, "dtype": config.model.dtype,
          "batch_size": config.batch_size,
          "steps_per_call": config.get("steps_per_call", 1),
          "fused_batch_norm": config.model.get("fused_batch_norm", False),
          "use_fast_variance": config.model.get("use_fast_variance", False),
          "batch_draw": config.get("batch_draw", "permutation"),
          "xla_flags": " ".join(f for f in os.environ.get("XLA_FLAGS", "").split()
                                if not f.startswith("--xla_dump_to")),
          **step_census(dumps[-1].read_text())}  # the train call: the largest


def format_line(result: dict[str, Any]) -> str:
  s = result["per_step"]
  return (f"{result['objective']} {result['model']} {result['dtype']}, "
          f"K={result['steps_per_call']}, target {result['target']}: per step "
          f"{s['launches']} launches = {s['kernels']} kernels "
          f"({s['kernels_in_command_buffers']} in {s['command_buffers']} command "
          f"buffers, {s['kernels_alone']} alone) + {s['convolutions']} "
          f"convolutions ({s['convolutions_in_command_buffers']} more in command "
          f"buffers) + {s['copies']} copies + other {s['other']}")


def main(argv, flag=None):
  """Bad input raises ``app.UsageError``: ``cli.run`` prints it as one line, exit 2."""
  del argv  # cli.run refuses surplus arguments
  logging.set_verbosity(logging.ERROR)
  target = flag["target"].value
  if target not in (None, "local", *target_names()):
    raise app.UsageError(f"--target must be local or one of "
                         f"{', '.join(target_names())}; got {target!r}.")
  if target not in (None, "local") and not _has_cuda_plugin():
    raise app.UsageError("compiling for a GPU needs JAX's CUDA plugin (pip "
                         "install \"jax[cuda12]\"; no GPU needed).")
  dump_dir = tempfile.mkdtemp(prefix="gpu_kernel_census_")
  try:  # the dump flag before anything starts a JAX backend
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_dump_to={dump_dir}").strip()
    if target in (None, "local"):
      import jax  # pylint: disable=g-import-not-at-top
      if jax.default_backend() != "gpu":
        raise app.UsageError(
            "JAX sees no GPU here; pass --target "
            f"({', '.join(target_names())}) to compile for one without it.")
      target = "local"
    result = census(flag["config"].value, target, flag["images"].value,
                    dump_dir)
  finally:
    shutil.rmtree(dump_dir, ignore_errors=True)
  print(json.dumps(result) if flag["json"].value else format_line(result))


def _has_cuda_plugin() -> bool:
  import importlib.util  # pylint: disable=g-import-not-at-top
  return any(importlib.util.find_spec(name) is not None
             for name in ("jax_cuda12_plugin", "jax_cuda13_plugin"))


if __name__ == "__main__":
  from sla_jax import cli  # pylint: disable=g-import-not-at-top
  _flags = _define_flags()
  cli.run(lambda argv: main(argv, _flags), "gpu_kernel_census", tuple(_flags),
          __doc__)
