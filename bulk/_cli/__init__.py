"""The ``bulk`` command line (private: ``bulk --help`` is its interface).

``_parser`` (argparse; ``_args``: option value types), ``_run`` (run, retry, stop:
orchestration, signals, the event loop), ``_report`` (plan, status, export, the run's
summary), ``_sim`` (the commands that name a backend), ``_common`` (exit codes, output, the
backend), ``_main`` (``main()``).
"""

from bulk._cli._main import (
    console_main,
    main,
)

__all__ = [
    "console_main",
    "main",
]
