"""A bar chart as server-rendered SVG (no script): takings and payouts per day."""

from __future__ import annotations

from html import escape
from typing import Any

WIDTH, HEIGHT, PAD = 720, 200, 24


def bars(days: list[dict[str, Any]]) -> str:
    """Two bars per day (takings, paid out), scaled to the largest; each with a tooltip title."""
    top = max([1] + [max(d["takings_cents"], d["paid_out_cents"]) for d in days])
    step = (WIDTH - 2 * PAD) / max(1, len(days))
    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="Takings and payouts per day">']
    for n, day in enumerate(days):
        for k, (key, colour) in enumerate((("takings_cents", "#0b6e4f"), ("paid_out_cents", "#8fb9a8"))):
            height = (HEIGHT - 2 * PAD) * day[key] / top
            x = PAD + n * step + k * step / 2.2
            y = HEIGHT - PAD - height
            title = f"{day['day']}: {'takings' if k == 0 else 'paid out'} KES {day[key] // 100:,}"
            parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{step / 2.4:.1f}" height="{height:.1f}" fill="{colour}">'
                         f"<title>{escape(title)}</title></rect>")
    parts.append(f'<text x="{PAD}" y="{PAD - 8}" font-size="12">max KES {top // 100:,}</text>')
    if days:
        parts.append(f'<text x="{PAD}" y="{HEIGHT - 6}" font-size="12">{escape(days[0]["day"])}</text>')
        parts.append(f'<text x="{WIDTH - PAD}" y="{HEIGHT - 6}" font-size="12" text-anchor="end">{escape(days[-1]["day"])}</text>')
    parts.append("</svg>")
    return "".join(parts)
