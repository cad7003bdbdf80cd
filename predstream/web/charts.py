"""Charts drawn on the server as SVG: a sparkline per run, accuracy per step of several runs.

Only numbers and escaped labels go into the SVG (job ids are text from the topic); nothing
runs in the browser. Each run has a colour and a dash pattern (told apart without colour),
each point a ``<title>`` (its value on hover, read by screen readers).
"""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

from .models import AccuracyPoint, RunAccuracy

__all__ = ["PALETTE", "DASHES", "sparkline", "accuracy_chart"]

#: colour per run, in order (Okabe-Ito, legible for colour-blind readers)
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
DASHES = ("", "6 3", "2 3", "8 3 2 3", "1 2", "10 4", "4 4", "3 6")


def _scale(points: Sequence[AccuracyPoint], lo_step: int, hi_step: int, x0: float, x1: float, y0: float,
           y1: float) -> list[tuple[float, float, AccuracyPoint]]:
    span = max(1, hi_step - lo_step)
    out = []
    for p in points:
        if p.accuracy is None:
            continue
        x = x0 + (p.step - lo_step) / span * (x1 - x0)
        y = y1 - p.accuracy * (y1 - y0)
        out.append((round(x, 1), round(y, 1), p))
    return out


def sparkline(points: Sequence[AccuracyPoint], *, width: int = 120, height: int = 28) -> Markup:
    """A small accuracy curve (0-1) with its last point marked; empty when nothing is graded."""
    graded = [p for p in points if p.accuracy is not None]
    label = (f"accuracy from {graded[0].accuracy:.0%} at step {graded[0].step} to "
             f"{graded[-1].accuracy:.0%} at step {graded[-1].step}") if graded else "no graded predictions"
    if not graded:
        return Markup('<span class="muted">–</span>')
    xy = _scale(graded, graded[0].step, graded[-1].step, 2, width - 4, 3, height - 3)
    path = " ".join(f"{x},{y}" for x, y, _ in xy)
    lx, ly, _ = xy[-1]
    return Markup(
        f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(label)}"><title>{escape(label)}</title>'
        f'<polyline points="{path}" fill="none" stroke="#0072B2" stroke-width="1.5"/>'
        f'<circle cx="{lx}" cy="{ly}" r="2.5" fill="#0072B2"/></svg>'
    )


def accuracy_chart(runs: Sequence[RunAccuracy], *, width: int = 760, height: int = 300,
                   marked_step: int | None = None) -> Markup:
    """Accuracy per step of each run on one chart, with axes, a legend and ``marked_step`` drawn."""
    steps = [p.step for r in runs for p in r.points if p.accuracy is not None]
    left, right, top, bottom = 48, width - 16, 16, height - 40
    parts = [f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
             f'aria-labelledby="chart-title"><title id="chart-title">Exact-match accuracy per step: '
             f'{escape(", ".join(r.job_id for r in runs))}</title>']
    for frac in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = round(bottom - frac * (bottom - top), 1)
        parts.append(f'<line class="grid" x1="{left}" x2="{right}" y1="{y}" y2="{y}"/>'
                     f'<text class="tick" x="{left - 6}" y="{y + 4}" text-anchor="end">{frac:.0%}</text>')
    if not steps:
        parts.append(f'<text class="tick" x="{(left + right) / 2}" y="{(top + bottom) / 2}" text-anchor="middle">'
                     "no graded predictions</text></svg>")
        return Markup("".join(parts))
    lo, hi = min(steps), max(steps)
    for i in range(5):
        step = lo + round(i * (hi - lo) / 4) if hi > lo else lo
        x = round(left + (step - lo) / max(1, hi - lo) * (right - left), 1)
        parts.append(f'<text class="tick" x="{x}" y="{bottom + 18}" text-anchor="middle">{step}</text>')
    parts.append(f'<text class="tick" x="{(left + right) / 2}" y="{height - 4}" text-anchor="middle">step</text>')
    if marked_step is not None and lo <= marked_step <= hi:
        x = round(left + (marked_step - lo) / max(1, hi - lo) * (right - left), 1)
        parts.append(f'<line class="marked" x1="{x}" x2="{x}" y1="{top}" y2="{bottom}"/>')
    for i, run in enumerate(runs):
        colour, dash = PALETTE[i % len(PALETTE)], DASHES[i % len(DASHES)]
        xy = _scale(run.points, lo, hi, left, right, top, bottom)
        if not xy:
            continue
        job = escape(run.job_id)
        parts.append(f'<g class="series" data-job="{job}"><polyline points="{" ".join(f"{x},{y}" for x, y, _ in xy)}" '
                     f'fill="none" stroke="{colour}" stroke-width="2" stroke-dasharray="{dash}"/>')
        for x, y, p in xy:
            parts.append(f'<circle class="point" cx="{x}" cy="{y}" r="3" fill="{colour}" data-step="{p.step}" '
                         f'data-accuracy="{p.accuracy}"><title>{job}: step {p.step}, '
                         f'{p.correct}/{p.predictions} correct ({(p.accuracy or 0):.1%})</title></circle>')
        parts.append("</g>")
    parts.append("</svg>")
    return Markup("".join(parts))
