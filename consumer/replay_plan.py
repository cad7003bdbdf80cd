"""Planning a replay: where it starts and where it ends, in each partition.

:func:`plan_replay` turns a start point (the beginning, a time, or explicit offsets) into one
:class:`PartitionRange` per partition, ``[start, end)``, the end being the high watermark
when the replay starts (:func:`~predstream.consumer._kafka.high_watermarks`). :func:`parse_offsets` and
:func:`parse_timestamp` read the CLI's ``--from-offsets`` and ``--from-timestamp``;
:func:`format_offsets` writes offsets back in that form (a replay's resume hint).

Broker quirks handled here (measured on tansu 0.6, harmless on Apache Kafka):

* an uncached ``get_watermark_offsets`` under-reports the high watermark (it answers the
  base offset of the last record batch + 1): the ends come from
  :func:`~predstream.consumer._kafka.high_watermarks`, which checks them with a fetch;
* ``offsets_for_times`` answers at record-batch granularity, and 0 instead of -1 when no
  record is at or after the time. So the answer is taken as a lower bound: the replay reads
  from there, skipping messages older than the time until the first one at or after it
  (Kafka's definition of the start). A time after the last record thus replays nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ._kafka import high_watermarks, list_partitions
from .errors import ReplayError

if TYPE_CHECKING:
    from confluent_kafka import Consumer

__all__ = [
    "PartitionRange",
    "plan_replay",
    "parse_offsets",
    "parse_timestamp",
    "format_offsets",
]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PartitionRange:
    """Offsets ``[start, end)`` of one partition to replay."""

    partition: int
    start: int
    end: int

    @property
    def size(self) -> int:
        return max(0, self.end - self.start)


def parse_offsets(text: str) -> dict[int, int]:
    """``"0:120,3:7"`` -> ``{0: 120, 3: 7}``."""
    out: dict[int, int] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        left, sep, right = part.partition(":")
        try:
            partition, offset = int(left), int(right)
        except ValueError:
            partition = offset = -1
        if not sep or partition < 0 or offset < 0:
            raise ReplayError(f"bad offset {part!r}: write PARTITION:OFFSET pairs, e.g. 0:120,3:7")
        if partition in out:
            raise ReplayError(f"partition {partition} is given twice in {text!r}")
        out[partition] = offset
    if not out:
        raise ReplayError("no offsets given: write PARTITION:OFFSET pairs, e.g. 0:120,3:7")
    return out


def format_offsets(offsets: Mapping[int, int]) -> str:
    """``{0: 120, 3: 7}`` -> ``"0:120,3:7"`` (what ``--from-offsets`` reads)."""
    return ",".join(f"{p}:{o}" for p, o in sorted(offsets.items()))


def parse_timestamp(text: str) -> datetime:
    """An ISO 8601 time (``2026-11-03T14:00:00Z``, ``2026-11-03 14:00+01:00``); no zone = UTC."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ReplayError(f"bad time {text!r}: use ISO 8601, e.g. 2026-11-03T14:00:00Z") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# -- the broker side ---------------------------------------------------------------------


def _partitions(consumer: Consumer, topic: str, timeout_s: float) -> list[int]:
    from confluent_kafka import KafkaException

    try:
        partitions = list_partitions(consumer, topic, timeout_s)
    except KafkaException as exc:
        raise ReplayError(f"cannot read topic metadata: {exc.args[0].str()}; is the broker reachable?") from None
    if not partitions:
        raise ReplayError(f"topic {topic!r} does not exist on the broker: check PREDSTREAM_TOPIC / --topic")
    return partitions


def plan_replay(
    consumer: Consumer,
    topic: str,
    *,
    from_timestamp: datetime | None = None,
    from_offsets: Mapping[int, int] | None = None,
    timeout_s: float = 30.0,
) -> tuple[list[PartitionRange], int | None]:
    """The ranges to replay (default: every partition from its beginning) and, for a
    start time, that time in ms since the epoch (messages before it are skipped)."""
    from confluent_kafka import KafkaException, TopicPartition

    if from_timestamp is not None and from_offsets is not None:
        raise ReplayError("give a start time or start offsets, not both")
    partitions = _partitions(consumer, topic, timeout_s)
    if from_offsets is not None:
        unknown = sorted(set(from_offsets) - set(partitions))
        if unknown:
            raise ReplayError(f"{topic} has partitions {partitions[0]}..{partitions[-1]}; no partition {unknown[0]}")
        partitions = sorted(from_offsets)
    marks = high_watermarks(consumer, topic, partitions, timeout_s, error=ReplayError)
    since_ms: int | None = None
    if from_timestamp is not None:
        since_ms = int(from_timestamp.timestamp() * 1000)
        try:
            wanted = [TopicPartition(topic, p, since_ms) for p in partitions]
            found = consumer.offsets_for_times(wanted, timeout=timeout_s)
        except KafkaException as exc:
            raise ReplayError(f"cannot look up offsets by time: {exc.args[0].str()}") from None
        answers = {tp.partition: tp.offset for tp in found}
    ranges = []
    for p in partitions:
        lo, hi = marks[p]
        if from_offsets is not None:
            start = from_offsets[p]
            if start < lo:
                _log.warning("partition %d starts at offset %d (older ones are gone); replaying from there", p, lo)
            start = min(max(start, lo), hi)
        elif since_ms is not None:
            answer = answers.get(p, -1)
            # -1: nothing at or after the time; anything else is a lower bound (see module doc)
            start = hi if answer < 0 else min(max(answer, lo), hi)
        else:
            start = lo
        ranges.append(PartitionRange(p, start, hi))
    return ranges, since_ms
