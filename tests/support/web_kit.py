"""The web view's tests share one story: two runs of a model learning sums, stored through the
real sink (or the real pipeline: topic -> worker -> Postgres), and a server on a free port.

Run ``alpha`` gets better step by step; run ``beta`` stays worse; prompt 3 is a chat; at the
last step run ``beta`` answers prompt 5 with HTML and a script, which the pages must show as
text and never run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from predstream.schemas import PredictionEvent

from .events import make_event

__all__ = ["ALPHA", "BETA", "STEPS", "PROMPTS", "HOSTILE", "story_events", "store", "running_server",
           "create_story_set"]

ALPHA = "alpha-lr3e-3"
BETA = "beta-lr1e-3"
STEPS = (10, 20, 30)
PROMPTS = 8
#: beta's answer to prompt 5 at the last step
HOSTILE = ('<script>window.__pwned = 1; alert("pwned")</script><img src="x" onerror="window.__pwned = 2">'
           '<b id="bold">not bold</b> & <a href="javascript:alert(1)">link</a>')


def _answer(job: str, i: int, step: int) -> str:
    right = str(2 * i)
    if job == ALPHA:  # learns prompt i by step 10 * (1 + i % 3)
        return right if step >= 10 * (1 + i % 3) else f"{right}0 maybe"
    if i == 5 and step == STEPS[-1]:
        return HOSTILE
    return right if i % 4 == 0 else f"about {i}"


def story_events() -> list[PredictionEvent]:
    events = []
    for job, model in ((ALPHA, "tiny-gpt2"), (BETA, "tiny-gpt2-wide")):
        for step in STEPS:
            for i in range(PROMPTS):
                fields: dict[str, Any] = {"model_name": model}
                if i == 3:  # a chat prompt
                    fields.update(prompt=None, messages=[{"role": "system", "content": "Answer with a number."},
                                                         {"role": "user", "content": "what is 3 + 3?"}])
                events.append(make_event(i, job=job, step=step, prediction=_answer(job, i, step), **fields))
    return events


def store(database_url: str, events: list[PredictionEvent]) -> None:
    """Write ``events`` through the consumer's sink (COPY, then the upsert path for repeats)."""
    from predstream.consumer import IngestRecord, PostgresSink

    with PostgresSink(database_url) as sink:
        result = sink.write([IngestRecord(e) for e in events])
    assert not result.rejected, result.rejected


def create_story_set(database_url: str) -> str:
    """A prediction set of the story's first four prompts; returns its name."""
    from predstream.consumer import ConsumerSettings, create_set
    from predstream.schemas import items_from_rows, new_prediction_set

    rows = [{"source_index": e.source_index, "prompt": e.prompt, "ground_truth": e.ground_truth,
             "messages": [{"role": m.role, "content": m.content} for m in e.messages] if e.messages else None}
            for e in story_events()[:4]]
    pset = new_prediction_set("sums-first-four", items_from_rows(rows), source="synthetic", seed=1,
                              description="the first four sums")
    create_set(ConsumerSettings(database_url=database_url), pset)
    return "sums-first-four"


@contextlib.contextmanager
def running_server(database_url: str, **settings: Any) -> Iterator[str]:
    """``predstream serve``'s server on a free loopback port; yields its base URL."""
    from predstream.web import ServeSettings, start_server

    with start_server(ServeSettings(database_url=database_url, web_port=0, **settings)) as server:
        yield server.url
