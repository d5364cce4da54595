"""Checks of a rendered openYuanrong submit body, and the submission id a job name becomes.

Facts from the submit API (the seed document) and the frontend's code read in
docs/api/ray.md Part 2; where the service would only fail later (or silently ignore a
field), bulk refuses the body before anything is sent.
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING, Any

from bulk._text import short_repr

if TYPE_CHECKING:
    from bulk._problems import Problems

__all__ = [
    "FIELDS",
    "HEADERS",
    "ID_PATTERN",
    "PREFIX",
    "headers_of",
    "run_name_problem",
    "submission_id",
    "validate_body",
]

PREFIX = "app-"  # the service prepends it to any id that lacks it
ID_PATTERN = re.compile(r"[a-z0-9-]{1,64}")  # the whole id, prefix included
_MAX_ID = 64
_FORBIDDEN = "driver"  # the frontend refuses an id containing it
# The longest job name suffix bulk makes: "-" + a 16-hex key + "-" + an attempt below 100.
_SUFFIX = len("-0123456789abcdef-99")
_HASH_CHARS = 10

# The body's fields (Go's JSON decoder ignores any other silently: bulk refuses them, so a
# misspelt ``entrypoint_num_cpu`` is not dropped without a word); ``headers`` is bulk's own.
FIELDS = (
    "entrypoint",
    "entrypoint_memory",
    "entrypoint_num_cpus",
    "entrypoint_num_gpus",
    "entrypoint_resources",
    "headers",
    "metadata",
    "runtime_env",
)
# Per-row request headers a template may set in its ``headers`` table (``[job.headers]``).
# Content-Type is always JSON and X-Auth is the token: neither is the template's.
HEADERS = {"x-tenant-id": "X-Tenant-Id", "x-pool-label": "X-Pool-Label", "x-trace-id": "X-Trace-Id"}
_HEADER_VALUE = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")
_CPUS = (0.3, 16.0)
_MEMORY = (134_217_728, 1_125_899_906_842_624)  # 128 MiB to 1 PiB, in bytes


def run_name_problem(run: str) -> str | None:
    """What keeps a run's job names from being openYuanrong ids, or None.

    A job name is ``<run>-<16-hex key>`` (``-<attempt>`` after a retry); the id is ``app-``
    and the name, which must match ``^[a-z0-9-]{1,64}$`` without ``driver``. Run names are
    lower-case letters, digits and ``-`` already, and the key and attempt cannot spell
    ``driver``: so only the run name can carry it, and the length budget is what is left of
    64 characters for attempts up to 99.
    """
    if _FORBIDDEN in run:
        return (
            f"{run!r} contains 'driver', which openYuanrong refuses in a job id "
            "(app-<run>-<key>); choose another run name"
        )
    budget = _MAX_ID - len(PREFIX) - _SUFFIX
    if len(run) > budget:
        return (
            f"{run!r} is {len(run)} characters; openYuanrong ids (app-<run>-<key>-<attempt>) "
            f"hold 64, which leaves {budget} for the run name"
        )
    return None


def submission_id(name: str) -> str:
    """The openYuanrong id of job ``name``: ``app-<name>`` when that is a valid id (always, for
    bulk's names of a run name that passed :func:`run_name_problem`, up to attempt 99).

    Otherwise (a later attempt, a name not made by bulk) the name is made to fit,
    deterministically: lower-cased, every other character and any ``driver`` turned into
    ``-``, cut, and ended with 10 hex digits of a hash of the whole name, so that distinct
    names stay distinct ids.
    """
    sid = name if name.startswith(PREFIX) else PREFIX + name
    if ID_PATTERN.fullmatch(sid) and _FORBIDDEN not in sid:
        return sid
    digest = hashlib.blake2b(name.encode("utf-8", "surrogateescape"), digest_size=8).hexdigest()
    cleaned = re.sub(r"[^a-z0-9-]", "-", name.lower()).replace(_FORBIDDEN, "-")
    room = _MAX_ID - len(PREFIX) - 1 - _HASH_CHARS
    head = cleaned[:room].replace(_FORBIDDEN, "-")
    return f"{PREFIX}{head}-{digest[:_HASH_CHARS]}"


def validate_body(job: dict[str, Any], problems: Problems) -> None:
    """Every field of the submit body (``job`` is a table already)."""
    problems.only(job, (*FIELDS, "submission_id"), "job")  # submission_id: said below
    if "submission_id" in job:
        problems.add(
            "job.submission_id",
            "is set by bulk (app-<job name>, so that a job is found again after a crash); "
            "remove it",
            key=True,
        )
    problems.string(job, "entrypoint", "job")
    env = problems.kind(job, "runtime_env", "job", (dict,))
    if env is not None:
        problems.string(env, "working_dir", "job.runtime_env")
        _str_map(env.get("env_vars"), "job.runtime_env.env_vars", problems)
        pip = env.get("pip")
        if pip is not None and not (
            isinstance(pip, list) and all(isinstance(p, str) and p for p in pip)
        ):
            problems.add("job.runtime_env.pip", "must be an array of package strings")
    problems.number(
        job, "entrypoint_num_cpus", "job", required=False, minimum=_CPUS[0], maximum=_CPUS[1]
    )
    memory = job.get("entrypoint_memory")
    if memory is not None:
        if isinstance(memory, bool) or not isinstance(memory, int):
            problems.add(
                "job.entrypoint_memory", f"expected an integer (bytes), got {short_repr(memory)}"
            )
        elif not _MEMORY[0] <= memory <= _MEMORY[1]:
            problems.add(
                "job.entrypoint_memory",
                f"{memory} is outside [{_MEMORY[0]}, {_MEMORY[1]}] bytes (128 MiB to 1 PiB)",
            )
    problems.number(job, "entrypoint_num_gpus", "job", required=False, minimum=0)
    _str_map(job.get("metadata"), "job.metadata", problems)
    resources = job.get("entrypoint_resources")
    if resources is not None:
        if not isinstance(resources, dict):
            problems.add("job.entrypoint_resources", "must be a table of resource name to number")
        else:
            for key in resources:
                problems.number(resources, key, "job.entrypoint_resources", minimum=0)
    _validate_headers(job.get("headers"), problems)


def _str_map(value: Any, field: str, problems: Problems) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        problems.add(field, f"must be a table of strings, got {short_repr(value)}")
        return
    for key, item in value.items():
        if not isinstance(item, str):
            problems.add(f"{field}.{key}", f"expected a string, got {short_repr(item)}")


def _validate_headers(value: Any, problems: Problems) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        problems.add("job.headers", f"must be a table of header values, got {short_repr(value)}")
        return
    allowed = ", ".join(HEADERS.values())
    for key, item in value.items():
        field = f"job.headers.{key}"
        if key.lower() not in HEADERS:
            problems.add(field, f"is not a header a job may set; allowed: {allowed}", key=True)
            continue
        texts = item if isinstance(item, list) and key.lower() == "x-pool-label" else [item]
        for text in texts:
            if not isinstance(text, str) or not _HEADER_VALUE.fullmatch(text):
                problems.add(
                    field,
                    f"{short_repr(text)} is not a header value; one line of printable ASCII "
                    "(X-Pool-Label: a string or an array of strings)",
                )
                break
            if key.lower() == "x-pool-label" and isinstance(item, list) and "," in text:
                problems.add(field, f"label {short_repr(text)} contains a comma (the separator)")
                break


def headers_of(job: dict[str, Any]) -> dict[str, str]:
    """The request headers a rendered (and validated) body sets, by their canonical names;
    an X-Pool-Label array is comma-joined."""
    given = job.get("headers")
    if not isinstance(given, dict):
        return {}
    out = {}
    for key, value in given.items():
        name = HEADERS[key.lower()]
        out[name] = ",".join(value) if isinstance(value, list) else str(value)
    return out
