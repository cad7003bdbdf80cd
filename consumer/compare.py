"""Compare runs: what each run predicted for the same prompts at each step, and accuracy.

Reads the ``prediction_history`` and ``prediction_accuracy_by_step`` views
(``migrations/0005_comparison_views.sql``). Prompts are matched across runs by
``prompt_id``, which is what makes the comparison meaningful.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .settings import ConsumerSettings

if TYPE_CHECKING:
    from psycopg import Connection
    from psycopg.rows import TupleRow

__all__ = ["Comparison", "PromptHistory", "compare_runs"]


@dataclass
class PromptHistory:
    """One prompt's predictions: ``predictions[job][step] = (prediction, is_correct)``."""

    prompt_id: str
    source_index: int | None
    prompt: str
    ground_truth: str | None
    predictions: dict[str, dict[int, tuple[str, bool | None]]] = field(default_factory=dict)

    @property
    def steps(self) -> list[int]:
        return sorted({s for per_job in self.predictions.values() for s in per_job})


@dataclass
class Comparison:
    jobs: list[str]
    prompts: list[PromptHistory]
    #: ``accuracy[job][step] = (accuracy or None, correct, predictions)``
    accuracy: dict[str, dict[int, tuple[float | None, int, int]]]

    def rows(self) -> list[dict[str, Any]]:
        """Flat rows (job, step, prompt_id, ...) for CSV and JSON output."""
        out = []
        for p in self.prompts:
            for job, per_step in p.predictions.items():
                for step, (pred, ok) in sorted(per_step.items()):
                    out.append({"job_id": job, "step": step, "prompt_id": p.prompt_id, "source_index": p.source_index,
                                "prompt": p.prompt, "ground_truth": p.ground_truth, "prediction": pred,
                                "is_correct": ok})
        return out


def _prompt_text(prompt: str | None, messages: Any) -> str:
    if prompt is not None:
        return prompt
    if messages:
        return " / ".join(f"{m.get('role')}: {m.get('content')}" for m in messages)
    return ""


def compare_runs(settings: ConsumerSettings, jobs: Sequence[str], *, prompt_id: str | None = None,
                 max_prompts: int = 5) -> Comparison:
    """The comparison of ``jobs``, read from ``settings.database_url``.

    Without ``prompt_id``, the prompts shown are the first ``max_prompts`` (by source
    index, then prompt_id) that every job predicted for, so each row compares like with like.
    """
    import psycopg

    with psycopg.connect(settings.require_database_url()) as conn:
        return _compare(conn, jobs, prompt_id, max_prompts)


def _compare(conn: Connection[TupleRow], jobs: Sequence[str], prompt_id: str | None, max_prompts: int) -> Comparison:
    jobs = list(dict.fromkeys(jobs))
    if prompt_id is not None:
        chosen = [prompt_id]
    else:
        chosen = [r[0] for r in conn.execute(
            """SELECT prompt_id FROM prediction_history
               WHERE job_id = ANY(%s) AND prompt_id IS NOT NULL AND sequence_index = 0
               GROUP BY prompt_id
               HAVING count(DISTINCT job_id) = %s
               ORDER BY min(source_index) NULLS LAST, prompt_id
               LIMIT %s""",
            (jobs, len(jobs), max_prompts),
        )]
    histories: dict[str, PromptHistory] = {}
    for row in conn.execute(
        """SELECT prompt_id, source_index, prompt, messages, ground_truth, job_id, step, prediction, is_correct
           FROM prediction_history
           WHERE job_id = ANY(%s) AND prompt_id = ANY(%s) AND sequence_index = 0
           ORDER BY prompt_id, job_id, step, attempt, produced_at""",  # the newest comes last and is kept
        (jobs, chosen),
    ):
        pid, src, prompt, messages, gt, job, step, pred, ok = row
        h = histories.get(pid)
        if h is None:
            h = histories[pid] = PromptHistory(pid, src, _prompt_text(prompt, messages), gt)
        h.predictions.setdefault(job, {})[step] = (pred, ok)
    accuracy: dict[str, dict[int, tuple[float | None, int, int]]] = {j: {} for j in jobs}
    for job, step, acc, correct, n in conn.execute(
        """SELECT job_id, step, accuracy, correct, predictions FROM prediction_accuracy_by_step
           WHERE job_id = ANY(%s) ORDER BY job_id, step""",
        (jobs,),
    ):
        accuracy[job][step] = (None if acc is None else float(acc), correct, n)
    return Comparison(jobs, [histories[p] for p in chosen if p in histories], accuracy)
