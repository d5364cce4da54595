"""`bulk report`: one self-contained HTML page that validates, matches the journal, shows no
secret, stays bounded on a big journal, reads without the run lock, and renders in Chromium."""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import html5lib  # type: ignore[import-untyped]
import pytest

from bulk._cli import main
from bulk._journal import Journal, Record, RunLock, SeriesRow, State
from bulk._naming import Point, point_key
from bulk._report import REDACTED, redact

CHROMIUM = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)


def write_config(folder: Path, *, rows: int = 12, extra: str = "") -> Path:
    """A local run whose rows with ``i % 4 == 3`` fail (exit 3), and ``i == 5`` (exit 5)."""
    path = folder / "run.toml"
    path.write_text(
        f'[run]\nname = "rep"\n[sweep]\ngrid.i = {{range = [0, {rows}]}}\n'
        '[backend]\nkind = "local"\n[retry]\nattempts = 1\n'
        f"{extra}"
        '[job]\ncommand = "test $(( {i} % 4 )) -ne 3 || exit 3; test {i} -ne 5 || exit 5"\n'
    )
    return path


def parse(html: str) -> object:
    """The document, parsed by a strict HTML5 parser (it raises on any parse error)."""
    return html5lib.HTMLParser(strict=True, namespaceHTMLElements=False).parse(html)


def cells(html: str, table_class: str) -> list[str]:
    table = re.search(rf'<table class="{table_class}">(.*?)</table>', html, re.DOTALL)
    assert table is not None
    return re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", table.group(1))


def test_a_finished_run_reports_what_its_journal_holds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The page validates, needs nothing from the network, and its figures are the journal's:
    counts by state, failures grouped by reason with their rows, one chart per section."""
    config = write_config(tmp_path)
    assert 1 == main(["run", str(config)])
    capsys.readouterr()

    assert 0 == main(["report", str(config)])

    default = tmp_path / ".bulk" / "rep" / "report.html"
    assert f"{default}\n" == capsys.readouterr().out
    assert 0o600 == default.stat().st_mode & 0o777  # it lists variables, as the journal does
    html = default.read_text()
    parse(html)
    with Journal.open(tmp_path / ".bulk" / "rep" / "journal.sqlite") as journal:
        counts = journal.counts()
        series = journal.series()
    states = cells(html, "states")
    half = len(states) // 2
    shown = dict(zip(states[:half], states[half:], strict=True))
    assert {s: str(n) for s, n in counts.items()} == {s: n for s, n in shown.items() if n != "0"}
    assert {"succeeded": 8, "failed": 4} == counts
    assert re.search(r"<b>12</b><span>jobs</span>", html)
    assert "<b>1: some jobs failed or were stopped</b>" in html
    assert re.search(r'<span class="n">3</span> exit code 3</h3>', html)
    assert re.search(r'<span class="n">1</span> exit code 5</h3>', html)
    assert "<td>rep-" in html  # the rows, named, with their variables
    assert "{&quot;i&quot;:7}" in html
    assert 4 == html.count("<svg")  # timeline, submit rate, status rate, durations
    assert sum(r.ok for r in series if r.endpoint == "submit") == 12
    assert not re.search(r"(src|href)=\"?https?:", html)  # self-contained
    assert "<script" not in html


def test_the_report_shows_no_secret(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Secret-looking config entries and the variables that hold secrets are redacted."""
    secret = "s3cr3t-value-that-must-not-leak"
    config = write_config(
        tmp_path,
        rows=2,
        extra=(
            '[job.env]\nAPI_TOKEN = "' + secret + '"\nHF_AUTH = "' + secret + '"\n'
            'PLAIN = "visible"\n'
        ),
    )
    main(["run", str(config)])
    out = tmp_path / "r.html"

    assert 0 == main(["report", str(config), "-o", str(out)])

    html = out.read_text()
    assert secret not in html
    assert "visible" in html
    assert html.count(REDACTED) >= 2


def test_redact_names_every_kind_of_secret() -> None:
    raw = {
        "backend": {"kind": "gongji", "token_env": "GONGJI_TOKEN", "private_key_file": "k.pem"},
        "job": {"headers": {"Authorization": "Bearer x"}, "env": {"MY_PASSWORD": "p"}},
        "sweep": {"grid": {"keys": [1, 2]}},
    }
    assert {
        "backend": {"kind": "gongji", "token_env": REDACTED, "private_key_file": REDACTED},
        "job": {"headers": {"Authorization": REDACTED}, "env": {"MY_PASSWORD": REDACTED}},
        "sweep": {"grid": {"keys": [1, 2]}},
    } == redact(raw)


def test_a_big_journal_gives_a_bounded_page(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """50,000 rows, 40 failure reasons, 10,000 seconds of series: the page stays small
    (reasons, rows per reason and chart points are capped) and its figures exact."""
    rows = 50_000
    config = write_config(tmp_path, rows=rows)
    journal = Journal.create(tmp_path / ".bulk" / "rep" / "journal.sqlite", {"run": "rep"})
    points = (Point(i, point_key({"i": i}), "sweep", {"i": i}) for i in range(rows))
    for _ in journal.fill(points):
        pass
    journal.finish()
    t0 = 1_700_000_000.0
    records = []
    for i in range(rows):
        failed = i % 5 == 0
        records.append(
            Record(
                i,
                State.FAILED if failed else State.SUCCEEDED,
                attempt=1,
                submitted_at=t0 + i * 0.2,
                started_at=t0 + i * 0.2 + 1,
                finished_at=t0 + i * 0.2 + 1 + (i % 100),
                error=f"exit code {i // 5 % 40}" if failed else None,
            )
        )
    series = [
        SeriesRow(int(t0) + s, "submit", ok=5, throttled=s % 7 == 0, rate=5.0, ceiling=10.0)
        for s in range(10_000)
    ]
    journal.apply(records, series)
    journal.close()
    out = tmp_path / "big.html"

    assert 0 == main(["report", str(config), "-o", str(out)])

    html = out.read_text()
    parse(html)
    assert len(html) < 400_000
    assert 20 == html.count('<span class="n">')  # the 20 commonest reasons
    assert 20 * 10 == len(re.findall(r"<tr><td>\d+</td>", html))
    assert "<b>50,000</b><span>jobs</span>" in html
    throttles = len(range(0, 10_000, 7))
    assert f"{5 * 10_000 + throttles:,} requests · {throttles:,} throttled" in html
    counts = cells(html, "num")
    assert "50,000" == counts[7]  # every job has a duration
    assert "49s" == counts[9]  # p50 of 0..99 s (nearest rank)


def test_a_running_run_is_reported_without_its_lock(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The run lock held (a bulk run going on): the report is made all the same."""
    config = write_config(tmp_path, rows=3)
    main(["run", str(config)])
    with RunLock(tmp_path / ".bulk" / "rep"):
        assert 0 == main(["report", str(config), "-o", str(tmp_path / "r.html")])
    parse((tmp_path / "r.html").read_text())


def test_a_run_never_started_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)

    assert 2 == main(["report", str(config)])

    err = capsys.readouterr().err
    assert "no journal" in err
    assert 1 == len(err.strip().splitlines())
    assert "Traceback" not in err


def png_colours(data: bytes) -> int:
    """How many distinct colours a PNG (8-bit RGB or RGBA, as Chromium writes) has."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, channels = 8, b"", 0, 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            assert (8, 0) == (depth, body[12])  # 8-bit, not interlaced
            channels = {2: 3, 6: 4}[colour]
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels
    previous = bytearray(stride)
    colours: set[bytes] = set()
    for y in range(height):
        filt = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for x in range(stride):
            left = line[x - channels] if x >= channels else 0
            up = previous[x]
            corner = previous[x - channels] if x >= channels else 0
            if filt == 1:
                line[x] = (line[x] + left) & 0xFF
            elif filt == 2:
                line[x] = (line[x] + up) & 0xFF
            elif filt == 3:
                line[x] = (line[x] + (left + up) // 2) & 0xFF
            elif filt == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                best = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[x] = (line[x] + best) & 0xFF
        colours.update(bytes(line[i : i + channels]) for i in range(0, stride, channels * 3))
        previous = line
    return len(colours)


def test_chromium_renders_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Headless Chromium draws the page: its screenshot is not blank (many colours)."""
    if CHROMIUM is None:
        reason = "chromium is not installed (Debian: apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {reason}")
        pytest.skip(reason)
    config = write_config(tmp_path)
    main(["run", str(config)])
    page = tmp_path / "r.html"
    assert 0 == main(["report", str(config), "-o", str(page)])
    shot = tmp_path / "shot.png"

    subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=800,1400",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )

    assert png_colours(shot.read_bytes()) > 50


def test_an_output_that_cannot_be_written_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, rows=2)
    main(["run", str(config)])
    capsys.readouterr()

    assert 2 == main(["report", str(config), "-o", str(tmp_path / "no" / "such" / "r.html")])

    err = capsys.readouterr().err
    assert "cannot write" in err
    assert 1 == len(err.strip().splitlines())


def test_a_rate_far_above_the_traffic_is_named_not_drawn() -> None:
    """15 requests/s under a ceiling of 1,000/s: drawn to scale, the traffic would be a flat
    line at zero; the chart keeps the traffic and the heading says the rate and ceiling."""
    from bulk._report._html import _rate_chart

    rows = [
        SeriesRow(t=100 + i, endpoint="submit", ok=15, rate=1000.0, ceiling=2000.0)
        for i in range(5)
    ]
    low = _rate_chart("submit", rows, 100, 105, 1)
    assert "off the scale" in low
    assert "1,000/s" in low
    assert "2,000/s" in low
    assert "adaptive rate" not in low

    busy = [
        SeriesRow(t=100 + i, endpoint="submit", ok=900, rate=1000.0, ceiling=2000.0)
        for i in range(5)
    ]
    high = _rate_chart("submit", busy, 100, 105, 1)
    assert "off the scale" not in high
    assert "adaptive rate" in high


def test_narrow_duration_bins_get_labels_of_their_own() -> None:
    """Jobs of ~2 s in bins 1 ms wide: each label says its bin, none repeats."""
    from bulk._report._svg import histogram

    bins = [(2.02 + i * 0.001, 2.021 + i * 0.001, 1 + i) for i in range(8)]
    labels = re.findall(r'text-anchor="middle">([^<]+)</text>', histogram("d", bins, color="#000"))
    assert len(labels) == len(set(labels)) == 8
