"""``bulk report``: one self-contained HTML page about a run, made from its journal.

What it shows: a summary (counts by state, wall time, jobs per second, the exit status a
``bulk run`` would give), the jobs submitted, running and finished over time, each endpoint's
requests per second against its adaptive rate and ceiling (throttles marked), the jobs'
durations (histogram and percentiles), the failures grouped by reason with their first rows,
and the run's config with its secrets taken out.

It is bounded whatever the run's size: every figure is aggregated in SQLite (no per-row work
in Python), each chart has at most ``_POINTS`` points, at most
``_REASONS`` reasons are listed with at most ``_ROWS_PER_REASON`` rows each, and long values are
cut: a report of a 10⁶-job run is a few hundred KB. It only reads the journal (no run lock),
so it works on a finished run and on one still going.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from html import escape
from typing import Any

import orjson

from bulk._config import Config
from bulk._journal import Journal, SeriesRow, State
from bulk._naming import job_name
from bulk._plan._check import preview
from bulk._report._svg import Line, histogram, line_chart, seconds
from bulk._version import __version__

__all__ = ["REDACTED", "build_report", "redact"]

_POINTS = 400  # the most points a time chart gets (buckets widen to fit)
_REASONS = 20
_ROWS_PER_REASON = 10
_ERROR_CHARS = 300
_VARS_CHARS = 100
_CONFIG_CHARS = 20_000
_BINS = 30
_UNSETTLED = (State.FAILED, State.UNKNOWN)
_ENDED = (State.SUCCEEDED, State.FAILED, State.STOPPED)
REDACTED = "[redacted]"
# A config key whose value is or names a secret: a token, a key, a password, an
# Authorization header, and every ``*_env`` (the variable that holds one) or ``*_file``.
_SECRET_KEY = re.compile(
    r"(token|secret|passw|private|api.?key|auth|credential|signature|cookie|_env$|_file$|^key$)",
    re.IGNORECASE,
)
_COLORS = {
    "submitted": "#4c78a8",
    "running": "#f58518",
    "finished": "#54a24b",
    "failed": "#e45756",
    "requests": "#4c78a8",
    "rate": "#f58518",
    "ceiling": "#9d755d",
    "throttled": "#e45756",
}


def redact(value: Any, key: str = "") -> Any:
    """``value`` (a config table) with every secret-looking entry's value ``[redacted]``."""
    if key and _SECRET_KEY.search(key):
        return REDACTED
    if isinstance(value, Mapping):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


def build_report(cfg: Config, journal: Journal, *, now: float | None = None) -> str:
    """The report of ``cfg``'s run as one HTML document."""
    counts = journal.counts()
    total = sum(counts.values())
    first, last = journal.time_span()
    span = (last - first) if first is not None and last is not None else 0.0
    body = [
        _summary(cfg, journal, counts, total, span),
        _timeline(journal, first, span),
        _rates(journal, first, span),
        _durations(journal),
        _failures(cfg, journal),
        _config(cfg),
    ]
    made = datetime.fromtimestamp(now if now is not None else datetime.now(UTC).timestamp(), UTC)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>bulk report: {escape(cfg.run.name)}</title>"
        f'<meta name="viewport" content="width=device-width"><style>{_CSS}</style></head>'
        f"<body><main><h1>bulk report: {escape(cfg.run.name)}</h1>"
        f'<p class="sub">backend {escape(cfg.backend.kind)} · {escape(str(cfg.journal_path))} · '
        f"made {made:%Y-%m-%d %H:%M:%S} UTC by bulk {escape(__version__)}</p>"
        + "".join(body)
        + "</main></body></html>\n"
    )


def _summary(
    cfg: Config, journal: Journal, counts: Mapping[str, int], total: int, span: float
) -> str:
    ended = sum(counts.get(s.value, 0) for s in _ENDED)
    failed = counts.get(State.FAILED.value, 0) + counts.get(State.UNKNOWN.value, 0)
    if ended + counts.get(State.UNKNOWN.value, 0) < total:
        status = (
            f"not finished: {total - ended:,} rows not ended (still running, or interrupted: "
            f"the same bulk run resumes)"
        )
    elif failed or counts.get(State.STOPPED.value, 0):
        status = "1: some jobs failed or were stopped"
    else:
        status = "0: every job succeeded"
    rate = f"{ended / span:,.2f}" if span > 0 else "–"
    meta = journal.meta()
    cells = [
        ("jobs", f"{total:,}"),
        ("ended", f"{ended:,}"),
        ("wall time", seconds(span) if span else "–"),
        ("jobs/s", rate),
        ("exit status", status),
        ("created", meta.get("created", "–")),
    ]
    out = ['<section><h2>Summary</h2><div class="cards">']
    for name, value in cells:
        out.append(f'<div class="card"><b>{escape(value)}</b><span>{escape(name)}</span></div>')
    out.append('</div><table class="states"><tr>')
    out.extend(f"<th>{escape(s.value)}</th>" for s in State)
    out.append("</tr><tr>")
    for state in State:
        n = counts.get(state.value, 0)
        out.append(f'<td class="{escape(state.value)}">{n:,}</td>')
    out.append("</tr></table></section>")
    return "".join(out)


def _width(span: float) -> float:
    """Bucket width (seconds) for at most ``_POINTS`` buckets over ``span``."""
    return max(span / _POINTS, 1e-3) if span > 0 else 1.0


def _cumulative(
    buckets: Mapping[int, tuple[int, int]], n: int, *, of_started: bool = False
) -> list[int]:
    """Running totals over ``n`` buckets of rows (``of_started``: of the rows that started)."""
    out, running = [], 0
    for b in range(n):
        running += buckets.get(b, (0, 0))[1 if of_started else 0]
        out.append(running)
    return out


def _timeline(journal: Journal, first: float | None, span: float) -> str:
    head = "<section><h2>Jobs over time</h2>"
    if first is None:
        return head + "<p>No job has been submitted yet.</p></section>"
    width = _width(span)
    n = int(span / width) + 2
    submitted = _cumulative(journal.time_buckets("submitted_at", first, width), n)
    started = _cumulative(journal.time_buckets("started_at", first, width), n)
    ends = journal.time_buckets("finished_at", first, width)
    finished = _cumulative(ends, n)
    ended_started = _cumulative(ends, n, of_started=True)
    xs = [min(span, (b + 1) * width) for b in range(n)]
    lines = [
        Line("submitted", _COLORS["submitted"], [(0.0, 0.0), *zip(xs, submitted, strict=True)]),
        Line(
            "running",
            _COLORS["running"],
            [
                (0.0, 0.0),
                *zip(xs, (s - e for s, e in zip(started, ended_started, strict=True)), strict=True),
            ],
        ),
        Line("finished", _COLORS["finished"], [(0.0, 0.0), *zip(xs, finished, strict=True)]),
    ]
    chart = line_chart("jobs submitted, running and finished", lines, x_max=span, y_label="jobs")
    return f"{head}<p>Since the first submit; cumulative, except running.</p>{chart}</section>"


def _rates(journal: Journal, first: float | None, span: float) -> str:
    head = "<section><h2>Requests per second, adaptive rate and ceiling</h2>"
    rows = journal.series()  # bounded below by stepping when there are many
    if not rows:
        return head + "<p>No requests recorded (a journal of an older bulk has none).</p></section>"
    t0 = min(r.t for r in rows)
    t_end = max(r.t for r in rows) + 1
    step = max(1, math.ceil((t_end - t0) / _POINTS))
    if step > 1:
        rows = journal.series(step=step)
    charts = []
    retries = sum(r.retries for r in rows if r.endpoint == "run")
    for endpoint in ("submit", "status", "lookup", "stop", "service"):
        mine = [r for r in rows if r.endpoint == endpoint]
        if not any(r.requests for r in mine) and endpoint != "service":
            continue
        if not mine:
            continue
        charts.append(_rate_chart(endpoint, mine, t0, t_end, step))
    throttles = sum(r.throttled for r in rows)
    errors = sum(r.errors for r in rows)
    total = sum(r.requests for r in rows)
    note = (
        f"<p>{total:,} requests · {throttles:,} throttled (marked in red) · {errors:,} errors · "
        f"{retries:,} retries. Rates per second, averaged over {step} s.</p>"
    )
    return head + note + "".join(charts) + "</section>"


# The rate and ceiling are left off a chart whose traffic stays below 1/_OFF_SCALE of them.
_OFF_SCALE = 4


def _rate_points(
    rows: list[SeriesRow], t0: int, t_end: int, step: int
) -> tuple[list[tuple[float, float]], ...]:
    """Requests/s, the adaptive rate and the ceiling (each carried to the end), throttles."""
    requests: list[tuple[float, float]] = []
    rates: list[tuple[float, float]] = []
    ceilings: list[tuple[float, float]] = []
    marks: list[tuple[float, float]] = []
    rate = ceiling = None
    for r in rows:
        x = float(r.t - t0)
        requests.append((x, r.requests / step))
        if r.rate is not None:
            rate, ceiling = r.rate, r.ceiling
        if rate is not None:
            rates.append((x, rate))
        if ceiling is not None:
            ceilings.append((x, ceiling))
        if r.throttled:
            marks.append((x, 0.0))
    end = float(t_end - t0)
    if rate is not None:
        rates.append((end, rate))
    if ceiling is not None:
        ceilings.append((end, ceiling))
    return requests, rates, ceilings, marks


def _rate_chart(endpoint: str, rows: list[SeriesRow], t0: int, t_end: int, step: int) -> str:
    requests, rates, ceilings, marks = _rate_points(rows, t0, t_end, step)
    rate = rates[-1][1] if rates else None
    ceiling = ceilings[-1][1] if ceilings else None
    lines = []
    if endpoint != "service":
        lines.append(Line("requests/s", _COLORS["requests"], requests))
    name = "service-wide budget" if endpoint == "service" else endpoint
    busiest = max((y for _, y in requests), default=0.0)
    limit = max((y for _, y in [*rates, *ceilings]), default=0.0)
    heading = escape(name)
    if endpoint != "service" and 0 < busiest * _OFF_SCALE < limit:
        # A rate far above the traffic (a local run under a ceiling of 1,000/s) would flatten
        # the traffic to a line at zero: the chart keeps the traffic, the heading the rate.
        heading += escape(
            f" (rate {rate or 0:,.4g}/s, ceiling {ceiling or 0:,.4g}/s: off the scale)"
        )
    else:
        # The ceiling first: where the adaptive rate is at it, the rate is drawn over it.
        lines.append(Line("ceiling", _COLORS["ceiling"], ceilings, step=True, dashed=True))
        lines.append(Line("adaptive rate", _COLORS["rate"], rates, step=True))
    if marks:
        lines.append(Line("throttled", _COLORS["throttled"], [], marks=[x for x, _ in marks]))
    return f"<h3>{heading}</h3>" + line_chart(
        f"{name}: requests per second and rate",
        lines,
        x_max=float(t_end - t0),
        y_label="per second",
    )


def _durations(journal: Journal) -> str:
    head = "<section><h2>Job durations</h2>"
    count, lo, hi, mean = journal.duration_summary()
    if not count:
        return head + "<p>No job has ended yet.</p></section>"
    # Nearest rank: the smallest time with at least that share of the jobs at or below it.
    marks = journal.duration_ranks([max(1, math.ceil(q * count)) for q in (0.5, 0.9, 0.99)])
    edges = _edges(lo, hi)
    counts = journal.duration_bins(edges)
    bins = [(edges[i], edges[i + 1], counts[i]) for i in range(len(counts))]
    table = "".join(
        f"<th>{escape(name)}</th>" for name in ("jobs", "min", "p50", "p90", "p99", "max", "mean")
    )
    values = (f"{count:,}", seconds(lo), *(seconds(m) for m in marks), seconds(hi), seconds(mean))
    cells = "".join(f"<td>{escape(v)}</td>" for v in values)
    chart = histogram("job durations", bins, color=_COLORS["finished"])
    return (
        f"{head}<p>From start (or submit, where the service does not say) to end.</p>"
        f'<table class="num"><tr>{table}</tr><tr>{cells}</tr></table>{chart}</section>'
    )


def _edges(lo: float, hi: float) -> list[float]:
    """``_BINS`` + 1 bin edges from ``lo`` to ``hi``: log-spaced when they span over 100x."""
    if lo > 0 and hi / lo > 100:  # noqa: PLR2004
        return [lo * (hi / lo) ** (i / _BINS) for i in range(_BINS + 1)]
    top = hi if hi > lo else lo + 1.0
    return [lo + (top - lo) * i / _BINS for i in range(_BINS + 1)]


def _failures(cfg: Config, journal: Journal) -> str:
    head = "<section><h2>Failures</h2>"
    reasons = journal.failure_reasons(_UNSETTLED, _REASONS + 1)
    if not reasons:
        return head + "<p>No job failed.</p></section>"
    out = [head]
    if len(reasons) > _REASONS:
        out.append(f"<p>The {_REASONS} commonest reasons.</p>")
    for error, n in reasons[:_REASONS]:
        text = (error or "(no reason recorded)")[:_ERROR_CHARS]
        out.append(f'<h3><span class="n">{n:,}</span> {escape(text)}</h3>')
        out.append(
            '<table class="rows"><tr><th>#</th><th>key</th><th>origin</th><th>job</th>'
            "<th>state</th><th>attempt</th><th>remote id</th><th>variables</th></tr>"
        )
        for job in journal.jobs_with_error(_UNSETTLED, error, _ROWS_PER_REASON):
            name = job_name(cfg.run.name, job.key, job.attempt)
            cells = (
                str(job.index),
                job.key,
                job.origin,
                name,
                job.state.value,
                str(job.attempt),
                job.remote_id or "",
                preview(job.variables, _VARS_CHARS),
            )
            out.append("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in cells) + "</tr>")
        out.append("</table>")
        if n > _ROWS_PER_REASON:
            out.append(
                f'<p class="more">… and {n - _ROWS_PER_REASON:,} more '
                f"(all of them: bulk export {escape(str(cfg.path))})</p>"
            )
    return "".join(out) + "</section>"


def _config(cfg: Config) -> str:
    text = orjson.dumps(redact(cfg.raw), option=orjson.OPT_INDENT_2, default=str).decode()
    if len(text) > _CONFIG_CHARS:
        text = text[:_CONFIG_CHARS] + "\n… (cut)"
    return (
        f"<section><h2>Config</h2><p>{escape(str(cfg.path))}, as read (secrets and the "
        f"names of the variables that hold them shown as {REDACTED}).</p>"
        f"<pre>{escape(text)}</pre></section>"
    )


_CSS = """
body{margin:0;background:#f6f7f9;color:#1f2328;font:14px/1.45 system-ui,-apple-system,
"Segoe UI",Roboto,"DejaVu Sans",sans-serif}
main{max-width:800px;margin:0 auto;padding:20px}
h1{font-size:22px;margin:0 0 2px}h2{font-size:17px;margin:0 0 10px}
h3{font-size:14px;margin:14px 0 6px;word-break:break-word}
.sub{color:#656d76;margin:0 0 16px;font-size:12px;word-break:break-all}
section{background:#fff;border:1px solid #d8dee4;border-radius:8px;padding:14px 16px;
margin:0 0 16px;overflow-x:auto}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin-bottom:12px}
.card{flex:1 1 150px;border:1px solid #d8dee4;border-radius:6px;padding:8px 10px}
.card b{display:block;font-size:16px}.card span{color:#656d76;font-size:12px}
table{border-collapse:collapse;font-size:12px;margin:4px 0}
th,td{border:1px solid #d8dee4;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f6f8fa}.states td,.num td{text-align:right}
td.succeeded{color:#1a7f37;font-weight:600}td.failed,td.unknown{color:#cf222e;font-weight:600}
.rows td{max-width:240px;word-break:break-all}.rows td:first-child{white-space:nowrap}
.n{display:inline-block;min-width:28px;padding:0 6px;margin-right:6px;border-radius:10px;
background:#cf222e;color:#fff;text-align:center}
.more{color:#656d76;font-size:12px}
pre{background:#f6f8fa;padding:10px;border-radius:6px;font-size:12px;overflow-x:auto}
svg{display:block;max-width:100%;height:auto;font-size:11px;fill:#1f2328}
svg .axis{stroke:#57606a}svg .grid{stroke:#eaeef2}
"""
