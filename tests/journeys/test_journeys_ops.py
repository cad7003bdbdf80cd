"""Journeys of someone running the consumer service: `predstream consume`, `dlq`, `health`, the CLI's errors.

Every journey drives the installed `predstream` command in subprocesses (and raw bytes on the
topic) against the suite's real broker and Postgres, and checks what the user sees: exit
codes, the lines on stderr (one line, no traceback, what to fix), rows, message counts on
the topics and their headers.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from predstream.local import LocalStack, create_topics, free_port
from predstream.schemas.transport import Headers
from support import make_event, wait_for
from support.consumer_kit import count_rows, encoded, produce, produce_events

pytestmark = pytest.mark.integration

PREDSTREAM = os.path.join(os.path.dirname(sys.executable), "predstream")


def _env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREDSTREAM_")}
    env["PREDSTREAM_HOME"] = os.environ["PREDSTREAM_HOME"]
    env["PYTHONUNBUFFERED"] = "1"
    env.update(values)
    return env


def _service_env(settings, **extra: str) -> dict[str, str]:
    return _env(PREDSTREAM_KAFKA_BOOTSTRAP=settings.kafka_bootstrap, PREDSTREAM_DATABASE_URL=settings.database_url,
                PREDSTREAM_TOPIC=settings.topic, PREDSTREAM_GROUP_ID=settings.group_id,
                PREDSTREAM_SESSION_TIMEOUT_MS="6000", PREDSTREAM_BATCH_MAX_WAIT_MS="50", **extra)


def predstream(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PREDSTREAM, *args], env=env, capture_output=True, text=True, timeout=timeout)


def consume(*args: str, env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([PREDSTREAM, "consume", *args], env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT)


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The command failed with exactly one line on stderr and no traceback; return it."""
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), lines
    return lines[0]


def stop(proc: subprocess.Popen, timeout: float = 40) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(5)
    return proc.returncode


def topic_messages(bootstrap: str, topic: str) -> list:
    """Every message of ``topic`` as it is now (read to the true end with a group-less reader)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": "journey-" + uuid.uuid4().hex[:8],
                       "enable.partition.eof": True, "enable.auto.commit": False})
    try:
        parts = list(reader.list_topics(timeout=10).topics[topic].partitions)
        reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        found, open_parts, deadline = [], set(parts), time.monotonic() + 30
        while open_parts and time.monotonic() < deadline:
            msg = reader.poll(0.2)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    open_parts.discard(msg.partition())
                continue
            found.append(msg)
        assert not open_parts, "could not read the topic to its end"
        return found
    finally:
        reader.close()


def header(msg, name: str) -> str | None:
    return next((v.decode() for k, v in msg.headers() or [] if k == name), None)


def health(port: int) -> subprocess.CompletedProcess[str]:
    return predstream("health", "--url", f"http://127.0.0.1:{port}", "--timeout", "3", env=_env())


# -- dead letters: redrive while the consumer runs (issue 12.1) ---------------------------------


@pytest.mark.slow
def test_redrive_while_the_consumer_runs_keeps_the_topics_bounded_and_parks_a_letter_that_keeps_failing(
        consumer_settings, kafka_bootstrap, database_url, tmp_path):
    settings = consumer_settings
    env = _service_env(settings)
    too_far = make_event(200, epoch=3e9)  # valid event; the INTEGER epoch column refuses it, every time
    produce(kafka_bootstrap, settings.topic, [encoded(too_far)] + [encoded(make_event(i)) for i in range(5)])
    worker = consume(env=env, log=tmp_path / "consume.log")
    try:
        wait_for(lambda: len(topic_messages(kafka_bootstrap, settings.dlq_topic)) == 1, 60, "the first dead letter")
        outputs = []
        for run in range(1, 6):
            out = predstream("dlq", "redrive", env=env)
            assert out.returncode == 0, out.stderr
            outputs.append(out.stdout.strip())
            expected = min(run, 3) + 1  # the letter fails again at once: one new dead letter per redrive, 3 at most
            wait_for(lambda expected=expected: len(topic_messages(kafka_bootstrap, settings.dlq_topic)) == expected, 30,
                     f"{expected} dead letters after redrive {run}")
        time.sleep(2)  # nothing else arrives
        letters = predstream("dlq", "list", "--format", "json", env=env)
    finally:
        code = stop(worker)
    assert code == 0
    assert [o.split(";")[0] for o in outputs] == [
        "redriven 1 dead letter(s) to " + settings.topic + " (db-rejected:22003: 1)"] * 3 + [
        "redriven 0 dead letter(s) to " + settings.topic] * 2
    assert "parked 1" in outputs[3] and "--redrive-limit" in outputs[3] and "parked" not in outputs[4]
    # the counts on the topics: 6 events + 3 redriven copies; 1 dead letter + 3 that failed again
    main, dlq = topic_messages(kafka_bootstrap, settings.topic), topic_messages(kafka_bootstrap, settings.dlq_topic)
    assert (len(main), len(dlq)) == (9, 4)
    assert sorted(header(m, Headers.REDRIVE_COUNT) or "0" for m in main if m.value() == encoded(too_far)[1]) == [
        "0", "1", "2", "3"]
    assert sorted(int(header(m, Headers.REDRIVE_COUNT) or 0) for m in dlq) == [0, 1, 2, 3]
    listed = json.loads(letters.stdout)
    assert [(d["redrive_count"], d["parked"]) for d in listed] == [(0, False), (1, False), (2, False), (3, True)]
    assert count_rows(database_url) == 5


def test_redrive_with_a_mistyped_reason_says_which_reasons_there_are_and_passes_over_nothing(
        consumer_settings, kafka_bootstrap):
    from predstream.consumer import dead_letter_headers

    settings = consumer_settings
    env = _service_env(settings)
    key, value, hdrs = encoded(make_event(1))
    produce(kafka_bootstrap, settings.dlq_topic, [(key, value, dead_letter_headers(
        hdrs, reason="nul-character:prediction", error="prediction: contains a NUL character", topic=settings.topic,
        partition=0, offset=0, timestamp_ms=None))])
    helptext = predstream("dlq", "redrive", "--help", env=_env(COLUMNS="200"))
    assert "nul-character:<field>" in helptext.stdout and "db-rejected:<SQLSTATE>" in helptext.stdout

    typo = predstream("dlq", "redrive", "--reason", "nulll", env=env)
    assert typo.returncode == 1
    line = one_error_line(typo)
    assert "nul-character:prediction (1)" in line and "starts with" in line
    prefix = predstream("dlq", "redrive", "--reason", "nul", env=env)  # a prefix of the reason matches
    assert prefix.returncode == 0, prefix.stderr
    assert prefix.stdout.startswith("redriven 1 dead letter(s)")
    assert len(topic_messages(kafka_bootstrap, settings.topic)) == 1


# -- CLI errors: one line, what to fix (issue 12.8) ------------------------------------------


def test_an_unknown_log_level_is_one_line_naming_the_levels():
    out = predstream("--log-level", "LOUD", "status", env=_env())
    assert out.returncode == 2
    assert "DEBUG, INFO, WARNING, ERROR" in one_error_line(out)
    env_level = predstream("status", env=_env(PREDSTREAM_LOG_LEVEL="loud"))
    assert env_level.returncode == 2 and "PREDSTREAM_LOG_LEVEL" in one_error_line(env_level)


def test_compare_against_a_database_without_the_tables_says_to_migrate(empty_database_url):
    out = predstream("compare", "a", "--database-url", empty_database_url, env=_env())
    assert out.returncode == 2
    assert "predstream migrate" in one_error_line(out)


def test_compare_with_a_plot_in_a_missing_folder_stops_before_any_work(database_url):
    out = predstream("compare", "J", "--plot", "/nonexistent/x.png", "--database-url", database_url, env=_env())
    assert out.returncode == 2
    assert "folder /nonexistent does not exist" in one_error_line(out)


def test_replay_takes_bootstrap_and_kafka_options_and_compare_says_when_a_prompt_id_matches_nothing(
        kafka_bootstrap, topic, database_url, tmp_path):
    produce_events(kafka_bootstrap, topic, [make_event(i, job="J") for i in range(4)])
    env = _env()  # no PREDSTREAM_KAFKA_BOOTSTRAP: the flags say it all
    replayed = predstream("replay", "--bootstrap", kafka_bootstrap, "-X", "client.id=journey-replay", "--topic", topic,
                          "--database-url", database_url, "--no-progress", env=env)
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout.startswith("read 4: inserted 4")
    bad_option = predstream("replay", "--bootstrap", kafka_bootstrap, "-X", "no.such.setting=1", "--topic", topic,
                            "--database-url", database_url, env=env)
    assert bad_option.returncode == 2 and "no.such.setting" in one_error_line(bad_option)

    shown = predstream("compare", "J", "--format", "csv", "--database-url", database_url, env=env)
    assert shown.returncode == 0 and shown.stdout.count("\nJ,") == 4
    nothing = predstream("compare", "J", "--prompt-id", "nosuch", "--database-url", database_url, env=env)
    assert nothing.returncode == 1
    assert "no predictions for prompt_id 'nosuch'" in one_error_line(nothing)


@pytest.mark.parametrize("command", [["consume"], ["replay", "--no-progress"], ["compare", "J"], ["migrate"]])
def test_a_malformed_database_url_is_one_line_that_shows_the_typo_and_hides_a_password(command):
    env = _env(PREDSTREAM_KAFKA_BOOTSTRAP="127.0.0.1:1")
    typo = predstream(*command, "--database-url", "not-a-url", env=env, timeout=30)
    assert typo.returncode == 2
    assert '"not-a-url"' in one_error_line(typo)
    secret = "hunter2-" + uuid.uuid4().hex[:6]
    hidden = predstream(*command, "--database-url", f"postgresql://me:{secret}%zz@db.example/x", env=env, timeout=30)
    assert hidden.returncode == 2
    line = one_error_line(hidden)
    assert "percent-encoded" in line and secret not in line


@pytest.mark.parametrize("command", [["dlq", "list"], ["replay", "--no-progress"]])
def test_commands_that_read_fail_fast_with_one_line_when_the_broker_is_down(command, database_url):
    env = _env(PREDSTREAM_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}", PREDSTREAM_DATABASE_URL=database_url)
    started = time.monotonic()
    out = predstream(*command, env=env, timeout=60)
    took = time.monotonic() - started
    assert out.returncode == 2
    line = one_error_line(out)
    assert "cannot reach the Kafka broker" in line and "Connection refused" in line and "--bootstrap" in line
    assert took < 12, f"took {took:.1f} s"


@pytest.mark.slow
def test_consume_reports_a_broker_outage_once_when_it_starts_and_once_when_it_ends(database_url, tmp_path):
    home = tmp_path / "late-broker"
    home.mkdir()
    broker = LocalStack(home, kafka_port=free_port())
    topic = "late." + uuid.uuid4().hex[:8]
    env = _env(PREDSTREAM_KAFKA_BOOTSTRAP=broker.bootstrap, PREDSTREAM_DATABASE_URL=database_url,
               PREDSTREAM_TOPIC=topic, PREDSTREAM_SESSION_TIMEOUT_MS="6000")
    log = tmp_path / "consume.log"
    worker = consume(env=env, log=log)
    try:
        # the outage's one line, then a few seconds of librdkafka retrying (~20 a second),
        # however long the worker took to start on a busy machine
        wait_for(lambda: "unreachable" in log.read_text(), 60, "the worker to say the broker is unreachable")
        time.sleep(3)
        broker.start_broker()
        create_topics(broker.bootstrap, {topic: 2, topic + ".dlq": 1})
        produce_events(broker.bootstrap, topic, [make_event(i) for i in range(3)])
        wait_for(lambda: count_rows(database_url) == 3, 60, "3 rows once the broker is up")
    finally:
        code = stop(worker)
        broker.stop_broker()
    text = log.read_text()
    assert code == 0, text
    assert "Traceback" not in text
    assert text.count("unreachable") == 1, text
    assert re.search(r"kafka broker \S+ reachable again after \d+ s \(\d+ repeated failure line", text), text
    assert len(text.splitlines()) < 15, text


# -- the consumer group: joins, health, restarts (issue 12.9) ----------------------------------


@pytest.mark.slow
def test_consume_stopped_during_its_first_join_does_not_wedge_the_group_for_the_next_start(
        consumer_settings, kafka_bootstrap, database_url, tmp_path):
    """The reproduction: SIGTERM during the first join, restart, watch for partitions."""
    env = _service_env(consumer_settings)
    log = tmp_path / "consume.log"
    first = consume(env=env, log=log)
    wait_for(lambda: "consuming" in log.read_text(), 30, "the worker to subscribe")
    time.sleep(0.5)  # in the middle of its first join (it takes ~3-5 s on this broker)
    assert "assigned" not in log.read_text()
    assert stop(first) == 0
    produce_events(kafka_bootstrap, consumer_settings.topic, [make_event(i) for i in range(10)])
    second = consume(env=env, log=tmp_path / "restart.log")
    try:
        wait_for(lambda: count_rows(database_url) == 10, 40, "the restarted worker to store the 10 events")
    finally:
        assert stop(second) == 0
    assert "finishing the group join in progress" in log.read_text()


@pytest.mark.slow
def test_two_workers_on_one_partition_are_healthy_and_ctrl_c_then_a_restart_gets_the_partition(
        kafka_bootstrap, database_url, tmp_path):
    topic = "one." + uuid.uuid4().hex[:8]
    create_topics(kafka_bootstrap, {topic: 1, topic + ".dlq": 1})
    port = _consecutive_free_ports()
    env = _env(PREDSTREAM_KAFKA_BOOTSTRAP=kafka_bootstrap, PREDSTREAM_DATABASE_URL=database_url, PREDSTREAM_TOPIC=topic,
               PREDSTREAM_GROUP_ID="g." + uuid.uuid4().hex[:8], PREDSTREAM_SESSION_TIMEOUT_MS="6000",
               PREDSTREAM_BATCH_MAX_WAIT_MS="50")
    log = tmp_path / "consume.log"
    proc = subprocess.Popen([PREDSTREAM, "consume", "--workers", "2", "--metrics-port", str(port)], env=env,
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: log.read_text().count("assigned") >= 2, 60, "both workers in the group")
        answers = [health(port + i) for i in range(2)]  # more workers than partitions: one has none, both healthy
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: every process of the group
        assert proc.wait(60) == 0
    finally:
        stop(proc)
    assert [a.returncode for a in answers] == [0, 0], [a.stdout + a.stderr for a in answers]
    assert sorted(json.loads(a.stdout.split(" ", 2)[2])["partitions"] for a in answers) == [0, 1]
    assert "Traceback" not in log.read_text()
    produce_events(kafka_bootstrap, topic, [make_event(i) for i in range(10)])
    again = consume(env=env, log=tmp_path / "restart.log")  # the same group: a wedge would keep it from the partition
    try:
        wait_for(lambda: count_rows(database_url) == 10, 40, "the restarted consumer to store the 10 events")
    finally:
        assert stop(again) == 0


def _wedge(bootstrap: str, topic: str, group: str) -> None:
    """What a Ctrl-C during a first join does to a tansu group: a member leaves while it leads a forming generation."""
    from confluent_kafka import Consumer

    member = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "session.timeout.ms": 6000,
                       "heartbeat.interval.ms": 500, "partition.assignment.strategy": "range"})
    member.subscribe([topic])
    started = time.monotonic()
    while time.monotonic() - started < 1.0:
        member.poll(0.1)
    member.close()


@pytest.mark.slow
def test_a_worker_stuck_joining_turns_unhealthy_then_recovers_by_itself_keeping_the_group_offsets(
        consumer_settings, kafka_bootstrap, database_url, tmp_path):
    env = _service_env(consumer_settings, PREDSTREAM_JOIN_TIMEOUT_S="8")
    produce_events(kafka_bootstrap, consumer_settings.topic, [make_event(i) for i in range(100)])
    first = consume(env=env, log=tmp_path / "first.log")
    try:
        wait_for(lambda: count_rows(database_url) == 100, 40, "100 rows")
    finally:
        assert stop(first) == 0
    _wedge(kafka_bootstrap, consumer_settings.topic, consumer_settings.group_id)
    produce_events(kafka_bootstrap, consumer_settings.topic, [make_event(i) for i in range(100, 150)])
    port = free_port()
    log = tmp_path / "second.log"
    second = consume("--metrics-port", str(port), env=env, log=log)
    try:
        wait_for(lambda: "consuming" in log.read_text(), 30, "the worker to subscribe")
        time.sleep(6)
        if "assigned" in log.read_text():
            pytest.skip("this broker did not wedge the group: nothing to recover from")
        wait_for(lambda: "no partitions for" in log.read_text(), 30, "the worker to notice")
        sick = health(port)
        if "assigned" not in log.read_text():  # (unless it recovered in between)
            assert sick.returncode == 1 and "no partitions for" in sick.stderr, sick.stderr
        wait_for(lambda: count_rows(database_url) == 150, 60, "the 50 new events after the recovery")
        wait_for(lambda: health(port).returncode == 0, 20, "healthy again")
        consumed = re.search(r"^predstream_events_consumed_total (\S+)$", _metrics(port), re.M)
    finally:
        assert stop(second) == 0
    text = log.read_text()
    assert "leaving it and rejoining" in text and "committed its offsets back" in text, text
    assert consumed and float(consumed.group(1)) == 50.0, "the group's offsets were kept: only the new events read"


def _metrics(port: int) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return resp.read().decode()


def _consecutive_free_ports() -> int:
    """A port p with p and p + 1 free (worker i serves metrics on p + i)."""
    import socket

    while True:
        port = free_port()
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port + 1)) != 0:
                return port


def _worker_pids(log: Path) -> list[int]:
    found = re.search(r"started \d+ worker process\(es\): ([\d, ]+)", log.read_text())
    return [int(p) for p in found.group(1).split(", ")] if found else []


@pytest.mark.slow
def test_a_killed_worker_is_restarted_and_a_crash_loop_gives_up_with_exit_1(
        consumer_settings, kafka_bootstrap, database_url, tmp_path):
    env = _service_env(consumer_settings, PREDSTREAM_MAX_RESTARTS="1")
    log = tmp_path / "consume.log"
    proc = consume("--workers", "2", env=env, log=log)
    try:
        wait_for(lambda: log.read_text().count("assigned") >= 2, 60, "both workers in the group")
        victim = _worker_pids(log)[1]
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: "worker 1 restarted" in log.read_text(), 30, "the restart")
        produce_events(kafka_bootstrap, consumer_settings.topic, [make_event(i) for i in range(60)])
        wait_for(lambda: count_rows(database_url) == 60, 60, "60 rows with the restarted worker")
        assert proc.poll() is None
        again = int(re.search(r"worker 1 restarted \(pid (\d+)\)", log.read_text()).group(1))
        os.kill(again, signal.SIGKILL)  # the second crash within the window: past PREDSTREAM_MAX_RESTARTS=1
        code = proc.wait(60)
    finally:
        stop(proc)
    text = log.read_text()
    assert f"worker 1 (pid {victim}) was killed by SIGKILL; restarting it in 1 s" in text, text
    assert "giving up and stopping the others" in text, text
    assert code == 1
    assert "Traceback" not in text
