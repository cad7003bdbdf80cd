"""Pick eval prompts from a dataset, each with a stable identity.

:func:`sample_dataset` reads a dataset (:mod:`.dataset_source`), checks every row once, ranks
the usable rows by ``seed`` and returns ``n`` of them as :class:`Sample` objects carrying the
contract's identity fields:

* ``source_index`` — the row's index in the ORIGINAL dataset: the array index of a JSON
  array file, a list or a ``datasets`` dataset; for a JSONL file the 0-based line index
  counting EVERY line (blank and invalid lines included), so the index points at the
  line a person finds in the file (line ``source_index + 1``).
* ``prompt_id`` — :func:`predstream.schemas.prompt_id` of exactly the ``messages`` and ``prompt`` the
  events will carry.
* ``sample_index`` — 0..n-1 within this sample.
* ``sample_source="dataset"``, ``sample_source_id`` — the dataset's id: given by the
  caller (``dataset_id=``), else :func:`.dataset_source.dataset_id` (a file: its resolved
  real path, so it does not depend on how the path is spelled).

Sampling (:mod:`predstream.schemas.sample_rank`, with vectors for other languages): every usable row is
ranked by ``HMAC-SHA256(key=decimal seed, msg=prompt_id)``; the ``n`` smallest ranks are
taken, ties (the same prompt at several ``source_index``) broken by ``source_index``; the
sample is listed in ``source_index`` order. A row's rank depends only on the seed and its
own prompt, so the same dataset and seed give the same prompts on every run and every rank,
and a dataset that grows keeps nearly all of its sample (appending 100 rows to 1,000
replaces on average 0.73 of 8 picks).

Rows (see :class:`RowFormat`): chat ``messages`` (a list of ``{"role", "content"}``) or a
``prompt`` string (both are allowed; generation then uses the messages). The reference
answer comes from the first present field of ``ground_truth_field`` (default
``ground_truth``, ``answer``, ``completion``, ``response``). When ``messages`` end with an
``assistant`` turn, that turn is the answer, not part of the prompt: it is removed from
the messages and used as the ground truth when no ground-truth field is present. An empty
list of messages counts as no messages. Messages are reduced to ``role`` and ``content``
(what the event carries; other keys such as ``name`` are dropped).

Every row is checked once, here, against the event contract itself
(``schemas.PredictionEvent`` and ``schemas.MAX_EVENT_BYTES``): a row the contract would
refuse (no prompt, a non-string, a lone surrogate, a role over the contract's length,
text over its limits, NUL characters, ``null``) is skipped with a warning naming the file
and line, so no event is refused later, step after step.
"""

from __future__ import annotations

import heapq
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from predstream.schemas import (
    MAX_EVENT_BYTES,
    InvalidEventError,
    PredictionEvent,
    compute_prompt_id,
)
from predstream.schemas.codec import oversize_bytes
from predstream.schemas.event import LARGEST_RECORDED_FIELDS
from predstream.schemas.prompt_id import PromptIdError, prompt_messages
from predstream.schemas.sample_rank import compute_sample_rank

from .dataset_source import NO_ROW, DatasetRows, dataset_id, read_dataset
from .errors import DatasetError

__all__ = [
    "Sample", "RowFormat", "DEFAULT_GROUND_TRUTH_FIELDS", "sample_dataset", "read_dataset", "dataset_id",
    "row_to_sample", "check_dataset_id", "BadRow",
]

_log = logging.getLogger(__name__)

#: Fields tried, in order, for the reference answer.
DEFAULT_GROUND_TRUTH_FIELDS = ("ground_truth", "answer", "completion", "response")
_MAX_ROW_WARNINGS = 5
_MAX_LISTED = 20


@dataclass(frozen=True)
class Sample:
    """One eval prompt with its identity, as the generator and the events see it."""

    sample_index: int
    source_index: int | None
    prompt_id: str
    prompt: str | None
    messages: tuple[Mapping[str, str], ...] | None
    ground_truth: str | None
    sample_source: str = "dataset"
    sample_source_id: str | None = None

    def messages_list(self) -> list[dict[str, str]] | None:
        """The chat messages as a list of plain dicts, or ``None``."""
        if self.messages is None:
            return None
        return [{"role": m["role"], "content": m["content"]} for m in self.messages]


@dataclass(frozen=True)
class RowFormat:
    """Where a row keeps its prompt and its reference answer."""

    #: Field holding a plain text prompt.
    prompt_field: str = "prompt"
    #: Field holding chat messages (a list of ``{"role", "content"}``).
    messages_field: str = "messages"
    #: Field (or fields, first present wins) holding the reference answer.
    ground_truth_field: str | Sequence[str] = field(default=DEFAULT_GROUND_TRUTH_FIELDS)
    #: Take a trailing assistant turn out of the messages and use it as the answer.
    answer_from_last_assistant: bool = True

    def ground_truth_fields(self) -> tuple[str, ...]:
        if isinstance(self.ground_truth_field, str):
            return (self.ground_truth_field,)
        return tuple(self.ground_truth_field)


class BadRow(ValueError):
    """A row that cannot become an event; the message says why (without saying where)."""


# -- one row --------------------------------------------------------------------


def row_to_sample(
    row: Any,
    *,
    source_index: int | None,
    sample_index: int = 0,
    fmt: RowFormat = RowFormat(),
    sample_source: str = "dataset",
    sample_source_id: str | None = None,
) -> Sample:
    """Turn one row into a :class:`Sample`; raise :class:`BadRow` saying why it is unusable
    (anything the event contract would refuse)."""
    if not isinstance(row, Mapping):
        raise BadRow("is null, not an object" if row is None else f"is a {_json_kind(row)}, not an object")
    prompt = row.get(fmt.prompt_field)
    if prompt is not None and not isinstance(prompt, str):
        raise BadRow(f"field {fmt.prompt_field!r} is a {_json_kind(prompt)}, not a string")
    messages = _messages(row.get(fmt.messages_field), fmt)
    answer = None
    if messages and fmt.answer_from_last_assistant and messages[-1]["role"] == "assistant":
        answer = messages.pop()["content"]
    if not messages:
        messages = None
    if prompt is None and messages is None:
        raise BadRow(f"has no prompt: neither a {fmt.prompt_field!r} string nor {fmt.messages_field!r} messages")
    ground_truth = _ground_truth(row, fmt)
    if ground_truth is None:
        ground_truth = answer
    sample = Sample(
        sample_index=sample_index,
        source_index=source_index,
        prompt_id="",
        prompt=prompt,
        messages=None if messages is None else tuple(messages),
        ground_truth=ground_truth,
        sample_source=sample_source,
        sample_source_id=sample_source_id,
    )
    try:  # the id of exactly what the event will carry
        sample = replace(sample, prompt_id=compute_prompt_id(sample.messages_list(), sample.prompt))
    except PromptIdError as exc:
        raise BadRow(str(exc)) from None
    _check_contract(sample)
    return sample


def _messages(value: Any, fmt: RowFormat) -> list[dict[str, str]] | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)):
        raise BadRow(f"field {fmt.messages_field!r} is a {_json_kind(value)}, not a list of messages")
    try:
        return prompt_messages(value)
    except PromptIdError as exc:
        raise BadRow(f"field {fmt.messages_field!r}: {exc}") from None


def _ground_truth(row: Mapping[str, Any], fmt: RowFormat) -> str | None:
    for name in fmt.ground_truth_fields():
        value = row.get(name)
        if value is None:
            continue
        if isinstance(value, str):
            return value
        if isinstance(value, (bool, int, float)):
            return json.dumps(value)
        return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    return None


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, (list, tuple)):
        return "list"
    return type(value).__name__


# -- the contract, asked once per row ---------------------------------------------

def _check_contract(sample: Sample) -> None:
    """Raise :class:`BadRow` when an event for this sample would be refused."""
    gt = sample.ground_truth
    if gt is not None:
        try:
            gt.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise BadRow(f"the reference answer holds a lone surrogate (U+{ord(gt[exc.start]):04X}), "
                         "which is not valid Unicode and has no UTF-8 form") from None
    try:
        event = PredictionEvent.validate_dict({
            **LARGEST_RECORDED_FIELDS, "sample_index": sample.sample_index, "prompt": sample.prompt,
            "messages": sample.messages, "ground_truth": gt, "prompt_id": sample.prompt_id,
            "source_index": sample.source_index, "sample_source": sample.sample_source,
            "sample_source_id": sample.sample_source_id,
        })
    except InvalidEventError as exc:
        raise BadRow(f"breaks the event contract ({exc})") from None
    size = oversize_bytes(event)
    if size is not None:
        raise BadRow(f"makes an event of {size} bytes before any prediction or model name; the contract's limit is "
                     f"{MAX_EVENT_BYTES} bytes (shorten the prompt, messages or reference answer)")


def check_dataset_id(source_id: str) -> None:
    """Raise :class:`DatasetError` when the contract would refuse ``source_id`` as a
    ``sample_source_id`` (e.g. a ``dataset_id=`` that is too long)."""
    try:
        source_id.encode("utf-8")
        PredictionEvent.validate_dict({**LARGEST_RECORDED_FIELDS, "sample_index": 0, "prompt": "",
                                       "prompt_id": "0" * 64, "sample_source": "dataset",
                                       "sample_source_id": source_id})
    except (InvalidEventError, UnicodeEncodeError) as exc:
        shown = source_id if len(source_id) <= 80 else source_id[:77] + "..."
        raise DatasetError(f"dataset id {shown!r} cannot be an event's sample_source_id ({exc}): "
                           "pass another dataset_id=") from None


# -- sampling -------------------------------------------------------------------


class _Tally:
    def __init__(self, source: DatasetRows) -> None:
        self.source = source
        self.skipped: list[int] = []

    def skip(self, index: int, why: BadRow) -> None:
        self.skipped.append(index)
        if len(self.skipped) <= _MAX_ROW_WARNINGS:
            _log.warning("%s %s; skipped", self.source.where(index), why)

    def summary(self) -> None:
        more = self.skipped[_MAX_ROW_WARNINGS:]
        if more:
            listed = ", ".join(str(i + 1 if self.source.unit == "line" else i) for i in more[:_MAX_LISTED])
            _log.warning("%s: %d unusable rows skipped in all; the %d not listed above are %s %s%s",
                         self.source.label, len(self.skipped), len(more), self.source.unit + "s", listed,
                         ", ..." if len(more) > _MAX_LISTED else "")


def _ranked(source: DatasetRows, seed: int, fmt: RowFormat, tally: _Tally) -> Iterator[tuple[str, int, Sample]]:
    for index, row in enumerate(source.rows):
        if row is NO_ROW:  # a blank or invalid JSONL line, already reported
            continue
        try:
            sample = row_to_sample(row, source_index=index, fmt=fmt, sample_source_id=source.dataset_id)
        except BadRow as exc:
            tally.skip(index, exc)
            continue
        yield compute_sample_rank(seed, sample.prompt_id), index, sample


def sample_dataset(
    dataset: Any,
    n: int,
    *,
    seed: int = 0,
    dataset_id: str | None = None,
    fmt: RowFormat = RowFormat(),
) -> list[Sample]:
    """Draw ``n`` usable rows of ``dataset`` by ``seed``; see the module docstring.

    Fewer than ``n`` usable rows: all of them are returned (with an info log).
    Raises :class:`~predstream.producer.errors.DatasetError` when the dataset cannot be read or holds
    no usable row.
    """
    if n < 1:
        raise DatasetError(f"n_samples must be at least 1, not {n}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise DatasetError(f"seed must be an integer, not {seed!r}")
    source = read_dataset(dataset, dataset_id=dataset_id)
    check_dataset_id(source.dataset_id)
    tally = _Tally(source)
    chosen = heapq.nsmallest(n, _ranked(source, seed, fmt, tally), key=lambda r: (r[0], r[1]))
    tally.summary()
    if not chosen:
        raise DatasetError(
            f"no usable rows in eval dataset {source.label} ({len(source.rows)} rows): each row needs a "
            f"{fmt.prompt_field!r} string or a {fmt.messages_field!r} list of {{role, content}}"
        )
    if len(chosen) < n:
        _log.info("%s has %d usable rows; sampling all of them instead of %d", source.label, len(chosen), n)
    chosen.sort(key=lambda r: r[1])
    return [replace(s, sample_index=i) for i, (_, _, s) in enumerate(chosen)]
