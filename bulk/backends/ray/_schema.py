"""Checks of a rendered Ray ``JobSubmitRequest``, before anything is sent.

Ray's own checks (``ray.dashboard.modules.job.common.JobSubmitRequest``), so that a body Ray
would answer 400 never leaves bulk: ``entrypoint`` a string; ``metadata`` and
``entrypoint_label_selector`` objects of strings; ``entrypoint_num_cpus``/``_gpus`` numbers,
``entrypoint_memory`` an integer, ``entrypoint_resources`` an object of numbers;
``runtime_env`` an object; no other top-level key. And the checks Ray lacks
(api/ray.md §1.5), each a job that Ray accepts and then runs wrongly or never:

- ``entrypoint_num_cpus``/``_gpus``/``_memory`` below 0 (accepted, then FAILED);
- ``entrypoint_memory`` above :data:`MAX_MEMORY` (512 TiB): Ray keeps resources in
  fixed point (1/10,000 of a unit in 64 bits, so at most ~9.2·10¹⁴ bytes) and was seen to
  accept *and run* a job asking for 1 PiB; no node has that much, so it is a typo;
- ``runtime_env.env_vars`` not an object of strings (accepted, then FAILED);
  ``runtime_env.working_dir`` not a string, ``excludes`` not a list of strings;
- a ``submission_id`` other than bulk's job name: bulk finds a job again by its name (see
  :meth:`RayKind.check_template`); and a name with ``/`` (Ray creates a record it can
  never address again) cannot happen: job names are ``a-z 0-9 -`` only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bulk._text import short_repr

if TYPE_CHECKING:
    from bulk._problems import Problems

__all__ = ["FIELDS", "MAX_MEMORY", "validate_body"]

FIELDS = (
    "entrypoint",
    "submission_id",
    "runtime_env",
    "metadata",
    "entrypoint_num_cpus",
    "entrypoint_num_gpus",
    "entrypoint_memory",
    "entrypoint_resources",
    "entrypoint_label_selector",
)
MAX_MEMORY = 2**49  # bytes (512 TiB); see the module docstring


def validate_body(body: Any, problems: Problems) -> None:
    """Add every problem of one rendered body to ``problems``."""
    obj = problems.table(body, "job")
    if obj is None:
        return
    problems.only(obj, FIELDS, "job")
    entrypoint = problems.kind(obj, "entrypoint", "job", (str,))
    if isinstance(entrypoint, str) and not entrypoint.strip():
        problems.add("job.entrypoint", "is empty; give the command the job runs")
    problems.kind(obj, "submission_id", "job", (str,), required=False)
    for key in ("entrypoint_num_cpus", "entrypoint_num_gpus"):
        problems.number(obj, key, "job", required=False, minimum=0)
    memory = problems.number(
        obj, "entrypoint_memory", "job", required=False, integer=True, minimum=0
    )
    if memory is not None and memory > MAX_MEMORY:
        problems.add(
            "job.entrypoint_memory",
            f"{int(memory)} bytes is more than {MAX_MEMORY} (512 TiB), more than any node "
            "has: Ray would accept it and run the job anyway; give the memory in bytes",
        )
    _map(obj, "metadata", problems, (str,), "string")
    _map(obj, "entrypoint_label_selector", problems, (str,), "string")
    _map(obj, "entrypoint_resources", problems, (int, float), "number")
    _runtime_env(obj, problems)


def _map(
    obj: dict[str, Any], key: str, problems: Problems, kinds: tuple[type, ...], what: str
) -> dict[str, Any] | None:
    """``obj[key]``, if given, must be an object whose values are all of ``kinds``."""
    if obj.get(key) is None:
        return None
    value = problems.table(obj[key], f"job.{key}")
    if value is None:
        return None
    for name, item in value.items():
        if isinstance(item, bool) or not isinstance(item, kinds):
            problems.add(
                f"job.{key}.{name}",
                f"expected a {what}, got {short_repr(item)}; {key} maps names to {what}s",
            )
    return value


def _runtime_env(obj: dict[str, Any], problems: Problems) -> None:
    env = obj.get("runtime_env")
    if env is None:
        return
    table = problems.table(env, "job.runtime_env")
    if table is None:
        return
    problems.kind(table, "working_dir", "job.runtime_env", (str,), required=False)
    excludes = problems.kind(table, "excludes", "job.runtime_env", (list,), required=False)
    for i, pattern in enumerate(excludes or ()):
        if not isinstance(pattern, str):
            problems.add(f"job.runtime_env.excludes[{i}]", "expected a string (a file pattern)")
    variables = table.get("env_vars")
    if variables is None:
        return
    env_vars = problems.table(variables, "job.runtime_env.env_vars")
    for name, value in (env_vars or {}).items():
        if not isinstance(value, str):
            problems.add(
                f"job.runtime_env.env_vars.{name}",
                'expected a string; environment values are text (quote numbers: "1")',
            )
