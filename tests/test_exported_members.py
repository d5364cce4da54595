"""The public surface is explicit: everything in __all__ exists, and nothing else is public."""

from __future__ import annotations

import bulk


def test_all_is_exact() -> None:
    """`bulk.__all__` lists exactly the public names of the package."""
    public = {name for name in dir(bulk) if not name.startswith("_")} - {"annotations"}
    modules = {name for name in public if type(getattr(bulk, name)).__name__ == "module"}

    assert set(bulk.__all__) - {"__version__"} == public - modules
