"""``bulk gongji ...``: the Gongji kind's own commands (``bulk gongji resources``).

Imported when the CLI asks the kind for its commands; everything sent goes through the
``send`` the CLI passes (the gateway), never around it.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import orjson

from bulk._text import cut
from bulk.backends.base import Backend, Command, Send

if TYPE_CHECKING:
    from rich.console import RenderableType

__all__ = ["COMMANDS"]


@runtime_checkable
class _Devices(Protocol):
    """The Gongji backend as this module needs it (importing it would close a circle)."""

    async def resources(self) -> list[dict[str, Any]]: ...


# A mark is a long opaque code: the table shows its start (copy it whole from --json).
_MARK_CHARS = 25


def _resources_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="the raw list as JSON")


async def _resources(
    backend: Backend, args: argparse.Namespace, send: Send
) -> bytes | RenderableType:
    """The device list: JSON, or a table of each device's regions and marks."""
    assert isinstance(backend, _Devices)  # noqa: S101 - a type guard: the gongji kind made it
    # A one-off read: "lookup" is the class bulk paces with status requests.
    devices: list[dict[str, Any]] = await send("lookup", backend.resources)
    if args.json:
        return orjson.dumps(devices, option=orjson.OPT_INDENT_2) + b"\n"
    from rich.table import Table

    table = Table("device", "GPU", "count", "region", "inventory", "price", "mark")
    for device in devices:
        for region in device.get("regions") or []:
            mark = str((region.get("mark") or {}).get("mark", ""))
            table.add_row(
                str(device.get("device_name")),
                str(device.get("gpu_name")),
                str(device.get("gpu_count")),
                f"{region.get('region')} ({region.get('region_name')})",
                str(region.get("inventory")),
                str(region.get("price")),
                cut(mark, _MARK_CHARS),
            )
    return table


COMMANDS = (
    Command(
        "resources",
        "the device list (for resources[].mark)",
        _resources_arguments,
        _resources,
    ),
)
