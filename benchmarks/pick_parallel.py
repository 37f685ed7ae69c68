"""How many training runs to put on one accelerator at once, from the bench's own rows.

    python -m benchmarks.pick_parallel BENCH_JSONL [--min_gain 1.15]

Reads the rows of ``benchmarks/gpu_suite.sh bench`` (``bench.jsonl``): the
single SLA bench at K = 16 (part ``sla_k16``) and the concurrent ones (parts
``concurrent_2``, ``concurrent_3``: N benches of the same step at once, rows
tagged ``"concurrent": N``). Prints one number, the N whose summed views/s is
highest, and 1 unless that sum beats the single bench by ``--min_gain``; one
line on stderr says why. ``gpu_suite.sh bench_then_grid`` with
``PARALLEL=auto`` trains the grid with that many runs at a time
(``sla-experiments --parallel``), so a device call that measures the
concurrency also uses it.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
from typing import Iterable


# What makes two bench rows the same step: the single run and the concurrent
# ones are compared only where all of these agree.
_SAME_STEP = ("what", "objective", "transform", "model", "depth", "dtype",
              "batch_size", "steps_per_call", "batch_draw", "use_fast_variance",
              "fused_batch_norm", "xla_flags")


def _step(row: dict) -> tuple:
  return tuple(row.get(key) for key in _SAME_STEP)


def pick(rows: Iterable[dict], min_gain: float = 1.15) -> tuple[int, str]:
  """(runs at a time, the reason in words) from bench.jsonl's rows.

  The concurrent rows' summed views/s against the median of the single rows
  of the same step (same config, dtype, K and XLA flags).
  """
  rows = [r for r in rows if r.get("what") == "train_step" and r.get("views_per_s")]
  concurrent = [r for r in rows if "concurrent" in r]
  steps = {_step(r) for r in concurrent}
  if not concurrent:
    return 1, "no concurrent rows (parts concurrent_N): 1 run at a time"
  if len(steps) > 1:
    return 1, "concurrent rows of different steps: 1 run at a time"
  single = [r["views_per_s"] for r in rows
            if "concurrent" not in r and _step(r) in steps]
  if not single:
    return 1, ("no single run of the concurrent rows' step (parts sla_k16 and "
               "concurrent_N): 1 run at a time")
  base = statistics.median(single)
  totals = {}
  for n in sorted({r["concurrent"] for r in concurrent}):
    group = [r["views_per_s"] for r in concurrent if r["concurrent"] == n]
    if len(group) == n:  # a part stopped early reports fewer rows: not a measurement
      totals[n] = sum(group)
  if not totals:
    return 1, "no complete concurrent rows (a part stopped early): 1 run at a time"
  best = max(totals, key=totals.get)
  gain = totals[best] / base
  sums = ", ".join(f"{n} at once {v:,.0f}" for n, v in totals.items())
  reason = f"views/s: 1 run {base:,.0f}, {sums}"
  if gain < min_gain:
    return 1, f"{reason}; best gain {gain:.2f}x < {min_gain}: 1 run at a time"
  return best, f"{reason}: {best} runs at a time ({gain:.2f}x)"


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("bench_jsonl", type=pathlib.Path)
  parser.add_argument("--min_gain", type=float, default=1.15,
                      help="smallest summed-throughput gain that pays for N > 1")
  args = parser.parse_args(argv)
  if not args.bench_jsonl.is_file():
    print(f"pick_parallel: no file {args.bench_jsonl}: run the bench parts "
          "sla_k16 and concurrent_N first", file=sys.stderr)
    return 2
  rows = []
  for line in args.bench_jsonl.read_text().splitlines():
    if line.startswith("{"):
      try:
        rows.append(json.loads(line))
      except json.JSONDecodeError:
        continue  # a part killed mid-line
  n, reason = pick(rows, args.min_gain)
  print(f"pick_parallel: {reason}", file=sys.stderr)
  print(n)
  return 0


if __name__ == "__main__":
  sys.exit(main())
