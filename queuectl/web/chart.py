"""The overview's chart: jobs finished per minute over the last hour, drawn as SVG on the server.

One stacked bar per minute, oldest on the left: jobs completed, and on top of them attempts
that failed (to be retried) and jobs that went dead. The SVG carries its own small style sheet,
since an ``<img>`` does not see the page's (the page's legend uses the same two colours). Its
only text is times and counts: nothing a job's fields could put there.
"""

from __future__ import annotations

from collections.abc import Sequence
from xml.sax.saxutils import escape

from queuectl.web.data import MinuteLike

__all__ = ("WIDTH", "HEIGHT", "nice_ceiling", "svg")

WIDTH, HEIGHT = 640, 180
_LEFT, _RIGHT, _TOP, _BOTTOM = 40, 10, 12, 28

_STYLE = """
.ok { fill: #2f9e6b; }
.bad { fill: #d9534f; }
.axis { stroke: #8a8f98; stroke-width: 1; }
.grid { stroke: #e3e5e8; stroke-width: 1; }
text { font: 11px system-ui, sans-serif; fill: #5b6068; }
"""


def nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50, ... that is at least ``value``: a round top for the axis."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10


def svg(minutes: Sequence[MinuteLike]) -> str:
    """The chart of ``minutes`` (oldest first, as ``Queue.finished_per_minute`` gives them)."""
    plot_width = WIDTH - _LEFT - _RIGHT
    plot_height = HEIGHT - _TOP - _BOTTOM
    base = _TOP + plot_height
    top = nice_ceiling(max((m.completed + m.failed + m.dead for m in minutes), default=0) or 1)
    slot = plot_width / max(len(minutes), 1)
    gap = min(2.0, slot / 4)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="chart-title">',
        '<title id="chart-title">Jobs finished per minute over the last hour (UTC)</title>',
        f"<style>{_STYLE}</style>",
        f'<line class="grid" x1="{_LEFT}" y1="{_TOP}" x2="{WIDTH - _RIGHT}" y2="{_TOP}"/>',
        f'<text x="{_LEFT - 6}" y="{_TOP + 4}" text-anchor="end">{top}</text>',
        f'<text x="{_LEFT - 6}" y="{base + 4}" text-anchor="end">0</text>',
    ]
    for index, minute in enumerate(minutes):
        x = _LEFT + index * slot + gap / 2
        width = max(slot - gap, 1.0)
        bad = minute.failed + minute.dead
        ok_height = plot_height * minute.completed / top
        bad_height = plot_height * bad / top
        counts = f"{minute.completed} completed, {minute.failed} failed, {minute.dead} dead"
        label = escape(f"{minute.minute:%H:%M} UTC: {counts}")
        parts.append(f"<g><title>{label}</title>")
        parts.append(_bar("ok", x, base - ok_height, width, ok_height))
        parts.append(_bar("bad", x, base - ok_height - bad_height, width, bad_height))
        parts.append("</g>")
    parts.append(f'<line class="axis" x1="{_LEFT}" y1="{base}" x2="{WIDTH - _RIGHT}" y2="{base}"/>')
    parts.append(f'<line class="axis" x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{base}"/>')
    parts += _time_labels(minutes, slot, base)
    parts.append("</svg>")
    return "\n".join(parts)


def _bar(kind: str, x: float, y: float, width: float, height: float) -> str:
    if height <= 0:
        return ""
    return f'<rect class="{kind}" x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{height:.1f}"/>'


def _time_labels(minutes: Sequence[MinuteLike], slot: float, base: float) -> list[str]:
    """The minute under the first bar, every 15th and the last, as HH:MM (UTC)."""
    labels: list[str] = []
    count = len(minutes)
    for index in sorted({*range(0, count, 15), count - 1} if count else set()):
        x = _LEFT + index * slot + slot / 2
        anchor = "start" if index == 0 else "end" if index == count - 1 else "middle"
        labels.append(
            f'<text x="{x:.1f}" y="{base + 16}" text-anchor="{anchor}">{minutes[index].minute:%H:%M}</text>'
        )
    return labels
