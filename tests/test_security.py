"""Security: TLS/SASL settings reach librdkafka, passwords never reach logs or errors, the
consumer runs as a least-privilege role, and size limits hold on both sides.
See ``docs/security.md``."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from predstream.consumer.settings import ConsumerSettings
from predstream.schemas import redact_url
from predstream.schemas.errors import ConfigError, InvalidEventError
from predstream.schemas.event import MAX_EVENT_BYTES, MAX_TEXT_CHARS
from predstream.schemas.settings import load_settings
from predstream.schemas.transport import redact
from support import T0, make_event, wait_for
from support.consumer_kit import count_rows, produce_events, worker_thread

ROOT = Path(__file__).resolve().parent.parent
SECRET = "S3cr3t-Pw-7f2a"
SASL_SECRET = "Sasl-S3cr3t-91c4"
_CA = "/etc/ssl/certs/ca-certificates.crt"

SASL_SSL = {
    "security.protocol": "SASL_SSL",
    "sasl.mechanism": "SCRAM-SHA-512",
    "sasl.username": "predstream",
    "sasl.password": SASL_SECRET,
    "ssl.endpoint.identification.algorithm": "https",
    **({"ssl.ca.location": _CA} if os.path.exists(_CA) else {}),
}


# -- TLS and SASL pass through to librdkafka -------------------------------------------------


def test_tls_and_sasl_settings_from_the_environment_reach_every_kafka_client(monkeypatch, tmp_path):
    from predstream.consumer import consumer_config
    from predstream.consumer._kafka import dead_letter_producer
    from predstream.producer._kafka import producer_config
    from predstream.producer.settings import ProducerSettings

    monkeypatch.setenv("PREDSTREAM_KAFKA_BOOTSTRAP", "broker-1.example:9093")
    monkeypatch.setenv("PREDSTREAM_KAFKA_OPTIONS", json.dumps(SASL_SSL))
    monkeypatch.setenv("PREDSTREAM_DATABASE_URL", "postgresql://u@h/db")
    consumer = load_settings(ConsumerSettings)
    producer = load_settings(ProducerSettings, spool_dir=str(tmp_path))
    configs = {
        "worker consumer": consumer_config(consumer),
        "dead-letter producer": consumer.kafka_config(**{"acks": "all"}),
        "publisher": producer_config(producer, "x"),
    }
    for name, conf in configs.items():
        for key, value in SASL_SSL.items():
            assert conf[key] == value, (name, key)
        assert conf["bootstrap.servers"] == "broker-1.example:9093"
    # the pass-through options win over predstream's own defaults
    mine = consumer.model_copy(update={"kafka_options": {"client.id": "mine"}})
    assert mine.kafka_config(**{"client.id": "x"})["client.id"] == "mine"
    # librdkafka itself takes them (a real client is built, nothing is contacted yet)
    dead_letter_producer(consumer, "probe")


def test_mutual_tls_options_given_as_cli_style_pairs_are_parsed_the_same(tmp_path):
    pairs = ["security.protocol=SSL", f"ssl.ca.location={_CA}", "ssl.certificate.location=/etc/predstream/client.pem",
             "ssl.key.location=/etc/predstream/client.key", f"ssl.key.password={SECRET}"]
    from predstream.schemas.transport import parse_kafka_options

    opts = parse_kafka_options(pairs)
    assert opts["security.protocol"] == "SSL" and opts["ssl.key.password"] == SECRET
    assert redact(opts)["ssl.key.password"] == "***" and redact(opts)["ssl.key.location"].endswith("client.key")


def test_an_option_librdkafka_refuses_is_a_one_line_config_error_without_secrets():
    with pytest.raises(ConfigError) as caught:
        load_settings(ConsumerSettings, kafka_options={"security.protocol": "SASL_SSL", "sasl.password": SASL_SECRET,
                                                       "sasl.mechanism": "NOT-A-MECHANISM"})
    text = str(caught.value)
    assert "PREDSTREAM_KAFKA_OPTIONS" in text and "\n" not in text and SASL_SECRET not in text


@pytest.mark.integration
def test_tls_is_really_used_a_tls_client_cannot_talk_to_a_plaintext_broker(kafka_bootstrap, caplog):
    """The options are not just stored: a client built from them speaks TLS (its handshake
    with the plaintext test broker fails), and the SASL password shows up in no log line."""
    import time

    from confluent_kafka import Producer

    class _Lines:
        def __init__(self):
            self.lines: list[str] = []

        def log(self, level, msg, *args):
            self.lines.append(msg % args if args else msg)

    caplog.set_level(logging.DEBUG)
    settings = ConsumerSettings(kafka_bootstrap=kafka_bootstrap, kafka_options=SASL_SSL, database_url="postgresql://u@h/d")
    rdkafka = _Lines()
    producer = Producer(settings.kafka_config(**{"socket.connection.setup.timeout.ms": 1000, "logger": rdkafka}))
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not any("SSL_HANDSHAKE" in line for line in rdkafka.lines):
        producer.poll(0.2)
    seen = "\n".join(rdkafka.lines)
    assert "sasl_ssl://" in seen and "SSL_HANDSHAKE" in seen, seen[-2000:]
    assert SASL_SECRET not in seen + caplog.text


# -- passwords never appear in logs or errors -------------------------------------------------


@pytest.mark.parametrize("url", [
    f"postgresql://predstream:{SECRET}@127.0.0.1:1/db",  # nothing listens
    f"postgresql://predstream:{SECRET}%zz@127.0.0.1:1/db",  # a bad percent-escape: libpq quotes the password
    f"postgresql://predstream:{SECRET}@[::1/db",  # a bad host: libpq quotes the whole URL
    f"host=127.0.0.1 port=1 user=predstream password={SECRET}",
    f"host=127.0.0.1 port=1 user=predstream password='{SECRET} with spaces'",
])
def test_database_errors_of_every_entry_point_never_show_the_password(url, caplog, capfd):
    from predstream.consumer.errors import ConsumerError
    from predstream.consumer.migrate import apply_migrations
    from predstream.consumer.settings import ConsumerSettings
    from predstream.consumer.sink import PostgresSink
    from predstream.producer.prediction_sets import fetch_prediction_set
    from predstream.producer.settings import ProducerSettings
    from predstream.schemas import PredictionSetError

    caplog.set_level(logging.DEBUG)
    messages = []
    for attempt in (lambda: PostgresSink(url).ping(), lambda: PostgresSink(url).write([_record()]),
                    lambda: apply_migrations(ConsumerSettings.model_construct(database_url=url)),
                    lambda: fetch_prediction_set("set", ProducerSettings.model_construct(database_url=url))):
        with pytest.raises((ConsumerError, PredictionSetError)) as caught:
            attempt()
        messages.append(str(caught.value))
    out = capfd.readouterr()
    assert all(messages)
    for text in messages + [caplog.text, out.out, out.err]:
        assert SECRET not in text, text
    assert redact_url(url).count("***") >= 1


def _record():
    from predstream.consumer.sink import IngestRecord

    return IngestRecord(make_event(1))


def test_cli_commands_given_a_password_never_print_it(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREDSTREAM_")}
    env.update(PREDSTREAM_HOME=str(tmp_path), PREDSTREAM_KAFKA_BOOTSTRAP="127.0.0.1:1",
               PREDSTREAM_KAFKA_OPTIONS=json.dumps({"sasl.username": "u", "sasl.password": SASL_SECRET,
                                                    "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN"}))
    predstream = os.path.join(os.path.dirname(sys.executable), "predstream")
    url = f"postgresql://predstream:{SECRET}%zz@127.0.0.1:1/db"
    outputs = []
    for args in (["migrate", "--database-url", url], ["-v", "migrate", "--database-url", url]):
        proc = subprocess.run([predstream, *args], env=env, capture_output=True, text=True, timeout=60)
        outputs.append((args, proc.returncode, proc.stdout + proc.stderr))
    for args, code, text in outputs:
        assert code != 0 and text.strip(), (args, text)
        assert SECRET not in text and SASL_SECRET not in text, (args, text)


@pytest.mark.integration
def test_a_worker_with_a_sasl_password_and_a_database_password_logs_neither(consumer_settings, kafka_bootstrap,
                                                                            database_url, caplog, capfd):
    """A full worker run at DEBUG: every line it and librdkafka write is checked."""
    caplog.set_level(logging.DEBUG)
    # the test broker is plaintext; a SASL password given for the client must still stay secret
    settings = consumer_settings.model_copy(update={
        "kafka_options": {"sasl.username": "u", "sasl.password": SASL_SECRET, "debug": "security,broker"},
        "database_url": database_url.replace("postgres@", f"postgres:{SECRET}@"),
    })
    produce_events(kafka_bootstrap, settings.topic, [make_event(i) for i in range(20)])
    with worker_thread(settings):
        wait_for(lambda: count_rows(database_url) == 20, 30, "20 rows")
    out = capfd.readouterr()
    for text in (caplog.text, out.err, out.out):
        assert SECRET not in text and SASL_SECRET not in text


# -- the least-privilege consumer role ---------------------------------------------------------

ROLE = "predstream_consumer"
ROLE_SQL = ROOT / "docs" / "consumer_role.sql"


@pytest.fixture
def consumer_role_url(database_url):
    """The test database with docs/consumer_role.sql applied; the URL to log in as the role."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(ROLE_SQL.read_text())
        conn.execute(ROLE_SQL.read_text())  # idempotent
    yield database_url.replace("//postgres@", f"//{ROLE}@")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{ROLE}'")
        conn.execute(f"DROP OWNED BY {ROLE}")
        conn.execute(f"DROP ROLE {ROLE}")


def test_the_role_has_exactly_the_documented_grants(consumer_role_url, database_url):
    with psycopg.connect(database_url) as conn:
        tables = conn.execute(
            "SELECT table_name, string_agg(privilege_type, ',' ORDER BY privilege_type)"
            " FROM information_schema.role_table_grants"
            " WHERE grantee = %s GROUP BY table_name", (ROLE,)).fetchall()
        attrs = conn.execute("SELECT rolsuper, rolcreatedb, rolcreaterole, rolinherit, rolreplication,"
                             " rolbypassrls, rolcanlogin"
                             " FROM pg_roles WHERE rolname = %s", (ROLE,)).fetchone()
        db = conn.execute("SELECT has_database_privilege(%s, current_database(), 'CREATE'),"
                          " has_database_privilege(%s, current_database(), 'TEMPORARY'),"
                          " has_schema_privilege(%s, 'public', 'CREATE'),"
                          " has_sequence_privilege(%s, 'training_predictions_id_seq', 'USAGE')", (ROLE,) * 4).fetchone()
    assert dict(tables) == {"training_predictions": "INSERT,SELECT,UPDATE"}
    assert attrs == (False, False, False, False, False, False, True)
    assert db == (False, True, False, True)


@pytest.mark.integration
def test_a_worker_running_as_the_role_stores_inserts_updates_and_dead_letters(consumer_role_url, consumer_settings,
                                                                              kafka_bootstrap, database_url):
    from datetime import timedelta

    from predstream.consumer import list_dead_letters

    settings = consumer_settings.model_copy(update={"database_url": consumer_role_url})
    first = [make_event(i, prediction="v1") for i in range(100)]
    newer = [make_event(i, prediction="v2", produced_at=T0 + timedelta(hours=1)) for i in range(50)]
    refused = make_event(500, epoch=3e9)  # the database refuses it (INTEGER epoch): a dead letter
    produce_events(kafka_bootstrap, settings.topic, first)
    with worker_thread(settings) as worker:
        wait_for(lambda: count_rows(database_url) == 100, 60, "100 rows")
        produce_events(kafka_bootstrap, settings.topic, newer + [refused])
        wait_for(lambda: list_dead_letters(settings), 30, "the dead letter")
        wait_for(lambda: worker.metrics.registry.get_sample_value("predstream_rows_upserted_total",
                                                                  {"result": "updated"}) == 50,
                 30, "50 updates")
        assert worker.health()[0]
    with psycopg.connect(database_url) as conn:
        versions = dict(conn.execute("SELECT prediction, count(*) FROM training_predictions GROUP BY 1").fetchall())
    assert versions == {"v1": 50, "v2": 50}
    assert [d.reason for d in list_dead_letters(settings)] == ["db-rejected:22003"]


@pytest.mark.parametrize("statement", [
    "DELETE FROM training_predictions",
    "TRUNCATE training_predictions",
    "DROP TABLE training_predictions",
    "ALTER TABLE training_predictions ADD COLUMN x int",
    "CREATE TABLE public.planted (x int)",
    "CREATE INDEX ON training_predictions (job_id)",
    "SELECT * FROM predstream_migrations",
    "UPDATE predstream_migrations SET checksum = 'x'",
    "SELECT * FROM prediction_sets",
    "INSERT INTO prediction_set_items DEFAULT VALUES",
    "CREATE ROLE planted",
    "CREATE DATABASE planted",
    "CREATE FUNCTION public.f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    "CREATE TRIGGER t BEFORE INSERT ON training_predictions FOR EACH ROW"
    " EXECUTE FUNCTION suppress_redundant_updates_trigger()",
])
def test_the_role_cannot_delete_alter_or_read_beyond_its_table(consumer_role_url, statement):
    with psycopg.connect(consumer_role_url, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)


# -- size limits, on both sides ----------------------------------------------------------------


def test_the_producer_side_refuses_oversize_fields_at_creation():
    with pytest.raises(InvalidEventError) as caught:
        make_event(1, prediction="x" * (MAX_TEXT_CHARS + 1))
    assert caught.value.reason == "too-large:prediction"
    make_event(1, prediction="x" * MAX_TEXT_CHARS)  # the limit itself is fine


@pytest.mark.integration
def test_the_publisher_drops_and_counts_an_event_over_the_message_limit_and_sends_the_rest(producer_settings, caplog):
    from predstream.producer import Publisher

    caplog.set_level(logging.ERROR, logger="predstream")
    # every field within MAX_TEXT_CHARS, the whole over MAX_EVENT_BYTES (3-byte characters)
    huge = make_event(0, prompt="€" * 100_000, ground_truth="€" * 100_000, prediction="€" * 100_000)
    small = [make_event(i) for i in range(1, 11)]
    with Publisher(producer_settings) as pub:
        pub.publish(huge)
        pub.publish_many(small)
        report = pub.flush(20)
    assert (report.delivered, report.dropped, report.spooled) == (10, 1, 0)
    assert f"the limit is {MAX_EVENT_BYTES}" in caplog.text and huge.event_id in caplog.text
