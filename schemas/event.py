"""The prediction event: a pydantic model that mirrors ``avro/prediction_event.v3.avsc``.

The model validates what Avro cannot: sizes, NUL characters (Postgres ``text`` rejects
them), finite non-negative numbers, hex identities, and that a prompt is present.
``PredictionEvent.from_avro`` / ``to_avro`` convert to and from the dicts fastavro reads
and writes; the codec (``predstream.schemas.codec``) turns those into bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from .errors import InvalidEventError
from .prompt_id import compute_prompt_id

__all__ = [
    "ChatMessage",
    "GenerationSettings",
    "PredictionEvent",
    "SampleSource",
    "event_id",
    "recency",
    "MAX_TEXT_CHARS",
    "MAX_JOB_ID_CHARS",
    "MAX_MESSAGES",
    "MAX_EVENT_BYTES",
    "LARGEST_RECORDED_FIELDS",
]

#: Largest prompt, prediction, ground truth or message content accepted, in characters.
MAX_TEXT_CHARS = 200_000
#: Longest job id, model name or sample source id, in characters.
MAX_JOB_ID_CHARS = 256
#: Most chat messages in one prompt.
MAX_MESSAGES = 256
#: Largest encoded event accepted on either side, in bytes (below Kafka's 1 MiB default).
MAX_EVENT_BYTES = 900_000
#: Largest step accepted (the table's INTEGER column).
MAX_STEP = 2**31 - 1

SampleSource = Literal["dataset", "prediction_set"]

_SEP = "\x1f"


def event_id(
    *,
    job_id: str,
    step: int,
    sample_source: str,
    sample_source_id: str | None,
    source_index: int | None,
    sample_index: int,
    prompt_id: str,
    sequence_index: int = 0,
) -> str:
    """Return the deterministic identity of an event (lowercase hex sha256).

    It is the sha256 of the fields below joined by U+001F, ``None`` written as "":
    ``job_id, step, sample_source, sample_source_id, source_index, sample_index,
    prompt_id, sequence_index``. The same prediction point of the same run always has the
    same id, however often it is retried, spooled, replayed or regenerated after a resume
    (``attempt`` is not part of it: a resumed run's regenerated step replaces the row).
    """
    parts = (
        job_id,
        str(step),
        sample_source,
        sample_source_id or "",
        "" if source_index is None else str(source_index),
        str(sample_index),
        prompt_id,
        str(sequence_index),
    )
    return hashlib.sha256(_SEP.join(parts).encode("utf-8")).hexdigest()


def recency(event: PredictionEvent) -> tuple[int, datetime]:
    """What makes one of two events with the same ``event_id`` the newer: the job's
    ``attempt`` counter first, then ``produced_at`` (a host's clock decides only within one
    attempt). Compare with ``<``/``>``; the sink's upsert applies the same order."""
    return event.attempt, event.produced_at


#: The fields a recorder fills when it publishes a prompt's prediction (job, step, times,
#: generation settings, token counts; the prediction itself empty), each at its largest: a
#: prompt passes the contract when an event of it with these does. The sampler checks every
#: dataset row this way, prediction sets every item.
LARGEST_RECORDED_FIELDS: Mapping[str, Any] = {
    "event_id": "0" * 64, "job_id": "j" * MAX_JOB_ID_CHARS, "epoch": 0.0, "step": 0, "prediction": "",
    "produced_at": datetime(2000, 1, 1, tzinfo=UTC), "prompt_tokens": 2**31 - 1, "completion_tokens": 2**31 - 1,
    "generation_ms": 1e9, "generation": {"max_new_tokens": 1_000_000},
}


_LongText = Annotated[str, StringConstraints(max_length=MAX_TEXT_CHARS)]
_ShortText = Annotated[str, StringConstraints(max_length=MAX_JOB_ID_CHARS)]
_Hex64 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
_TEXT_FIELDS = ("job_id", "prompt", "ground_truth", "prediction", "sample_source_id", "model_name")


def _nul(field: str) -> PydanticCustomError:
    return PydanticCustomError(
        "nul_character", "{field} contains a NUL character, which Postgres text cannot store", {"field": field}
    )


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=False)


class ChatMessage(_Frozen):
    """One chat turn. (NUL characters are checked by :class:`PredictionEvent`.)"""

    role: str = Field(min_length=1, max_length=64)
    content: _LongText


class GenerationSettings(_Frozen):
    """Generation settings used for a prediction."""

    max_new_tokens: int = Field(ge=1, le=1_000_000)
    do_sample: bool = False
    temperature: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    top_p: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False)
    top_k: int | None = Field(default=None, ge=0, le=2**31 - 1)
    num_beams: int = Field(default=1, ge=1, le=2**31 - 1)
    num_return_sequences: int = Field(default=1, ge=1, le=2**31 - 1)
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)


class PredictionEvent(_Frozen):
    """One prediction of one model on one eval prompt at one point of a training run."""

    event_id: _Hex64
    job_id: _ShortText = Field(min_length=1)
    epoch: float = Field(ge=0, allow_inf_nan=False)
    step: int = Field(ge=0, le=MAX_STEP)
    sample_index: int = Field(ge=0, le=2**31 - 1)
    sequence_index: int = Field(default=0, ge=0, le=2**31 - 1)
    prompt: _LongText | None = None
    messages: tuple[ChatMessage, ...] | None = Field(default=None, max_length=MAX_MESSAGES)
    ground_truth: _LongText | None = None
    prediction: _LongText
    prompt_id: _Hex64
    source_index: int | None = Field(default=None, ge=0, le=2**31 - 1)
    sample_source: SampleSource
    sample_source_id: _ShortText | None = None
    model_name: str | None = Field(default=None, max_length=1024)
    generation: GenerationSettings | None = None
    prompt_tokens: int | None = Field(default=None, ge=0, le=2**31 - 1)
    completion_tokens: int | None = Field(default=None, ge=0, le=2**31 - 1)
    generation_ms: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    produced_at: AwareDatetime
    #: the job's attempt counter (bumped at every train begin of a resumed run); of two events
    #: with the same event_id the higher attempt wins, then the later produced_at
    attempt: int = Field(default=0, ge=0, le=2**31 - 1)

    # Sizes, ranges and patterns above are checked by pydantic-core itself; the one Python
    # validator below does what it cannot, in one pass (the consumer's hot path).
    @model_validator(mode="after")
    def _contract(self) -> PredictionEvent:
        for name in _TEXT_FIELDS:
            value = getattr(self, name)
            if value is not None and "\x00" in value:
                raise _nul(name)
        if self.messages is not None:
            for m in self.messages:
                if "\x00" in m.content or "\x00" in m.role:
                    raise _nul("messages")
        elif self.prompt is None:
            raise ValueError("an event needs a prompt or chat messages; both are missing")
        if self.produced_at.utcoffset():
            object.__setattr__(self, "produced_at", self.produced_at.astimezone(UTC))
        return self

    # -- construction helpers -------------------------------------------------

    @classmethod
    def create(cls, **fields: Any) -> PredictionEvent:
        """Build an event, filling ``prompt_id``, ``event_id`` and ``produced_at`` if absent.

        Raises :class:`InvalidEventError` naming the first broken rule.
        """
        if "prompt_id" not in fields:
            try:
                fields["prompt_id"] = compute_prompt_id(
                    None if fields.get("messages") is None else [dict(m) for m in fields["messages"]],
                    fields.get("prompt"),
                )
            except ValueError as exc:
                raise InvalidEventError(str(exc), reason=getattr(exc, "reason", "missing-field:prompt")) from None
            except TypeError as exc:
                raise InvalidEventError(f"messages must be a list of {{role, content}} objects: {exc}",
                                        reason="wrong-type:messages") from None
        if "event_id" not in fields:
            fields["event_id"] = event_id(
                job_id=fields["job_id"],
                step=fields["step"],
                sample_source=fields["sample_source"],
                sample_source_id=fields.get("sample_source_id"),
                source_index=fields.get("source_index"),
                sample_index=fields["sample_index"],
                prompt_id=fields["prompt_id"],
                sequence_index=fields.get("sequence_index", 0),
            )
        fields.setdefault("produced_at", datetime.now(UTC))
        return cls.validate_dict(fields)

    @classmethod
    def validate_dict(cls, data: Mapping[str, Any]) -> PredictionEvent:
        """Validate a plain dict; raise :class:`InvalidEventError` with a one-line reason."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise InvalidEventError(_explain(exc), reason=_reason(exc)) from None

    @classmethod
    def from_avro(cls, record: Mapping[str, Any]) -> PredictionEvent:
        """Validate a record as fastavro reads it with the current reader schema."""
        return cls.validate_dict(record)

    def to_avro(self) -> dict[str, Any]:
        """Return the dict fastavro writes with the current schema."""
        gen = self.generation
        return {
            "event_id": self.event_id,
            "job_id": self.job_id,
            "epoch": self.epoch,
            "step": self.step,
            "sample_index": self.sample_index,
            "sequence_index": self.sequence_index,
            "prompt": self.prompt,
            "messages": None
            if self.messages is None
            else [{"role": m.role, "content": m.content} for m in self.messages],
            "ground_truth": self.ground_truth,
            "prediction": self.prediction,
            "prompt_id": self.prompt_id,
            "source_index": self.source_index,
            "sample_source": self.sample_source,
            "sample_source_id": self.sample_source_id,
            "model_name": self.model_name,
            "generation": None if gen is None else gen.model_dump(),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "generation_ms": self.generation_ms,
            "produced_at": self.produced_at,
            "attempt": self.attempt,
        }

    def messages_as_dicts(self) -> list[dict[str, str]] | None:
        """The chat messages as plain dicts (as hashed by ``prompt_id``), or ``None``."""
        if self.messages is None:
            return None
        return [{"role": m.role, "content": m.content} for m in self.messages]


def _explain(exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in err["loc"]) or (err.get("ctx") or {}).get("field") or "event"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "string_pattern_mismatch":
        msg = "must be 64 lowercase hex characters (a sha256)"
    elif err["type"] == "nul_character":
        msg = "contains a NUL character, which Postgres text cannot store"
    elif err["type"] == "timezone_aware":
        msg = "must carry a time zone (use UTC)"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {msg}{more}"


def _reason(exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    field = str(err["loc"][0]) if err["loc"] else (err.get("ctx") or {}).get("field", "event")
    msg = err["msg"]
    if err["type"] == "nul_character":
        return f"nul-character:{field}"
    if err["type"] == "string_unicode":
        return f"invalid-utf8:{field}"
    if "both are missing" in msg:
        return "missing-field:prompt"
    if "NUL" in msg:
        return f"nul-character:{field}"
    if "limit is" in msg or err["type"] in ("string_too_long", "too_long"):
        return f"too-large:{field}"
    if err["type"] == "missing":
        return f"missing-field:{field}"
    if err["type"] in ("greater_than_equal", "less_than_equal", "finite_number"):
        return f"out-of-range:{field}"
    if err["type"].endswith("_type") or err["type"].endswith("_parsing"):
        return f"wrong-type:{field}"
    return f"invalid:{field}"

