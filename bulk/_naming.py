"""What a job is made from and what it is called: sweep points, their keys, job names.

A point's key is its identity across reruns; a job's name (``<run>-<key>``, plus
``-<attempt>`` after a retry) is how bulk finds the job on the service after a crash.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["Point", "job_name", "point_key", "render_context"]


@dataclass(frozen=True, slots=True)
class Point:
    """One expanded sweep point: what one job is made from.

    Attributes:
        index: position in the expansion, from 0; stable across reruns of the same sweep.
        key: a short hash of the variables, independent of their order and of the point's
            position; the job's identity.
        origin: ``file:line`` of the row it came from, or ``sweep`` for a file-less sweep.
        variables: the sweep's own variables (no ``_``-prefixed ones).
    """

    index: int
    key: str
    origin: str
    variables: dict[str, Any]


def point_key(variables: dict[str, Any], occurrence: int = 0) -> str:
    """The stable key of a set of variables: 16 hex digits of BLAKE2b over canonical JSON.

    64 bits keep the chance of any collision in a 10⁷-point sweep below one in 10⁵; a
    collision is still caught (the journal's key is unique) and reported as a duplicate.

    Args:
        variables: the point's variables.
        occurrence: 0 for the first point with these variables; n for the n-th repeat when
            duplicates are allowed.
    """
    data = orjson.dumps(variables, option=orjson.OPT_SORT_KEYS)
    if occurrence:
        data += b"#%d" % occurrence
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def job_name(run: str, key: str, attempt: int = 1) -> str:
    """The deterministic name of a point's job for one attempt."""
    return f"{run}-{key}" if attempt == 1 else f"{run}-{key}-{attempt}"


def render_context(point: Point, run: str, attempt: int = 1) -> dict[str, Any]:
    """The variables a template sees for one point and attempt."""
    return {
        **point.variables,
        "_key": point.key,
        "_index": point.index,
        "_run": run,
        "_attempt": attempt,
        "_name": job_name(run, point.key, attempt),
    }
