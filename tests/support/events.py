"""The one event factory of the tests: valid, distinct prediction events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from predstream.schemas import PredictionEvent

__all__ = ["T0", "make_event", "make_events"]

#: the time every made event is produced at (plus ``step`` seconds), unless given
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def make_event(i: int = 0, *, job: str = "job-1", step: int = 10, prediction: str | None = None,
               produced_at: datetime | None = None, **fields: Any) -> PredictionEvent:
    """Event ``i`` of a run: prompt ``what is i + i?``, the right answer (unless
    ``prediction=``), ``sample_index = source_index = i``; any other field can be given."""
    base: dict[str, Any] = dict(
        job_id=job, epoch=step / 100, step=step, sample_index=i, source_index=i,
        prompt=f"what is {i} + {i}?", ground_truth=str(2 * i),
        prediction=prediction if prediction is not None else str(2 * i),
        sample_source="dataset", sample_source_id="synthetic",
        produced_at=produced_at or (T0 + timedelta(seconds=step)),
    )
    return PredictionEvent.create(**{**base, **fields})


def make_events(n: int, *, start: int = 0, **kwargs: Any) -> list[PredictionEvent]:
    """Events ``start`` .. ``start + n - 1`` (see :func:`make_event`)."""
    return [make_event(i, **kwargs) for i in range(start, start + n)]
