"""``bulk report``: a run's self-contained HTML report (private)."""

from bulk._report._html import REDACTED, build_report, redact

__all__ = ["REDACTED", "build_report", "redact"]
