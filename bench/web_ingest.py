"""What `POST /api/v1/predictions` costs the server: ``python -m bench.web_ingest``.

Prints, for requests of 1 to 10,000 records (plain prompts, and chat prompts of 3 messages):
the time per request through the whole app (ASGI, JSON parsing, every record validated by the
contract and its identity computed and checked, the answer serialised) and the records per
second that makes on one core, and the cost per record of the validation alone
(``record_to_event``). The publisher is replaced by one that only keeps the events, so what
is measured is the endpoint, not the broker (publishing is ``Publisher.publish``'s
microsecond per event: bench/training_cost.py). No database or broker is needed.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable
from typing import Any

from fastapi.testclient import TestClient

from predstream.schemas import PredictionEvent
from predstream.web import ServeSettings, create_app
from predstream.web.records import record_to_event

_TOKEN = "bench-token-0123456789abcdef"


class _KeepingPublisher:
    def __init__(self, settings: Any) -> None:
        self.count = 0

    def publish_many(self, events: Iterable[PredictionEvent]) -> None:
        self.count += len(list(events))

    def close(self, timeout: float | None = None) -> None:
        pass


def _record(i: int, chat: bool) -> dict[str, Any]:
    base: dict[str, Any] = {"job_id": "bench-run", "epoch": 1.5, "step": 300, "sample_index": i, "source_index": i,
                            "ground_truth": str(i * 7), "prediction": f"the answer is {i * 7}"}
    if chat:
        base["messages"] = [{"role": "system", "content": "Answer with a number only."},
                            {"role": "user", "content": f"What is {i} times 7? Think step by step."},
                            {"role": "assistant", "content": "Sure."}]
    else:
        base["prompt"] = f"What is {i} times 7? Think step by step, then answer with a number only."
    return base


def _time(fn: Any, repeat: int) -> float:
    """Median seconds of ``repeat`` calls."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    app = create_app(ServeSettings(database_url="postgresql://bench@127.0.0.1:9/bench", kafka_bootstrap="127.0.0.1:9",
                                   web_token=_TOKEN))
    app.state.ingest.publisher_factory = _KeepingPublisher
    client = TestClient(app)
    headers = {"Authorization": f"Bearer {_TOKEN}"}
    print(f"{'request':<32} {'ms / request':>14} {'records / s':>12} {'µs / record':>12}")
    for chat in (False, True):
        kind = "chat" if chat else "plain"
        for n in (1, 100, 1000, 10_000):
            body = [_record(i, chat) for i in range(n)]
            repeat = max(3, min(50, 20_000 // n))

            def post(body: list[dict[str, Any]] = body, n: int = n) -> None:
                answer = client.post("/api/v1/predictions", json=body, headers=headers)
                assert answer.status_code == 202 and answer.json()["accepted"] == n, answer.text

            seconds = _time(post, repeat)
            print(f"{f'POST {n:>6} {kind} records':<32} {seconds * 1e3:>14.2f} {n / seconds:>12,.0f} "
                  f"{seconds / n * 1e6:>12.1f}")
        records = [_record(i, chat) for i in range(2000)]

        def validate(records: list[dict[str, Any]] = records) -> None:
            for r in records:
                record_to_event(r)

        seconds = _time(validate, 5)
        print(f"{f'record_to_event alone, {kind}':<32} {'':>14} {2000 / seconds:>12,.0f} {seconds / 2000 * 1e6:>12.1f}")


if __name__ == "__main__":
    main()
