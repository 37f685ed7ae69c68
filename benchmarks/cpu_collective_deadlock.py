"""XLA:CPU's collective deadlock on several CPU devices, and two ways around it.

    python -m benchmarks.cpu_collective_deadlock >> results/cpu_benchmarks/cpu_collective_deadlock.jsonl

A jitted step whose batch is sharded over D CPU devices (so each call has an
all-reduce) is dispatched ``--steps`` times. With XLA's own PjRt pool
(max(cores, D) threads) on a D-core machine and no waiting, more than 32
queued calls per device make a dispatch block a pool thread on the device's
in-flight limit, the next all-reduce cannot get its D threads, and XLA aborts
after its rendezvous timeout. Waiting for the call ``MAX_CALLS_IN_FLIGHT``
back (what the trainer does, :data:`sla_jax.train.MAX_CALLS_IN_FLIGHT`), or
``PJRT_NPROC=2D`` threads, lets the same loop finish. Each variant runs in a
fresh process; one JSON line each (exit code, whether it finished, seconds,
load).
"""

import argparse
import json
import os
import subprocess
import sys
import time

CHILD = r"""
import sys
import jax, jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
steps, max_in_flight = int(sys.argv[1]), int(sys.argv[2])  # 0: no waiting
mesh = jax.make_mesh((jax.device_count(),), ("d",),
                     axis_types=(jax.sharding.AxisType.Auto,))
x = jax.device_put(jnp.ones((512, 1024)), NamedSharding(mesh, P("d")))
w = jax.device_put(jnp.full((1024, 1024), 1e-3), NamedSharding(mesh, P()))
step = jax.jit(lambda w, x: w - 1e-3 * x.T @ jnp.tanh(x @ w) / x.shape[0])
w = step(w, x).block_until_ready()
in_flight = []
for _ in range(steps):
  w = step(w, x)
  in_flight.append(w)
  if max_in_flight and len(in_flight) > max_in_flight:
    in_flight.pop(0).block_until_ready()
w.block_until_ready()
print("finished")
"""


def run_variant(devices: int, steps: int, pjrt_nproc: str | None,
                max_in_flight: int, timeout_s: int) -> dict:
  """One fresh process; ``pjrt_nproc`` None = XLA's own thread count; ``max_in_flight`` 0 = no waiting."""
  from sla_jax import bench  # pylint: disable=g-import-not-at-top
  env = {k: v for k, v in os.environ.items()
         if k not in ("PJRT_NPROC", "NPROC", "JAX_NUM_CPU_DEVICES")}
  env.update(JAX_PLATFORMS="cpu", XLA_FLAGS=(
      f"--xla_force_host_platform_device_count={devices} "
      f"--xla_cpu_collective_call_terminate_timeout_seconds={timeout_s} "
      "--xla_cpu_collective_call_warn_stuck_timeout_seconds=5"))
  if pjrt_nproc is not None:
    env["PJRT_NPROC"] = pjrt_nproc
  load = bench.machine_load()
  start = time.perf_counter()
  proc = subprocess.run([sys.executable, "-c", CHILD, str(steps),
                         str(max_in_flight)], env=env,
                        capture_output=True, text=True,
                        timeout=timeout_s + 300)
  return {"devices": devices, "steps": steps,
          "pjrt_nproc": pjrt_nproc or "xla default",
          "max_in_flight": max_in_flight or "unbounded",
          "returncode": proc.returncode,
          "finished": proc.stdout.strip().endswith("finished"),
          "rendezvous_timeout": "Termination timeout" in proc.stderr,
          "seconds": round(time.perf_counter() - start, 2),
          "machine_load_before": load}


def main(argv=None) -> int:
  from sla_jax import train  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--devices", type=int, default=2)
  parser.add_argument("--steps", type=int, default=100)
  parser.add_argument("--rounds", type=int, default=1)
  parser.add_argument("--timeout_s", type=int, default=10,
                      help="XLA's rendezvous termination timeout")
  args = parser.parse_args(argv)
  if args.devices < 2 or args.steps < 1 or args.rounds < 1:
    parser.error("--devices must be >= 2, --steps and --rounds >= 1")
  variants = ((None, 0), (None, train.MAX_CALLS_IN_FLIGHT),
              (str(2 * args.devices), 0))
  for _ in range(args.rounds):
    for nproc, max_in_flight in variants:
      print(json.dumps(run_variant(args.devices, args.steps, nproc,
                                   max_in_flight, args.timeout_s)), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
