"""Estimate pi by Monte Carlo: one small, real computation per sweep point.

Usage: estimate_pi.py --seed N --samples N --out FILE
Writes {"seed", "samples", "estimate", "error"} as JSON to FILE.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--seed", type=int, required=True)
parser.add_argument("--samples", type=int, required=True)
parser.add_argument("--out", type=Path, required=True)
args = parser.parse_args()

rng = random.Random(args.seed)  # noqa: S311 - a seeded Monte Carlo estimate, not a secret
inside = sum(1 for _ in range(args.samples) if rng.random() ** 2 + rng.random() ** 2 <= 1.0)
estimate = 4 * inside / args.samples
args.out.parent.mkdir(parents=True, exist_ok=True)
result = {
    "seed": args.seed,
    "samples": args.samples,
    "estimate": estimate,
    "error": abs(estimate - math.pi),
}
args.out.write_text(json.dumps(result) + "\n")
