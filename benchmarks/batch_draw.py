"""Cost of the on-device batch draw (``config.batch_draw``): one jitted draw of 128 distinct indices.

    python -m benchmarks.batch_draw [--calls 21] > results/cpu_benchmarks/batch_draw.jsonl

For a CIFAR-sized (50 000) and an ImageNet-sized (1 281 167) training set and
each draw of :data:`sla_jax.input_pipeline.BATCH_DRAWS`: the median of
``--calls`` calls (default 21) after one compile call, one JSON line each with
the machine's load before.
"""

import argparse
import json
import time

import jax
import numpy as np

from sla_jax import bench, input_pipeline


def main(argv=None):
  parser = argparse.ArgumentParser(prog="batch_draw", description=__doc__.split("\n")[0])
  parser.add_argument("--calls", type=int, default=21,
                      help="timed calls of each draw (default 21)")
  calls = parser.parse_args(argv).calls
  if calls < 1:
    parser.error(f"--calls must be at least 1; got {calls}.")
  load = bench.machine_load()
  for n in (50_000, 1_281_167):
    for draw in input_pipeline.BATCH_DRAWS:
      fn = jax.jit(lambda k, d=draw, n=n: input_pipeline.draw_indices(k, n, 128, d))
      fn(jax.random.key(0)).block_until_ready()
      times = []
      for i in range(calls):
        start = time.perf_counter()
        fn(jax.random.key(i)).block_until_ready()
        times.append(time.perf_counter() - start)
      print(json.dumps({"num_items": n, "batch_size": 128, "draw": draw,
                        "median_ms": float(np.median(times) * 1e3), "calls": calls,
                        "backend": jax.default_backend(),
                        "machine_load_before": load}), flush=True)


if __name__ == "__main__":
  main()
