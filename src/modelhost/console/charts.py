"""Small SVG line charts, rendered on the server (so pages show them without JavaScript; the live
stream sends them re-rendered)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from modelhost.console.series import WINDOW_SECONDS, Point

WIDTH, HEIGHT, PAD = 300, 90, 4


@dataclass(frozen=True)
class Line:
    label: str
    values: Sequence[tuple[float, float | None]]  # (time, value); None: no data in that interval
    css: str  # class of the stroke


def _fmt(v: float) -> str:
    return f"{v:.0f}" if v >= 100 or v == int(v) else f"{v:.2f}"


def svg_chart(title: str, unit: str, lines: Sequence[Line], now: float | None = None) -> str:
    now = time.time() if now is None else now
    start = now - WINDOW_SECONDS
    values = [v for line in lines for _, v in line.values if v is not None]
    top = max(values, default=0.0) or 1.0
    paths = []
    for line in lines:
        pts = []
        for at, v in line.values:
            if v is None or at < start:
                continue
            x = PAD + (WIDTH - 2 * PAD) * (at - start) / WINDOW_SECONDS
            y = HEIGHT - PAD - (HEIGHT - 2 * PAD) * (v / top)
            pts.append(f"{x:.1f},{y:.1f}")
        if pts:
            paths.append(f'<polyline class="{line.css}" fill="none" points="{" ".join(pts)}"/>')
    latest = []
    for line in lines:
        last = next((v for _, v in reversed(line.values) if v is not None), None)
        latest.append(f"{escape(line.label)} {_fmt(last) if last is not None else '–'}{escape(unit)}")
    summary = f"{title}, last 15 minutes: " + "; ".join(latest)
    legend = " · ".join(f'<span class="{line.css}">{text}</span>' for line, text in zip(lines, latest, strict=True))
    return (
        f'<figure class="chart"><figcaption>{escape(title)} <small>(max {_fmt(top)}{escape(unit)})</small></figcaption>'
        f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(summary)}" preserveAspectRatio="none">'
        f'<rect class="frame" x="0" y="0" width="{WIDTH}" height="{HEIGHT}"/>{"".join(paths)}</svg>'
        f'<p class="legend">{legend}</p></figure>'
    )


def endpoint_charts(points: Sequence[Point], now: float | None = None) -> str:
    def series(attr: str) -> list[tuple[float, float | None]]:
        return [(p.at, getattr(p, attr)) for p in points]

    return "".join(
        (
            svg_chart("Invocations", "", [Line("per 5 s", series("invocations"), "s1")], now),
            svg_chart(
                "Errors", "", [Line("4XX", series("errors_4xx"), "s2"), Line("5XX", series("errors_5xx"), "s3")], now
            ),
            svg_chart(
                "ModelLatency",
                " ms",
                [Line("p50", series("model_p50_ms"), "s1"), Line("p99", series("model_p99_ms"), "s3")],
                now,
            ),
            svg_chart("OverheadLatency", " ms", [Line("mean", series("overhead_ms"), "s2")], now),
        )
    )
