"""Faults on the training side: a producer killed -9 with events in its spool, and a spool
file whose tail a crash cut short. Spooled events reach Postgres exactly once each."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from predstream.producer import drain_spool
from predstream.producer.settings import ProducerSettings
from predstream.producer.spool import Spool, list_segments
from predstream.schemas.spoolfile import read_spool
from support import make_events, wait_for
from support.consumer_kit import worker_thread
from support.fault_kit import audit, frames

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.slow]


def _report(name: str, **numbers) -> None:
    print(f"\n[faults] {name}: " + ", ".join(f"{k}={v}" for k, v in numbers.items()))


def _store_everything(settings, expected_ids, database_url) -> None:
    with worker_thread(settings) as worker:
        wait_for(lambda: audit(database_url, expected_ids).missing == 0, 60, "every spooled event stored")
        wait_for(lambda: not worker._buffer, 10, "the batch stored")


@pytest.mark.train
@pytest.mark.parametrize("when", ["after-train-end", "after-step-end"])
def test_a_producer_killed_right_after_the_callback_returned_keeps_its_spooled_events(
    when, tmp_path, consumer_settings, kafka_bootstrap, database_url
):
    pytest.importorskip("torch")
    from predstream.local import free_port

    spool_dir = tmp_path / "spool"
    nowhere = f"127.0.0.1:{free_port()}"  # no broker: everything is spooled
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).parent / "support" / "killed_producer.py"), str(spool_dir), nowhere, when],
        capture_output=True, text=True, timeout=120,
        env={**os.environ,
             "PYTHONPATH": os.pathsep.join(filter(None,
                                                  [str(Path(__file__).parent.parent), os.environ.get("PYTHONPATH")]))},
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    told = json.loads(proc.stdout.strip().splitlines()[-1])
    ids = told["ids"]
    assert len(ids) == len(set(ids)) == 15 and told["spooled"] == 15 and told["dropped"] == 0

    segments = list_segments(spool_dir)
    on_disk = [r for p in segments for r in read_spool(p).records]
    assert all(read_spool(p).intact for p in segments)
    settings = ProducerSettings(kafka_bootstrap=kafka_bootstrap, topic=consumer_settings.topic, spool_dir=spool_dir)
    drained = drain_spool(settings, timeout=30)
    assert (drained.sent, drained.left, drained.segments_busy) == (15, 0, 0)
    assert list_segments(spool_dir) == []
    _store_everything(consumer_settings, ids, database_url)
    result = audit(database_url, ids)
    _report(f"producer killed -9 {when}", published=told["published"], spooled=told["spooled"],
            segments=len(segments), records_on_disk=len(on_disk), resent=drained.sent, rows=result.rows,
            distinct=result.distinct, missing=result.missing, unexpected=result.unexpected)
    assert (result.rows, result.distinct, result.missing, result.unexpected) == (15, 15, 0, 0)


def test_a_spool_file_with_a_truncated_tail_gives_back_its_good_records_and_reports_the_rest(
    tmp_path, consumer_settings, kafka_bootstrap, database_url, caplog
):
    events = make_events(100, job="torn-spool")
    spool_dir = tmp_path / "spool"
    spool = Spool(spool_dir, max_bytes=1 << 24)
    for _key, value, _headers in frames(events):
        spool.append(value)
    spool.close()
    (segment,) = list_segments(spool_dir)
    whole = segment.read_bytes()
    last = len(frames(events[-1:])[0][1]) + 8  # the last record: 8-byte header + frame
    segment.write_bytes(whole[:-(last // 2)])  # a crash half-way through the last append
    caplog.set_level(logging.WARNING, logger="predstream")

    settings = ProducerSettings(kafka_bootstrap=kafka_bootstrap, topic=consumer_settings.topic, spool_dir=spool_dir)
    drained = drain_spool(settings, timeout=30)
    damaged = Path(str(segment) + ".damaged")
    warnings = [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()]
    good = [e.event_id for e in events[:99]]
    _store_everything(consumer_settings, good, database_url)
    result = audit(database_url, good)
    _report("spool with a truncated tail", records_written=100, recovered=drained.sent,
            damaged_segments=drained.segments_damaged, damaged_bytes=damaged.stat().st_size, rows=result.rows,
            distinct=result.distinct, missing=result.missing, unexpected=result.unexpected)
    assert (drained.sent, drained.left, drained.segments_damaged) == (99, 0, 1)
    assert damaged.read_bytes() == whole[len(whole) - last : len(whole) - last // 2]
    assert any("truncated record" in w and "99 good records" in w for w in warnings), warnings
    assert (result.rows, result.distinct, result.missing, result.unexpected) == (99, 99, 0, 0)
