"""``POST /api/v1/predictions``: record predictions over HTTP, through the topic.

The one write endpoint of ``predstream serve``, for code that cannot run the Python
publisher (another language, a notebook elsewhere, the old system's local persistence
API). It takes a JSON array of prediction records, or ``{"predictions": [...]}``
(:mod:`.records` says what a record is), and:

1. refuses the request unless it carries ``Authorization: Bearer <PREDSTREAM_WEB_TOKEN>``
   (401; compared in constant time). With no token configured, writes are off and the
   endpoint answers 403 saying how to turn them on;
2. validates **every** record against the contract first. One bad record refuses the whole
   request with 422, naming each bad record's index and field, and nothing of it is
   published;
3. publishes the events through the training side's :class:`~predstream.producer.Publisher`
   (the topic stays the only way into the table: the consumer stores them, as it stores
   training's) and answers 202 with their ``event_id`` s, in the order of the records.

202 means accepted for delivery, as ``Publisher.publish`` does: the consumer stores the
rows a moment later; with the broker down the events wait in the spool and are re-sent.
The publisher lives as long as the app: it is opened by the app's lifespan when a token is
configured, and closed (flushed, at most ``PREDSTREAM_FLUSH_TIMEOUT_S``, the rest spooled)
when the server stops. Its settings are the server's broker settings (``PREDSTREAM_KAFKA_*``,
``PREDSTREAM_TOPIC``, registry) plus the producer's own from the environment
(``PREDSTREAM_SPOOL_DIR``, ...).
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, FastAPI, HTTPException, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from predstream.producer import ProducerSettings, Publisher, PublisherClosedError
from predstream.schemas import ConfigError, InvalidEventError, PredictionEvent, StreamSettings

from .records import (
    MAX_RECORDS,
    RecordError,
    inline_refs,
    problem_of,
    record_json_schema,
    record_to_event,
    records_in_body,
    request_json_schema,
)
from .settings import ServeSettings

__all__ = [
    "router",
    "install",
    "producer_settings",
    "PostPredictionsAccepted",
    "PostPredictionsRejected",
    "RecordProblem",
    "ErrorDetail",
    "MAX_BODY_BYTES",
]

_log = logging.getLogger(__name__)

#: Largest request body accepted, in bytes (one event may be up to 900,000 bytes).
MAX_BODY_BYTES = 32 * 1024 * 1024
#: Bad records listed in a 422 at most (the message counts them all).
_MAX_PROBLEMS_LISTED = 100
_RECORD_COMPONENT = "TrainingPrediction"


class PostPredictionsAccepted(BaseModel):
    """The records were valid and are handed to the publisher (202)."""

    accepted: int = Field(description="How many records were accepted (all of the request's).")
    event_ids: list[str] = Field(description="Each record's event_id, in the order of the records.")
    prompt_ids: list[str] = Field(
        description="Each record's prompt_id (GET /api/v1/prompts/{prompt_id}), in the same order."
    )
    topic: str = Field(description="The Kafka topic the events are published to.")


class RecordProblem(BaseModel):
    """One reason a request was refused."""

    index: int | None = Field(description="Position of the bad record in the request (0-based); null: the body itself.")
    field: str | None = Field(description="The field the contract refused, when one is to blame.")
    reason: str = Field(description="Short code, as a dead letter's reason: out-of-range:step, identity-mismatch, ...")
    message: str = Field(description="What is wrong, for people.")


class PostPredictionsRejected(BaseModel):
    """The request was refused (422); nothing of it was published."""

    detail: str = Field(description="One line: the first problem, and how many records were bad.")
    errors: list[RecordProblem] = Field(description=f"The problems, at most {_MAX_PROBLEMS_LISTED}, in record order.")


class ErrorDetail(BaseModel):
    """Why a request was not served."""

    detail: str


class _PublisherLike(Protocol):
    def publish_many(self, events: Iterable[PredictionEvent]) -> None: ...

    def close(self, timeout: float | None = None) -> Any: ...


@dataclass
class _Ingest:
    """What the endpoint needs, on ``app.state.ingest``."""

    settings: ServeSettings
    producer_settings: ProducerSettings | None  # None: no token, writes are off
    #: makes the publisher when the app starts (tests may replace it before that)
    publisher_factory: Callable[[ProducerSettings], _PublisherLike] = Publisher
    publisher: _PublisherLike | None = None
    stopped: bool = False  # the app is shutting down: no publisher is opened again
    lock: threading.Lock = field(default_factory=threading.Lock)

    def open(self) -> _PublisherLike:
        with self.lock:
            if self.stopped:
                raise PublisherClosedError("the server is shutting down")
            if self.publisher is None:
                assert self.producer_settings is not None, "writes are off: nothing to publish with"
                self.publisher = self.publisher_factory(self.producer_settings)
            return self.publisher

    def close(self) -> None:
        with self.lock:
            publisher, self.publisher, self.stopped = self.publisher, None, True
        if publisher is not None:
            _log.info("write endpoint: closing its publisher (flush, then spool what is left)")
            publisher.close()


def producer_settings(settings: ServeSettings) -> ProducerSettings:
    """The publisher's settings: the server's broker, topic and registry settings, and the
    producer's own (spool, timeouts) from ``PREDSTREAM_*`` as training reads them."""
    return ProducerSettings(**{name: getattr(settings, name) for name in StreamSettings.model_fields})


_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="WebToken",
    description="The value of PREDSTREAM_WEB_TOKEN on the server: `Authorization: Bearer <token>`.",
)

router = APIRouter(tags=["write"])

_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorDetail, "description": "No `Authorization: Bearer` header, or the wrong token."},
    403: {"model": ErrorDetail, "description": "Writes are off: the server has no PREDSTREAM_WEB_TOKEN."},
    413: {"model": ErrorDetail, "description": f"More than {MAX_BODY_BYTES} bytes or {MAX_RECORDS} records."},
    415: {"model": ErrorDetail, "description": "The body is not sent as application/json."},
    422: {"model": PostPredictionsRejected, "description": "A record breaks the contract; nothing was published."},
    503: {"model": ErrorDetail, "description": "The server is shutting down; send again."},
}


@router.post(
    "/predictions",
    status_code=202,
    response_model=PostPredictionsAccepted,
    response_description="Every record was valid; the events are handed to the publisher.",
    responses=_ERROR_RESPONSES,
    summary="Record predictions (published to the topic, stored by the consumer)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "A JSON array of prediction records, or an object {\"predictions\": [...]}.",
            "content": {
                "application/json": {"schema": request_json_schema(f"#/components/schemas/{_RECORD_COMPONENT}")}
            },
        }
    },
)
async def post_predictions(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> PostPredictionsAccepted | JSONResponse:
    """Validate every record against the event contract, then publish them all; or refuse
    the request (422, naming each bad record's index and field) and publish none."""
    ingest: _Ingest = request.app.state.ingest
    _authorize(ingest.settings, credentials)
    raw = await _read_body(request)
    # parsing and validating take a core for a while: off the event loop, which serves reads meanwhile
    events, problems = await run_in_threadpool(_validate_all, raw, datetime.now(UTC))
    if problems:
        return _rejected(problems)
    try:
        publisher = ingest.publisher
        if publisher is None:  # no lifespan ran (a bare ASGI client): open it now
            publisher = await run_in_threadpool(ingest.open)
        publisher.publish_many(events)  # on the event loop's thread: one publishing thread
    except PublisherClosedError:
        raise HTTPException(503, "the server is shutting down; send the request again") from None
    _log.debug("write endpoint: %d events published", len(events))
    return PostPredictionsAccepted(accepted=len(events), event_ids=[e.event_id for e in events],
                                   prompt_ids=[e.prompt_id for e in events], topic=ingest.settings.topic)


_WRITES_OFF = (
    "writes are off: this server has no token. Start it with PREDSTREAM_WEB_TOKEN=<a long random secret> "
    "(and a broker: PREDSTREAM_KAFKA_BOOTSTRAP) and send `Authorization: Bearer <that secret>`"
)


def _authorize(settings: ServeSettings, credentials: HTTPAuthorizationCredentials | None) -> None:
    if settings.web_token is None:
        raise HTTPException(403, _WRITES_OFF)
    expected = settings.web_token.get_secret_value().encode("utf-8")
    given = (credentials.credentials if credentials is not None else "").encode("utf-8", "surrogateescape")
    # compare_digest takes the same time wherever the first difference is
    if credentials is None or not hmac.compare_digest(given, expected):
        raise HTTPException(
            401,
            "send the server's PREDSTREAM_WEB_TOKEN as `Authorization: Bearer <token>`"
            if credentials is None else "wrong token: send the server's PREDSTREAM_WEB_TOKEN",
            headers={"WWW-Authenticate": "Bearer"},
        )


async def _read_body(request: Request) -> bytes:
    media_type = request.headers.get("content-type", "application/json").split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise HTTPException(415, f"send the records as JSON (Content-Type: application/json), not {media_type!r}")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise HTTPException(413, _too_large())
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise HTTPException(413, _too_large())
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large() -> str:
    return (f"the body is over {MAX_BODY_BYTES} bytes: send at most {MAX_RECORDS} records per request, "
            "in several requests")


def _validate_all(raw: bytes, received_at: datetime) -> tuple[list[PredictionEvent], list[RecordError]]:
    """The body parsed and every record checked (all of them, before anything is published)."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, nesting too deep
        return [], [RecordError(None, None, "invalid:body", f"the body is not JSON: {str(exc)[:200]}")]
    try:
        records = records_in_body(body)
    except InvalidEventError as exc:
        return [], [problem_of(None, exc)]
    if len(records) > MAX_RECORDS:
        raise HTTPException(413, f"{len(records)} records: send at most {MAX_RECORDS} per request")
    events: list[PredictionEvent] = []
    problems: list[RecordError] = []
    for index, record in enumerate(records):
        try:
            events.append(record_to_event(record, received_at=received_at))
        except InvalidEventError as exc:
            problems.append(problem_of(index, exc))
    return events, problems


def _rejected(problems: Sequence[RecordError]) -> JSONResponse:
    first = problems[0]
    where = "" if first.index is None else f"record {first.index}: "
    more = f" (and {len(problems) - 1} more bad records)" if len(problems) > 1 else ""
    detail = f"{where}{first.message}{more}; nothing was published"
    listed = [RecordProblem(**p.__dict__) for p in problems[:_MAX_PROBLEMS_LISTED]]
    payload = PostPredictionsRejected(detail=detail, errors=listed)
    return JSONResponse(payload.model_dump(mode="json"), status_code=422)


# -- plugging it into the app ----------------------------------------------------------


def install(app: FastAPI, settings: ServeSettings, *, prefix: str) -> None:
    """Add the write endpoint to ``app`` (``prefix``: the API's, ``/api/v1``).

    With a token configured, the broker must be too (a :class:`ConfigError` says so at
    once, before the server starts); the publisher is opened and closed by the app's lifespan.
    """
    producer: ProducerSettings | None = None
    if settings.web_token is not None:
        if not settings.web_token.get_secret_value().strip():
            raise ConfigError("bad setting PREDSTREAM_WEB_TOKEN: it is empty; give a long random secret, or unset it")
        if not settings.kafka_bootstrap:
            raise ConfigError(
                "the write endpoint (PREDSTREAM_WEB_TOKEN is set) publishes to Kafka: set "
                "PREDSTREAM_KAFKA_BOOTSTRAP=host:port, start the local stack with `predstream up`, "
                "or unset PREDSTREAM_WEB_TOKEN"
            )
        producer = producer_settings(settings)
    app.state.ingest = _Ingest(settings=settings, producer_settings=producer)
    app.include_router(router, prefix=prefix)
    _wrap_lifespan(app)
    _document_record(app)


def _wrap_lifespan(app: FastAPI) -> None:
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(the_app: FastAPI) -> AsyncIterator[Any]:
        async with inner(the_app) as state:
            ingest: _Ingest = the_app.state.ingest
            if ingest.producer_settings is not None:  # writes are on
                await run_in_threadpool(ingest.open)
            try:
                yield state
            finally:
                await run_in_threadpool(ingest.close)

    app.router.lifespan_context = lifespan


def _document_record(app: FastAPI) -> None:
    """Put the record's schema (derived from the contract) into the OpenAPI components."""
    base = app.openapi

    def openapi() -> dict[str, Any]:
        fresh = app.openapi_schema is None
        schema = base()
        if fresh:
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components[_RECORD_COMPONENT] = inline_refs(record_json_schema())
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
