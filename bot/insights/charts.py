"""Charts drawn on the server as SVG: no script, no CDN, readable at a glance. Colours are
presentation attributes (the console's Content-Security-Policy allows no inline styles)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from html import escape
from typing import Final

from bot.insights.report import StepCount

BAR: Final = "#2f6f5e"
SECOND: Final = "#d98a2b"
INK: Final = "#333333"
GRID: Final = "#dddddd"


def funnel_chart(steps: Sequence[StepCount]) -> str:
    """Horizontal bars, one per step, with count and conversion from the start."""
    width, row, left, right = 640, 30, 130, 150
    height = row * len(steps) + 10
    top = max((s.count for s in steps), default=0) or 1
    parts = [_open(width, height, "ファネル")]
    for i, step in enumerate(steps):
        y = 5 + i * row
        bar = (width - left - right) * step.count / top
        share = "" if step.from_start is None else f"（{step.from_start * 100:.1f}%）"
        parts += [
            _text(left - 8, y + 18, step.label, anchor="end"),
            f'<rect x="{left}" y="{y + 4}" width="{bar:.1f}" height="{row - 10}" fill="{BAR}">'
            f"<title>{escape(step.label)}: {step.count}</title></rect>",
            _text(left + bar + 6, y + 18, f"{step.count:,}{share}"),
        ]
    parts.append("</svg>")
    return "".join(parts)


def daily_chart(days: Sequence[tuple[date, int, int]]) -> str:
    """Two lines over the days: runs begun and agents asked for."""
    width, height, left, bottom, top_pad = 640, 220, 40, 30, 20
    plot_w, plot_h = width - left - 20, height - bottom - top_pad
    top = max((max(s, a) for _, s, a in days), default=0) or 1
    parts = [_open(width, height, "日ごとの開始と担当者希望")]
    for fraction in (0, 0.5, 1):
        y = top_pad + plot_h * (1 - fraction)
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{width - 20}" y2="{y:.1f}" stroke="{GRID}"/>'
        )
        parts.append(_text(left - 4, y + 4, f"{round(top * fraction):,}", anchor="end"))
    step = plot_w / max(len(days) - 1, 1)
    series = ([s for _, s, _ in days], [a for _, _, a in days])
    for values, colour in zip(series, (BAR, SECOND), strict=True):
        points = " ".join(
            f"{left + i * step:.1f},{top_pad + plot_h * (1 - value / top):.1f}"
            for i, value in enumerate(values)
        )
        if points:
            parts.append(
                f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>'
            )
    if days:
        parts.append(_text(left, height - 10, days[0][0].isoformat()))
        parts.append(_text(width - 20, height - 10, days[-1][0].isoformat(), anchor="end"))
    parts += [
        f'<rect x="{width - 190}" y="2" width="10" height="10" fill="{BAR}"/>',
        _text(width - 176, 11, "開始"),
        f'<rect x="{width - 120}" y="2" width="10" height="10" fill="{SECOND}"/>',
        _text(width - 106, 11, "担当者希望"),
        "</svg>",
    ]
    return "".join(parts)


def _open(width: int, height: int, title: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="100%" role="img" aria-label="{escape(title)}"><title>{escape(title)}</title>'
    )


def _text(x: float, y: float, text: str, *, anchor: str = "start") -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="12" fill="{INK}" '
        f'text-anchor="{anchor}">{escape(text)}</text>'
    )
