"""The Ray Jobs API backend (``kind = "ray"``); see :mod:`bulk.backends.ray._backend`."""

from bulk.backends.ray._backend import (
    DEFAULT_URL,
    KIND,
    LIST_FROM,
    LIST_PER_GET,
    DeletingRayBackend,
    RayBackend,
    RayKind,
    RayOptions,
)
from bulk.backends.ray._jobs import failure_reason, job_status
from bulk.backends.ray._package import Package, pack

__all__ = [
    "DEFAULT_URL",
    "KIND",
    "LIST_FROM",
    "LIST_PER_GET",
    "DeletingRayBackend",
    "Package",
    "RayBackend",
    "RayKind",
    "RayOptions",
    "failure_reason",
    "job_status",
    "pack",
]
