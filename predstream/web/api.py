"""The JSON API under ``/api/v1`` (read side): the same data as the pages.

Lists take ``limit`` (1-200) and ``cursor`` (the ``next_cursor`` of the previous page;
keyset pagination, stable while rows are added). Errors are ``{"detail": "..."}`` with
404 (no such job, prompt or set), 400 (a bad cursor or parameter), 422 (a parameter of the
wrong type) or 503 (the database does not answer).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, TypeAdapter

from . import queries
from .deps import Conn
from .models import (
    DisagreementsPage,
    PredictionSetDetail,
    PredictionSetsPage,
    PromptHistory,
    RunAccuracy,
    RunsPage,
    SearchPage,
)

__all__ = ["router"]

router = APIRouter(tags=["read"])

Limit = Annotated[int, Query(ge=1, le=queries.MAX_LIMIT, description="Items per page.")]
Cursor = Annotated[str | None, Query(description="`next_cursor` of the previous page; omit for the first.")]
Jobs = Annotated[list[str], Query(alias="job", min_length=1, max_length=queries.MAX_JOBS,
                                  description="Job ids (repeat the parameter: `?job=a&job=b`).")]


def _json(value: BaseModel | list[Any]) -> Response:
    """``value`` as the response, serialised once: the queries build the models already
    typed, so FastAPI's second validation of ``response_model`` (which still documents the
    response in the OpenAPI document) is skipped."""
    body = value.model_dump_json() if isinstance(value, BaseModel) else _LIST.dump_json(value)
    return Response(body, media_type="application/json")


_LIST: TypeAdapter[list[Any]] = TypeAdapter(list[Any])
_ERRORS: dict[int | str, dict[str, str]] = {
    400: {"description": "A bad cursor or parameter; `detail` says what to pass."},
    404: {"description": "No such job, prompt or set; `detail` names it."},
    503: {"description": "The database does not answer."},
}


@router.get("/runs", response_model=RunsPage, summary="Runs, the most recently evaluated first", responses=_ERRORS)
def runs(conn: Conn, q: Annotated[str | None, Query(description="Part of the job id (any case).")] = None,
         model: Annotated[str | None, Query(description="Exact model name.")] = None,
         limit: Limit = 25, cursor: Cursor = None) -> Response:
    return _json(queries.list_runs(conn, q=q, model=model, limit=limit, cursor=cursor))


@router.get("/accuracy", response_model=list[RunAccuracy], summary="Accuracy per step of each run",
            responses=_ERRORS)
def accuracy(conn: Conn, jobs: Jobs) -> Response:
    return _json(queries.run_accuracy(conn, jobs))


@router.get("/disagreements", response_model=DisagreementsPage,
            summary="Prompts the runs answered differently at one step", responses=_ERRORS)
def disagreements(conn: Conn, jobs: Jobs,
                  step: Annotated[int | None, Query(ge=0, description="Default: the runs' last common step.")] = None,
                  limit: Limit = 50, cursor: Cursor = None) -> Response:
    return _json(queries.disagreements(conn, jobs, step=step, limit=limit, cursor=cursor))


@router.get("/prompts/{prompt_id}", response_model=PromptHistory,
            summary="One prompt's predictions, run by run and step by step", responses=_ERRORS)
def prompt(conn: Conn, prompt_id: str,
           jobs: Annotated[list[str], Query(
               alias="job", max_length=queries.MAX_JOBS,
               description="Only these runs (default: every run, a page at a time).")] = [],  # noqa: B006
           limit: Annotated[int, Query(ge=1, le=queries.MAX_JOBS, description="Runs per page.")] = 5,
           cursor: Cursor = None) -> Response:
    return _json(queries.prompt_history(conn, prompt_id, jobs=jobs, limit=limit, cursor=cursor))


@router.get("/search", response_model=SearchPage, summary="Find prompts by text, prompt_id or source_index",
            responses=_ERRORS)
def search(conn: Conn, q: Annotated[str, Query(max_length=1000, description="What to look for.")],
           by: Annotated[str, Query(pattern="^(auto|text|prompt_id|source_index)$",
                                    description="auto: a number is a source_index, 6+ hex digits a prompt_id "
                                                "prefix, anything else text.")] = "auto",
           limit: Limit = 50, cursor: Cursor = None) -> Response:
    return _json(queries.search_prompts(conn, q, by=by, limit=limit, cursor=cursor))


@router.get("/sets", response_model=PredictionSetsPage, summary="Prediction sets, by name", responses=_ERRORS)
def sets(conn: Conn, limit: Limit = 50, cursor: Cursor = None) -> Response:
    return _json(queries.list_sets(conn, limit=limit, cursor=cursor))


@router.get("/sets/{name}", response_model=PredictionSetDetail, summary="A prediction set and its items",
            responses=_ERRORS)
def prediction_set(conn: Conn, name: str, limit: Limit = 50, cursor: Cursor = None) -> Response:
    return _json(queries.get_set(conn, name, limit=limit, cursor=cursor))
