"""Coverage-guided fuzzing of the event decoder with atheris (libFuzzer for Python).

Every input must either decode to a valid event that survives a re-encode, or be refused
with one of predstream's own errors carrying a well-formed dead-letter reason. Any other
exception (or a crash, or a hang) is a finding.

Run by hand for as long as you like (``pip install atheris``, part of the ``dev`` extra)::

    python tests/fuzz/fuzz_decoder.py -max_total_time=600 [CORPUS_DIR]

Without a corpus folder it seeds one (in a temporary folder) with valid frames of every
schema version. The test suite runs it briefly (``tests/test_hostile_input.py``).
"""

from __future__ import annotations

import re
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["predstream.schemas", "fastavro"]):
    from predstream.schemas.codec import SCHEMA_VERSIONS, Decoder, SingleObjectEncoder
    from predstream.schemas.errors import DecodeError, InvalidEventError
    from predstream.schemas.event import PredictionEvent

_REASON = re.compile(r"[a-z][a-z0-9-]*(:[A-Za-z0-9_.-]+)?")
_DECODER = Decoder()
if _DECODER._fast_read is not None:  # compiled from generated source: instrument it by hand
    _DECODER._fast_read = atheris.instrument_func(_DECODER._fast_read)
_ENCODER = SingleObjectEncoder()


def test_one_input(data: bytes) -> None:
    try:
        event = _DECODER.decode(data)
    except (DecodeError, InvalidEventError) as exc:
        if not _REASON.fullmatch(exc.reason) or not str(exc).strip():
            raise AssertionError(f"bad dead-letter reason {exc.reason!r} / message {str(exc)!r}") from None
        return
    again = _DECODER.decode(_ENCODER.encode(event))
    if again != event:
        raise AssertionError(f"re-encoding changed the event: {event!r} -> {again!r}")


def _seed(folder: Path) -> None:
    base = dict(job_id="fuzz", epoch=1.5, step=3, sample_index=0, source_index=7, prompt="2+2?", ground_truth="4",
                prediction="4", sample_source="dataset", sample_source_id="d",
                produced_at=datetime(2026, 1, 1, tzinfo=UTC))
    events = [
        PredictionEvent.create(**base),
        PredictionEvent.create(**{**base, "prompt": None, "messages": [{"role": "user", "content": "hi"}]}),
        PredictionEvent.create(**{**base, "model_name": "m", "generation": {"max_new_tokens": 4, "do_sample": True,
                                  "temperature": 0.7, "top_p": 0.9, "top_k": 5, "seed": 1}, "generation_ms": 2.5,
                                  "prompt_tokens": 3, "completion_tokens": 1}),
    ]
    n = 0
    for version in SCHEMA_VERSIONS:
        enc = SingleObjectEncoder(version)
        for e in events:
            record = e.to_avro()
            if version == 1:
                record = {k: v for k, v in record.items() if k not in ("messages", "sequence_index", "generation")}
            try:
                (folder / f"seed-{n}").write_bytes(enc.encode_record(record))
                n += 1
            except Exception:  # a field the old schema lacks: skip that seed
                pass


def main() -> None:
    argv = list(sys.argv)
    if not any(not a.startswith("-") for a in argv[1:]):
        corpus = Path(tempfile.mkdtemp(prefix="predstream-fuzz-"))
        _seed(corpus)
        argv.append(str(corpus))
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
