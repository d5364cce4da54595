"""Small inline SVG charts for ``bulk report``: lines over time and a histogram.

No script and no library: each chart is one ``<svg>`` element of plain shapes, so the
report renders in any browser, offline. Every number is rounded to 0.1 px and every text
escaped; a chart's size depends only on how many points it is given (callers bound that).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from html import escape

__all__ = ["Line", "histogram", "line_chart", "nice_ticks", "seconds"]

_W, _H = 760, 240
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 16, 28, 34


@dataclass(frozen=True, slots=True)
class Line:
    """One line of a chart: ``points`` are (x, y), x ascending.

    Attributes:
        step: drawn as steps (a value holds until the next point), e.g. a rate setting.
        dashed: drawn dashed (a ceiling).
        marks: x values to mark with a small tick under the line (throttles).
    """

    name: str
    color: str
    points: Sequence[tuple[float, float]]
    step: bool = False
    dashed: bool = False
    marks: Sequence[float] = field(default_factory=tuple)


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering ``lo``..``hi`` (1, 2 or 5 times a power of ten apart)."""
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def seconds(value: float) -> str:
    """A duration in short words: ``45s``, ``3m20s``, ``2h05m``, ``0.25s``."""
    if value < 10:  # noqa: PLR2004 - below ten seconds, decimals say something
        return f"{value:.3g}s"
    s = round(value)
    if s < 60:  # noqa: PLR2004
        return f"{s}s"
    if s < 3600:  # noqa: PLR2004
        return f"{s // 60}m{s % 60:02d}s" if s % 60 else f"{s // 60}m"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _num(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1e6:  # noqa: PLR2004
        return f"{value / 1e6:g}M"
    if abs(value) >= 1e4:  # noqa: PLR2004
        return f"{value / 1e3:g}k"
    return f"{value:g}"


def _f(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def line_chart(
    title: str,
    lines: Sequence[Line],
    *,
    x_max: float,
    y_label: str,
) -> str:
    """An SVG chart of ``lines`` over seconds 0..``x_max`` (x labels as durations)."""
    ys = [y for line in lines for _, y in line.points]
    y_max = max([*ys, 0.0]) * 1.08 or 1.0
    x_max = max(x_max, 1e-9)
    plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM
    y_ticks = nice_ticks(0, y_max)
    y_top = max(y_max, y_ticks[-1])

    def px(x: float) -> float:
        return _LEFT + x / x_max * plot_w

    def py(y: float) -> float:
        return _TOP + plot_h - y / y_top * plot_h

    out = [_open(title)]
    out.append(_axes(plot_w, plot_h))
    for tick in y_ticks:
        y = py(tick)
        out.append(
            f'<line x1="{_LEFT}" y1="{_f(y)}" x2="{_LEFT + plot_w}" y2="{_f(y)}" class="grid"/>'
            f'<text x="{_LEFT - 6}" y="{_f(y + 4)}" text-anchor="end">{_num(tick)}</text>'
        )
    for tick in nice_ticks(0, x_max, 6):
        if tick > x_max:
            continue
        x = px(tick)
        out.append(
            f'<text x="{_f(x)}" y="{_H - _BOTTOM + 16}" text-anchor="middle">'
            f"{escape(seconds(tick))}</text>"
        )
    out.append(
        f'<text x="14" y="{_TOP + plot_h / 2:.0f}" text-anchor="middle" '
        f'transform="rotate(-90 14 {_TOP + plot_h / 2:.0f})">{escape(y_label)}</text>'
    )
    legend_x = _LEFT
    for line in lines:
        out.append(_polyline(line, px, py))
        for mark in line.marks:
            x = px(mark)
            out.append(
                f'<line x1="{_f(x)}" y1="{_TOP + plot_h}" x2="{_f(x)}" y2="{_TOP + plot_h - 8}" '
                f'stroke="{line.color}" stroke-width="2"/>'
            )
        dash = ' stroke-dasharray="5 3"' if line.dashed else ""
        out.append(
            f'<line x1="{legend_x}" y1="14" x2="{legend_x + 18}" y2="14" stroke="{line.color}" '
            f'stroke-width="3"{dash}/><text x="{legend_x + 23}" y="18">{escape(line.name)}</text>'
        )
        legend_x += 34 + 7 * len(line.name)
    out.append("</svg>")
    return "".join(out)


def _polyline(line: Line, px: Callable[[float], float], py: Callable[[float], float]) -> str:
    coords: list[str] = []
    previous: float | None = None
    for x, y in line.points:
        if line.step and previous is not None:
            coords.append(f"{_f(px(x))},{_f(py(previous))}")
        coords.append(f"{_f(px(x))},{_f(py(y))}")
        previous = y
    if not coords:
        return ""
    dash = ' stroke-dasharray="5 3"' if line.dashed else ""
    return (
        f'<polyline points="{" ".join(coords)}" fill="none" stroke="{line.color}" '
        f'stroke-width="2" stroke-linejoin="round"{dash}/>'
    )


def histogram(title: str, bins: Sequence[tuple[float, float, int]], *, color: str) -> str:
    """An SVG bar chart of ``bins`` (low, high, count), labelled with durations."""
    plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM
    top = max([c for _, _, c in bins] + [1])
    y_ticks = nice_ticks(0, top)
    y_top = max(top, y_ticks[-1])
    out = [_open(title), _axes(plot_w, plot_h)]
    for tick in y_ticks:
        y = _TOP + plot_h - tick / y_top * plot_h
        out.append(
            f'<line x1="{_LEFT}" y1="{_f(y)}" x2="{_LEFT + plot_w}" y2="{_f(y)}" class="grid"/>'
            f'<text x="{_LEFT - 6}" y="{_f(y + 4)}" text-anchor="end">{_num(tick)}</text>'
        )
    width = plot_w / max(1, len(bins))
    label_every = max(1, math.ceil(len(bins) / 8))
    for i, (lo, hi, count) in enumerate(bins):
        h = count / y_top * plot_h
        x = _LEFT + i * width
        out.append(
            f'<rect x="{_f(x + 1)}" y="{_f(_TOP + plot_h - h)}" width="{_f(max(1.0, width - 2))}" '
            f'height="{_f(h)}" fill="{color}"><title>{escape(seconds(lo))}–'
            f"{escape(seconds(hi))}: {count:,}</title></rect>"
        )
        if i % label_every == 0:
            out.append(
                f'<text x="{_f(x)}" y="{_H - _BOTTOM + 16}" text-anchor="middle">'
                f"{escape(_bin_label(lo, hi - lo))}</text>"
            )
    out.append(
        f'<text x="14" y="{_TOP + plot_h / 2:.0f}" text-anchor="middle" '
        f'transform="rotate(-90 14 {_TOP + plot_h / 2:.0f})">jobs</text></svg>'
    )
    return "".join(out)


def _bin_label(low: float, width: float) -> str:
    """A bin's lower edge, with as many decimals as its width needs (narrow bins of jobs
    lasting ~2 s would all read "2.02s" with three significant digits)."""
    if low < 60 and 0 < width < 1:  # noqa: PLR2004 - above a minute, durations in words
        decimals = min(4, -math.floor(math.log10(width)))
        return f"{low:.{decimals}f}s"
    return seconds(low)


def _open(title: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_W} {_H}" width="{_W}" '
        f'height="{_H}" role="img" aria-label="{escape(title)}"><title>{escape(title)}</title>'
    )


def _axes(plot_w: int, plot_h: int) -> str:
    return (
        f'<line x1="{_LEFT}" y1="{_TOP + plot_h}" x2="{_LEFT + plot_w}" y2="{_TOP + plot_h}" '
        f'class="axis"/><line x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{_TOP + plot_h}" '
        f'class="axis"/>'
    )
