"""How long the trainer's initial state takes to compile, XLA's default vs ``train.jit_init``.

    python -m benchmarks.init_compile --model cifar_resnet32 --image_size 32 >> results/cpu_benchmarks/init_compile.jsonl

Each measurement runs in a fresh process (XLA caches compiled programs per
process), alternating the two ways ``--rounds`` times; one JSON line each with
the compile time, a SHA-256 of the initial state's bytes (equal digests = the
same bits) and the machine's load before.
"""

import argparse
import hashlib
import json
import subprocess
import sys
import time


def _measure(model_name: str, image_size: int, quick: bool) -> dict:
  """One compile + run of the initial state in this process."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from sla_jax import bench, models, optim, train  # pylint: disable=g-import-not-at-top
  load = bench.machine_load()
  model = models.get(model_name, heads={"joint": 40, "single": 10})
  init = train.make_init(model, optim.sgd(0.1), (image_size, image_size, 3))
  jitted = train.jit_init(init) if quick else jax.jit(init)
  key = jax.random.key(0)
  start = time.perf_counter()
  compiled = jitted.lower(key).compile()
  compile_s = time.perf_counter() - start
  state = jax.block_until_ready(compiled(key))
  digest = hashlib.sha256(b"".join(np.asarray(leaf).tobytes()
                                   for leaf in jax.tree.leaves(state)))
  return {"model": model_name, "image_size": image_size,
          "init": "train.jit_init" if quick else "jax.jit",
          "compile_s": round(compile_s, 3), "sha256": digest.hexdigest()[:16],
          "backend": jax.default_backend(), "machine_load_before": load}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="cifar_resnet32")
  parser.add_argument("--image_size", type=int, default=32)
  parser.add_argument("--rounds", type=int, default=2)
  parser.add_argument("--_one", choices=("quick", "default"), help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.rounds < 1 or args.image_size < 8:
    parser.error("--rounds must be >= 1 and --image_size >= 8")
  if args._one:  # pylint: disable=protected-access
    print(json.dumps(_measure(args.model, args.image_size, args._one == "quick")))  # pylint: disable=protected-access
    return
  for _ in range(args.rounds):
    for way in ("default", "quick"):
      out = subprocess.run(
          [sys.executable, "-m", "benchmarks.init_compile", "--model", args.model,
           "--image_size", str(args.image_size), "--_one", way],
          check=True, capture_output=True, text=True).stdout
      print(out.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
  main()
