"""Checks of a rendered Gongji create body, before anything is sent (§2.4 of
docs/api/gongji.md); the kind's ``validate`` walks the body and calls these."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bulk._problems import Problems

__all__ = ["validate_resource", "validate_service"]


def validate_resource(res: Any, where: str, problems: Problems) -> None:
    """One entry of ``job.resources``: a ``mark``, or a device by name, count and region."""
    obj = problems.table(res, where)
    if obj is None:
        return
    if "mark" in obj:
        problems.string(obj, "mark", where)
        return
    if "gpu_name" in obj:  # by name: resolved against the device list at run time
        problems.string(obj, "gpu_name", where)
        problems.number(obj, "gpu_count", where, integer=True, minimum=1)
        problems.string(obj, "region", where)
        return
    problems.add(
        f"{where}.mark",
        "is required (from `bulk gongji resources`), or give "
        "{gpu_name, gpu_count, region} to have bulk find the mark",
    )


def validate_service(svc: Any, where: str, problems: Problems) -> None:
    """One entry of ``job.services``: a container, its weights and its environment."""
    obj = problems.table(svc, where)
    if obj is None:
        return
    problems.string(obj, "service_name", where)
    problems.string(obj, "service_image", where)
    weight = problems.kind(obj, "resource_weight", where, (dict,))
    if weight is not None:
        for key in ("cpu_weight", "mem_weight", "gpu_weight"):
            problems.number(
                weight, key, f"{where}.resource_weight", minimum=0, exclusive_minimum=True
            )
    env = obj.get("env")
    if env is not None and not (
        isinstance(env, list) and all(isinstance(e, dict) and "name" in e for e in env)
    ):
        problems.add(f"{where}.env", 'must be an array of {"name", "value"} objects (not "K=V")')
