"""The columns of ``training_predictions`` the sink writes, and their types (as the migrations make them)."""

from __future__ import annotations

__all__ = ["UPSERT_COLUMNS", "DIRECT_COLUMNS", "COLUMN_TYPES"]

#: Columns the sink writes from each event (plus ``created_at`` and ``ingested_at``).
UPSERT_COLUMNS: tuple[str, ...] = (
    "event_id",
    "job_id",
    "epoch",
    "epoch_exact",
    "step",
    "sample_index",
    "sequence_index",
    "prompt",
    "messages",
    "ground_truth",
    "prediction",
    "prompt_id",
    "source_index",
    "sample_source",
    "sample_source_id",
    "set_id",
    "model_name",
    "generation",
    "prompt_tokens",
    "completion_tokens",
    "generation_ms",
    "produced_at",
    "attempt",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
)

#: Every column a row of the sink fills: created_at is the event's produced_at, ingested_at the batch's time.
DIRECT_COLUMNS: tuple[str, ...] = (*UPSERT_COLUMNS, "created_at", "ingested_at")

_TEXT, _INT4, _INT8, _FLOAT8 = "text", "integer", "bigint", "double precision"
_JSONB, _TSTZ = "jsonb", "timestamp with time zone"

#: The type of each of :data:`DIRECT_COLUMNS` in a migrated table (``format_type`` spelling).
COLUMN_TYPES: dict[str, str] = {
    "event_id": _TEXT,
    "job_id": _TEXT,
    "epoch": _INT4,
    "epoch_exact": _FLOAT8,
    "step": _INT4,
    "sample_index": _INT4,
    "sequence_index": _INT4,
    "prompt": _TEXT,
    "messages": _JSONB,
    "ground_truth": _TEXT,
    "prediction": _TEXT,
    "prompt_id": _TEXT,
    "source_index": _INT4,
    "sample_source": _TEXT,
    "sample_source_id": _TEXT,
    "set_id": _TEXT,
    "model_name": _TEXT,
    "generation": _JSONB,
    "prompt_tokens": _INT4,
    "completion_tokens": _INT4,
    "generation_ms": _FLOAT8,
    "produced_at": _TSTZ,
    "attempt": _INT4,
    "kafka_topic": _TEXT,
    "kafka_partition": _INT4,
    "kafka_offset": _INT8,
    "created_at": _TSTZ,
    "ingested_at": _TSTZ,
}
