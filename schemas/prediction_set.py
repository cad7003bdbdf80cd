"""Curated prediction sets: the item model, the rules every item obeys, ``set_id`` and the export file.

A prediction set is a named, fixed list of eval prompts, so runs can be compared prompt by
prompt. Both sides use this module and nothing else for what a set *is*: the consumer
(``predstream.consumer.prediction_sets``) stores sets in Postgres, the training side
(``predstream.producer.prediction_sets``) loads them as samples from the database, an export
file or its local copy. Its predictions carry ``sample_source="prediction_set"``,
``sample_source_id=<set_id>`` and ``sample_index=<item_index>``.

Items (:class:`PredictionSetItem`) obey one set of rules (:func:`check_item`), wherever a
set comes from or goes to (created, stored, exported, read back):

* ``item_index`` numbers the items 0..N-1 in order; ``source_index`` is ``None`` or a
  non-negative integer (the row of the dataset the item came from);
* a ``prompt`` string, chat ``messages`` (a list of ``{role, content}`` strings; other keys
  are dropped), or both; ``ground_truth`` a string or ``None``;
* ``prompt_id`` is :func:`predstream.schemas.compute_prompt_id` of the messages and prompt;
* an event for the item would pass the event contract (:class:`predstream.schemas.PredictionEvent`:
  text sizes, NUL characters, role length, number of messages, valid Unicode, and the encoded
  size of an event before any prediction is added).

A set never changes once created (migration 0010 makes the database refuse changes to its
items), and every reader recomputes ``set_id`` from the items (:func:`check_prediction_set`)
and refuses a set whose items do not give its id, naming the set and what to do.

``set_id`` (:func:`prediction_set_id`) is ``"ps_"`` + the first 16 hex digits of the sha256
of the JSON text (keys sorted, separators ``,`` and ``:``, UTF-8, non-ASCII as itself) of the
items' identities in order: ``[{"item_index", "source_index", "prompt_id", "ground_truth"},
...]``. The same items in the same order have the same id wherever the set is built.

The export file (``predstream sets export``; read by ``TrainingPredictionsCallback`` on
hosts without database access, and the training side's local copies) is one UTF-8 JSON
object (:meth:`PredictionSet.to_json`)::

    {"set_id": "ps_…", "name": "…", "source": "…" | null, "seed": 7 | null,
     "description": "…" | null,
     "items": [{"item_index": 0, "source_index": 12 | null, "prompt_id": "<sha256 hex>",
                "prompt": "…" | null, "messages": [{"role": "…", "content": "…"}] | null,
                "ground_truth": "…" | null}, …]}
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .codec import oversize_bytes
from .errors import InvalidEventError, PredictionSetError
from .event import LARGEST_RECORDED_FIELDS, MAX_EVENT_BYTES, PredictionEvent
from .prompt_id import PromptIdError, compute_prompt_id, prompt_messages

__all__ = [
    "PredictionSetItem",
    "PredictionSet",
    "prediction_set_id",
    "new_prediction_set",
    "items_from_rows",
    "check_item",
    "check_prediction_set",
    "stored_prediction_set",
    "read_prediction_set_file",
    "write_prediction_set_file",
    "MAX_SET_NAME_CHARS",
    "FIX_EDITED_FILE",
    "FIX_EDITED_IN_DATABASE",
]

#: Longest set name, in characters.
MAX_SET_NAME_CHARS = 200
#: What to do about an export file (or local copy) whose items do not give its ``set_id``.
FIX_EDITED_FILE = (
    "the file was edited after it was exported: export the set again with "
    "`predstream sets export NAME FILE`, or create a new set with `predstream sets create`"
)
#: What to do about a stored set whose items do not give its ``set_id``.
FIX_EDITED_IN_DATABASE = (
    "they were changed in the database after the set was created (a set never changes; "
    "`predstream migrate` applies migration 0010, which refuses such changes): delete it with "
    "`predstream sets delete` and create it again with `predstream sets create`"
)

_ITEM_KEYS = ("item_index", "source_index", "prompt_id", "prompt", "messages", "ground_truth")


@dataclass(frozen=True)
class PredictionSetItem:
    """One prompt of a set; ``item_index`` becomes its predictions' ``sample_index``."""

    item_index: int
    prompt_id: str
    source_index: int | None = None
    prompt: str | None = None
    messages: tuple[Mapping[str, str], ...] | None = None
    ground_truth: str | None = None

    def messages_list(self) -> list[dict[str, str]] | None:
        """The chat messages as a list of plain ``{role, content}`` dicts, or ``None``."""
        if self.messages is None:
            return None
        return [{"role": m["role"], "content": m["content"]} for m in self.messages]

    def to_json(self) -> dict[str, Any]:
        """The item as the export file writes it."""
        return {"item_index": self.item_index, "source_index": self.source_index, "prompt_id": self.prompt_id,
                "prompt": self.prompt, "messages": self.messages_list(), "ground_truth": self.ground_truth}


@dataclass(frozen=True)
class PredictionSet:
    """A named, fixed list of prompts: ``items`` in ``item_index`` order."""

    set_id: str
    name: str
    items: tuple[PredictionSetItem, ...] = field(default=())
    source: str | None = None
    seed: int | None = None
    description: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The export file's JSON object."""
        return {"set_id": self.set_id, "name": self.name, "source": self.source, "seed": self.seed,
                "description": self.description, "items": [item.to_json() for item in self.items]}


def prediction_set_id(items: Iterable[PredictionSetItem]) -> str:
    """The stable id of a set with these items, in this order (see the module docstring)."""
    identity = [{"item_index": i.item_index, "source_index": i.source_index, "prompt_id": i.prompt_id,
                 "ground_truth": i.ground_truth} for i in items]
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "ps_" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


# -- the rules ---------------------------------------------------------------------------

#: The fields of an event an item does not give, at their largest: an item passes when an
#: event made of it would.
_EVENT_REST: dict[str, Any] = {**LARGEST_RECORDED_FIELDS, "sample_source": "prediction_set",
                               "sample_source_id": "ps_" + "0" * 16}


def check_item(item: PredictionSetItem) -> None:
    """Raise :class:`PredictionSetError` (``"item N ..."``) when ``item`` breaks a rule of the
    module docstring; the same message on every side, for every way a set arrives."""
    index = item.item_index
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise PredictionSetError(f"item {index!r} has no valid item_index (a non-negative integer)")
    where = f"item {index}"
    source_index = item.source_index
    if source_index is not None and (isinstance(source_index, bool) or not isinstance(source_index, int)
                                     or source_index < 0):
        raise PredictionSetError(f"{where} has a bad source_index {source_index!r} (a non-negative integer or null)")
    for name in ("prompt", "ground_truth"):
        value = getattr(item, name)
        if value is not None and not isinstance(value, str):
            raise PredictionSetError(f"{where}: {name} must be a string or null, not {type(value).__name__}")
    if item.prompt is None and item.messages is None:
        raise PredictionSetError(f"{where} has neither a prompt nor messages")
    try:
        messages = prompt_messages(item.messages)
        expected = compute_prompt_id(messages, item.prompt)
    except PromptIdError as exc:
        raise PredictionSetError(f"{where}: {exc}") from None
    if item.ground_truth is not None:
        try:
            item.ground_truth.encode("utf-8")
        except UnicodeEncodeError as exc:
            char = f"U+{ord(item.ground_truth[exc.start]):04X}"
            raise PredictionSetError(f"{where}: the reference answer holds a lone surrogate ({char}), which is not "
                                     "valid Unicode and has no UTF-8 form: fix or drop the text") from None
    if item.prompt_id != expected:
        raise PredictionSetError(
            f"{where}: prompt_id {item.prompt_id!r} does not match its prompt (expected {expected}): an item's "
            "prompt_id is computed from its prompt and messages, never edited"
        )
    try:
        event = PredictionEvent.validate_dict({**_EVENT_REST, "sample_index": index, "source_index": source_index,
                                               "prompt": item.prompt, "messages": messages,
                                               "ground_truth": item.ground_truth, "prompt_id": expected})
    except InvalidEventError as exc:
        raise PredictionSetError(f"{where} breaks the event contract ({exc})") from None
    size = oversize_bytes(event)
    if size is not None:
        raise PredictionSetError(f"{where} makes an event of {size} bytes before any prediction or model name; the "
                                 f"contract's limit "
                                 f"is {MAX_EVENT_BYTES} bytes (shorten the prompt, messages or reference answer)")


def _check_name(name: object) -> None:
    if not isinstance(name, str) or not name.strip():
        raise PredictionSetError("a prediction set needs a non-empty name")
    if len(name) > MAX_SET_NAME_CHARS or "\x00" in name:
        raise PredictionSetError(f"a prediction set name is at most {MAX_SET_NAME_CHARS} characters, without NUL")


def check_prediction_set(pset: PredictionSet, *, where: str | None = None, fix: str = FIX_EDITED_FILE) -> PredictionSet:
    """``pset`` when it obeys every rule: a name, at least one item, items numbered 0..N-1 in
    order, each item by :func:`check_item`, and items that give its ``set_id``. Else
    :class:`PredictionSetError` prefixed with ``where`` (default: the set's name), saying
    what to do about a ``set_id`` that does not match (``fix``)."""
    where = where or f"prediction set {pset.name!r}"
    _check_contents(pset, where, with_id=True)
    actual = prediction_set_id(pset.items)
    if actual != pset.set_id:
        raise PredictionSetError(f"{where}: the items of set {pset.name!r} do not match its set_id {pset.set_id} "
                                 f"(they give {actual}): {fix}")
    return pset


def _check_contents(pset: PredictionSet, where: str, *, with_id: bool) -> None:
    try:
        _check_name(pset.name)
        if with_id and (not isinstance(pset.set_id, str) or not pset.set_id):
            raise PredictionSetError("set_id must be a non-empty string")
        if pset.seed is not None and (isinstance(pset.seed, bool) or not isinstance(pset.seed, int)):
            raise PredictionSetError("seed must be an integer or null")
        if not pset.items:
            raise PredictionSetError("a prediction set needs at least one item")
        for position, item in enumerate(pset.items):
            if item.item_index != position:
                raise PredictionSetError(
                    f"item {position} has item_index {item.item_index!r}; items are numbered 0..N-1 in order")
            check_item(item)
    except PredictionSetError as exc:
        raise PredictionSetError(f"{where}: {exc}") from None


# -- building a set ----------------------------------------------------------------------


def items_from_rows(rows: Sequence[Mapping[str, Any]]) -> list[PredictionSetItem]:
    """Rows ``{source_index?, prompt?, messages?, ground_truth?, prompt_id?}`` as items numbered
    0..N-1 in order, ``prompt_id`` computed (a given one is kept, and checked with the rest by
    :func:`new_prediction_set`)."""
    items = []
    for index, row in enumerate(rows):
        messages = _messages(row.get("messages"))
        given = row.get("prompt_id")
        if given is None:
            try:
                given = compute_prompt_id(prompt_messages(messages), row.get("prompt"))
            except PromptIdError:
                given = ""  # no id for such a prompt: check_item says why
        items.append(PredictionSetItem(
            item_index=index, prompt_id=given, source_index=row.get("source_index"), prompt=row.get("prompt"),
            messages=messages, ground_truth=row.get("ground_truth"),
        ))
    return items


def new_prediction_set(
    name: str,
    items: Sequence[PredictionSetItem],
    *,
    source: str | None = None,
    seed: int | None = None,
    description: str | None = None,
) -> PredictionSet:
    """A new set of these items (numbered 0..N-1 in order), its ``set_id`` computed, every rule
    checked. Names starting with ``ps_`` are kept for set ids."""
    _check_name(name)
    if name.startswith("ps_"):
        raise PredictionSetError(f"{name!r}: names starting with 'ps_' are reserved for set ids; choose another name")
    pset = PredictionSet(set_id="", name=name, items=tuple(items), source=source, seed=seed, description=description)
    _check_contents(pset, f"prediction set {name!r}", with_id=False)
    return PredictionSet(set_id=prediction_set_id(pset.items), name=name, items=pset.items, source=source,
                         seed=seed, description=description)


def stored_prediction_set(
    *,
    set_id: Any,
    name: Any,
    source: Any,
    seed: Any,
    description: Any,
    rows: Sequence[Any],
    where: str,
    fix: str,
    item_count: int | None = None,
) -> PredictionSet:
    """A set read back (an export file's object, or database rows ``{item_index, source_index,
    prompt_id, prompt, messages, ground_truth}`` in any order, and the ``item_count`` its head
    row records), checked by :func:`check_prediction_set`; errors start with ``where``."""
    if item_count is not None and len(rows) != item_count:
        raise PredictionSetError(f"{where} should have {item_count} items but the database holds {len(rows)}; "
                                 "delete it and create it again")
    items: list[PredictionSetItem] = []
    seen: set[int] = set()
    for position, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise PredictionSetError(f"{where}: item {position} is not an object")
        index = row.get("item_index")
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise PredictionSetError(f"{where}: item {position} has no valid item_index (a non-negative integer)")
        if index in seen:
            raise PredictionSetError(f"{where}: item_index {index} appears twice")
        seen.add(index)
        messages = row.get("messages")
        if isinstance(messages, str):  # JSONB read as text by some drivers
            messages = json.loads(messages)
        items.append(PredictionSetItem(
            item_index=index, prompt_id=row.get("prompt_id", ""), source_index=row.get("source_index"),
            prompt=row.get("prompt"), messages=_messages(messages), ground_truth=row.get("ground_truth"),
        ))
    if not isinstance(name, str) or not name:
        raise PredictionSetError(f"{where}: name must be a non-empty string")
    items.sort(key=lambda i: i.item_index)
    pset = PredictionSet(
        set_id=set_id, name=name, items=tuple(items), source=source if isinstance(source, str) else None,
        seed=seed, description=description if isinstance(description, str) else None,
    )
    return check_prediction_set(pset, where=where, fix=fix)


def _messages(value: Any) -> Any:
    """A row's messages as ``{role, content}`` pairs (other keys dropped); anything else as it
    is, for :func:`check_item` to name."""
    if isinstance(value, (list, tuple)):
        try:
            pairs = prompt_messages(value)
        except PromptIdError:
            return value
        return None if pairs is None else tuple({"role": m["role"], "content": m["content"]} for m in pairs)
    return value


# -- the export file ---------------------------------------------------------------------


def read_prediction_set_file(path: str | os.PathLike[str]) -> PredictionSet:
    """Read an export file (or a local copy) and check it; :class:`PredictionSetError`
    names the file and what is wrong."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PredictionSetError(f"prediction set file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PredictionSetError(f"cannot read prediction set file {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise PredictionSetError(
            f"prediction set file {path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    if not isinstance(data, Mapping):
        raise PredictionSetError(f"prediction set file {path} must hold a JSON object with set_id, name and items")
    for key in ("set_id", "name", "items"):
        if key not in data:
            raise PredictionSetError(f"prediction set file {path} has no {key!r}")
    if not isinstance(data["items"], list):
        raise PredictionSetError(f"prediction set file {path}: 'items' must be a list")
    return stored_prediction_set(
        set_id=data["set_id"], name=data["name"], source=data.get("source"), seed=data.get("seed"),
        description=data.get("description"), rows=data["items"], where=f"prediction set file {path}",
        fix=FIX_EDITED_FILE,
    )


def write_prediction_set_file(pset: PredictionSet, path: str | os.PathLike[str]) -> Path:
    """Write the export file atomically (a temporary file of its own, renamed into place: two
    processes writing the same file never mix). Raises ``OSError``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        tmp.write_text(json.dumps(pset.to_json(), ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
