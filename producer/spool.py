"""The spool: encoded events kept on local disk while Kafka cannot take them.

The publisher appends an event's encoded frame here when the broker is unreachable, when
librdkafka's queue is full, or when a message could not be delivered.
:func:`~predstream.producer.spool_drain.drain_spool` (the publisher's auto-drain and
``predstream spool drain``) sends the records back to Kafka.

Files
    Segments named ``spool-<ms since epoch>-<pid>-<n>.pss`` in the spool folder, in the
    format of :mod:`predstream.schemas.spoolfile`. A process appends to one *active* segment at a
    time and starts a new one when it reaches ``segment_bytes``. Several processes (one per
    rank) may share a folder: names carry the pid, and every segment is held under an
    exclusive ``flock`` while it is written (the writer) or re-sent (a drainer), so a
    drainer never takes a segment that is still growing, and two drainers never re-send the
    same segment at once. A new segment is written under a hidden temporary name and renamed
    once locked, so no drainer sees it half-made.

Bound
    The folder holds at most ``max_bytes`` (all segments, all processes). Past it, new
    records are refused and counted in ``dropped``; one warning per episode says so (with
    counts), and one line says when records are accepted again.

fsync policy (``spool_fsync``)
    * ``batch`` (default): every append is written to the OS at once; it is fsynced when the
      writer ends a burst (:meth:`Spool.sync`, which the publisher calls after each batch it
      spools) and at least every 100 ms during a long burst. A machine crash loses at most
      the last ~100 ms; a process crash loses nothing that was appended.
    * ``always``: fsync after every record (slow; for tiny event rates).
    * ``never``: leave it to the OS; a machine crash may lose recent records.

Reading back
    :func:`claim` locks a closed segment and reads its good records; a damaged tail (a
    crash mid-append) is reported with path, offset and size, and the good records before
    it are kept. The drainer deletes a segment only once every record in it was delivered
    (:meth:`Claim.delivered`), or rewrites it with only the undelivered ones
    (:meth:`Claim.keep`). Damaged tail bytes are set aside in ``<segment>.damaged``.
"""

from __future__ import annotations

import errno
import fcntl
import itertools
import logging
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from predstream.schemas.spoolfile import SPOOL_HEADER, SpoolContents, encode_record, read_spool

from .errors import SpoolError

if TYPE_CHECKING:
    from .settings import ProducerSettings

__all__ = [
    "Spool",
    "Claim",
    "SegmentStatus",
    "claim",
    "list_segments",
    "spool_status",
    "SEGMENT_GLOB",
]

_log = logging.getLogger(__name__)

SEGMENT_GLOB = "spool-*.pss"
FsyncPolicy = Literal["batch", "always", "never"]
#: In ``batch`` mode, dirty data is never left unsynced longer than this while appending.
BATCH_FSYNC_INTERVAL_S = 0.1
#: How often a full spool looks at the folder again (a drain may have made room).
_RESCAN_INTERVAL_S = 1.0
_seq = itertools.count()


def default_segment_bytes(max_bytes: int) -> int:
    """Segment size for a bound: 1/16 of it, between 1 MiB and 64 MiB."""
    return max(1 << 20, min(64 << 20, max_bytes // 16))


def _new_segment_name() -> str:
    return f"spool-{int(time.time() * 1000):013d}-{os.getpid()}-{next(_seq):06d}.pss"


def list_segments(directory: str | Path) -> list[Path]:
    """Every segment in the folder (closed or still being written), oldest first."""
    try:
        return sorted(Path(directory).glob(SEGMENT_GLOB))
    except OSError:
        return []


def _folder_bytes(directory: Path) -> int:
    total = 0
    for path in list_segments(directory):
        try:
            total += path.stat().st_size
        except OSError:
            pass
    return total


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


class Spool:
    """Append-only, size-bounded, thread-safe spool of encoded event frames (one process).

    ``append`` never raises for a full or failing disk: the record is refused, counted in
    ``dropped`` and reported in the log (once per episode).
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        max_bytes: int = 1 << 30,
        fsync: FsyncPolicy = "batch",
        segment_bytes: int | None = None,
    ) -> None:
        if fsync not in ("batch", "always", "never"):
            raise SpoolError(f"spool fsync policy {fsync!r} is not one of batch, always, never")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.fsync = fsync
        self.segment_bytes = segment_bytes or default_segment_bytes(max_bytes)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SpoolError(f"cannot create the spool folder {self.directory}: {exc.strerror}; "
                             "set PREDSTREAM_SPOOL_DIR to a writable folder") from None
        if not os.access(self.directory, os.W_OK | os.X_OK):
            raise SpoolError(f"the spool folder {self.directory} is not writable; "
                             "set PREDSTREAM_SPOOL_DIR to a writable folder")
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._path: Path | None = None
        self._segment_size = 0
        self._dirty = False
        self._last_sync = time.monotonic()
        self._bytes = _folder_bytes(self.directory)
        self._last_rescan = time.monotonic()
        self._refusing: str | None = None  # why records are being refused, while they are
        self._episode_dropped = 0
        #: Records appended / refused by this spool since it was opened.
        self.appended = 0
        self.dropped = 0

    @classmethod
    def from_settings(cls, settings: ProducerSettings) -> Spool:
        return cls(settings.spool_dir, max_bytes=settings.spool_max_bytes, fsync=settings.spool_fsync)

    # -- writing ---------------------------------------------------------------

    def append(self, frame: bytes) -> bool:
        """Append one encoded event. ``False`` if refused (spool full or disk error)."""
        record = encode_record(frame)
        with self._lock:
            if self._bytes + len(record) > self.max_bytes and not self._room_after_rescan(len(record)):
                self._refuse("full", f"it holds {self._bytes} bytes, the limit is {self.max_bytes} "
                             "(PREDSTREAM_SPOOL_MAX_BYTES)")
                return False
            try:
                if self._fd is None:
                    self._open_segment()
                assert self._fd is not None
                _write_all(self._fd, record)
            except OSError as exc:
                self._close_segment()  # a partly written record ends this segment
                self._refuse("disk", f"writing failed: {exc.strerror or exc}")
                return False
            self._segment_size += len(record)
            self._bytes += len(record)
            self.appended += 1
            if self._refusing is not None:
                _log.info("spool %s accepts events again; %d were dropped meanwhile",
                          self.directory, self._episode_dropped)
                self._refusing = None
            if self.fsync == "always":
                self._fsync()
            else:
                self._dirty = True
                if self.fsync == "batch" and time.monotonic() - self._last_sync >= BATCH_FSYNC_INTERVAL_S:
                    self._fsync()
            if self._segment_size >= self.segment_bytes:
                self._close_segment()
        return True

    def append_many(self, frames: Iterable[bytes]) -> int:
        """Append several frames, then sync (one burst). Returns how many were accepted."""
        n = sum(1 for f in frames if self.append(f))
        self.sync()
        return n

    def sync(self) -> None:
        """End of a burst: fsync what was appended (policy ``batch``; no-op otherwise)."""
        with self._lock:
            if self._dirty and self.fsync == "batch":
                self._fsync()

    def seal(self) -> None:
        """Close the active segment so a drainer can take it; the next append starts a new one."""
        with self._lock:
            self._close_segment()
            self._bytes = _folder_bytes(self.directory)
            self._last_rescan = time.monotonic()

    def close(self) -> None:
        self.seal()

    @property
    def bytes(self) -> int:
        """Bytes in the folder as this spool last counted them."""
        return self._bytes

    @property
    def active_segment(self) -> Path | None:
        return self._path

    # -- internals -------------------------------------------------------------

    def _room_after_rescan(self, size: int) -> bool:
        now = time.monotonic()
        if now - self._last_rescan >= _RESCAN_INTERVAL_S:
            self._last_rescan = now
            self._bytes = _folder_bytes(self.directory)
        return self._bytes + size <= self.max_bytes

    def _refuse(self, why: str, detail: str) -> None:
        self.dropped += 1
        if self._refusing != why:
            self._refusing = why
            self._episode_dropped = 0
            _log.warning(
                "spool %s refuses new events: %s. Events are DROPPED until it has room; "
                "send the spooled ones with `predstream spool drain` (so far %d spooled, %d dropped)",
                self.directory, detail, self.appended, self.dropped,
            )
        self._episode_dropped += 1

    def _open_segment(self) -> None:
        name = _new_segment_name()
        tmp = self.directory / f".{name}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            _write_all(fd, SPOOL_HEADER)
            if self.fsync != "never":
                os.fsync(fd)
            os.rename(tmp, self.directory / name)
            if self.fsync != "never":
                _fsync_dir(self.directory)
        except BaseException:
            os.close(fd)
            try:
                tmp.unlink()
            except OSError:
                pass
            raise
        self._fd, self._path = fd, self.directory / name
        self._segment_size = len(SPOOL_HEADER)
        self._bytes += len(SPOOL_HEADER)
        self._last_sync = time.monotonic()

    def _fsync(self) -> None:
        if self._fd is not None:
            try:
                os.fsync(self._fd)
            except OSError as exc:
                _log.warning("spool: fsync of %s failed: %s", self._path, exc)
        self._dirty = False
        self._last_sync = time.monotonic()

    def _close_segment(self) -> None:
        if self._fd is None:
            return
        if self._dirty and self.fsync != "never":
            self._fsync()
        self._dirty = False
        os.close(self._fd)  # releases the writer's lock: drainers may take it now
        self._fd = self._path = None
        self._segment_size = 0


# -- reading back --------------------------------------------------------------


class Claim:
    """A segment locked for re-sending. Use as a context manager; see :func:`claim`."""

    def __init__(self, path: Path, fd: int, contents: SpoolContents) -> None:
        self.path = path
        self.contents = contents
        self._fd: int | None = fd
        if contents.problem is not None:
            _log.warning(
                "spool segment %s is damaged: %s at offset %d (%d bytes skipped); "
                "the %d good records before it are kept",
                path, contents.problem, contents.bad_tail_offset, contents.bad_tail_bytes, len(contents.records),
            )

    @property
    def records(self) -> list[bytes]:
        return self.contents.records

    def delivered(self) -> None:
        """Every good record was delivered: delete the segment (damaged tail set aside)."""
        self._set_aside_damage()
        self.path.unlink(missing_ok=True)
        _fsync_dir_quietly(self.path.parent)
        self.release()

    def keep(self, undelivered: list[bytes]) -> Path | None:
        """Some records were delivered: replace the segment by one holding only ``undelivered``."""
        if not undelivered:
            self.delivered()
            return None
        if len(undelivered) == len(self.records):
            self.release()  # nothing delivered: leave the segment as it is
            return self.path
        directory = self.path.parent
        name = _new_segment_name()
        tmp = directory / f".{name}.tmp"
        with open(tmp, "wb") as out:
            out.write(SPOOL_HEADER)
            for frame in undelivered:
                out.write(encode_record(frame))
            out.flush()
            os.fsync(out.fileno())
        os.rename(tmp, directory / name)
        self.delivered()  # the remaining records are safe in the new segment
        return directory / name

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _set_aside_damage(self) -> None:
        c = self.contents
        if c.problem is None or not c.bad_tail_bytes or c.bad_tail_offset is None:
            return
        if c.problem.startswith("truncated header"):
            return
        try:
            with open(self.path, "rb") as f:
                f.seek(c.bad_tail_offset)
                tail = f.read()
            Path(str(self.path) + ".damaged").write_bytes(tail)
            _log.warning("spool: the %d damaged bytes of %s are kept in %s.damaged", len(tail), self.path, self.path)
        except OSError as exc:
            _log.warning("spool: could not keep the damaged tail of %s: %s", self.path, exc)

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _fsync_dir_quietly(directory: Path) -> None:
    try:
        _fsync_dir(directory)
    except OSError:
        pass


def claim(path: str | Path) -> Claim | None:
    """Lock a segment for re-sending; ``None`` if another process or thread holds it (a
    writer still appending, or another drainer) or it is gone."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    try:
        # A drainer that finished it may have deleted or replaced it while we waited.
        if os.fstat(fd).st_nlink == 0 or os.stat(path).st_ino != os.fstat(fd).st_ino:
            os.close(fd)
            return None
        contents = read_spool(path)
    except OSError:
        os.close(fd)
        return None
    return Claim(path, fd, contents)


@dataclass(frozen=True)
class SegmentStatus:
    """One segment as ``predstream spool status`` shows it."""

    path: Path
    records: int
    bytes: int
    active: bool
    problem: str | None = None
    bad_tail_offset: int | None = None
    bad_tail_bytes: int = 0


def spool_status(directory: str | Path) -> list[SegmentStatus]:
    """Every segment with its record count, size, whether a writer holds it, and damage."""
    out = []
    for path in list_segments(directory):
        try:
            contents = read_spool(path)
            size = path.stat().st_size
        except OSError:
            continue
        out.append(SegmentStatus(path, len(contents.records), size, _is_locked(path), contents.problem,
                                 contents.bad_tail_offset, contents.bad_tail_bytes))
    return out


def _is_locked(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)
