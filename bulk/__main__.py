"""``python -m bulk``."""

from __future__ import annotations

import sys

from bulk._cli import main

sys.exit(main())
