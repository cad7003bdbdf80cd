"""The API keeps its own OpenAPI document: schemathesis (written by others, from the document
alone) sends every operation of `predstream serve` generated requests, valid and invalid,
against a real Postgres holding two runs and a prediction set, and a real broker behind the
write endpoint, and finds no server error and no answer the document does not describe.

(schemathesis's own pytest plugin does not run under this suite's pytest: it reads a private
attribute pytest 9 removed; so each operation's requests are drawn with hypothesis here.)"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from predstream.web import ServeSettings, create_app
from predstream.web.typescript import openapi_document
from support.web_kit import create_story_set, store, story_events

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

TOKEN = "schemathesis-token-0123456789"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]
#: requests drawn per operation and mode
EXAMPLES = 100

# every operation of the document (built without a database), one test each
OPERATIONS = [(path, method.upper()) for path, item in openapi_document()["paths"].items() for method in item]


@pytest.fixture
def served_app(database_url: str, kafka_bootstrap: str, topic: str, tmp_path: Any,
               monkeypatch: pytest.MonkeyPatch) -> Iterator[FastAPI]:
    """The whole app over a database with the web tests' story, its lifespan running."""
    store(database_url, story_events())
    create_story_set(database_url)
    monkeypatch.setenv("PREDSTREAM_SPOOL_DIR", str(tmp_path / "spool"))
    app = create_app(ServeSettings(database_url=database_url, kafka_bootstrap=kafka_bootstrap, topic=topic,
                                   web_token=TOKEN))
    with TestClient(app):  # opens the database pool and the publisher; closes them after the test
        yield app


def test_the_document_has_every_operation_of_the_api():
    assert ("/api/v1/predictions", "POST") in OPERATIONS
    assert {path for path, _ in OPERATIONS} >= {"/api/v1/runs", "/api/v1/prompts/{prompt_id}", "/api/v1/sets/{name}"}


@pytest.mark.parametrize("path, method", OPERATIONS, ids=[f"{m} {p}" for p, m in OPERATIONS])
def test_every_operation_answers_as_its_document_says(served_app: FastAPI, path: str, method: str) -> None:
    operation = schemathesis.openapi.from_asgi("/api/v1/openapi.json", served_app)[path][method]
    failures: list[str] = []
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        def run(case: Any) -> None:
            case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"}, checks=CHECKS)

        try:
            run()
        except Exception as exc:  # noqa: BLE001 - every mode's findings are reported together
            notes = "\n".join(getattr(exc, "__notes__", ()))  # hypothesis's: the request, as curl
            failures.append(f"{mode.value} requests: {exc}\n{notes}")
    assert not failures, f"{method} {path}:\n" + "\n\n".join(failures)


@pytest.mark.parametrize("url", [
    "/api/v1/runs?model=%00", "/api/v1/search?q=a%00b", "/api/v1/accuracy?job=%00", "/api/v1/disagreements?job=%00",
    "/api/v1/prompts/%00", "/api/v1/sets/%00", "/?q=%00", "/compare?job=%00", "/search?q=%00",
])
def test_a_nul_character_in_a_parameter_is_the_requests_fault_not_a_server_error(served_app: FastAPI, url: str):
    """What schemathesis found first (Postgres text cannot hold NUL): a 400 that says so, on pages too."""
    answer = TestClient(served_app).get(url)
    assert answer.status_code == 400, answer.text
    assert "cannot contain NUL" in answer.text
