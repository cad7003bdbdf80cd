"""Read an eval dataset's rows and give the dataset an identity that does not depend on
how its path is spelled.

:func:`read_dataset` returns a :class:`DatasetRows`: ``rows[source_index]`` is the row as
read (a mapping for a usable row, anything else is reported by the sampler), or
:data:`NO_ROW` for a JSONL line that holds none (blank, or not JSON: reported here, once).

:func:`dataset_id` is the dataset's ``sample_source_id`` (part of every ``event_id``):

* a file: its resolved real path (``os.path.realpath``: absolute, symlinks and ``..``
  resolved), so ``eval.jsonl``, ``./eval.jsonl`` and ``/abs/eval.jsonl`` are one dataset.
* a ``datasets.Dataset``: ``hf:<name>[/<config>][:<split>]``; when ``datasets`` derived a
  cache id from the load arguments (``load_dataset('json', data_files=F)`` and other
  data-file builders: a hash of F's resolved paths and modification times), ``@<that id>``
  is appended, so two files never share an id. A dataset without a name:
  ``hf-fingerprint:<fingerprint>``. A view made with ``select``/``shuffle`` keeps the id of
  the dataset it came from: pass ``dataset_id=`` to tell views apart.
* a ``datasets.IterableDataset``: ``hf:<name>[:<split>]@<resolved data files, comma-separated>``
  when it streams files; without files or a name (``from_generator``), like a list.
* a ``DatasetDict`` / ``IterableDatasetDict`` with one split: that split's id. With more
  splits it is refused with a message naming them (pass ``ds["test"]``).
* a list of rows: ``inline:`` + 16 hex digits of the sha256 of its canonical JSON.

An id longer than the contract allows for ``sample_source_id`` (or one that is not valid
text) becomes ``sha256:<16 hex of the whole id>:...<its readable tail>``, within the limit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from predstream.schemas import MAX_JOB_ID_CHARS

from .errors import DatasetError

__all__ = ["NO_ROW", "DatasetRows", "read_dataset", "dataset_id", "bounded_id"]

_log = logging.getLogger(__name__)


class _NoRow:
    def __repr__(self) -> str:
        return "NO_ROW"


#: Placeholder for a JSONL line that holds no row (blank, or not JSON and already reported).
NO_ROW: Any = _NoRow()


@dataclass(frozen=True)
class DatasetRows:
    """The rows of one dataset, where they came from, and how to name one in a message."""

    rows: Sequence[Any]
    dataset_id: str
    #: How messages name the dataset: the path as given, or the id.
    label: str
    #: "line" (JSONL: 1-based line numbers), "item" (JSON array) or "row" (anything else).
    unit: str = "row"

    def where(self, source_index: int) -> str:
        """Name a row for a person: ``eval.jsonl line 4 (source_index 3)`` or ``eval.json item 3``."""
        if self.unit == "line":
            return f"{self.label} line {source_index + 1} (source_index {source_index})"
        return f"{self.label} {self.unit} {source_index}"


def read_dataset(dataset: Any, *, dataset_id: str | None = None) -> DatasetRows:
    """Read ``dataset``: a path (``.jsonl``/``.ndjson`` = JSONL, ``.json`` = JSON array,
    other suffixes sniffed), a ``datasets`` dataset (see the module doc), or a sequence of
    rows. Raises :class:`DatasetError` when it cannot be read."""
    rows: Sequence[Any]
    if isinstance(dataset, (str, os.PathLike)):
        path = Path(dataset)
        rows, unit = _read_file(path)
        return DatasetRows(rows, dataset_id or _file_id(path), os.fspath(dataset), unit)
    hf = _hf_split(dataset)
    if hf is not None:
        if _hf_kind(hf) == "IterableDataset":
            _log.info("reading the IterableDataset in full, once, to rank its rows")
            rows = list(hf)
            given = dataset_id or _iterable_id(hf) or _inline_id(rows)
        else:
            rows, given = hf, dataset_id or _map_style_id(hf)
        return DatasetRows(rows, given, given)
    if isinstance(dataset, Sequence) and not isinstance(dataset, (bytes, bytearray)):
        rows = list(dataset)
        given = dataset_id or _inline_id(rows)
        return DatasetRows(rows, given, given)
    raise DatasetError(
        f"cannot read a dataset from a {type(dataset).__name__}: pass a .json/.jsonl path, "
        "a datasets.Dataset or a list of dicts"
    )


def dataset_id(dataset: Any) -> str:
    """The dataset's ``sample_source_id`` (see the module doc). A file is not read; a list or
    an ``IterableDataset`` without files is (its id is a hash of its rows)."""
    if isinstance(dataset, (str, os.PathLike)):
        return _file_id(Path(dataset))
    hf = _hf_split(dataset)
    if hf is not None and _hf_kind(hf) != "IterableDataset":
        return _map_style_id(hf)
    if hf is not None:
        found = _iterable_id(hf)
        if found:
            return found
    return read_dataset(dataset).dataset_id


def bounded_id(text: str) -> str:
    """``text`` if the contract takes it as a ``sample_source_id``, else a readable tail and
    a hash of the whole, within the limit (see the module doc)."""
    safe = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if safe == text and "\x00" not in text and len(text) <= MAX_JOB_ID_CHARS:
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    head = f"sha256:{digest}:..."
    tail = safe.replace("\x00", "")[-(MAX_JOB_ID_CHARS - len(head)):]
    return head + tail


# -- files ----------------------------------------------------------------------


def _file_id(path: Path) -> str:
    return bounded_id(os.path.realpath(path))


def _read_file(path: Path) -> tuple[list[Any], str]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"eval dataset not found: {path}") from None
    except IsADirectoryError:
        raise DatasetError(f"eval dataset {path} is a folder: pass a .json or .jsonl file") from None
    except OSError as exc:
        raise DatasetError(f"cannot read eval dataset {path}: {exc.strerror}") from None
    try:
        text = data.decode("utf-8-sig")  # a leading byte order mark is not part of row 0
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DatasetError(
            f"eval dataset {path} is not UTF-8 text (line {line}, byte {exc.start}): save it as UTF-8"
        ) from None
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson") and text.lstrip().startswith("["):
        _refuse_array(text, path)
    if suffix in (".jsonl", ".ndjson") or (suffix != ".json" and not text.lstrip().startswith("[")):
        return list(_jsonl_rows(text, path)), "line"
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(
            f"eval dataset {path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            "a .json file must hold one JSON array of rows, use .jsonl for one row per line"
        ) from None
    if not isinstance(rows, list):
        raise DatasetError(f"eval dataset {path} must hold a JSON array of rows, not a {type(rows).__name__}")
    return rows, "item"


def _refuse_array(text: str, path: Path) -> None:
    """A ``.jsonl`` file that is one JSON array (a ``.json`` file misnamed) stops here, with
    one message, rather than as a warning for every line and then "no usable rows"."""
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        return  # not an array after all: read it line by line
    if isinstance(whole, list):
        raise DatasetError(
            f"eval dataset {path} holds one JSON array, not one JSON object per line: "
            "name it .json, or write one row per line"
        )


def _jsonl_rows(text: str, path: Path) -> Iterator[Any]:
    # Split on "\n" only (not str.splitlines, which also splits on \x1c, \u2028, ...), so the
    # index is the line number minus one as every editor and `sed -n` count it.
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line does not start another one
    for index, line in enumerate(lines):
        if not line.strip():
            yield NO_ROW
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError as exc:
            _log.warning("%s line %d (source_index %d) is not valid JSON (%s); skipped", path, index + 1, index,
                         exc.msg)
            yield NO_ROW


# -- Hugging Face datasets ---------------------------------------------------------

_HF_KINDS = ("Dataset", "IterableDataset", "DatasetDict", "IterableDatasetDict")


def _hf_kind(obj: Any) -> str | None:
    if not type(obj).__module__.startswith("datasets.") or "datasets" not in sys.modules:
        return None
    import datasets

    for name in _HF_KINDS[::-1]:  # the dicts first: nothing else is a dict of splits
        cls = getattr(datasets, name, None)
        if cls is not None and isinstance(obj, cls):
            return name
    return None


def _hf_split(obj: Any) -> Any:
    """The one ``Dataset``/``IterableDataset`` to read, or ``None`` when ``obj`` is not one."""
    kind = _hf_kind(obj)
    if kind is None:
        return None
    if kind.endswith("Dict"):
        splits = list(obj)
        if len(splits) != 1:
            names = ", ".join(repr(s) for s in splits) or "none"
            example = splits[-1] if splits else "test"
            raise DatasetError(
                f"the {kind} has {len(splits)} splits ({names}): pass the one to sample from, "
                f"e.g. dataset=ds[{example!r}]"
            )
        return obj[splits[0]]
    return obj


def _hf_base(ds: Any) -> str | None:
    info = getattr(ds, "info", None)
    name: str | None = getattr(info, "dataset_name", None) or getattr(info, "builder_name", None)
    if not name or name == "generator":  # from_generator: the name says nothing about the rows
        return None
    config = getattr(info, "config_name", None)
    split = getattr(ds, "split", None)
    return "hf:" + name + (f"/{config}" if config and config != "default" else "") + (f":{split}" if split else "")


def _map_style_id(ds: Any) -> str:
    base = _hf_base(ds)
    if base is None:
        return bounded_id(f"hf-fingerprint:{ds._fingerprint}")
    config = getattr(ds.info, "config_name", None) or ""
    for f in getattr(ds, "cache_files", None) or ():
        # <cache>/<builder>/<config id>/<version>/<hash>/<file>.arrow: datasets makes the config
        # id from the load arguments, e.g. "default-<hash of the resolved data files>".
        parts = Path(f.get("filename", "")).parts
        if len(parts) >= 5 and parts[-4] != config and parts[-4].startswith(config):
            return bounded_id(f"{base}@{parts[-4]}")
        break
    return bounded_id(base)


def _iterable_id(ds: Any) -> str | None:
    base = _hf_base(ds)
    files: list[str] = []
    ex = getattr(ds, "_ex_iterable", None)
    while ex is not None and not files:  # map/filter wrap the iterable that reads the files
        kwargs = getattr(ex, "kwargs", None) or {}
        files = [str(f) for f in kwargs.get("original_files") or kwargs.get("base_files") or ()]
        ex = getattr(ex, "ex_iterable", None)
    if files:
        resolved = sorted(f if "://" in f else os.path.realpath(f) for f in files)
        return bounded_id(f"{base or 'hf'}@{','.join(resolved)}")
    return None if base is None else bounded_id(base)


# -- inline rows --------------------------------------------------------------------


def _inline_id(rows: Sequence[Any]) -> str:
    text = json.dumps([None if r is NO_ROW else r for r in rows], sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False, default=str)
    return "inline:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
