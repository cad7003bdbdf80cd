"""Backfill: load spool files and exports of the old writer's rows straight into Postgres.

:func:`run_backfill` takes files of two kinds, told apart by their first bytes:

* **spool files** (``b"PSSPOOL1\\n"`` header, :mod:`predstream.schemas.spoolfile`): encoded events the
  producer kept while Kafka was unreachable. Each frame is decoded like a Kafka message.
  A damaged tail (a crash mid-write) is reported with its byte offset and size; the good
  records before it are loaded.
* **JSON lines** (or one JSON array) of rows of ``training_predictions`` as the old
  direct-to-database writer stored them: ``job_id, epoch, step, sample_index, prompt,
  ground_truth, prediction, created_at`` (``id`` and unknown columns are ignored), the
  identity columns possibly missing. For such a row: ``prompt_id`` is computed from
  ``messages``/``prompt`` when absent; ``sample_source`` defaults to ``"dataset"`` (with
  ``sample_source_id`` NULL); ``event_id`` is :func:`predstream.schemas.event.event_id` of the row's
  identity, so loading the same file twice adds nothing; a ``prompt_id`` or ``event_id`` the
  row does carry must be the one its fields give (reason ``identity-mismatch`` otherwise,
  as for spool records: :mod:`predstream.schemas.identity`); ``produced_at`` is the row's
  ``produced_at`` or else ``created_at`` (a time without a zone is UTC), so a later real
  event for the same prediction point wins. The same rows may still be in the database
  without an ``event_id`` (the export was taken from it): before each batch is stored, the
  table's rows at its prediction points are identified by the same rule
  (:class:`predstream.consumer.identify.LegacyRowMatcher`), so the load finds them and adds nothing.

Every row becomes a validated :class:`~predstream.schemas.event.PredictionEvent` and goes through the
worker's :class:`~predstream.consumer.sink.PostgresSink` (the same idempotent, newer-wins upsert).
A row that is not valid is reported as ``file:line: reason`` and the load goes on; with
``strict=True`` every file is checked first and nothing is loaded if one row is bad.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from predstream.schemas.codec import Decoder
from predstream.schemas.errors import DecodeError, InvalidEventError, RegistryUnavailableError
from predstream.schemas.event import PredictionEvent
from predstream.schemas.identity import check_identity
from predstream.schemas.spoolfile import SPOOL_HEADER, read_spool

from ._backoff import retry_while_unavailable
from .errors import BackfillError
from .settings import ConsumerSettings
from .sink import IngestRecord, PostgresSink, WriteResult

if TYPE_CHECKING:
    from .identify import LegacyRowMatcher

__all__ = ["BackfillError", "Problem", "FileReport", "BackfillReport", "run_backfill", "legacy_row_to_event",
           "file_kind"]

_log = logging.getLogger(__name__)

_WRITE_ATTEMPTS = 4
_MAX_WARNINGS = 20
_SPOOL_PREFIX = SPOOL_HEADER[:7]  # b"PSSPOOL": a spool file whose version or header is damaged
#: Optional event fields a row may carry under the same name.
_PASS_THROUGH = ("sequence_index", "model_name", "prompt_tokens", "completion_tokens", "generation_ms")


@dataclass(frozen=True)
class Problem:
    """One thing that was not loaded: ``where`` is ``line 12``, ``record 3 (byte 811)`` or
    ``byte 4096``; ``reason`` a short code; ``message`` one line for people."""

    path: str
    where: str
    reason: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.where}: {self.message} ({self.reason})"


@dataclass
class FileReport:
    path: str
    kind: str  # "spool" or "jsonl" or "json"
    read: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    invalid: int = 0
    rejected: int = 0
    #: a damaged spool tail: (byte offset, bytes, what is wrong)
    bad_tail: tuple[int, int, str] | None = None

    @property
    def stored(self) -> int:
        return self.inserted + self.updated + self.unchanged


@dataclass
class BackfillReport:
    files: list[FileReport] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    seconds: float = 0.0

    def total(self, name: str) -> int:
        return sum(getattr(f, name) for f in self.files)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        tails = sum(1 for f in self.files if f.bad_tail)
        return (
            f"{len(self.files)} file(s), {self.total('read')} row(s) read: inserted {self.total('inserted')}, "
            f"updated {self.total('updated')}, unchanged {self.total('unchanged')}, invalid {self.total('invalid')}, "
            f"rejected by the database {self.total('rejected')}"
            + (f", {tails} damaged spool tail(s)" if tails else "")
            + f" in {self.seconds:.1f} s"
        )


# -- file kinds -------------------------------------------------------------------------


def file_kind(path: str | Path) -> str:
    """``"spool"`` when the file starts like a spool file, else ``"jsonl"`` (or ``"json"``
    for a JSON array)."""
    with open(path, "rb") as fh:
        head = fh.read(len(SPOOL_HEADER))
        if head.startswith(_SPOOL_PREFIX) or (head and SPOOL_HEADER.startswith(head)):
            return "spool"
        rest = head.lstrip(b"\xef\xbb\xbf \t\r\n")
        while not rest:
            more = fh.read(4096)
            if not more:
                break
            rest = more.lstrip(b" \t\r\n")
        return "json" if rest.startswith(b"[") else "jsonl"


# -- legacy rows ------------------------------------------------------------------------


def legacy_row_to_event(row: Mapping[str, Any]) -> PredictionEvent:
    """A row of the old table (or of a newer export) as a validated event.

    Raises :class:`~predstream.schemas.errors.InvalidEventError` with a short ``reason``.
    """
    if not isinstance(row, Mapping):
        raise InvalidEventError(f"a row must be a JSON object, not {type(row).__name__}", reason="wrong-type:row")
    for name in ("job_id", "step", "sample_index", "prediction"):
        if row.get(name) is None:
            raise InvalidEventError(f"{name} is missing", reason=f"missing-field:{name}")
    fields: dict[str, Any] = {
        "job_id": row["job_id"],
        "step": row["step"],
        "sample_index": row["sample_index"],
        "prediction": row["prediction"],
        "epoch": row.get("epoch_exact") if row.get("epoch_exact") is not None else (row.get("epoch") or 0),
        "prompt": row.get("prompt"),
        "ground_truth": row.get("ground_truth"),
        "messages": _json_field(row.get("messages"), "messages"),
        "source_index": row.get("source_index"),
        "sample_source": row.get("sample_source") or "dataset",
        "sample_source_id": row.get("sample_source_id"),
        "produced_at": _time(row.get("produced_at") or row.get("created_at")),
    }
    generation = _json_field(row.get("generation"), "generation")
    if generation is not None:
        fields["generation"] = generation
    for name in _PASS_THROUGH:
        if row.get(name) is not None:
            fields[name] = row[name]
    if row.get("prompt_id"):
        fields["prompt_id"] = row["prompt_id"]
    if row.get("event_id"):
        fields["event_id"] = row["event_id"]
    try:
        return check_identity(PredictionEvent.create(**fields))
    except (TypeError, KeyError) as exc:  # e.g. a wrongly typed identity field while hashing
        raise InvalidEventError(f"row does not fit the contract: {exc}", reason="invalid:row") from None


def _json_field(value: Any, name: str) -> Any:
    if isinstance(value, str):  # a JSONB column exported as text
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            raise InvalidEventError(f"{name} is a string but not JSON", reason=f"wrong-type:{name}") from None
    return value


def _time(value: Any) -> datetime:
    if value is None:
        raise InvalidEventError("created_at is missing (needed as the time the prediction was made)",
                                reason="missing-field:created_at")
    if isinstance(value, datetime):  # a row read from the table itself (predstream identify)
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    if not isinstance(value, str):
        raise InvalidEventError(f"created_at must be an ISO 8601 time, not {type(value).__name__}",
                                reason="wrong-type:created_at")
    text = value.strip()
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidEventError(f"created_at {value!r} is not an ISO 8601 time",
                                reason="wrong-type:created_at") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# -- reading files ----------------------------------------------------------------------

# An item read from a file: (where, event) or (where, Problem)
_Item = tuple[str, "PredictionEvent | Problem"]


def _read_jsonl(path: Path) -> Iterator[_Item]:
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            where = f"line {number}"
            if number == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                yield where, Problem(str(path), where, "not-utf8", f"not UTF-8 text (byte {exc.start} of the line)")
                continue
            except json.JSONDecodeError as exc:
                yield where, Problem(str(path), where, "not-json", f"not JSON: {exc.msg} at column {exc.colno}")
                continue
            yield where, _row_event(path, where, row)


def _read_json_array(path: Path) -> Iterator[_Item]:
    try:
        rows = json.loads(path.read_text(encoding="utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BackfillError(f"{path} starts like a JSON array but does not parse: {exc}") from None
    if not isinstance(rows, list):
        raise BackfillError(f"{path} must hold JSON lines or one JSON array of rows")
    for index, row in enumerate(rows):
        where = f"item {index}"
        yield where, _row_event(path, where, row)


def _row_event(path: Path, where: str, row: Any) -> PredictionEvent | Problem:
    try:
        return legacy_row_to_event(row)
    except InvalidEventError as exc:
        return Problem(str(path), where, exc.reason, str(exc))


def _read_spool(path: Path, decoder: Decoder, report: FileReport) -> Iterator[_Item]:
    contents = read_spool(path)
    offset = len(SPOOL_HEADER)
    for number, frame in enumerate(contents.records, start=1):
        where = f"record {number} (byte {offset})"
        offset += 8 + len(frame)
        try:
            yield where, decoder.decode(frame)
        except (DecodeError, InvalidEventError) as exc:
            yield where, Problem(str(path), where, exc.reason, str(exc))
        except RegistryUnavailableError as exc:
            raise BackfillError(f"{path} {where}: {exc}") from None
    if not contents.intact:
        tail = (contents.bad_tail_offset or 0, contents.bad_tail_bytes, contents.problem or "damaged")
        report.bad_tail = tail
        where = f"byte {tail[0]}"
        yield where, Problem(str(path), where, "spool-tail",
                             f"{tail[2]}: {tail[1]} byte(s) from offset {tail[0]} not loaded "
                             f"({len(contents.records)} good record(s) before it were)")


def _items(path: Path, kind: str, decoder: Decoder, report: FileReport) -> Iterator[_Item]:
    if kind == "spool":
        return _read_spool(path, decoder, report)
    if kind == "json":
        return _read_json_array(path)
    return _read_jsonl(path)


# -- the load ---------------------------------------------------------------------------


def run_backfill(
    paths: Sequence[str | Path],
    settings: ConsumerSettings,
    *,
    strict: bool = False,
    decoder: Decoder | None = None,
    sink: PostgresSink | None = None,
    on_problem: Callable[[Problem], None] | None = None,
) -> BackfillReport:
    """Load ``paths`` into ``settings.database_url``, ``settings.batch_size`` rows per
    transaction; see the module docstring. ``decoder`` defaults to one for the settings'
    schema registry (if any).

    ``on_problem`` is called for each row not loaded, as it is found (default: a log
    line). Raises :class:`BackfillError` when a file cannot be read, when ``strict`` and
    a row is bad (nothing is loaded then), or when the database stays unavailable.
    """
    started = time.monotonic()
    files = [Path(p) for p in paths]
    for path in files:
        if path.is_dir():
            raise BackfillError(f"{path} is a folder: give the files in it, e.g. {path}/*.pss (a spool) "
                                f"or {path}/*.jsonl (exports)")
        if not path.is_file():
            raise BackfillError(f"no such file: {path}")
    database_url = settings.require_database_url()
    batch_size = settings.batch_size
    decoder = decoder or Decoder(settings.schema_registry_url, settings.schema_registry_options)
    kinds = {path: file_kind(path) for path in files}
    if strict:
        _check_strict(files, kinds, decoder)
    report = BackfillReport()
    warned = [0]

    def problem(p: Problem) -> None:
        report.problems.append(p)
        if on_problem is not None:
            on_problem(p)
        else:
            level = logging.WARNING if warned[0] < _MAX_WARNINGS else logging.DEBUG
            warned[0] += 1
            _log.log(level, "not loaded: %s", p)

    own_sink = sink is None
    sink = sink or PostgresSink(database_url, application_name="predstream-backfill")
    # Exported rows may still be in this database without an event_id: identify them first.
    from .identify import LegacyRowMatcher

    matcher = LegacyRowMatcher(database_url)
    try:
        for path in files:
            file_report = FileReport(str(path), kinds[path])
            legacy = matcher if kinds[path] != "spool" else None
            report.files.append(file_report)
            batch: list[tuple[str, IngestRecord]] = []
            for where, item in _items(path, kinds[path], decoder, file_report):
                if isinstance(item, Problem):
                    if item.reason != "spool-tail":
                        file_report.read += 1
                        file_report.invalid += 1
                    problem(item)
                    continue
                file_report.read += 1
                batch.append((where, IngestRecord(item)))
                if len(batch) >= batch_size:
                    _store(sink, batch, path, file_report, problem, legacy)
                    batch = []
            if batch:
                _store(sink, batch, path, file_report, problem, legacy)
            _log.debug("%s (%s): %d read, %d stored, %d not loaded", path, file_report.kind,
                      file_report.read, file_report.stored, file_report.invalid + file_report.rejected)
    finally:
        matcher.close()
        if own_sink:
            sink.close()
    report.seconds = time.monotonic() - started
    return report


def _check_strict(files: Iterable[Path], kinds: Mapping[Path, str], decoder: Decoder) -> None:
    bad: list[Problem] = []
    for path in files:
        for _where, item in _items(path, kinds[path], decoder, FileReport(str(path), kinds[path])):
            if isinstance(item, Problem):
                bad.append(item)
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise BackfillError(f"--strict: nothing loaded; {bad[0]}{more}")


def _store(sink: PostgresSink, batch: list[tuple[str, IngestRecord]], path: Path, report: FileReport,
           problem: Callable[[Problem], None], legacy: LegacyRowMatcher | None = None) -> None:
    records = [rec for _, rec in batch]
    result = _write(sink, records, path, legacy)
    report.inserted += result.inserted
    report.updated += result.updated
    report.unchanged += result.unchanged
    report.rejected += len(result.rejected)
    if result.rejected:
        where_of = {id(rec): where for where, rec in batch}
        for rec, rejection in result.rejected:
            problem(Problem(str(path), where_of.get(id(rec), "?"), rejection.reason,
                            f"the database refused the row: {rejection.message}"))


def _write(sink: PostgresSink, records: list[IngestRecord], path: Path,
           legacy: LegacyRowMatcher | None = None) -> WriteResult:
    def write() -> WriteResult:
        if legacy is not None:
            legacy.identify(rec.event for rec in records)
        return sink.write(records)

    return retry_while_unavailable(
        write,
        lambda exc: BackfillError(f"the database is unavailable ({exc}) while loading {path}; loading again is safe "
                                  "(rows already stored are not duplicated)"),
        _log, attempts=_WRITE_ATTEMPTS,
    )
