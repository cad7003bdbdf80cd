"""A schema registry double: a real HTTP server speaking the part of the Confluent Schema
Registry REST API that confluent-kafka's ``SchemaRegistryClient`` uses for Avro.

* ``POST /subjects/{subject}/versions`` registers a schema (the same text under a subject
  gets the same id back; ids are global, as in the real registry);
* ``GET /schemas/ids/{id}``, ``GET /subjects``, ``GET /subjects/{subject}/versions``,
  ``GET /subjects/{subject}/versions/{version|latest}``;
* errors as the registry sends them: ``{"error_code": 40403, "message": ...}``.

Answers are ``application/vnd.schemaregistry.v1+json``. :meth:`RegistryDouble.stop` closes
the socket (clients get "connection refused") and :meth:`RegistryDouble.start` listens again
on the same port with the same schemas, like a registry restart. ``requests`` counts the
requests served, per method and path pattern.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


class RegistryDouble:
    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.schemas: dict[int, str] = {}  # id -> schema text
        self.subjects: dict[str, list[int]] = {}  # subject -> ids, version i+1 at index i
        self.requests: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RegistryDouble:
        double = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                double._serve(self, "GET", None)

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                double._serve(self, "POST", self.rfile.read(length))

            def log_message(self, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="registry-double", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> RegistryDouble:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the API -------------------------------------------------------------------

    def _serve(self, h: BaseHTTPRequestHandler, method: str, body: bytes | None) -> None:
        path = h.path.split("?", 1)[0]
        with self._lock:
            status, answer, pattern = self._answer(method, path, body)
            self.requests[f"{method} {pattern}"] += 1
        data = json.dumps(answer).encode()
        h.send_response(status)
        h.send_header("Content-Type", _CONTENT_TYPE)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _answer(self, method: str, path: str, body: bytes | None) -> tuple[int, Any, str]:
        if method == "POST" and (m := re.fullmatch(r"/subjects/([^/]+)/versions", path)):
            request = json.loads(body or b"{}")
            if request.get("schemaType", "AVRO") != "AVRO" or not isinstance(request.get("schema"), str):
                return 422, {"error_code": 42201, "message": "Invalid schema"}, "/subjects/{s}/versions"
            return 200, {"id": self._register(m.group(1), request["schema"])}, "/subjects/{s}/versions"
        if method == "GET" and (m := re.fullmatch(r"/schemas/ids/(\d+)", path)):
            text = self.schemas.get(int(m.group(1)))
            if text is None:
                return 404, {"error_code": 40403, "message": "Schema not found"}, "/schemas/ids/{id}"
            return 200, {"schema": text}, "/schemas/ids/{id}"
        if method == "GET" and path == "/subjects":
            return 200, sorted(self.subjects), "/subjects"
        if method == "GET" and (m := re.fullmatch(r"/subjects/([^/]+)/versions", path)):
            ids = self.subjects.get(m.group(1))
            if ids is None:
                return 404, {"error_code": 40401, "message": "Subject not found"}, "/subjects/{s}/versions"
            return 200, list(range(1, len(ids) + 1)), "/subjects/{s}/versions"
        if method == "GET" and (m := re.fullmatch(r"/subjects/([^/]+)/versions/(latest|\d+)", path)):
            ids = self.subjects.get(m.group(1)) or []
            version = len(ids) if m.group(2) == "latest" else int(m.group(2))
            if not 1 <= version <= len(ids):
                return 404, {"error_code": 40402, "message": "Version not found"}, "/subjects/{s}/versions/{v}"
            schema_id = ids[version - 1]
            return 200, {"subject": m.group(1), "version": version, "id": schema_id,
                         "schema": self.schemas[schema_id]}, "/subjects/{s}/versions/{v}"
        return 404, {"error_code": 404, "message": "HTTP 404 Not Found"}, path

    def _register(self, subject: str, text: str) -> int:
        canonical = json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
        schema_id = next((i for i, t in self.schemas.items()
                          if json.dumps(json.loads(t), sort_keys=True, separators=(",", ":")) == canonical), None)
        if schema_id is None:
            schema_id = len(self.schemas) + 1
            self.schemas[schema_id] = text
        versions = self.subjects.setdefault(subject, [])
        if schema_id not in versions:
            versions.append(schema_id)
        return schema_id
