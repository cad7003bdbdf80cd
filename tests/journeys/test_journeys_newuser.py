"""A new user's path: the README worked through top to bottom in a shell, with the mistakes
people make (a typo in a job id or a topic, a port already taken, Ctrl-C at the wrong moment,
a database another app already uses, a relative folder, a folder where a file belongs, ...).

Every journey drives only the public surface: the ``predstream`` command in subprocesses, a
training script run as a subprocess, raw bytes on the topic and SQL. It checks what the user
sees: exit codes, the one line on stderr, rows, messages on the topics. Each test says what
was wrong before it was written, or that it covers a path no other test did.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from support import make_event, wait_for
from support.consumer_kit import encoded, produce

pytestmark = pytest.mark.integration

PREDSTREAM = os.path.join(os.path.dirname(sys.executable), "predstream")
HERE = Path(__file__).resolve().parent
SUPPORT = HERE.parent / "support"


# -- helpers: a shell, as a user has one ----------------------------------------------------------


def _env(**values: str) -> dict[str, str]:
    """The user's environment: no PREDSTREAM_* but the suite's private home, plus ``values``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREDSTREAM_")}
    env.update(PREDSTREAM_HOME=os.environ["PREDSTREAM_HOME"], PYTHONUNBUFFERED="1", COLUMNS="200")
    env.update(values)
    return env


def predstream(*args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 60):
    return subprocess.run([PREDSTREAM, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The command failed with one ``error:`` line on stderr and no traceback; return it."""
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def sql(url: str, query: str, *params) -> list[tuple]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query, params or None)
        return cur.fetchall() if cur.description else []


def old_export(path: Path, job: str, n: int = 3, step: int = 10) -> Path:
    """A JSON lines export of the old writer's table (what `predstream backfill` loads)."""
    rows = [{"job_id": job, "epoch": 0, "step": step, "sample_index": i, "prompt": f"{i}+{i}=",
             "ground_truth": str(2 * i), "prediction": str(2 * i), "created_at": "2026-11-01T00:00:00+00:00"}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def taken_port() -> socket.socket:
    """A socket listening on a port (on every address), as another program would hold it."""
    s = socket.socket()
    s.bind(("0.0.0.0", 0))
    s.listen()
    return s


def topics_on(bootstrap: str) -> set[str]:
    from confluent_kafka.admin import AdminClient

    return set(AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics)


def train(opts: dict, *, env: dict[str, str], cwd: Path, timeout: float = 180):
    return subprocess.run([sys.executable, str(SUPPORT / "newuser_train.py"), json.dumps(opts)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


# -- comparing runs ---------------------------------------------------------------------------------


def test_compare_with_one_mistyped_job_id_names_it_instead_of_showing_an_empty_column(database_url, tmp_path):
    """Before: exit 0, an accuracy table with a column of dashes for the typo and no prompt at all."""
    env = _env(PREDSTREAM_DATABASE_URL=database_url)
    loaded = predstream("backfill", str(old_export(tmp_path / "a.jsonl", "run-a")),
                        str(old_export(tmp_path / "b.jsonl", "run-b")), env=env)
    assert loaded.returncode == 0, loaded.stderr
    both = predstream("compare", "run-a", "run-b", env=env)
    assert both.returncode == 0 and "0+0=" in both.stdout, both.stderr
    typo = predstream("compare", "run-a", "run-bb", env=env)
    line = one_error_line(typo)
    assert typo.returncode == 1 and typo.stdout == ""
    assert "run-bb" in line and "run-a" in line.split("run-bb", 1)[1]  # names the typo, then what was found


# -- the consumer ---------------------------------------------------------------------------------


def test_consume_on_a_metrics_port_already_taken_is_one_line_not_a_traceback(kafka_bootstrap, topic, database_url):
    """Before: a 40-line traceback ending in ``OSError: [Errno 98] Address already in use``."""
    env = _env(PREDSTREAM_KAFKA_BOOTSTRAP=kafka_bootstrap, PREDSTREAM_TOPIC=topic, PREDSTREAM_DATABASE_URL=database_url)
    holder = taken_port()
    port = holder.getsockname()[1]
    try:
        start = time.monotonic()
        one = predstream("consume", "--metrics-port", str(port), env=env, timeout=30)
        line = one_error_line(one)
        assert one.returncode == 2 and str(port) in line and "--metrics-port" in line
        # with --workers 2 worker 1 serves on port + 1: taken too is said at once, nothing starts
        two = predstream("consume", "--workers", "2", "--metrics-port", str(port - 1), env=env, timeout=30)
        line = one_error_line(two)
        assert two.returncode == 2 and str(port) in line
        assert time.monotonic() - start < 20
    finally:
        holder.close()


@pytest.mark.slow
def test_a_consumer_started_before_its_topic_exists_stores_the_events_soon_after_it_is_created(
        kafka_bootstrap, topic, database_url, tmp_path):
    """Before: the events waited about a minute, until the join watchdog gave up on the group
    ("the broker keeps the group rebalancing"); librdkafka looked for the topic every 5 min."""
    from confluent_kafka.admin import AdminClient, NewTopic

    assert topic in topics_on(kafka_bootstrap)  # the broker has topics already, as `predstream up` leaves it
    name = "late." + uuid.uuid4().hex[:10]
    env = _env(PREDSTREAM_KAFKA_BOOTSTRAP=kafka_bootstrap, PREDSTREAM_TOPIC=name, PREDSTREAM_DATABASE_URL=database_url,
               PREDSTREAM_GROUP_ID="g." + name, PREDSTREAM_BATCH_MAX_WAIT_MS="50")  # the default session timeout
    log = tmp_path / "consume.log"
    worker = subprocess.Popen([PREDSTREAM, "consume"], env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "not available" in log.read_text() or "does not exist" in log.read_text(), 20,
                 "the consumer to say the topic is not there")
        time.sleep(8)  # the user creates the topic a little later (once the worker sits in its group)
        admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
        for fut in admin.create_topics([NewTopic(name, 3, 1), NewTopic(name + ".dlq", 1, 1)]).values():
            fut.result(15)
        created = time.monotonic()
        produce(kafka_bootstrap, name, [encoded(make_event(i, job="late-job")) for i in range(3)])
        wait_for(lambda: sql(database_url, "SELECT count(*) FROM training_predictions")[0][0] == 3, 45,
                 "3 rows from the topic created after the consumer started")
        assert time.monotonic() - created < 20, log.read_text()
    finally:
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(40)
    assert code == 0, log.read_text()
    assert "keeps the group rebalancing" not in log.read_text()


# -- dead letters, replay, backfill -------------------------------------------------------------------


def test_dlq_commands_on_a_mistyped_topic_say_it_does_not_exist_instead_of_no_dead_letters(
        kafka_bootstrap, topic, database_url):
    """Before: ``no dead letters in training.predictionz.dlq``, exit 0: a typo read as good news."""
    env = _env(PREDSTREAM_KAFKA_BOOTSTRAP=kafka_bootstrap, PREDSTREAM_DATABASE_URL=database_url)
    typo = topic + "z"
    listed = predstream("dlq", "list", "--topic", typo, env=env)
    line = one_error_line(listed)
    assert listed.returncode == 2 and f"{typo}.dlq" in line and "does not exist" in line
    redriven = predstream("dlq", "redrive", env={**env, "PREDSTREAM_TOPIC": typo})
    assert "does not exist" in one_error_line(redriven)
    assert not {typo, typo + ".dlq"} & topics_on(kafka_bootstrap)  # asking created nothing
    fine = predstream("dlq", "list", "--topic", topic, env=env)
    assert fine.returncode == 0 and "no dead letters" in fine.stdout


def test_replay_of_a_job_id_that_is_not_on_the_topic_says_so(kafka_bootstrap, topic, database_url):
    """Before: exit 0 and ``inserted 0 ... skipped (other jobs) 3``; a typo looked like a finished replay."""
    produce(kafka_bootstrap, topic, [encoded(make_event(i, job="my-run-1")) for i in range(3)])
    env = _env(PREDSTREAM_KAFKA_BOOTSTRAP=kafka_bootstrap, PREDSTREAM_TOPIC=topic, PREDSTREAM_DATABASE_URL=database_url)
    typo = predstream("replay", "--from-beginning", "--job", "my-run-l", env=env)
    line = one_error_line(typo)
    assert typo.returncode == 1 and "my-run-l" in line and "my-run-1" in line  # names the job ids it saw
    assert sql(database_url, "SELECT count(*) FROM training_predictions")[0][0] == 0
    right = predstream("replay", "--from-beginning", "--job", "my-run-1", env=env)
    assert right.returncode == 0 and "inserted 3" in right.stdout, right.stderr


def test_backfill_of_a_folder_says_it_is_a_folder_and_names_the_files_to_give(database_url, tmp_path):
    """Before: ``error: no such file: spool`` about a folder that is there."""
    env = _env(PREDSTREAM_DATABASE_URL=database_url)
    folder = tmp_path / "exports"
    folder.mkdir()
    old_export(folder / "old.jsonl", "old-run")
    out = predstream("backfill", "exports", env=env, cwd=tmp_path)
    line = one_error_line(out)
    assert "is a folder" in line and "exports/*.jsonl" in line
    assert sql(database_url, "SELECT count(*) FROM training_predictions")[0][0] == 0
    ok = predstream("backfill", *map(str, sorted(folder.glob("*.jsonl"))), env=env)
    assert ok.returncode == 0 and "inserted 3" in ok.stdout, ok.stderr


# -- the database -------------------------------------------------------------------------------------


def test_migrate_refuses_a_database_where_another_app_has_a_table_of_the_same_name(empty_database_url):
    """Before: migrate added 5 columns to the other app's ``training_predictions``, recorded 3
    migrations, then failed on ``column "prompt" ... does not exist``; with another app's
    ``prediction_sets``: ``column "set_id" referenced in foreign key constraint does not exist``."""
    url = empty_database_url
    env = _env()
    sql(url, "CREATE TABLE training_predictions (id uuid PRIMARY KEY, payload jsonb)")
    sql(url, "INSERT INTO training_predictions VALUES (gen_random_uuid(), '{\"theirs\": true}')")
    out = predstream("migrate", "--database-url", url, env=env)
    line = one_error_line(out)
    assert out.returncode == 2 and "training_predictions" in line and "another" in line
    columns = [r[0] for r in sql(url, "SELECT column_name FROM information_schema.columns "
                                      "WHERE table_name = 'training_predictions' ORDER BY ordinal_position")]
    assert columns == ["id", "payload"]  # the other app's table is as it was
    assert sql(url, "SELECT to_regclass('predstream_migrations') IS NULL")[0][0]  # nothing applied or recorded

    sql(url, "DROP TABLE training_predictions")
    sql(url, "CREATE TABLE prediction_sets (id serial PRIMARY KEY, label text NOT NULL)")
    out = predstream("migrate", "--database-url", url, env=env)
    line = one_error_line(out)
    assert "prediction_sets" in line and "set_id" in line
    assert sql(url, "SELECT to_regclass('training_predictions') IS NULL")[0][0]  # nothing applied


# -- the training side ----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.train
def test_a_relative_spool_dir_is_reported_as_a_full_path_and_spool_status_elsewhere_does_not_say_empty(tmp_path):
    """Before: the publisher said ``spooled (in myspool)`` and ``predstream spool status`` run
    from another folder answered ``spool myspool: empty`` while 16 events waited."""
    pytest.importorskip("torch")
    work, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    work.mkdir(), elsewhere.mkdir()
    env = _env(PREDSTREAM_SPOOL_DIR="myspool", PREDSTREAM_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}",
               PREDSTREAM_FLUSH_TIMEOUT_S="1", PREDSTREAM_MESSAGE_TIMEOUT_MS="1000")
    loop = subprocess.run([sys.executable, str(SUPPORT / "newuser_loop.py")], env=env, cwd=work,
                          capture_output=True, text=True, timeout=120)
    assert loop.returncode == 0, loop.stderr
    assert "16 spooled" in loop.stdout
    assert f"(in {work / 'myspool'})" in loop.stderr  # the log names the folder in full
    here = predstream("spool", "status", env=env, cwd=work)
    assert here.returncode == 0 and "16 records" in here.stdout and str(work / "myspool") in here.stdout
    there = predstream("spool", "status", env=env, cwd=elsewhere)
    assert "empty" not in there.stdout
    said = there.stdout + there.stderr
    assert str(elsewhere / "myspool") in said and "no spool folder" in said


@pytest.mark.slow
@pytest.mark.train
def test_max_new_tokens_beyond_the_models_context_stops_train_begin_with_one_message(tmp_path):
    """Before: an ``IndexError: index out of range in self`` traceback at every recording step,
    ``0 delivered``, and training went on as if all was well."""
    pytest.importorskip("torch")
    env = _env(PREDSTREAM_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}", PREDSTREAM_SPOOL_DIR=str(tmp_path / "spool"))
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps({"prompt": f"{i}+1=", "answer": str(i + 1)}) + "\n"
                                                 for i in range(5)))
    out = train({"output_dir": "out", "dataset": "eval.jsonl", "n_samples": 2, "max_new_tokens": 300},
                env=env, cwd=tmp_path)
    assert out.returncode != 0
    assert "IndexError" not in out.stderr and "recorded" not in out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert "max_new_tokens=300" in last and "128" in last, last


@pytest.mark.slow
@pytest.mark.train
def test_a_job_id_with_spaces_and_unicode_goes_from_training_through_replay_to_compare(
        kafka_bootstrap, topic, database_url, tmp_path):
    """Passes as it is; no test covered a job id a shell must quote, through every command."""
    pytest.importorskip("torch")
    job = "my run ünïcødé 🚀"
    env = _env(PREDSTREAM_KAFKA_BOOTSTRAP=kafka_bootstrap, PREDSTREAM_TOPIC=topic, PREDSTREAM_DATABASE_URL=database_url,
               PREDSTREAM_SPOOL_DIR=str(tmp_path / "spool"))
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps({"prompt": f"{i}+1=", "answer": str(i + 1)}) + "\n"
                                                 for i in range(5)))
    out = train({"output_dir": "out", "dataset": "eval.jsonl", "n_samples": 2, "job_id": job}, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert f"job {job}" in out.stdout and "report 4 delivered" in out.stdout
    replayed = predstream("replay", "--from-beginning", "--job", job, env=env)
    assert replayed.returncode == 0 and "inserted 4" in replayed.stdout, replayed.stderr
    assert sql(database_url, "SELECT count(*) FROM training_predictions WHERE job_id = %s", job)[0][0] == 4
    csv = predstream("compare", job, "--format", "csv", env=env)
    assert csv.returncode == 0 and csv.stdout.count(job) == 4, csv.stderr
    table = predstream("compare", job, env=env)
    assert table.returncode == 0 and job in table.stdout


# -- prediction sets and dataset files --------------------------------------------------------------------


def test_a_jsonl_file_with_windows_line_endings_gives_the_same_prompts_as_the_unix_file(database_url, tmp_path):
    """Passes as it is; no test fed a CRLF file (with a blank line) to the readers."""
    env = _env(PREDSTREAM_DATABASE_URL=database_url)
    rows = [json.dumps({"prompt": f"{i}+{i}=", "ground_truth": str(2 * i)}) for i in range(6)]
    (tmp_path / "unix.jsonl").write_text("\n".join(rows[:3] + [""] + rows[3:]) + "\n")
    (tmp_path / "windows.jsonl").write_bytes(("\r\n".join(rows[:3] + [""] + rows[3:]) + "\r\n").encode())
    unix = predstream("sets", "create", "unix", "--from", "unix.jsonl", "--sample", "4", "--seed", "3", env=env,
                      cwd=tmp_path)
    assert unix.returncode == 0, unix.stderr
    windows = predstream("sets", "create", "windows", "--from", "windows.jsonl", "--sample", "4", "--seed", "3",
                         env=env, cwd=tmp_path)
    assert "already stored as set 'unix'" in one_error_line(windows)  # the very same items
    items = sql(database_url, "SELECT i.source_index, i.prompt, i.ground_truth FROM prediction_set_items i "
                              "JOIN prediction_sets s USING (set_id) WHERE s.name = 'unix' ORDER BY item_index")
    assert len(items) == 4 and not any("\r" in (p + g) for _, p, g in items)
    assert {s for s, _, _ in items} <= {0, 1, 2, 4, 5, 6}  # line 3 is the blank one, counted


def test_sets_create_from_a_folder_an_empty_file_or_fewer_rows_than_asked(database_url, tmp_path):
    """Passes as it is; these mistakes were only unit-tested below the command."""
    env = _env(PREDSTREAM_DATABASE_URL=database_url)
    (tmp_path / "evals").mkdir()
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "three.jsonl").write_text("".join(json.dumps({"prompt": f"{i}?", "answer": "x"}) + "\n"
                                                  for i in range(3)))
    folder = predstream("sets", "create", "a", "--from", "evals", "--sample", "5", env=env, cwd=tmp_path)
    assert folder.returncode == 2 and "is a folder" in one_error_line(folder)
    empty = predstream("sets", "create", "b", "--from", "empty.jsonl", "--sample", "5", env=env, cwd=tmp_path)
    assert empty.returncode == 2 and "no usable rows" in one_error_line(empty)
    few = predstream("sets", "create", "c", "--from", "three.jsonl", "--sample", "50", env=env, cwd=tmp_path)
    assert few.returncode == 0 and "3 items" in few.stdout, few.stderr
    assert "3 usable rows; sampling all of them instead of 50" in few.stderr
    assert [r[0] for r in sql(database_url, "SELECT name FROM prediction_sets")] == ["c"]


# -- the local stack -------------------------------------------------------------------------------------


def _processes_under(home: Path) -> list:
    import psutil

    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(str(home) in part for part in proc.info["cmdline"] or []):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def home(tmp_path):
    """A private PREDSTREAM_HOME for `predstream up`; whatever runs there is stopped afterwards."""
    path = tmp_path / "home"
    yield path
    subprocess.run([PREDSTREAM, "down"], env=_env(PREDSTREAM_HOME=str(path)), capture_output=True, timeout=60)
    for proc in _processes_under(path):
        proc.kill()


@pytest.mark.slow
@pytest.mark.parametrize("interrupt_after", ["broker listening", "PostgreSQL listening"])
def test_ctrl_c_during_up_leaves_nothing_running_and_up_then_works(home, interrupt_after):
    """Before: Ctrl-C while PostgreSQL started left the broker or the server running for good,
    and `predstream down` answered ``no local stack was running``."""
    env = _env(PREDSTREAM_HOME=str(home))
    # a terminal's Ctrl-C: SIGINT to the command's whole process group, default handling
    up = subprocess.Popen([PREDSTREAM, "up"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = []
    for line in up.stderr:
        seen.append(line)
        if interrupt_after in line:
            os.killpg(up.pid, signal.SIGINT)
            break
    rest = up.communicate(timeout=60)
    assert up.returncode != 0, seen
    assert "Traceback" not in "".join(seen) + rest[1]
    broker = int(re.search(r"\(pid (\d+)\)", "".join(seen)).group(1))
    assert wait_for(lambda: not _alive(broker), 10, "the broker to be gone")
    assert wait_for(lambda: not _processes_under(home), 20, "no process left under the home")
    status = predstream("status", env=env)
    assert status.returncode == 1
    again = predstream("up", env=env)
    assert again.returncode == 0, again.stderr
    assert predstream("down", env=env).stdout.strip() == "local stack stopped"
    assert wait_for(lambda: not _processes_under(home), 20, "nothing running after down")


@pytest.mark.parametrize("option", ["--kafka-port", "--pg-port"])
def test_up_on_a_port_already_taken_says_so_and_starts_nothing(home, option):
    """Before: ``--kafka-port`` of another broker printed ``local stack up``, created the topics on
    that other broker and left a stack ``status`` did not know; ``--pg-port`` said only
    ``pg_ctl: could not start server``."""
    env = _env(PREDSTREAM_HOME=str(home))
    holder = taken_port()
    try:
        out = predstream("up", option, str(holder.getsockname()[1]), env=env)
        line = one_error_line(out)
        assert out.returncode == 2 and str(holder.getsockname()[1]) in line and option in line
        assert "local stack up" not in out.stdout
        assert not _processes_under(home)
        assert predstream("status", env=env).returncode == 1
    finally:
        holder.close()


@pytest.mark.slow
def test_up_with_a_topic_of_ones_own_prints_it_with_the_other_settings(home):
    """Before: `PREDSTREAM_TOPIC=exp.one predstream up` created ``exp.one`` but printed only the
    broker and the database, so the next shell used ``training.predictions``; `status` printed
    ``running since 1796190337 (pids {'broker': ...})``."""
    env = _env(PREDSTREAM_HOME=str(home))
    up = predstream("up", env={**env, "PREDSTREAM_TOPIC": "exp.one"})
    assert up.returncode == 0, up.stderr
    assert "PREDSTREAM_TOPIC=exp.one" in up.stdout.splitlines()
    status = predstream("status", env=env)
    assert status.returncode == 0 and "PREDSTREAM_TOPIC=exp.one" in status.stdout.splitlines()
    first = status.stdout.splitlines()[0]
    assert re.search(r"since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", first) and "{" not in first, first
    bootstrap = re.search(r"PREDSTREAM_KAFKA_BOOTSTRAP=(\S+)", up.stdout).group(1)
    assert {"exp.one", "exp.one.dlq"} <= topics_on(bootstrap)
    plain = predstream("up", env=env)  # the second `up` of the day, without the variable
    assert plain.returncode == 0 and "PREDSTREAM_TOPIC=exp.one" in plain.stdout.splitlines()


def test_a_jsonl_file_that_holds_one_json_array_is_one_message_saying_to_name_it_json(database_url, tmp_path):
    """Before: a warning for each of the file's 122 lines ("is not valid JSON"), then
    ``no usable rows in eval dataset arr.jsonl (122 rows)``."""
    env = _env(PREDSTREAM_DATABASE_URL=database_url)
    rows = [{"prompt": f"{i}+{i}=", "ground_truth": str(2 * i)} for i in range(30)]
    (tmp_path / "arr.jsonl").write_text(json.dumps(rows, indent=2))  # a .json file, misnamed
    out = predstream("sets", "create", "a", "--from", "arr.jsonl", "--sample", "5", env=env, cwd=tmp_path)
    line = one_error_line(out)
    assert out.returncode == 2 and "one JSON array" in line and ".json" in line
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    (tmp_path / "arr.jsonl").rename(tmp_path / "arr.json")
    fixed = predstream("sets", "create", "a", "--from", "arr.json", "--sample", "5", env=env, cwd=tmp_path)
    assert fixed.returncode == 0 and "5 items" in fixed.stdout, fixed.stderr


def test_a_typo_in_a_yes_no_setting_is_one_line_naming_it(tmp_path):
    """Before: ``PREDSTREAM_JSON_LOGS=yes-please`` drew a 6-line usage box; the README promises
    one line that names the setting."""
    for value in ("yes-please", "2"):
        out = predstream("status", env=_env(PREDSTREAM_JSON_LOGS=value))
        line = one_error_line(out)
        assert out.returncode == 2 and "PREDSTREAM_JSON_LOGS" in line and repr(value) in line
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    for value in ("true", "1", "yes", "False", "0", ""):
        assert "error:" not in predstream("status", env=_env(PREDSTREAM_JSON_LOGS=value)).stderr
    logged = predstream("--json-logs", "compare", "x", "--database-url", "postgresql://u@127.0.0.1:1/db", env=_env())
    assert logged.returncode == 2  # the flag still takes no value
