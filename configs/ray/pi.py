"""Estimate pi by Monte Carlo on a Ray cluster: one small, real computation per sweep point.

Usage: python pi.py --seed N --samples N
Prints {"seed", "samples", "estimate", "error"} as JSON (``bulk logs`` shows it), and exits 1
when the estimate is off by more than ``--max-error`` (default 0.5: never, for a fair sample).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys

parser = argparse.ArgumentParser()
parser.add_argument("--seed", type=int, required=True)
parser.add_argument("--samples", type=int, required=True)
parser.add_argument("--max-error", type=float, default=0.5)
args = parser.parse_args()

rng = random.Random(args.seed)  # noqa: S311 - a seeded Monte Carlo estimate, not a secret
inside = sum(1 for _ in range(args.samples) if rng.random() ** 2 + rng.random() ** 2 <= 1.0)
estimate = 4 * inside / args.samples
error = abs(estimate - math.pi)
print(  # noqa: T201 - the job's output is its result (bulk logs shows it)
    json.dumps({"seed": args.seed, "samples": args.samples, "estimate": estimate, "error": error})
)
sys.exit(0 if error <= args.max_error else 1)
