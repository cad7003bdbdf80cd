"""Identities are verified, not trusted.

An event carries two identities: ``prompt_id`` (:func:`predstream.schemas.prompt_id` of its ``messages``
and ``prompt``) and ``event_id`` (:func:`predstream.schemas.event.event_id` of its job, step, sample
and ``prompt_id``). The consumer, replay and backfill store an event on the row its
``event_id`` names, and compare runs by ``prompt_id``. So both are recomputed from the
event's own fields before it is stored (:func:`check_identity`, called by
:meth:`predstream.schemas.codec.Decoder.decode` and by backfill for exported rows); a mismatch is an
:class:`~predstream.schemas.errors.InvalidEventError` with reason ``identity-mismatch``. No producer
can then take another job's row with a borrowed ``event_id``, nor poison comparisons with a
``prompt_id`` that is not its prompt's.

Cost, on the consumer's hot path: one sha256 of the short ``event_id`` input (about 1 µs)
and, for ``prompt_id``, a lookup: an eval prompt recurs at every evaluation of a run, so
the content already verified for a ``prompt_id`` is remembered (bounded, below) and
compared, which is cheaper than the canonical JSON and the hash. Content that differs from
the remembered one is hashed again, so the memory can only save work, never admit an
event. ``bench/identity.py`` measures it.
"""

from __future__ import annotations

from .errors import InvalidEventError
from .event import PredictionEvent, event_id
from .prompt_id import compute_prompt_id

__all__ = ["IDENTITY_MISMATCH", "check_identity"]

#: The dead-letter reason of an event whose identity does not match its fields.
IDENTITY_MISMATCH = "identity-mismatch"

#: At most this many verified prompts are remembered per process (then the memory restarts),
_MAX_ENTRIES = 4096
#: each of at most this many characters (longer ones are hashed every time).
_MAX_CHARS = 4096

_Content = tuple[str | None, tuple[tuple[str, str], ...] | None]
_verified: dict[str, _Content] = {}


def check_identity(event: PredictionEvent) -> PredictionEvent:
    """Return ``event`` when its ``prompt_id`` and ``event_id`` match its own fields.

    Raises :class:`InvalidEventError` (reason ``identity-mismatch``) naming the id and both
    values, shortened, otherwise.
    """
    carried = event.prompt_id
    messages = event.messages
    content: _Content = (event.prompt, None if messages is None else tuple((m.role, m.content) for m in messages))
    if _verified.get(carried) != content:
        computed = compute_prompt_id(event.messages_as_dicts(), event.prompt)
        if computed != carried:
            raise _mismatch("prompt_id", carried, computed, "its messages and prompt")
        _remember(carried, content)
    expected = event_id(
        job_id=event.job_id,
        step=event.step,
        sample_source=event.sample_source,
        sample_source_id=event.sample_source_id,
        source_index=event.source_index,
        sample_index=event.sample_index,
        prompt_id=carried,
        sequence_index=event.sequence_index,
    )
    if expected != event.event_id:
        raise _mismatch("event_id", event.event_id, expected,
                         "its job_id, step, sample_source(_id), source_index, sample_index, prompt_id "
                         "and sequence_index")
    return event


def _remember(pid: str, content: _Content) -> None:
    prompt, messages = content
    size = (len(prompt) if prompt is not None else 0) + sum(len(r) + len(c) for r, c in messages or ())
    if size > _MAX_CHARS:
        return
    if len(_verified) >= _MAX_ENTRIES:
        _verified.clear()
    _verified[pid] = content


def _mismatch(name: str, carried: str, computed: str, source: str) -> InvalidEventError:
    return InvalidEventError(
        f"{name} {carried[:12]}... does not match the one computed from {source} ({computed[:12]}...): "
        "the producer must compute it with schemas.event / schemas.prompt_id, not choose it",
        reason=IDENTITY_MISMATCH,
    )
