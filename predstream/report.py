"""Render a :class:`predstream.consumer.compare.Comparison`: terminal tables, CSV/JSON, and a PNG plot."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from predstream.consumer import Comparison

__all__ = ["print_comparison", "comparison_csv", "comparison_json", "plot_comparison"]


def _cell(pred: str | None, ok: bool | None, width: int = 24) -> str:
    if pred is None:
        return "[dim]—[/dim]"
    text = pred.replace("\n", "⏎")
    if len(text) > width:
        text = text[: width - 1] + "…"
    from rich.markup import escape

    mark = "" if ok is None else (" [green]✓[/green]" if ok else " [red]✗[/red]")
    return escape(repr(text)[1:-1]) + mark


def print_comparison(comparison: Comparison, console: Console | None = None) -> None:
    """Per prompt: the prediction at each step in each run; then accuracy per step per run."""
    console = console or Console()
    for p in comparison.prompts:
        title = f"prompt_id {p.prompt_id[:12]}…  source_index {p.source_index}  prompt {p.prompt[:40]!r}"
        if p.ground_truth is not None:
            title += f"  reference {p.ground_truth!r}"
        table = Table(title=title, title_justify="left", show_lines=False)
        table.add_column("step", justify="right")
        for job in comparison.jobs:
            table.add_column(job)
        for step in p.steps:
            table.add_row(str(step),
                          *[_cell(*p.predictions.get(job, {}).get(step, (None, None))) for job in comparison.jobs])
        console.print(table)
    steps = sorted({s for per_job in comparison.accuracy.values() for s in per_job})
    acc = Table(title="exact-match accuracy against the reference, per step", title_justify="left")
    acc.add_column("step", justify="right")
    for job in comparison.jobs:
        acc.add_column(job, justify="right")
    for step in steps:
        cells = []
        for job in comparison.jobs:
            value = comparison.accuracy.get(job, {}).get(step)
            cells.append("—" if value is None or value[0] is None else f"{value[0]:.0%} ({value[1]}/{value[2]})")
        acc.add_row(str(step), *cells)
    console.print(acc)


def comparison_csv(comparison: Comparison) -> str:
    buf = io.StringIO()
    fields = ["job_id", "step", "prompt_id", "source_index", "prompt", "ground_truth", "prediction", "is_correct"]
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(comparison.rows())
    return buf.getvalue()


def comparison_json(comparison: Comparison) -> str:
    return json.dumps(
        {
            "jobs": comparison.jobs,
            "predictions": comparison.rows(),
            "accuracy": [
                {"job_id": job, "step": step, "accuracy": a, "correct": c, "predictions": n}
                for job, per_step in comparison.accuracy.items()
                for step, (a, c, n) in sorted(per_step.items())
            ],
        },
        indent=2,
    )


def plot_comparison(comparison: Comparison, path: str | Path) -> Path:
    """Write a PNG: accuracy per step, one line per run. Needs matplotlib (the demo extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("plotting needs matplotlib: pip install 'predstream[demo]'") from exc
    path = Path(path)
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    for job in comparison.jobs:
        points = sorted((s, v[0]) for s, v in comparison.accuracy.get(job, {}).items() if v[0] is not None)
        if points:
            ax.plot([s for s, _ in points], [a * 100 for _, a in points], marker="o", label=job)
    ax.set_xlabel("training step")
    ax.set_ylabel("exact-match accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.set_title("Eval predictions vs reference, per run")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
