"""Checks of a rendered Gongji create body, before anything is sent (§2.4 of
docs/api/gongji.md); the kind's ``validate`` walks the body and calls these."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bulk._problems import Problems

__all__ = ["validate_resource", "validate_service", "validate_support"]


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


def validate_support(support: dict[str, Any], sub_type: Any, problems: Problems) -> None:
    """``job.job_support``: time-out, parallelism, ``mod_param``, and the estimated run time
    a Spot job (``sub_type``) needs and any other must not give."""
    where = "job.job_support"
    timeout = problems.number(support, "timeout_sec", where, integer=True, minimum=1)
    problems.number(support, "parallelism", where, integer=True, minimum=1)
    if support.get("mod_param") is None:
        problems.add(
            f"{where}.mod_param",
            'is required (e.g. {"default": {"backoff_limit": 3, "restart_policy": "OnFailure"}})',
        )
    estimated = support.get("estimated_exec_sec")
    with problems.depending_on("job.sub_type"):
        if sub_type == "Spot":
            est = problems.number(support, "estimated_exec_sec", where, integer=True, minimum=1)
            if est is not None and timeout is not None and est >= timeout:
                with problems.depending_on(f"{where}.timeout_sec"):
                    problems.add(
                        f"{where}.estimated_exec_sec",
                        f"{int(est)} must be below timeout_sec {int(timeout)}",
                    )
        elif estimated is not None:
            problems.add(
                f"{where}.estimated_exec_sec",
                "is only for Spot jobs (sub_type = 'Spot'); leave it out or null",
            )
