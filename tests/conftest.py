"""Fixtures: one real broker and one real PostgreSQL per test session, a fresh topic and a
fresh migrated database per test.

The suite starts both services itself (the embedded local stack, in a temporary folder,
on free ports); it never touches a stack started by ``predstream up`` nor ``~/.predstream``.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

# Keep the suite away from the user's environment and local stack (PREDSTREAM_REQUIRE_BROWSER
# is the suite's own: with it set to 1, tests that need Node, npm or a browser fail instead of skipping).
_KEEP = ("PREDSTREAM_DATABASE_URL", "PREDSTREAM_REQUIRE_BROWSER")
for _var in [v for v in os.environ if v.startswith("PREDSTREAM_") and v not in _KEEP]:
    del os.environ[_var]
_EXTERNAL_DATABASE_URL = os.environ.pop("PREDSTREAM_DATABASE_URL", None)

_TEMPLATE_DB = "predstream_template"


@pytest.fixture(scope="session", autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("predstream-home")
    os.environ["PREDSTREAM_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory):
    """The embedded broker and PostgreSQL, started once for the session."""
    from predstream.consumer import ConsumerSettings, apply_migrations
    from predstream.local import LocalStack

    s = LocalStack(tmp_path_factory.mktemp("stack"), durable=False)
    s.start()
    s.template_database_url = s.database_url(_TEMPLATE_DB)
    import psycopg

    with psycopg.connect(s.database_url("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{_TEMPLATE_DB}"')
    apply_migrations(ConsumerSettings(database_url=s.template_database_url))
    yield s
    s.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(stack) -> str:
    return stack.bootstrap


def _scratch_database(stack, prefix: str, template: str | None):
    """Create a uniquely named database (from ``template`` if given), yield its URL, drop it."""
    import psycopg

    name = prefix + uuid.uuid4().hex[:16]
    admin_url = stack.database_url("postgres")
    clause = f' TEMPLATE "{template}"' if template else ""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"{clause}')
    yield stack.database_url(name)
    try:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except psycopg.Error:
        pass  # a fault test may have left the server down; the session teardown removes it


@pytest.fixture
def database_url(stack):
    """A fresh database with every migration applied, dropped after the test."""
    yield from _scratch_database(stack, "t_", _TEMPLATE_DB)


@pytest.fixture
def empty_database_url(stack):
    """A fresh database with NO migrations applied."""
    yield from _scratch_database(stack, "e_", None)


@pytest.fixture
def external_database_url():
    """The server named by PREDSTREAM_DATABASE_URL when the test run was given one."""
    if not _EXTERNAL_DATABASE_URL:
        pytest.skip("PREDSTREAM_DATABASE_URL not set: no external Postgres to test against")
    return _EXTERNAL_DATABASE_URL


def make_topic(bootstrap: str, partitions: int = 6) -> str:
    """Create a uuid-named topic and its dead-letter topic; return the topic's name."""
    from predstream.local import create_topics

    name = "t." + uuid.uuid4().hex[:12]
    create_topics(bootstrap, {name: partitions, name + ".dlq": 3})
    return name


@pytest.fixture
def topic(kafka_bootstrap) -> str:
    """A fresh topic (6 partitions) and its ``.dlq``, created before any client touches them."""
    return make_topic(kafka_bootstrap)


@pytest.fixture
def producer_settings(kafka_bootstrap, topic, tmp_path):
    from predstream.producer.settings import ProducerSettings

    return ProducerSettings(
        kafka_bootstrap=kafka_bootstrap, topic=topic, spool_dir=tmp_path / "spool", message_timeout_ms=5000
    )


@pytest.fixture
def consumer_settings(kafka_bootstrap, topic, database_url):
    from predstream.consumer.settings import ConsumerSettings

    return ConsumerSettings(
        kafka_bootstrap=kafka_bootstrap,
        topic=topic,
        database_url=database_url,
        group_id="g." + uuid.uuid4().hex[:8],
        session_timeout_ms=6000,
        batch_max_wait_ms=50,
        shutdown_timeout_s=10,
    )
