"""Prediction records as the write endpoint takes them, and their JSON schema.

A *record* is a prediction event (:class:`~predstream.schemas.PredictionEvent`, the
contract) whose identity may be left out, as the old system's local persistence API and its
``TrainingPrediction`` type allowed (``source_index?``, ``prompt_id?``, ``sample_source?``,
``sample_source_id?``). What a record leaves out is filled exactly as the training side fills
it (:meth:`PredictionEvent.create <predstream.schemas.PredictionEvent.create>`):

* ``prompt_id``: computed from ``messages`` / ``prompt`` (:mod:`predstream.schemas.prompt_id`);
* ``event_id``: computed from the job, step, sample and ``prompt_id``;
* ``sample_source``: ``"dataset"`` (as ``predstream backfill`` assumes for the old rows);
* ``produced_at``: the time the server received the record (UTC).

Every record is then validated by the contract itself (the same pydantic model the producer
and the consumer use) and its identity checked (:func:`~predstream.schemas.check_identity`):
an ``event_id`` or ``prompt_id`` a record does carry must be the one its fields give. Nothing
here repeats a rule of the contract; :func:`record_json_schema` derives the documented schema
from the model and the Avro field docs.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from predstream.schemas import (
    CURRENT_VERSION,
    MAX_EVENT_BYTES,
    InvalidEventError,
    PredictionEvent,
    SingleObjectEncoder,
    check_identity,
    load_schema,
)

__all__ = [
    "IDENTITY_FIELDS",
    "MAX_RECORDS",
    "BODY_KEY",
    "RecordError",
    "record_to_event",
    "records_in_body",
    "problem_of",
    "event_json_schema",
    "record_json_schema",
    "request_json_schema",
    "inline_refs",
]

#: Fields a record may leave out; they are computed (or defaulted) as the producer does.
IDENTITY_FIELDS = ("event_id", "prompt_id", "source_index", "sample_source", "sample_source_id", "produced_at")
#: Most records one request may carry.
MAX_RECORDS = 10_000
#: The key of the object form of a request body: ``{"predictions": [...]}``.
BODY_KEY = "predictions"

# a syntactically valid stand-in for an identity the record leaves out, so the contract can
# check every other field before the identity is computed from the checked values
_PLACEHOLDER_ID = "0" * 64


@dataclass(frozen=True)
class RecordError:
    """Why one record (``index``; ``None``: the body as a whole) was refused."""

    index: int | None
    field: str | None
    reason: str
    message: str


def records_in_body(body: Any) -> list[Any]:
    """The records of a parsed request body: a JSON array, or ``{"predictions": [...]}``.

    Raises :class:`InvalidEventError` (reason ``invalid:body``) for any other shape.
    """
    if isinstance(body, list):
        return body
    if isinstance(body, dict):
        unknown = sorted(set(body) - {BODY_KEY})
        if unknown:
            raise InvalidEventError(
                f"unknown key {unknown[0]!r} in the body: send a JSON array of records or {{\"{BODY_KEY}\": [...]}}",
                reason="invalid:body",
            )
        records = body.get(BODY_KEY)
        if isinstance(records, list):
            return records
        raise InvalidEventError(f"\"{BODY_KEY}\" must be a JSON array of records", reason="invalid:body")
    raise InvalidEventError(
        f"the body must be a JSON array of records or {{\"{BODY_KEY}\": [...]}}, not {_json_type(body)}",
        reason="invalid:body",
    )


def record_to_event(record: Any, *, received_at: datetime | None = None) -> PredictionEvent:
    """One record as a validated, identity-checked event.

    Raises :class:`InvalidEventError` whose message names the field and whose ``reason`` is
    the dead-letter reason the consumer would give (``out-of-range:step``, ``identity-mismatch``, ...).
    """
    if not isinstance(record, dict):
        raise InvalidEventError(f"a record must be a JSON object, not {_json_type(record)}", reason="wrong-type:record")
    fields = {k: v for k, v in record.items() if not (k in IDENTITY_FIELDS and v is None)}
    given_ids = {name: fields[name] for name in ("prompt_id", "event_id") if name in fields}
    fields.setdefault("sample_source", "dataset")
    fields.setdefault("produced_at", received_at or datetime.now(UTC))
    # 1. every field but the identities, checked by the contract (types, ranges, sizes, NULs)
    checked = PredictionEvent.validate_dict(
        {**fields, "prompt_id": _PLACEHOLDER_ID, "event_id": _PLACEHOLDER_ID, **given_ids}
    )
    # 2. the identities computed from the checked values, as the producer computes them
    event = PredictionEvent.create(**checked.model_dump(exclude={"prompt_id", "event_id"}), **given_ids)
    # 3. an identity the record carries must be the one its fields give (one it left out was
    #    just computed from them)
    if given_ids:
        check_identity(event)
    # 4. small enough for the topic (the publisher would drop a larger one after the 202)
    _check_encoded_size(event)
    return event


_ENCODER = SingleObjectEncoder()  # stateless: the frame the publisher writes (or the larger of the two framings)
# below this many characters of text an event cannot reach MAX_EVENT_BYTES (4 bytes a character at most)
_SAFE_CHARS = (MAX_EVENT_BYTES - 64 * 1024) // 4


def _check_encoded_size(event: PredictionEvent) -> None:
    texts = (event.prompt, event.prediction, event.ground_truth, event.job_id, event.sample_source_id, event.model_name)
    chars = sum(len(t) for t in texts if t) + sum(len(m.content) + len(m.role) for m in event.messages or ())
    if chars <= _SAFE_CHARS:
        return
    size = len(_ENCODER.encode(event))
    if size > MAX_EVENT_BYTES:
        raise InvalidEventError(
            f"the record is {size} bytes as an event; the limit is {MAX_EVENT_BYTES}: shorten its texts",
            reason="too-large:message",
        )


def problem_of(index: int | None, exc: InvalidEventError) -> RecordError:
    """A refusal as the API reports it: the field is the one the reason names."""
    reason = exc.reason
    field: str | None = reason.split(":", 1)[1] if ":" in reason else None
    if reason == "identity-mismatch":
        field = str(exc).split(" ", 1)[0]  # "event_id ... does not match" / "prompt_id ..."
    if field in ("record", "body", "message"):  # the record as a whole
        field = None
    return RecordError(index=index, field=field, reason=reason, message=str(exc))


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


# -- JSON schemas, derived from the contract ----------------------------------------------


def _avro_docs() -> dict[str, tuple[str | None, dict[str, str]]]:
    """Record name -> (record doc, field name -> field doc), from the current Avro schema."""
    docs: dict[str, tuple[str | None, dict[str, str]]] = {}

    def visit(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                visit(item)
        elif isinstance(node, dict):
            if node.get("type") == "record":
                docs[str(node["name"]).rsplit(".", 1)[-1]] = (
                    node.get("doc"),
                    {f["name"]: f["doc"] for f in node["fields"] if f.get("doc")},
                )
                for f in node["fields"]:
                    visit(f["type"])
            elif node.get("type") == "array":
                visit(node["items"])

    visit(json.loads(json.dumps(load_schema(CURRENT_VERSION))))
    return docs


def _describe(schema: dict[str, Any], doc: str | None, field_docs: dict[str, str]) -> None:
    if doc:
        schema["description"] = doc
    for name, prop in schema.get("properties", {}).items():
        prop.pop("title", None)
        if name in field_docs:
            prop["description"] = field_docs[name]


def event_json_schema() -> dict[str, Any]:
    """JSON schema of :class:`PredictionEvent` (refs ``#/$defs/...``), described by the Avro docs."""
    schema = PredictionEvent.model_json_schema(ref_template="#/$defs/{model}")
    docs = _avro_docs()
    _describe(schema, *docs["PredictionEvent"])
    for name, sub in schema.get("$defs", {}).items():
        if name in docs:
            _describe(sub, *docs[name])
    schema["properties"]["produced_at"]["description"] += (
        " In JSON: an ISO 8601 time with a zone, e.g. 2026-11-01T12:00:00Z."
    )
    return schema


def record_json_schema() -> dict[str, Any]:
    """JSON schema of a record the write endpoint takes: the event's, identity optional."""
    schema = event_json_schema()
    schema["title"] = "TrainingPrediction"
    schema["description"] = (
        "A prediction to record, as POST /api/v1/predictions takes it: a prediction event whose "
        "identity (" + ", ".join(IDENTITY_FIELDS) + ") may be left out or null; what is left out is "
        "computed as the training side computes it (sample_source defaults to 'dataset', produced_at "
        "to the time the server received it). At least one of prompt and messages is needed."
    )
    schema["required"] = [name for name in schema["required"] if name not in IDENTITY_FIELDS]
    props = schema["properties"]
    for name in IDENTITY_FIELDS:
        prop = props[name]
        if "anyOf" not in prop:
            description = prop.pop("description", None)
            props[name] = {"anyOf": [prop, {"type": "null"}], **({"description": description} if description else {})}
        props[name]["default"] = None
    return schema


def request_json_schema(record_ref: str) -> dict[str, Any]:
    """JSON schema of the request body, with ``record_ref`` the ``$ref`` of a record."""
    records = {"type": "array", "items": {"$ref": record_ref}, "maxItems": MAX_RECORDS}
    return {
        "anyOf": [
            records,
            {
                "type": "object",
                "properties": {BODY_KEY: copy.deepcopy(records)},
                "required": [BODY_KEY],
                "additionalProperties": False,
            },
        ],
    }


def inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with its ``#/$defs/...`` references replaced by the definitions (no ``$defs``)."""
    defs = schema.get("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(copy.deepcopy(defs[ref.removeprefix("#/$defs/")]))
            return {k: resolve(v) for k, v in node.items() if k != "$defs"}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    out: dict[str, Any] = resolve(schema)
    return out

