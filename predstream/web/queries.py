"""Every query of the web view and its API: typed, parameterised, paginated.

Reads ``prediction_history`` (migrations/0005) for predictions and
``prediction_step_summary`` / ``prediction_prompts`` (migrations/0011, kept by the
database as rows are written) for what would otherwise aggregate the whole table: accuracy
per step of every run, and the prompt catalogue that search reads. Each function takes an
open connection and returns the API's models; no SQL is built from input (only bound
parameters). Pagination is by keyset: ``cursor`` is what the previous page returned as
``next_cursor``.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Sequence
from typing import Any

import psycopg

from .errors import BadRequestError, NotFoundError
from .models import (
    Answer,
    Disagreement,
    DisagreementsPage,
    PredictionSetDetail,
    PredictionSetItem,
    PredictionSetsPage,
    PredictionSetSummary,
    PromptHistory,
    PromptInfo,
    RunAccuracy,
    RunsPage,
    RunTimeline,
    SearchPage,
    TimelinePoint,
    chat_messages,
)

__all__ = [
    "MAX_LIMIT",
    "MAX_JOBS",
    "list_runs",
    "run_accuracy",
    "disagreements",
    "prompt_history",
    "search_prompts",
    "list_sets",
    "get_set",
]

Conn = psycopg.Connection[Any]

#: the largest page any list returns
MAX_LIMIT = 200
#: the most runs one comparison or prompt page reads at once
MAX_JOBS = 20
_INT_MAX = 2**31 - 1


def _encode(*values: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(values, default=str).encode()).decode().rstrip("=")


def _decode(cursor: str | None, n: int) -> list[Any] | None:
    if not cursor:
        return None
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except ValueError:
        raise BadRequestError("bad cursor: pass back the next_cursor of the previous page, or none") from None
    if not isinstance(values, list) or len(values) != n:
        raise BadRequestError("bad cursor: pass back the next_cursor of the previous page, or none")
    return values


def _like(text: str) -> str:
    """``text`` as a substring pattern for ILIKE, its wildcards taken literally."""
    return "%" + re.sub(r"([\\%_])", r"\\\1", text) + "%"


def _accuracy(correct: int, graded: int) -> float | None:
    return round(correct / graded, 4) if graded else None


# -- runs ----------------------------------------------------------------------------

_RUNS = """
SELECT job_id, model_name, steps, prompts, first_step, last_step, first_at, last_at
  FROM prediction_run_summary
 WHERE (%(q)s::text IS NULL OR job_id ILIKE %(q)s)
   AND (%(model)s::text IS NULL OR model_name = %(model)s)
   AND (%(c_at)s::timestamptz IS NULL OR last_at < %(c_at)s OR (last_at = %(c_at)s AND job_id > %(c_job)s))
 ORDER BY last_at DESC, job_id
 LIMIT %(limit)s
"""


#: the most points of a run's curve on the runs page (evenly spaced, the last step always in)
CURVE_POINTS = 50


def _thin(points: list[dict[str, Any]], n: int = CURVE_POINTS) -> list[dict[str, Any]]:
    if len(points) <= n:
        return points
    picked = sorted({round(i * (len(points) - 1) / (n - 1)) for i in range(n)})
    return [points[i] for i in picked]


def list_runs(conn: Conn, *, q: str | None = None, model: str | None = None, limit: int = 25,
              cursor: str | None = None) -> RunsPage:
    """Runs, the most recently evaluated first; ``q``: part of the job id; ``model``: exact name."""
    after = _decode(cursor, 2)
    rows = conn.execute(_RUNS, {
        "q": _like(q) if q else None, "model": model or None, "limit": limit + 1,
        "c_at": after[0] if after else None, "c_job": after[1] if after else None,
    }).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    curves = _curves(conn, [r[0] for r in rows])
    items = []
    for job, model_name, steps, prompts, first_step, last_step, first_at, last_at in rows:
        curve = curves.get(job, [])
        graded = [p["accuracy"] for p in curve if p["accuracy"] is not None]
        curve = _thin(curve)
        items.append({"job_id": job, "model_name": model_name, "steps": steps, "prompts": prompts,
                      "first_step": first_step, "last_step": last_step, "first_evaluation": first_at,
                      "last_evaluation": last_at, "final_accuracy": graded[-1] if graded else None, "curve": curve})
    models = [r[0] for r in conn.execute(
        "SELECT DISTINCT model_name FROM prediction_run_summary WHERE model_name IS NOT NULL ORDER BY 1")]
    last = rows[-1] if rows else None
    # validated once, as a whole (thousands of curve points: one call into pydantic's core)
    return RunsPage.model_validate({"items": items, "models": models,
                                    "next_cursor": _encode(last[7], last[0]) if more and last else None})


def _curves(conn: Conn, jobs: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """Accuracy per step of each of ``jobs``, as AccuracyPoint fields."""
    out: dict[str, list[dict[str, Any]]] = {j: [] for j in jobs}
    if not jobs:
        return out
    rows = conn.execute(
        """SELECT job_id, step, epoch, predictions, correct, graded FROM prediction_step_summary
            WHERE job_id = ANY(%s) AND predictions > 0 ORDER BY job_id, step""",
        (list(jobs),),
    ).fetchall()
    for job, step, epoch, predictions, correct, graded in rows:
        out[job].append({"step": step, "epoch": epoch, "predictions": predictions, "correct": correct,
                         "accuracy": round(correct / graded, 4) if graded else None})
    return out


def run_accuracy(conn: Conn, jobs: Sequence[str]) -> list[RunAccuracy]:
    """Accuracy per step of each of ``jobs`` (in the order given); an unknown job is an error."""
    jobs = list(dict.fromkeys(jobs))[:MAX_JOBS]
    curves = _curves(conn, jobs)
    models = dict(conn.execute("SELECT job_id, model_name FROM prediction_run_summary WHERE job_id = ANY(%s)",
                               (jobs,)).fetchall())
    missing = [j for j in jobs if j not in models]
    if missing:
        raise NotFoundError(f"no predictions recorded for job {', '.join(map(repr, missing))}: "
                            "check the job id (the runs page lists every job)")
    return [RunAccuracy.model_validate({"job_id": j, "model_name": models[j], "points": curves[j]}) for j in jobs]


# -- compare: where runs disagree ------------------------------------------------------

_DISAGREE = """
SELECT prompt_id, coalesce(min(source_index), %(int_max)s) AS src,
       count(DISTINCT job_id) = %(n)s AS complete, count(DISTINCT prediction) > 1 AS differ
  FROM prediction_history
 WHERE job_id = ANY(%(jobs)s) AND step = %(step)s AND sequence_index = 0 AND prompt_id IS NOT NULL
 GROUP BY prompt_id
"""


def disagreements(conn: Conn, jobs: Sequence[str], *, step: int | None = None, limit: int = 50,
                  cursor: str | None = None) -> DisagreementsPage:
    """Prompts that every run in ``jobs`` answered at ``step`` (default: their last common
    step), answered differently, in source_index order."""
    jobs = list(dict.fromkeys(jobs))[:MAX_JOBS]
    per_job = {r.job_id: {p.step for p in r.points} for r in run_accuracy(conn, jobs)}
    common = sorted(set.intersection(*per_job.values())) if per_job else []
    if step is None:
        step = common[-1] if common else None
    if step is None or not jobs:
        return DisagreementsPage(jobs=jobs, step=None, steps=common, total=0, compared=0, items=[], next_cursor=None)
    groups = conn.execute(_DISAGREE, {"jobs": jobs, "step": step, "n": len(jobs), "int_max": _INT_MAX}).fetchall()
    differ = sorted((src, pid) for pid, src, complete, diff in groups if complete and diff)
    compared, total = sum(1 for g in groups if g[2]), len(differ)
    after = _decode(cursor, 2)
    if after:
        differ = [d for d in differ if (d[0], d[1]) > (after[0], after[1])]
    page, more = differ[:limit], len(differ) > limit
    prompts = _prompts(conn, [pid for _, pid in page])
    answers: dict[str, dict[str, Answer]] = {pid: {} for _, pid in page}
    for pid, job, prediction, ok in conn.execute(
        """SELECT prompt_id, job_id, prediction, is_correct FROM prediction_history
            WHERE job_id = ANY(%s) AND step = %s AND prompt_id = ANY(%s) AND sequence_index = 0
            ORDER BY prompt_id, job_id, attempt, produced_at""",  # the newest comes last and is kept
        (jobs, step, [pid for _, pid in page]),
    ):
        answers[pid][job] = Answer(prediction=prediction, is_correct=ok)
    items = [Disagreement(prompt=prompts[pid], answers={j: answers[pid][j] for j in jobs if j in answers[pid]})
             for _, pid in page if pid in prompts]
    return DisagreementsPage(
        jobs=jobs, step=step, steps=common, total=total,
        compared=compared, items=items, next_cursor=_encode(*page[-1]) if more and page else None,
    )


# -- prompts -----------------------------------------------------------------------------

_PROMPT_COLUMNS = "prompt_id, source_index, sample_source, sample_source_id, prompt, messages, ground_truth"


def _prompt_info(row: Sequence[Any]) -> PromptInfo:
    pid, src, source, source_id, prompt, messages, gt = row
    return PromptInfo(prompt_id=pid, source_index=src, sample_source=source, sample_source_id=source_id,
                      prompt=prompt, messages=chat_messages(messages), ground_truth=gt)


def _prompts(conn: Conn, prompt_ids: Sequence[str]) -> dict[str, PromptInfo]:
    rows = conn.execute(f"SELECT {_PROMPT_COLUMNS} FROM prediction_prompts WHERE prompt_id = ANY(%s)",
                        (list(prompt_ids),)).fetchall()
    return {r[0]: _prompt_info(r) for r in rows}


def prompt_history(conn: Conn, prompt_id: str, *, jobs: Sequence[str] = (), limit: int = 5,
                   cursor: str | None = None) -> PromptHistory:
    """``prompt_id``'s predictions in each run (``jobs``, else every run, ``limit`` runs a page)."""
    info = _prompts(conn, [prompt_id]).get(prompt_id)
    if info is None:
        raise NotFoundError(f"no prompt with prompt_id {prompt_id!r}: search by text or source_index to find it")
    after = _decode(cursor, 1)
    wanted = list(dict.fromkeys(jobs))[:MAX_JOBS] if jobs else None
    page_jobs = [r[0] for r in conn.execute(
        """SELECT DISTINCT job_id FROM training_predictions
            WHERE prompt_id = %(pid)s AND (%(jobs)s::text[] IS NULL OR job_id = ANY(%(jobs)s))
              AND (%(after)s::text IS NULL OR job_id > %(after)s)
            ORDER BY job_id LIMIT %(limit)s""",
        {"pid": prompt_id, "jobs": wanted, "after": after[0] if after else None, "limit": limit + 1},
    )]
    more, page_jobs = len(page_jobs) > limit, page_jobs[:limit]
    latest: dict[tuple[str, int], tuple[Any, ...]] = {}
    for row in conn.execute(
        """SELECT job_id, step, epoch, prediction, is_correct, produced_at, model_name FROM prediction_history
            WHERE prompt_id = %s AND job_id = ANY(%s) AND sequence_index = 0
            ORDER BY job_id, step, attempt, produced_at""",  # the newest comes last and is kept
        (prompt_id, page_jobs),
    ):
        latest[(row[0], row[1])] = row
    runs: dict[str, RunTimeline] = {}
    for (job, _step), (_, step, epoch, prediction, ok, produced_at, model_name) in latest.items():
        run = runs.setdefault(job, RunTimeline(job_id=job, model_name=model_name, points=[]))
        previous = run.points[-1].prediction if run.points else None
        run.points.append(TimelinePoint(step=step, epoch=epoch, prediction=prediction, is_correct=ok,
                                        changed=previous is not None and previous != prediction,
                                        produced_at=produced_at))
    ordered = [runs[j] for j in (wanted or page_jobs) if j in runs]
    return PromptHistory(prompt=info, runs=ordered, next_cursor=_encode(page_jobs[-1]) if more and page_jobs else None)


_HEX = re.compile(r"[0-9a-f]{6,64}")


def search_prompts(conn: Conn, query: str, *, by: str = "auto", limit: int = 50,
                   cursor: str | None = None) -> SearchPage:
    """Prompts matching ``query``: ``by`` is ``text`` (part of the prompt, chat messages or
    reference, any case), ``prompt_id`` (a prefix of at least 6 hex digits), ``source_index``
    (a number), or ``auto`` (a number: source_index; 6+ hex digits: prompt_id; else text)."""
    query = query.strip()
    if by == "auto":
        by = "source_index" if query.isdigit() else "prompt_id" if _HEX.fullmatch(query.lower()) else "text"
    after = _decode(cursor, 1)
    params: dict[str, Any] = {"limit": limit + 1, "after": after[0] if after else None}
    if by == "source_index":
        if not query.isdigit() or int(query) > _INT_MAX:
            raise BadRequestError(f"source_index must be a whole number from 0 to {_INT_MAX}, not {query!r}")
        where, params["v"] = "source_index = %(v)s", int(query)
    elif by == "prompt_id":
        where, params["v"] = "prompt_id LIKE %(v)s", re.sub(r"([\\%_])", r"\\\1", query.lower()) + "%"
    elif by == "text":
        where = "(prompt ILIKE %(v)s OR messages::text ILIKE %(v)s OR ground_truth ILIKE %(v)s)"
        params["v"] = _like(query)
    else:
        raise BadRequestError(f"by must be auto, text, prompt_id or source_index, not {by!r}")
    rows = conn.execute(
        f"SELECT {_PROMPT_COLUMNS} FROM prediction_prompts WHERE {where}"
        " AND (%(after)s::text IS NULL OR prompt_id > %(after)s) ORDER BY prompt_id LIMIT %(limit)s",
        params,
    ).fetchall() if query else []
    more, rows = len(rows) > limit, rows[:limit]
    return SearchPage(query=query, by=by, items=[_prompt_info(r) for r in rows],
                      next_cursor=_encode(rows[-1][0]) if more and rows else None)


# -- prediction sets --------------------------------------------------------------------------

_SET_COLUMNS = "set_id, name, description, source, seed, item_count, created_at"


def _set_summary(row: Sequence[Any]) -> PredictionSetSummary:
    set_id, name, description, source, seed, item_count, created_at = row
    return PredictionSetSummary(set_id=set_id, name=name, description=description, source=source, seed=seed,
                                item_count=item_count, created_at=created_at)


def list_sets(conn: Conn, *, limit: int = 50, cursor: str | None = None) -> PredictionSetsPage:
    """Prediction sets by name."""
    after = _decode(cursor, 1)
    rows = conn.execute(
        f"SELECT {_SET_COLUMNS} FROM prediction_sets WHERE (%(after)s::text IS NULL OR name > %(after)s)"
        " ORDER BY name LIMIT %(limit)s",
        {"after": after[0] if after else None, "limit": limit + 1},
    ).fetchall()
    more, rows = len(rows) > limit, rows[:limit]
    return PredictionSetsPage(items=[_set_summary(r) for r in rows],
                              next_cursor=_encode(rows[-1][1]) if more and rows else None)


def get_set(conn: Conn, name_or_id: str, *, limit: int = 50, cursor: str | None = None) -> PredictionSetDetail:
    """One prediction set (by name or set_id) and a page of its items, in item order."""
    row = conn.execute(f"SELECT {_SET_COLUMNS} FROM prediction_sets WHERE name = %s OR set_id = %s LIMIT 1",
                       (name_or_id, name_or_id)).fetchone()
    if row is None:
        raise NotFoundError(f"no prediction set named {name_or_id!r}: the sets page lists them all")
    after = _decode(cursor, 1)
    items = conn.execute(
        """SELECT item_index, source_index, prompt_id, prompt, messages, ground_truth FROM prediction_set_items
            WHERE set_id = %(set_id)s AND item_index > %(after)s ORDER BY item_index LIMIT %(limit)s""",
        {"set_id": row[0], "after": int(after[0]) if after else -1, "limit": limit + 1},
    ).fetchall()
    more, items = len(items) > limit, items[:limit]
    return PredictionSetDetail(
        set=_set_summary(row),
        items=[PredictionSetItem(item_index=i, source_index=src, prompt_id=pid, prompt=p,
                                 messages=chat_messages(m), ground_truth=gt)
               for i, src, pid, p, m, gt in items],
        next_cursor=_encode(items[-1][0]) if more and items else None,
    )
