"""The event loop every command runs on: asyncio, uvloop where asked, one error out."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from bulk.errors import BulkError

__all__ = ["UVLOOP", "run_async"]

# Whether commands run on uvloop where it is installed. The test suite sets it False for the
# commands it runs in its own process: uvloop swallows an exception raised by a Python signal
# handler (pytest-timeout's SIGALRM), so a test that hung there would never time out. The
# suite's subprocess tests run the real executable, on uvloop.
UVLOOP = True


def run_async(coro: Coroutine[Any, Any, None], *, uvloop: bool = True) -> None:
    """Run on asyncio; on uvloop where installed, unless asked not to.

    The CLI chooses the loop, the same for every backend kind (a kind has no say): uvloop
    costs 20-25 % less CPU per HTTP request.
    """
    import anyio  # not at import: ``import bulk`` alone does not load the event loop

    options: dict[str, Any] = {}
    if uvloop and UVLOOP:
        try:
            import uvloop as _probe  # noqa: F401 - only probing that it is there
        except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
            pass
        else:
            options["use_uvloop"] = True

    async def main() -> None:
        await coro

    try:
        anyio.run(main, backend="asyncio", backend_options=options)
    except BaseExceptionGroup as group:
        # Task groups wrap what their tasks raise; a bulk error inside is the real message.
        error = _first_bulk_error(group)
        if error is None:
            if group.subgroup(MemoryError) is not None:
                raise MemoryError from None  # main() says it in one line
            raise
        raise error from None


def _first_bulk_error(error: BaseException) -> BulkError | None:
    if isinstance(error, BulkError):
        return error
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            found = _first_bulk_error(inner)
            if found is not None:
                return found
    return None
