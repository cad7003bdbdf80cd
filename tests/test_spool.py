"""The spool: events kept on local disk survive, are bounded, and come back in order."""

from __future__ import annotations

import logging
import multiprocessing
import os
from pathlib import Path

import pytest

from predstream.producer.errors import SpoolError
from predstream.producer.spool import Spool, claim, list_segments, spool_status
from predstream.schemas.spoolfile import SPOOL_HEADER, encode_record, read_spool


def frames(n: int, size: int = 50, tag: str = "e") -> list[bytes]:
    return [f"{tag}{i:06d}".encode().ljust(size, b".") for i in range(n)]


def spooled(directory: Path) -> list[bytes]:
    return [r for path in list_segments(directory) for r in read_spool(path).records]


def test_appended_frames_come_back_in_order(tmp_path):
    spool = Spool(tmp_path, max_bytes=1 << 20)
    data = frames(20)
    assert all(spool.append(f) for f in data)
    spool.close()
    assert spooled(tmp_path) == data
    assert spool.appended == 20 and spool.dropped == 0
    (segment,) = list_segments(tmp_path)
    assert segment.name.startswith("spool-") and f"-{os.getpid()}-" in segment.name
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_segments_rotate_by_size_and_keep_the_order(tmp_path):
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1000)
    data = frames(100, size=100)
    for f in data:
        spool.append(f)
    spool.close()
    segments = list_segments(tmp_path)
    assert len(segments) >= 10
    assert all(p.stat().st_size <= 1000 + 108 for p in segments)
    assert spooled(tmp_path) == data


def test_a_full_spool_refuses_new_events_with_one_warning_per_episode(tmp_path, caplog):
    record = len(encode_record(frames(1)[0]))
    spool = Spool(tmp_path, max_bytes=len(SPOOL_HEADER) + 10 * record)
    caplog.set_level(logging.INFO, logger="predstream.producer.spool")
    results = [spool.append(f) for f in frames(25)]
    assert results == [True] * 10 + [False] * 15
    assert spool.dropped == 15 and spool.appended == 10
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "DROPPED" in warnings[0].getMessage() and "10 spooled, 1 dropped" in warnings[0].getMessage()
    # A drain makes room; the spool notices (it looks at the folder again) and says so once.
    spool.seal()
    for path in list_segments(tmp_path):
        path.unlink()
    spool._last_rescan = 0.0
    assert spool.append(b"after the drain")
    assert any("accepts events again; 15 were dropped" in r.getMessage() for r in caplog.records)
    assert spool.dropped == 15


def test_a_truncated_tail_is_reported_and_the_good_records_kept(tmp_path, caplog):
    spool = Spool(tmp_path, max_bytes=1 << 20)
    data = frames(5)
    for f in data:
        spool.append(f)
    spool.close()
    (segment,) = list_segments(tmp_path)
    full = segment.read_bytes()
    segment.write_bytes(full[:-7])  # a crash in the middle of the last append
    caplog.set_level(logging.WARNING, logger="predstream.producer.spool")

    c = claim(segment)
    assert c is not None
    assert c.records == data[:4]
    message = caplog.records[-1].getMessage()
    assert str(segment) in message and "truncated record" in message
    assert f"offset {len(full) - len(encode_record(data[4]))}" in message
    (status,) = spool_status(tmp_path)
    assert status.records == 4 and status.problem == "truncated record"
    assert status.bad_tail_bytes == len(encode_record(data[4])) - 7

    c.delivered()  # the 4 good records were sent: the segment goes, the damage is set aside
    assert list_segments(tmp_path) == []
    damaged = Path(str(segment) + ".damaged")
    assert damaged.read_bytes() == full[-len(encode_record(data[4])):-7]


def test_a_corrupt_record_in_the_middle_keeps_what_came_before(tmp_path):
    spool = Spool(tmp_path, max_bytes=1 << 20)
    data = frames(6)
    for f in data:
        spool.append(f)
    spool.close()
    (segment,) = list_segments(tmp_path)
    raw = bytearray(segment.read_bytes())
    third = len(SPOOL_HEADER) + 2 * len(encode_record(data[0]))
    raw[third + 10] ^= 0xFF  # one flipped bit in the third record's payload
    segment.write_bytes(bytes(raw))
    contents = read_spool(segment)
    assert contents.records == data[:2] and contents.problem == "checksum mismatch"
    assert contents.bad_tail_offset == third


@pytest.mark.parametrize(
    ("policy", "expected"),
    [("always", lambda n: n >= 50), ("never", lambda n: n == 0), ("batch", lambda n: 1 <= n <= 4)],
)
def test_the_fsync_policy_is_honoured(tmp_path, monkeypatch, policy, expected):
    calls = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real_fsync(fd)))
    spool = Spool(tmp_path, max_bytes=1 << 20, fsync=policy)
    for f in frames(50):  # one burst ...
        spool.append(f)
    spool.sync()  # ... ended by the writer
    n = len(calls)
    assert expected(n), f"{policy}: {n} fsyncs for 50 appends"
    spool.close()


def test_batch_fsync_happens_at_least_every_100ms_during_a_long_burst(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append(fd))
    clock = [1000.0]
    monkeypatch.setattr("predstream.producer.spool.time.monotonic", lambda: clock[0])
    spool = Spool(tmp_path, max_bytes=1 << 20, fsync="batch")
    spool.append(b"first")  # opens the segment: header fsync + folder fsync
    opened = len(calls)
    spool.append(b"second")
    assert len(calls) == opened
    clock[0] += 0.15
    spool.append(b"third")
    assert len(calls) == opened + 1
    spool.close()


def test_a_segment_being_written_cannot_be_claimed(tmp_path):
    spool = Spool(tmp_path, max_bytes=1 << 20)
    spool.append(b"x")
    (active,) = list_segments(tmp_path)
    assert claim(active) is None
    assert spool_status(tmp_path)[0].active
    spool.seal()
    c = claim(active)
    assert c is not None and c.records == [b"x"]
    assert claim(active) is None  # a second drainer is kept out
    c.release()


def test_a_claim_that_waited_for_a_deleted_segment_gets_nothing(tmp_path):
    spool = Spool(tmp_path, max_bytes=1 << 20)
    spool.append(b"x")
    spool.close()
    (segment,) = list_segments(tmp_path)
    first = claim(segment)
    assert first is not None
    first.delivered()
    assert claim(segment) is None


def test_keep_rewrites_a_segment_with_only_the_undelivered_records(tmp_path):
    spool = Spool(tmp_path, max_bytes=1 << 20)
    data = frames(5)
    for f in data:
        spool.append(f)
    spool.close()
    (segment,) = list_segments(tmp_path)
    c = claim(segment)
    assert c is not None
    c.keep([data[1], data[3]])
    assert not segment.exists()
    assert spooled(tmp_path) == [data[1], data[3]]


def _write_from_another_process(directory: str, tag: str) -> None:
    spool = Spool(directory, max_bytes=1 << 20)
    for f in frames(30, tag=tag):
        spool.append(f)
    spool.close()


def test_ranks_sharing_a_folder_write_separate_segments(tmp_path):
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_write_from_another_process, args=(str(tmp_path), f"r{r}-")) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    segments = list_segments(tmp_path)
    assert len({p.name.split("-")[2] for p in segments}) == 2  # one pid each
    got = spooled(tmp_path)
    assert len(got) == 60 and len(set(got)) == 60


def test_an_unusable_spool_folder_is_a_clear_error(tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(SpoolError, match="PREDSTREAM_SPOOL_DIR"):
        Spool(tmp_path / "a-file" / "spool")
