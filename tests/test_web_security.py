"""`predstream serve` reads through the read-only role of docs/reader_role.sql, binds to
loopback unless told otherwise, and shows model output as text."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import httpx
import psycopg
import pytest

from support import wait_for
from support.web_kit import ALPHA, BETA, HOSTILE, create_story_set, running_server, store, story_events

ROOT = Path(__file__).resolve().parent.parent
ROLE = "predstream_reader"
ROLE_SQL = ROOT / "docs" / "reader_role.sql"


@pytest.fixture
def reader_url(database_url):
    """The test database, holding the story, with docs/reader_role.sql applied; the reader's URL."""
    store(database_url, story_events())
    create_story_set(database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(ROLE_SQL.read_text())
        conn.execute(ROLE_SQL.read_text())  # idempotent
    yield database_url.replace("//postgres@", f"//{ROLE}@")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{ROLE}'")
        conn.execute(f"DROP OWNED BY {ROLE}")
        conn.execute(f"DROP ROLE {ROLE}")


@pytest.mark.integration
def test_the_reader_role_has_exactly_the_documented_grants(reader_url, database_url):
    with psycopg.connect(database_url) as conn:
        tables = conn.execute(
            "SELECT table_name, string_agg(privilege_type, ',') FROM information_schema.role_table_grants"
            " WHERE grantee = %s GROUP BY table_name", (ROLE,)).fetchall()
        attrs = conn.execute("SELECT rolsuper, rolcreatedb, rolcreaterole, rolinherit, rolbypassrls, rolcanlogin"
                             " FROM pg_roles WHERE rolname = %s", (ROLE,)).fetchone()
    assert dict(tables) == {t: "SELECT" for t in (
        "training_predictions", "prediction_history", "prediction_accuracy_by_step", "prediction_step_summary",
        "prediction_run_summary", "prediction_prompts", "prediction_sets", "prediction_set_items")}
    assert attrs == (False, False, False, False, False, True)


@pytest.mark.integration
def test_every_page_and_endpoint_works_as_the_reader(reader_url):
    with running_server(reader_url) as url, httpx.Client(base_url=url, timeout=10) as client:
        pid = client.get("/api/v1/search", params={"q": "5", "by": "source_index"}).json()["items"][0]["prompt_id"]
        set_id = client.get("/api/v1/sets").json()["items"][0]["set_id"]
        for path, params in [
            ("/api/v1/runs", {"q": "a", "model": "tiny-gpt2"}), ("/api/v1/accuracy", {"job": [ALPHA, BETA]}),
            ("/api/v1/disagreements", {"job": [ALPHA, BETA], "step": 20}), (f"/api/v1/prompts/{pid}", {}),
            ("/api/v1/search", {"q": "what"}), ("/api/v1/search", {"q": pid[:10]}), ("/api/v1/sets", {}),
            (f"/api/v1/sets/{set_id}", {}), ("/", {}), ("/compare", {"job": [ALPHA, BETA]}),
            (f"/prompts/{quote(pid)}", {}), ("/search", {"q": "what"}), ("/sets", {}), ("/sets/sums-first-four", {}),
        ]:
            response = client.get(path, params=params)
            assert response.status_code == 200, (path, response.text[:300])


@pytest.mark.integration
@pytest.mark.parametrize("statement", [
    "INSERT INTO training_predictions (job_id, step, sample_index, prediction) VALUES ('x', 1, 0, 'y')",
    "UPDATE training_predictions SET prediction = 'x'",
    "DELETE FROM prediction_step_summary",
    "TRUNCATE prediction_prompts",
    "CREATE TABLE public.planted (x int)",
    "SELECT * FROM predstream_migrations",
    "SELECT prediction_summary_refresh_groups(ARRAY['x'], ARRAY[1])",
])
def test_the_reader_can_write_nothing(reader_url, statement):
    with psycopg.connect(reader_url, autocommit=True) as conn:
        with pytest.raises((psycopg.errors.InsufficientPrivilege, psycopg.errors.ReadOnlySqlTransaction)):
            conn.execute(statement)


@pytest.mark.integration
def test_model_output_is_escaped_in_every_page(database_url):
    store(database_url, story_events())
    with running_server(database_url) as url:
        html = httpx.get(url + "/compare", params={"job": [ALPHA, BETA]}).text
    assert "&lt;script&gt;window.__pwned = 1; alert(&#34;pwned&#34;)&lt;/script&gt;" in html
    assert "<script" not in html and "<img" not in html and 'href="javascript:' not in html
    assert HOSTILE not in html


def test_a_host_other_machines_can_reach_needs_public():
    from predstream.schemas import ConfigError, load_settings
    from predstream.web import ServeSettings

    with pytest.raises(ConfigError, match="not a loopback address.*PREDSTREAM_WEB_PUBLIC=true"):
        load_settings(ServeSettings, web_host="0.0.0.0")
    assert load_settings(ServeSettings, web_host="0.0.0.0", web_public=True).web_host == "0.0.0.0"
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert load_settings(ServeSettings, web_host=host).web_host == host
    assert ServeSettings().web_host == "127.0.0.1"


@pytest.mark.integration
def test_predstream_serve_with_the_local_stack_running_needs_no_settings(stack, database_url, tmp_path):
    """`predstream up` wrote stack.json: serve finds the database there, binds loopback, prints
    its URL, and stops on Ctrl-C."""
    import json

    store(database_url, story_events())
    home = tmp_path / "home"
    home.mkdir()
    (home / "stack.json").write_text(json.dumps({
        "bootstrap": stack.bootstrap, "database_url": database_url, "home": str(home),
        "pids": {"postgres": stack.postgres_pid()}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREDSTREAM_")}
    env["PREDSTREAM_HOME"] = str(home)
    proc = subprocess.Popen([sys.executable, "-m", "predstream", "serve", "--port", "0"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert line.startswith("predstream web view: http://127.0.0.1:"), line + (
            proc.stderr.read() if proc.stderr else "")
        url = line.split()[3].rstrip("/")
        runs = wait_for(lambda: httpx.get(url + "/api/v1/runs").json(), 10, "the API")
        assert {r["job_id"] for r in runs["items"]} == {ALPHA, BETA}
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0


def test_predstream_serve_refuses_a_public_host_without_public_in_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREDSTREAM_")}
    env["PREDSTREAM_HOME"] = str(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "predstream", "serve", "--host", "0.0.0.0",
                           "--database-url", "postgresql://x@127.0.0.1:1/db"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: bad --host: '0.0.0.0' is not a loopback address, so other machines could read every prediction: "
        "also set PREDSTREAM_WEB_PUBLIC=true (or pass --public) if that is meant, else use 127.0.0.1"]
