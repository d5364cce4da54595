"""``python -m bulk``."""

from __future__ import annotations

import sys

from bulk.cli import main

sys.exit(main())
