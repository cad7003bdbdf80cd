"""Pick eval prompts from a dataset, each with a stable identity.

:func:`sample_dataset` reads a dataset, draws ``n`` rows deterministically from ``seed``
and returns them as :class:`Sample` objects carrying the contract's identity fields:

* ``source_index`` — the row's index in the ORIGINAL dataset: the array index of a JSON
  array file, a list or a ``datasets.Dataset``; for a JSONL file the 0-based line index
  counting EVERY line (blank and invalid lines included), so the index points at the
  line a person finds in the file.
* ``prompt_id`` — :func:`schemas.prompt_id` of the row's ``messages`` and ``prompt``.
* ``sample_index`` — 0..n-1 within this sample.
* ``sample_source="dataset"``, ``sample_source_id`` — the dataset's id: given by the
  caller, else derived (a file: its path as given; a ``datasets.Dataset``:
  ``hf:<name>[/<config>][:<split>]``, or ``hf-fingerprint:<fingerprint>`` when it has no
  name; a list: ``inline:<sha256 of its canonical JSON, 16 hex>``).

Sampling: the row indices are visited in the order of
``random.Random(seed).sample(range(len(rows)), len(rows))`` and usable rows are taken until
``n`` are found; the chosen rows are then sorted by ``source_index`` and numbered
``sample_index`` 0..n-1. The same dataset and seed give the same prompts on every run and
every rank; rows never depend on anything but their own content and index.

Rows (see :class:`RowFormat`): chat ``messages`` (a list of ``{"role", "content"}``) or a
``prompt`` string (both are allowed; generation then uses the messages). The reference
answer comes from the first present field of ``ground_truth_field`` (default
``ground_truth``, ``answer``, ``completion``, ``response``). When ``messages`` end with an
``assistant`` turn, that turn is the answer, not part of the prompt: it is removed from
the messages (before ``prompt_id`` is computed) and used as the ground truth when no
ground-truth field is present. Messages are reduced to ``role`` and ``content`` (what the
event carries) before hashing. A row that is unusable (no prompt, wrong types, text over
``schemas.MAX_TEXT_CHARS`` or containing NUL) is skipped with a warning naming it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from schemas import MAX_MESSAGES, MAX_TEXT_CHARS, prompt_id

from .errors import DatasetError

__all__ = ["Sample", "RowFormat", "DEFAULT_GROUND_TRUTH_FIELDS", "sample_dataset", "load_rows", "row_to_sample"]

_log = logging.getLogger("predstream.sampler")

#: Fields tried, in order, for the reference answer.
DEFAULT_GROUND_TRUTH_FIELDS = ("ground_truth", "answer", "completion", "response")
_MAX_ROW_WARNINGS = 5


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


class _BadRow(ValueError):
    """A row that cannot be used as a prompt; the message says why."""


# -- reading ------------------------------------------------------------------


def load_rows(dataset: Any, *, dataset_id: str | None = None) -> tuple[Sequence[Any], str]:
    """Return ``(rows, dataset_id)`` where ``rows[source_index]`` is a row mapping, or
    ``None`` for a JSONL line that holds no row (blank or invalid, with a warning).

    ``dataset``: a path (``.jsonl``/``.ndjson`` = JSONL, ``.json`` = JSON array; other
    suffixes are sniffed), a ``datasets.Dataset``, or a sequence of mappings.
    """
    if isinstance(dataset, (str, os.PathLike)):
        path = Path(dataset)
        return _read_file(path), dataset_id or str(dataset)
    if _is_hf_dataset(dataset):
        return dataset, dataset_id or _hf_dataset_id(dataset)
    if isinstance(dataset, Sequence) and not isinstance(dataset, (bytes, bytearray)):
        rows = list(dataset)
        return rows, dataset_id or _inline_id(rows)
    raise DatasetError(
        f"cannot read a dataset from a {type(dataset).__name__}: pass a .json/.jsonl path, "
        "a datasets.Dataset or a list of dicts"
    )


def _read_file(path: Path) -> list[Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"eval dataset not found: {path}") from None
    except UnicodeDecodeError as exc:
        raise DatasetError(f"eval dataset {path} is not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise DatasetError(f"cannot read eval dataset {path}: {exc.strerror}") from None
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson") or (suffix != ".json" and not text.lstrip().startswith("[")):
        return list(_jsonl_rows(text, path))
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(
            f"eval dataset {path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            "a .json file must hold one JSON array of rows, use .jsonl for one row per line"
        ) from None
    if not isinstance(rows, list):
        raise DatasetError(f"eval dataset {path} must hold a JSON array of rows, not a {type(rows).__name__}")
    return rows


def _jsonl_rows(text: str, path: Path) -> Iterator[Any]:
    # Split on "\n" only (not str.splitlines, which also splits on \x1c, \u2028, ...), so the
    # index is the line number minus one as every editor and `sed -n` count it.
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line does not start another one
    for index, line in enumerate(lines):
        if not line.strip():
            yield None
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError as exc:
            _log.warning("%s line %d (source_index %d) is not valid JSON (%s); skipped", path, index + 1, index, exc.msg)
            yield None


def _is_hf_dataset(obj: Any) -> bool:
    return type(obj).__module__.startswith("datasets.") and hasattr(obj, "column_names")


def _hf_dataset_id(ds: Any) -> str:
    info = getattr(ds, "info", None)
    name = getattr(info, "dataset_name", None) or getattr(info, "builder_name", None)
    if name:
        config = getattr(info, "config_name", None)
        split = getattr(ds, "split", None)
        return "hf:" + name + (f"/{config}" if config and config != "default" else "") + (f":{split}" if split else "")
    return f"hf-fingerprint:{ds._fingerprint}"


def _inline_id(rows: Sequence[Any]) -> str:
    text = json.dumps(rows, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return "inline:" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


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
    """Turn one row into a :class:`Sample`; raise ``ValueError`` saying why it is unusable."""
    if not isinstance(row, Mapping):
        raise _BadRow(f"is a {type(row).__name__}, not an object")
    prompt = row.get(fmt.prompt_field)
    if prompt is not None and not isinstance(prompt, str):
        raise _BadRow(f"field {fmt.prompt_field!r} is a {type(prompt).__name__}, not a string")
    messages = _messages(row.get(fmt.messages_field), fmt)
    answer = None
    if messages and fmt.answer_from_last_assistant and messages[-1]["role"] == "assistant":
        answer = messages.pop()["content"]
        if not messages:
            messages = None
    if prompt is None and messages is None:
        raise _BadRow(f"has no prompt: neither a {fmt.prompt_field!r} string nor {fmt.messages_field!r} messages")
    ground_truth = _ground_truth(row, fmt)
    if ground_truth is None:
        ground_truth = answer
    _check_text(prompt, fmt.prompt_field)
    _check_text(ground_truth, "ground truth")
    for m in messages or ():
        _check_text(m["content"], "a message")
    return Sample(
        sample_index=sample_index,
        source_index=source_index,
        prompt_id=prompt_id(messages, prompt),
        prompt=prompt,
        messages=None if messages is None else tuple(messages),
        ground_truth=ground_truth,
        sample_source=sample_source,
        sample_source_id=sample_source_id,
    )


def _messages(value: Any, fmt: RowFormat) -> list[dict[str, str]] | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)):
        raise _BadRow(f"field {fmt.messages_field!r} is a {type(value).__name__}, not a list of messages")
    if len(value) > MAX_MESSAGES:
        raise _BadRow(f"has {len(value)} messages; the limit is {MAX_MESSAGES}")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, Mapping) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise _BadRow(f"message {i} is not an object with string 'role' and 'content'")
        if not m["role"]:
            raise _BadRow(f"message {i} has an empty role")
        out.append({"role": m["role"], "content": m["content"]})
    return out or None


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


def _check_text(value: str | None, what: str) -> None:
    if value is None:
        return
    if len(value) > MAX_TEXT_CHARS:
        raise _BadRow(f"{what} is {len(value)} characters; the limit is {MAX_TEXT_CHARS}")
    if "\x00" in value:
        raise _BadRow(f"{what} contains a NUL character")


# -- sampling -------------------------------------------------------------------


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
    Raises :class:`~producer.errors.DatasetError` when the dataset cannot be read or holds
    no usable row.
    """
    if n < 1:
        raise DatasetError(f"n_samples must be at least 1, not {n}")
    rows, source_id = load_rows(dataset, dataset_id=dataset_id)
    where = source_id
    total = len(rows)
    chosen: list[Sample] = []
    bad = 0
    for index in random.Random(seed).sample(range(total), total):
        row = rows[index]
        if row is None:  # a blank or invalid JSONL line, already reported
            continue
        try:
            chosen.append(row_to_sample(row, source_index=index, fmt=fmt, sample_source_id=source_id))
        except _BadRow as exc:
            bad += 1
            if bad <= _MAX_ROW_WARNINGS:
                _log.warning("%s row %d %s; skipped", where, index, exc)
            continue
        if len(chosen) == n:
            break
    if bad > _MAX_ROW_WARNINGS:
        _log.warning("%s: %d unusable rows skipped in all", where, bad)
    if not chosen:
        raise DatasetError(
            f"no usable rows in eval dataset {where} ({total} rows): each row needs a "
            f"{fmt.prompt_field!r} string or a {fmt.messages_field!r} list of {{role, content}}"
        )
    if len(chosen) < n:
        _log.info("%s has %d usable rows; sampling all of them instead of %d", where, len(chosen), n)
    chosen.sort(key=lambda s: s.source_index)
    return [replace(s, sample_index=i) for i, s in enumerate(chosen)]
