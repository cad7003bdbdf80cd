"""The consumer service's operational pieces, without a broker: outage logging, redaction,
redrive counting, join state, restart delays. (The journeys in tests/journeys/test_journeys_ops.py
drive the same behaviour through the CLI against the real broker.)"""

from __future__ import annotations

import logging

import pytest

from predstream.consumer import DeadLetter
from predstream.consumer.dlq_redrive import _with_count
from predstream.consumer.membership import Membership
from predstream.consumer.runner import restart_delay
from predstream.schemas import redact_url
from predstream.schemas.kafka_log import BrokerLog, BrokerUnreachableError, cluster_metadata
from predstream.schemas.transport import Headers

_REFUSED = "[thrd:127.0.0.1:9/bootstrap]: 127.0.0.1:9/bootstrap: Connect to ipv4#127.0.0.1:9 failed: Connection refused"


def _fail(log: BrokerLog, text: str = _REFUSED, client: str = "rdkafka#consumer-1") -> None:
    log.log(logging.ERROR, "%s [%s] %s", "FAIL", client, text)


def test_a_broker_outage_is_one_warning_then_one_line_with_the_repeats_counted(caplog):
    caplog.set_level(logging.DEBUG, logger="predstream.librdkafka")
    log = BrokerLog()
    for client in ("rdkafka#consumer-1", "rdkafka#producer-2") * 250:
        _fail(log, client=client)
    log.on_stats('{"brokers": {"127.0.0.1:9/bootstrap": {"nodename": "127.0.0.1:9", "state": "UP"}}}')
    shown = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert [r.levelname for r in shown] == ["WARNING", "INFO"]
    refused = "Connect to ipv4#127.0.0.1:9 failed: Connection refused"
    assert f"kafka broker 127.0.0.1:9 unreachable: {refused}" in shown[0].message
    assert "reachable again" in shown[1].message and "499 repeated failure line(s)" in shown[1].message
    assert log.outage() is None
    _fail(log, client="rdkafka#producer-2")  # a line queued during the outage, served just after it
    assert log.outage() is None and len([r for r in caplog.records if r.levelno >= logging.INFO]) == 2


def test_a_closed_connection_alone_is_no_outage_and_other_lines_keep_their_level(caplog):
    caplog.set_level(logging.DEBUG, logger="predstream.librdkafka")
    log = BrokerLog()
    _fail(log, "[thrd:GroupCoordinator]: GroupCoordinator: 127.0.0.1:9: Disconnected: connection closed by peer")
    log.log(logging.WARNING, "%s [%s] %s", "CONFWARN", "c", "[thrd:app]: something about the config")
    assert log.outage() is None
    assert [(r.levelname, "CONFWARN" in r.getMessage()) for r in caplog.records] == [("DEBUG", False),
                                                                                     ("WARNING", True)]


def test_a_quiet_log_prints_nothing_and_keeps_the_last_failure(caplog):
    caplog.set_level(logging.INFO, logger="predstream.librdkafka")
    log = BrokerLog(announce=False)
    _fail(log)
    assert not caplog.records
    assert log.last_failure() == "Connect to ipv4#127.0.0.1:9 failed: Connection refused"


def test_cluster_metadata_gives_up_early_when_every_connection_is_refused(monkeypatch):
    from confluent_kafka import KafkaError, KafkaException

    import predstream.schemas.kafka_log as kafka_log

    monkeypatch.setattr(kafka_log, "_GIVE_UP_S", 0.0)
    log = BrokerLog(announce=False)

    class _Client:
        def list_topics(self, timeout: float) -> None:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT, "Failed to get metadata"))

        def poll(self, timeout: float) -> None:
            _fail(log)

    with pytest.raises(BrokerUnreachableError) as caught:
        cluster_metadata(_Client(), "127.0.0.1:9", log, timeout_s=30)
    assert "127.0.0.1:9 (Connect to ipv4#127.0.0.1:9 failed: Connection refused)" in str(caught.value)
    assert "--bootstrap" in str(caught.value)


@pytest.mark.parametrize(("text", "urls", "shown", "hidden"), [
    ('missing "=" after "not-a-url" in connection info string', None, '"not-a-url"', None),
    ('missing "=" after "not-a-url" in connection info string', "not-a-url", '"not-a-url"', None),
    ('invalid percent-encoded token: "pw%zz"', None, '"***"', "pw%zz"),
    ('invalid percent-encoded token: "db%zz"', "postgresql://u:pw@h/db%zz", '"db%zz"', None),
    ('invalid percent-encoded token: "pw%zz"', "postgresql://u:pw%zz@h/db", '"***"', "pw%zz"),
    ('missing "=" after "postgres:/u:pw9@h" in connection info string', None, "***@h", "pw9"),
    ('missing "=" after "postgres:/u:pw9@h" in connection info string', "postgres:/u:pw9@h", "postgres:/u:***@h",
     "pw9"),
    ("cannot connect to postgresql://u:pw9@h/db", None, "postgresql://u:***@h/db", "pw9"),
    ("connection to host=h password=pw9 failed", None, "password=***", "pw9"),
])
def test_redact_url_hides_passwords_and_keeps_the_users_typos(text, urls, shown, hidden):
    out = redact_url(text, urls)
    assert shown in out
    assert hidden is None or hidden not in out


def test_a_redriven_event_carries_one_more_redrive_than_its_dead_letter():
    headers = [("predstream-schema", b"fp:1"), (Headers.REDRIVE_COUNT, b"2")]
    assert _with_count(headers, 3) == [("predstream-schema", b"fp:1"), (Headers.REDRIVE_COUNT, b"3")]

    letter = DeadLetter(0, 0, None, "db-rejected:22003", "", None, None, None, None, None, None, headers, 2)
    assert not letter.parked() and letter.parked(2)
    assert letter.matches(["db"]) and letter.matches(["db-rejected:22"]) and not letter.matches(["nul"])


def test_membership_tells_an_empty_assignment_from_a_join_that_never_ends():
    m = Membership(join_timeout_s=10)
    m.joining(now=100.0)
    assert not m.stuck(now=105.0) and m.stuck(now=111.0)
    m.joined(0)  # more workers than partitions: in the group, nothing to read
    assert not m.stuck() and m.details() == {"group": "joined", "partitions": 0}
    m.joining(now=200.0)  # a rebalance begins
    m.joining(now=205.0)  # ... and goes on: the first time counts
    assert m.joining_for(now=212.0) == 12.0 and m.stuck(now=212.0)
    assert m.details()["group"] == "joining"


def test_restart_delays_double_up_to_30_s():
    assert [restart_delay(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
