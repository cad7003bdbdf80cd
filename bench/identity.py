"""Benchmark 6: what verifying identities costs the consumer's decode path.

The consumer recomputes each event's ``prompt_id`` and ``event_id`` (:mod:`predstream.schemas.identity`).
Here the same frames are decoded and validated without the check
(``PredictionEvent.from_avro(decoder.decode_record(frame))``) and with it
(``decoder.decode(frame)``, what the worker, replay and backfill call), interleaved, best of
``_REPEATS`` passes, for two workloads: plain prompts (~600 characters) and chat messages
(a system and a user turn). Like a training run, an eval set's prompts recur at every step.
The check alone is also timed warm (prompts already verified once in this process) and cold
(every prompt hashed again). No broker, no database.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ._common import BenchContext, BenchResult, make_events

NAME = "identity"
TITLE = "6. Identity check on the decode path (per event)"

_REPEATS = 7
_MAX_EVENTS = 20_000


def _best(fn: Callable[[], Any], n: int, runs: list[float]) -> None:
    t0 = time.perf_counter()
    fn()
    runs.append((time.perf_counter() - t0) / n * 1e6)


def run(ctx: BenchContext) -> BenchResult:
    from predstream.schemas import identity
    from predstream.schemas.codec import Decoder, SingleObjectEncoder
    from predstream.schemas.event import PredictionEvent
    from predstream.schemas.identity import check_identity

    res = BenchResult(NAME, TITLE)
    n = min(_MAX_EVENTS, max(2_000, ctx.size.sink_events * 4))
    plain = make_events(n, seed=11)
    system = "You are a careful assistant. Answer with the result only. " * 3
    chat = [PredictionEvent.create(**{
        **e.model_dump(exclude={"event_id", "prompt_id", "prompt"}),
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": e.prompt}],
    }) for e in plain]
    encoder, decoder = SingleObjectEncoder(), Decoder()
    for label, events in (("plain prompt", plain), ("chat messages", chat)):
        frames = [encoder.encode(e) for e in events]

        def without(frames: list[bytes] = frames) -> None:
            for f in frames:
                PredictionEvent.from_avro(decoder.decode_record(f))

        def with_check(frames: list[bytes] = frames) -> None:
            for f in frames:
                decoder.decode(f)

        def warm(events: list[PredictionEvent] = events) -> None:
            for e in events:
                check_identity(e)

        def cold(events: list[PredictionEvent] = events) -> None:
            forget = identity._verified.clear
            for e in events:
                forget()
                check_identity(e)

        runs: dict[str, list[float]] = {"without": [], "with": [], "warm": [], "cold": []}
        with_check()  # warm-up (and the verified prompts remembered, as in a running worker)
        for _ in range(_REPEATS):
            _best(without, len(frames), runs["without"])
            _best(with_check, len(frames), runs["with"])
            _best(warm, len(events), runs["warm"])
            _best(cold, len(events), runs["cold"])
        best = {k: min(v) for k, v in runs.items()}
        res.add(f"{label}: decode + validate, without the check", best["without"], "µs/event")
        res.add(f"{label}: decode + validate, with the check", best["with"], "µs/event")
        res.add(f"{label}: the check alone, prompt seen before", best["warm"], "µs/event")
        res.add(f"{label}: the check alone, prompt hashed again", best["cold"], "µs/event")
        share = 100 * (best["with"] - best["without"]) / best["without"]
        res.add(f"{label}: added by the check", share, "%").check("<=", 25)
        res.details[label] = {"events": len(frames), "distinct_prompts": len({e.prompt_id for e in events}),
                              "runs_us_per_event": runs}
    identity._verified.clear()
    return res
