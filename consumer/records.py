"""The records :class:`~predstream.consumer.sink.PostgresSink` stores: an event decoded by the
pydantic path with where it came from (:class:`IngestRecord`), or a row the transcoder made
(:class:`~predstream.consumer.transcode.CopyRow`); the column values of a decoded one
(:func:`row_values`), and newest-wins within a batch (:func:`newest_per_event`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg.types.json import Jsonb

from predstream.schemas.event import PredictionEvent, recency

from .transcode import CopyRow

__all__ = ["IngestRecord", "SinkRecord", "row_values", "newest_per_event", "key_rank"]


@dataclass(frozen=True)
class IngestRecord:
    """One event to store, with where it came from.

    ``topic``/``partition``/``offset`` are ``None`` for rows that did not come from Kafka
    (backfill); ``timestamp_ms`` is the Kafka message timestamp, if any.
    """

    event: PredictionEvent
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    timestamp_ms: int | None = None


#: What :meth:`PostgresSink.write` takes: an event decoded by the pydantic path, or a transcoded row.
SinkRecord = IngestRecord | CopyRow


def newest_per_event(batch: Iterable[SinkRecord]) -> tuple[list[SinkRecord], int]:
    """Keep one record per event_id: the newest by :func:`~predstream.schemas.event.recency` (the later
    one in the batch on a tie)."""
    rows = list(batch)
    if all(type(r) is CopyRow for r in rows) and len({r[1] for r in rows}) == len(rows):  # type: ignore[index]
        return rows, 0  # the usual batch: transcoded, no event twice
    best: dict[bytes, tuple[tuple[int, int], SinkRecord]] = {}
    for rec in rows:
        key, rank = key_rank(rec)
        seen = best.get(key)
        if seen is None or rank >= seen[0]:
            best[key] = (rank, rec)
    return [rec for _, rec in best.values()], len(rows) - len(best)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)


def key_rank(rec: SinkRecord) -> tuple[bytes, tuple[int, int]]:
    """A record's event_id, and its :func:`~predstream.schemas.event.recency` as (attempt, microseconds)."""
    if isinstance(rec, CopyRow):
        return rec.event_id, (rec.attempt, rec.produced_us)
    attempt, produced_at = recency(rec.event)
    return rec.event.event_id.encode(), (attempt, (produced_at - _EPOCH) // _MICRO)


def row_values(rec: IngestRecord) -> tuple[Any, ...]:
    """The values of ``UPSERT_COLUMNS`` for one record, as the sink writes them."""
    ev = rec.event
    messages = ev.messages_as_dicts()
    return (
        ev.event_id,
        ev.job_id,
        math.floor(ev.epoch),
        ev.epoch,
        ev.step,
        ev.sample_index,
        ev.sequence_index,
        ev.prompt,
        None if messages is None else Jsonb(messages),
        ev.ground_truth,
        ev.prediction,
        ev.prompt_id,
        ev.source_index,
        ev.sample_source,
        ev.sample_source_id,
        ev.sample_source_id if ev.sample_source == "prediction_set" else None,
        ev.model_name,
        None if ev.generation is None else Jsonb(ev.generation.model_dump()),
        ev.prompt_tokens,
        ev.completion_tokens,
        ev.generation_ms,
        ev.produced_at,
        ev.attempt,
        rec.topic,
        rec.partition,
        rec.offset,
    )
