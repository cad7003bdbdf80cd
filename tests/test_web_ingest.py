"""Recording predictions over HTTP: `POST /api/v1/predictions` takes records with or without
their identity, checks every one against the event contract before publishing any, needs the
server's token, and publishes through the training side's Publisher, so the consumer stores
them as it stores training's: through the topic."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from datetime import UTC
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import predstream.web.ingest as ingest
from predstream.producer import ProducerSettings
from predstream.schemas import ConfigError, PredictionEvent, compute_prompt_id, event_id
from predstream.web import ServeSettings, create_app
from support import make_event, make_events, wait_for

pytestmark = pytest.mark.timeout(120)

TOKEN = "a-long-random-secret-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
URL = "/api/v1/predictions"
UNUSED_DB = "postgresql://predstream@127.0.0.1:9/predstream"  # never connected to by these tests


class RecordingPublisher:
    """Stands in for the Publisher in the tests that do not need the broker: keeps what it is given."""

    made: list[RecordingPublisher] = []

    def __init__(self, settings: ProducerSettings) -> None:
        self.settings = settings
        self.events: list[PredictionEvent] = []
        self.closed = False
        RecordingPublisher.made.append(self)

    def publish_many(self, events: Iterable[PredictionEvent]) -> None:
        self.events.extend(events)

    def close(self, timeout: float | None = None) -> None:
        self.closed = True


def app_with(**settings: Any) -> FastAPI:
    values: dict[str, Any] = {"database_url": UNUSED_DB, "kafka_bootstrap": "127.0.0.1:9", "web_token": TOKEN}
    app = create_app(ServeSettings(**{**values, **settings}))
    app.state.ingest.publisher_factory = RecordingPublisher
    return app


@pytest.fixture
def client() -> Iterator[TestClient]:
    RecordingPublisher.made.clear()
    yield TestClient(app_with())  # no lifespan: the endpoint opens its publisher on first use


def published() -> list[PredictionEvent]:
    return [e for p in RecordingPublisher.made for e in p.events]


def record(i: int = 0, **fields: Any) -> dict[str, Any]:
    """A record as the old system's local persistence API took it: no identity fields."""
    base = {"job_id": "http-run", "epoch": 0.5, "step": 10, "sample_index": i, "prompt": f"what is {i} + {i}?",
            "ground_truth": str(2 * i), "prediction": str(2 * i)}
    return {**base, **fields}


# -- the token ---------------------------------------------------------------------------


def test_without_a_configured_token_writes_are_off_and_the_answer_says_how_to_turn_them_on():
    RecordingPublisher.made.clear()
    with TestClient(app_with(web_token=None, kafka_bootstrap=None)) as client:
        answer = client.post(URL, json=[record()], headers=AUTH)
    assert answer.status_code == 403
    assert "PREDSTREAM_WEB_TOKEN" in answer.json()["detail"]
    assert RecordingPublisher.made == []  # no publisher was even opened


@pytest.mark.parametrize("header", [
    None,
    "Bearer wrong",
    f"Bearer {TOKEN[:-1]}",  # a prefix of the token
    f"Bearer {TOKEN}x",  # the token and more
    f"Basic {TOKEN}",  # the token under another scheme
    f"bearer {TOKEN.upper()}",
    "Bearer ",
])
def test_a_request_without_the_right_token_is_refused_and_publishes_nothing(client, header):
    headers = {} if header is None else {"Authorization": header}
    answer = client.post(URL, json=[record()], headers=headers)
    assert answer.status_code == 401, answer.text
    assert answer.headers["www-authenticate"] == "Bearer"
    assert "PREDSTREAM_WEB_TOKEN" in answer.json()["detail"]
    assert TOKEN not in answer.text
    assert published() == []


def test_the_token_is_compared_in_constant_time(client, monkeypatch):
    compared: list[tuple[bytes, bytes]] = []
    real = ingest.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(ingest.hmac, "compare_digest", spy)
    assert client.post(URL, json=[record()], headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.post(URL, json=[record()], headers=AUTH).status_code == 202
    assert compared == [(b"nope", TOKEN.encode()), (TOKEN.encode(), TOKEN.encode())]


def test_the_scheme_name_is_case_insensitive(client):
    assert client.post(URL, json=[record()], headers={"Authorization": f"bearer {TOKEN}"}).status_code == 202


def test_a_token_without_a_broker_stops_the_server_at_start_with_one_line():
    with pytest.raises(ConfigError, match="PREDSTREAM_KAFKA_BOOTSTRAP") as caught:
        create_app(ServeSettings(database_url=UNUSED_DB, web_token=TOKEN))
    assert TOKEN not in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(ConfigError, match="PREDSTREAM_WEB_TOKEN: it is empty"):
        create_app(ServeSettings(database_url=UNUSED_DB, kafka_bootstrap="127.0.0.1:9", web_token="  "))


# -- what is published -------------------------------------------------------------------


def test_valid_records_are_published_in_order_and_answered_with_their_event_ids(client):
    records = [record(i) for i in range(3)]
    answer = client.post(URL, json=records, headers=AUTH)
    assert answer.status_code == 202, answer.text
    body = answer.json()
    events = published()
    assert body["accepted"] == 3 and body["topic"] == "training.predictions"
    assert body["event_ids"] == [e.event_id for e in events]
    assert body["prompt_ids"] == [e.prompt_id for e in events]
    assert [(e.sample_index, e.prediction) for e in events] == [(0, "0"), (1, "2"), (2, "4")]


def test_the_object_form_of_the_body_is_the_same_request(client):
    first = client.post(URL, json=[record(1)], headers=AUTH).json()
    second = client.post(URL, json={"predictions": [record(1)]}, headers=AUTH).json()
    assert first["event_ids"] == second["event_ids"]


def test_identity_left_out_is_computed_as_the_training_side_computes_it(client):
    answer = client.post(URL, json=[record(7, source_index=70, sample_source_id="eval.jsonl")], headers=AUTH)
    assert answer.status_code == 202, answer.text
    (event,) = published()
    prompt_id = compute_prompt_id(None, "what is 7 + 7?")
    assert event.prompt_id == prompt_id
    assert event.sample_source == "dataset"  # as backfill assumes for the old system's rows
    assert event.event_id == event_id(job_id="http-run", step=10, sample_source="dataset",
                                      sample_source_id="eval.jsonl", source_index=70, sample_index=7,
                                      prompt_id=prompt_id)
    assert event.produced_at.tzinfo is not None and event.produced_at.utcoffset() == UTC.utcoffset(None)


def test_an_event_sent_as_json_keeps_its_identity_and_lands_on_the_same_row(client):
    """What training published and what is posted for the same prediction point share one event_id."""
    original = make_event(3, job="trained", step=40, messages=[{"role": "user", "content": "hi"}], prompt=None)
    answer = client.post(URL, json=[original.model_dump(mode="json")], headers=AUTH)
    assert answer.status_code == 202, answer.text
    (event,) = published()
    assert event == original


def test_identity_fields_may_be_null(client):
    nulls = {name: None for name in ("event_id", "prompt_id", "source_index", "sample_source", "sample_source_id",
                                    "produced_at")}
    answer = client.post(URL, json=[record(2, **nulls)], headers=AUTH)
    assert answer.status_code == 202, answer.text
    assert published()[0].prompt_id == compute_prompt_id(None, "what is 2 + 2?")


def test_an_empty_list_publishes_nothing_and_is_not_an_error(client):
    answer = client.post(URL, json=[], headers=AUTH)
    assert answer.status_code == 202 and answer.json()["accepted"] == 0
    assert published() == []


# -- what is refused ---------------------------------------------------------------------


def test_one_bad_record_refuses_the_whole_request_naming_each_bad_record_and_field(client):
    good = record(0)
    other_prompt = compute_prompt_id(None, "something else")
    records = [
        good,
        record(1, step=-1),
        record(2),
        record(3, prediction="a\x00b"),
        record(4, prompt_id=other_prompt),
        "not a record",
        record(6, sample_source="s3"),
        {**record(7), "created_at": "2026-01-01"},
        record(8, prompt=None),
    ]
    answer = client.post(URL, json=records, headers=AUTH)
    assert answer.status_code == 422, answer.text
    body = answer.json()
    assert [(p["index"], p["field"], p["reason"]) for p in body["errors"]] == [
        (1, "step", "out-of-range:step"),
        (3, "prediction", "nul-character:prediction"),
        (4, "prompt_id", "identity-mismatch"),
        (5, None, "wrong-type:record"),
        (6, "sample_source", "invalid:sample_source"),
        (7, "created_at", "invalid:created_at"),
        (8, "prompt", "missing-field:prompt"),
    ]
    assert body["detail"].startswith("record 1: step: Input should be greater than or equal to 0")
    assert "and 6 more bad records" in body["detail"] and "nothing was published" in body["detail"]
    assert published() == []


def test_a_carried_event_id_that_does_not_match_its_fields_is_refused(client):
    borrowed = make_event(0, job="someone-else").event_id
    answer = client.post(URL, json=[record(0, event_id=borrowed)], headers=AUTH)
    assert answer.status_code == 422
    (problem,) = answer.json()["errors"]
    assert (problem["index"], problem["field"], problem["reason"]) == (0, "event_id", "identity-mismatch")
    assert published() == []


@pytest.mark.parametrize("body, why", [
    (b"{", "not JSON"),
    (b"\xff\xfe\xfa", "not JSON"),
    (b'"a string"', "JSON array of records"),
    (b"42", "JSON array of records"),
    (b'{"records": []}', "unknown key 'records'"),
    (b'{"predictions": {"job_id": "x"}}', "must be a JSON array"),
    (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
])
def test_a_body_that_is_not_a_list_of_records_is_refused_as_a_whole(client, body, why):
    answer = client.post(URL, content=body, headers={**AUTH, "Content-Type": "application/json"})
    assert answer.status_code == 422, answer.text
    (problem,) = answer.json()["errors"]
    assert problem["index"] is None and why in problem["message"]
    assert published() == []


def test_numbers_json_cannot_carry_are_refused(client):
    raw = json.dumps([record(0)]).replace('"epoch": 0.5', '"epoch": NaN').encode()
    answer = client.post(URL, content=raw, headers={**AUTH, "Content-Type": "application/json"})
    assert answer.status_code == 422
    assert answer.json()["errors"][0]["field"] == "epoch"


def test_a_body_not_sent_as_json_is_refused_with_415(client):
    form = {**AUTH, "Content-Type": "application/x-www-form-urlencoded"}
    answer = client.post(URL, content=b"job_id=x", headers=form)
    assert answer.status_code == 415
    assert "application/json" in answer.json()["detail"]


def test_too_large_a_request_is_refused_before_it_is_read_in_full(client, monkeypatch):
    monkeypatch.setattr(ingest, "MAX_BODY_BYTES", 2_000)
    answer = client.post(URL, json=[record(i) for i in range(40)], headers=AUTH)
    assert answer.status_code == 413 and "several requests" in answer.json()["detail"]
    monkeypatch.setattr(ingest, "MAX_BODY_BYTES", 10_000_000)
    monkeypatch.setattr(ingest, "MAX_RECORDS", 5)
    answer = client.post(URL, json=[record(i) for i in range(6)], headers=AUTH)
    assert answer.status_code == 413 and "at most 5" in answer.json()["detail"]
    assert published() == []


def test_the_token_never_reaches_a_log_line(client, caplog):
    caplog.set_level(logging.DEBUG)
    client.post(URL, json=[record(0)], headers={"Authorization": "Bearer wrong-" + TOKEN})
    client.post(URL, json=[record(0)], headers=AUTH)
    assert TOKEN not in caplog.text


# -- the publisher's life, the document ---------------------------------------------------


def test_the_publisher_opens_with_the_app_and_is_closed_when_it_stops():
    RecordingPublisher.made.clear()
    app = app_with(topic="my.topic")
    with TestClient(app) as client:
        (publisher,) = RecordingPublisher.made
        assert publisher.settings.topic == "my.topic" and publisher.settings.kafka_bootstrap == "127.0.0.1:9"
        assert client.post(URL, json=[record(0)], headers=AUTH).json()["topic"] == "my.topic"
        assert not publisher.closed
    assert publisher.closed
    assert len(RecordingPublisher.made) == 1


def test_the_openapi_document_describes_the_endpoint_and_its_record():
    doc = TestClient(app_with()).get("/api/v1/openapi.json").json()
    post = doc["paths"][URL]["post"]
    assert set(post["responses"]) == {"202", "401", "403", "413", "415", "422", "503"}
    assert post["security"] == [{"WebToken": []}]
    assert doc["components"]["securitySchemes"]["WebToken"] == {
        "type": "http", "scheme": "bearer", "description": ingest._bearer.model.description}
    record_schema = doc["components"]["schemas"]["TrainingPrediction"]
    assert set(record_schema["required"]) == {"job_id", "epoch", "step", "sample_index", "prediction"}
    assert set(record_schema["properties"]) == set(PredictionEvent.model_fields)
    assert "source_index" in record_schema["properties"]["source_index"]["description"] or \
        "dataset" in record_schema["properties"]["source_index"]["description"]


# -- against the real broker, the real consumer and Postgres -----------------------------


@pytest.fixture
def live_app(kafka_bootstrap, topic, database_url, tmp_path, monkeypatch) -> FastAPI:
    monkeypatch.setenv("PREDSTREAM_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setenv("PREDSTREAM_FLUSH_TIMEOUT_S", "20")
    return create_app(ServeSettings(database_url=database_url, kafka_bootstrap=kafka_bootstrap, topic=topic,
                                    web_token=TOKEN))


@pytest.mark.integration
def test_posted_records_reach_the_table_through_the_topic(live_app, consumer_settings, database_url, topic):
    import psycopg

    from support.consumer_kit import count_rows, worker_thread

    records = [record(0), record(1, source_index=11, sample_source="prediction_set", sample_source_id="set-1"),
               record(2, messages=[{"role": "user", "content": "hello"}], prompt=None)]
    with worker_thread(consumer_settings), TestClient(live_app) as client:
        answer = client.post(URL, json=records, headers=AUTH)
        assert answer.status_code == 202, answer.text
        event_ids = answer.json()["event_ids"]
        wait_for(lambda: count_rows(database_url) >= 3, what="the consumer to store the 3 posted records")
        first_stored = _oldest_produced_at(database_url)
        refused = client.post(URL, json=[record(3), record(4, step=-5)], headers=AUTH)
        assert refused.status_code == 422
        again = client.post(URL, json={"predictions": records}, headers=AUTH)  # a client's retry
        assert again.json()["event_ids"] == event_ids
        # the retry's records are newer (received later): they replace the rows, and add none
        wait_for(lambda: _oldest_produced_at(database_url) > first_stored, what="the retried records to be stored")
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT event_id, sample_index, source_index, sample_source, sample_source_id, prompt_id, prediction,"
            " kafka_topic FROM training_predictions ORDER BY sample_index").fetchall()
    assert [r[0] for r in rows] == event_ids  # one row each, the retry did not add any, the refused did not land
    assert [(r[1], r[2], r[3], r[4]) for r in rows] == [
        (0, None, "dataset", None), (1, 11, "prediction_set", "set-1"), (2, None, "dataset", None)]
    assert rows[2][5] == compute_prompt_id([{"role": "user", "content": "hello"}], None)
    assert {r[7] for r in rows} == {topic}  # stored by the consumer, from the topic


def _oldest_produced_at(database_url: str) -> Any:
    import psycopg

    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT min(produced_at) FROM training_predictions").fetchone()
    assert row is not None
    return row[0]


@pytest.mark.integration
def test_what_was_accepted_is_on_the_topic_once_the_server_stops(live_app, kafka_bootstrap, topic):
    from support.consumer_kit import read_events

    with TestClient(live_app) as client:
        accepted = client.post(URL, json=[e.model_dump(mode="json") for e in make_events(20, job="flushed")],
                               headers=AUTH).json()["event_ids"]
    # the app's shutdown closed (flushed) its publisher
    assert live_app.state.ingest.publisher is None
    events = read_events(kafka_bootstrap, topic, expected=20)
    assert sorted(e.event_id for e in events) == sorted(accepted)


# -- the command ---------------------------------------------------------------------------


def _serve_env(tmp_path: Any, **values: str) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("PREDSTREAM_")}
    env.update(PREDSTREAM_HOME=str(tmp_path / "home"), PREDSTREAM_SPOOL_DIR=str(tmp_path / "spool"), **values)
    return env


@pytest.mark.integration
def test_predstream_serve_with_a_token_and_no_broker_stops_in_one_line(tmp_path, database_url):
    import subprocess
    import sys

    env = _serve_env(tmp_path, PREDSTREAM_WEB_TOKEN=TOKEN, PREDSTREAM_DATABASE_URL=database_url)
    done = subprocess.run([sys.executable, "-m", "predstream", "serve", "--port", "0"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert "PREDSTREAM_KAFKA_BOOTSTRAP" in line and "unset PREDSTREAM_WEB_TOKEN" in line and TOKEN not in line


@pytest.mark.integration
def test_predstream_serve_takes_records_and_flushes_them_to_the_topic_on_ctrl_c(
        tmp_path, database_url, kafka_bootstrap, topic):
    import signal
    import subprocess
    import sys

    import httpx

    from support.consumer_kit import read_events

    env = _serve_env(tmp_path, PREDSTREAM_WEB_TOKEN=TOKEN, PREDSTREAM_DATABASE_URL=database_url,
                     PREDSTREAM_KAFKA_BOOTSTRAP=kafka_bootstrap, PREDSTREAM_TOPIC=topic)
    proc = subprocess.Popen([sys.executable, "-m", "predstream", "serve", "--port", "0"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert line.startswith("predstream web view: http://127.0.0.1:"), line
        url = line.split()[3].rstrip("/")
        answer = httpx.post(url + URL, json={"predictions": [record(i) for i in range(5)]}, headers=AUTH, timeout=10)
        assert answer.status_code == 202, answer.text
        refused = httpx.post(url + URL, json=[record(0)], headers={"Authorization": "Bearer nope"}, timeout=10)
        assert refused.status_code == 401
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(40) == 0, proc.stderr.read() if proc.stderr else ""
    events = read_events(kafka_bootstrap, topic, expected=5)
    assert sorted(e.event_id for e in events) == sorted(answer.json()["event_ids"])


def test_a_record_too_large_for_the_topic_is_refused_not_dropped_after_the_202(client):
    """Each text is within its limit, together they are over the 900,000 bytes an event may have."""
    big = "é" * 200_000  # 400,000 bytes in UTF-8
    answer = client.post(URL, json=[record(0), record(1, prompt=big, ground_truth=big, prediction=big)], headers=AUTH)
    assert answer.status_code == 422
    (problem,) = answer.json()["errors"]
    assert (problem["index"], problem["field"], problem["reason"]) == (1, None, "too-large:message")
    assert "900000" in problem["message"]
    assert published() == []
    just_fits = client.post(URL, json=[record(1, prompt=big, prediction=big)], headers=AUTH)
    assert just_fits.status_code == 202


@pytest.mark.parametrize("doc", ["README.md", "docs/web.md"])
def test_the_documented_curl_request_is_accepted_as_written(client, doc):
    import re
    import shlex
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / doc).read_text(encoding="utf-8")
    block = next(b for b in re.findall(r"```bash\n(.*?)```", text, flags=re.S) if "api/v1/predictions" in b)
    command = shlex.split(block[block.index("curl "):].replace("\\\n", " ").split("\n#")[0])
    body = command[command.index("-d") + 1]
    headers = dict(h.split(": ", 1) for h in (command[i + 1] for i, a in enumerate(command) if a == "-H"))
    headers["Authorization"] = headers["Authorization"].replace("$PREDSTREAM_WEB_TOKEN", TOKEN)
    answer = client.post(URL, content=body.encode(), headers=headers)
    assert answer.status_code == 202, answer.text
    assert answer.json()["accepted"] == len(published()) >= 1


def test_a_request_that_arrives_while_the_server_stops_is_told_to_come_again():
    RecordingPublisher.made.clear()
    app = app_with()
    with TestClient(app) as client:
        app.state.ingest.close()  # what the app's shutdown does first
        answer = client.post(URL, json=[record(0)], headers=AUTH)
    assert answer.status_code == 503 and "send the request again" in answer.json()["detail"]
    assert published() == [] and len(RecordingPublisher.made) == 1  # no second publisher opened


def test_a_lone_surrogate_json_can_carry_is_refused_by_the_contract(client):
    raw = b'[{"job_id": "j", "epoch": 0, "step": 1, "sample_index": 0, "prompt": "a\\ud800", "prediction": "x"}]'
    answer = client.post(URL, content=raw, headers={**AUTH, "Content-Type": "application/json"})
    assert answer.status_code == 422
    (problem,) = answer.json()["errors"]
    assert (problem["index"], problem["field"], problem["reason"]) == (0, "prompt", "invalid-utf8:prompt")
