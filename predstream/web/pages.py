"""The HTML pages: runs, compare, prompt, search, prediction sets.

Every page's state is in its URL query (permalinks), every control is a real link, button
or form (keyboard use), and every value goes through Jinja's autoescaping: model output is
shown as text, never as HTML. The pages read through :mod:`.queries`, as the API does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from . import queries
from .charts import DASHES, PALETTE, accuracy_chart, sparkline
from .deps import Conn
from .errors import BadRequestError
from .textdiff import word_diff

__all__ = ["router", "error_page", "templates"]

router = APIRouter(include_in_schema=False)

_env = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,  # every {{ value }} is escaped: model output is untrusted text
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
templates = Jinja2Templates(env=_env)


def _url(path: str, **params: Any) -> str:
    """``path`` with the query ``params`` (lists repeat the key; None and "" are left out)."""
    pairs: list[tuple[str, str]] = []
    for key, value in params.items():
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if v is not None and v != "":
                pairs.append((key, str(v)))
    return path + ("?" + urlencode(pairs) if pairs else "")


def _prompt_url(prompt_id: str, jobs: list[str] | None = None) -> str:
    return _url("/prompts/" + quote(prompt_id, safe=""), job=jobs or [])


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _short(text: str | None, n: int = 160) -> str:
    if text is None:
        return ""
    return text if len(text) <= n else text[: n - 1] + "…"


_env.globals.update(url=_url, prompt_url=_prompt_url, pct=_pct, short=_short, sparkline=sparkline,
                    palette=PALETTE, dashes=DASHES, word_diff=word_diff, quote=quote)


def _page(request: Request, name: str, code: int = 200, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, {"title": "", **context}, status_code=code)


def error_page(request: Request, status: int, message: str) -> Response:
    """An error as a page of its own, with the navigation, saying what to do."""
    return _page(request, "error.html", code=status, title=f"Error {status}", status=status, message=message)


Limit = Annotated[int, Query(ge=1, le=queries.MAX_LIMIT)]


@router.get("/", response_class=HTMLResponse)
def runs_page(request: Request, conn: Conn, q: str | None = None, model: str | None = None,
              limit: Limit = 25, cursor: str | None = None) -> Response:
    page = queries.list_runs(conn, q=q, model=model, limit=limit, cursor=cursor)
    return _page(request, "runs.html", title="Runs", page=page, q=q or "", model=model or "", limit=limit)


@router.get("/compare", response_class=HTMLResponse)
def compare_page(request: Request, conn: Conn, job: Annotated[list[str], Query()] = [],  # noqa: B006
                 step: int | None = None, limit: Limit = 50, cursor: str | None = None) -> Response:
    jobs = list(dict.fromkeys(j for j in job if j))
    if not jobs:
        raise BadRequestError("pick at least one run to compare: tick runs on the runs page, then Compare")
    runs = queries.run_accuracy(conn, jobs)
    diffs = queries.disagreements(conn, jobs, step=step, limit=limit, cursor=cursor)
    chart = accuracy_chart(runs, marked_step=diffs.step)
    return _page(request, "compare.html", title="Compare " + ", ".join(jobs), jobs=jobs, runs=runs, chart=chart,
                 diffs=diffs, limit=limit)


@router.get("/prompts/{prompt_id}", response_class=HTMLResponse)
def prompt_page(request: Request, conn: Conn, prompt_id: str, job: Annotated[list[str], Query()] = [],  # noqa: B006
                limit: Annotated[int, Query(ge=1, le=queries.MAX_JOBS)] = 5, cursor: str | None = None) -> Response:
    history = queries.prompt_history(conn, prompt_id, jobs=[j for j in job if j], limit=limit, cursor=cursor)
    return _page(request, "prompt.html", title=f"Prompt {prompt_id[:12]}", history=history, jobs=job, limit=limit)


@router.get("/search", response_class=HTMLResponse)
def search_page(request: Request, conn: Conn, q: Annotated[str, Query(max_length=1000)] = "",
                by: Annotated[str, Query(pattern="^(auto|text|prompt_id|source_index)$")] = "auto",
                limit: Limit = 50, cursor: str | None = None) -> Response:
    page = queries.search_prompts(conn, q, by=by, limit=limit, cursor=cursor) if q.strip() else None
    return _page(request, "search.html", title="Search", q=q, by=by, page=page, limit=limit)


@router.get("/sets", response_class=HTMLResponse)
def sets_page(request: Request, conn: Conn, limit: Limit = 50, cursor: str | None = None) -> Response:
    page = queries.list_sets(conn, limit=limit, cursor=cursor)
    return _page(request, "sets.html", title="Prediction sets", page=page, limit=limit)


@router.get("/sets/{name}", response_class=HTMLResponse)
def set_page(request: Request, conn: Conn, name: str, limit: Limit = 50, cursor: str | None = None) -> Response:
    detail = queries.get_set(conn, name, limit=limit, cursor=cursor)
    return _page(request, "set.html", title=f"Set {detail.set.name}", detail=detail, limit=limit)
