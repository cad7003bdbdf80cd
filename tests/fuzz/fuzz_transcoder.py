"""Coverage-guided fuzzing of the transcoder against the pydantic path, with atheris.

For every input, the transcoder (``predstream.consumer.transcode``, generated code) must
either leave it to the pydantic path (``None``) or write exactly the row the pydantic path
writes for it; it must never accept what the pydantic path refuses. Any other outcome (or
an exception, a crash, a hang) is a finding. ``tests/support/copy_rows.py`` is the oracle.

Run by hand for as long as you like (``pip install atheris``, part of the ``dev`` extra)::

    python tests/fuzz/fuzz_transcoder.py -max_total_time=600 [CORPUS_DIR]

Without a corpus folder it seeds one (in a temporary folder) with valid frames: plain and
chat prompts, generation settings, nulls. The test suite runs it briefly
(``tests/test_transcode.py``).
"""

from __future__ import annotations

import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/: the oracle in support/

with atheris.instrument_imports(include=["predstream.consumer.transcode", "predstream.schemas"]):
    from predstream.consumer.transcode import Transcoder
    from predstream.schemas.codec import SingleObjectEncoder
    from predstream.schemas.event import PredictionEvent
    from support.copy_rows import compare

_TRANSCODER = Transcoder()
if _TRANSCODER._many is not None:  # compiled from generated source: instrument it by hand
    _TRANSCODER._many = atheris.instrument_func(_TRANSCODER._many)


def test_one_input(data: bytes) -> None:
    compare(_TRANSCODER, data, "fuzz", 1, 2)


def _seed(folder: Path) -> None:
    base = dict(job_id="fuzz", epoch=1.5, step=300, sample_index=70, source_index=7, prompt="2+2?", ground_truth="4",
                prediction="4", sample_source="dataset", sample_source_id="d",
                produced_at=datetime(2026, 1, 1, tzinfo=UTC))
    events = [
        PredictionEvent.create(**base),
        PredictionEvent.create(**{**base, "prompt": None, "messages": [{"role": "user", "content": "hi é"}]}),
        PredictionEvent.create(**{**base, "model_name": "m", "generation": {"max_new_tokens": 4, "do_sample": True,
                                  "temperature": 0.7, "top_p": 0.9, "top_k": 5, "seed": 1}, "generation_ms": 2.5,
                                  "prompt_tokens": 3, "completion_tokens": 1, "attempt": 2}),
        PredictionEvent.create(**{**base, "sample_source": "prediction_set", "sample_source_id": "ps_1",
                                  "ground_truth": None, "source_index": None}),
    ]
    encoder = SingleObjectEncoder()
    for n, e in enumerate(events):
        (folder / f"seed-{n}").write_bytes(encoder.encode(e))


def main() -> None:
    argv = list(sys.argv)
    if not any(not a.startswith("-") for a in argv[1:]):
        corpus = Path(tempfile.mkdtemp(prefix="predstream-fuzz-transcoder-"))
        _seed(corpus)
        argv.append(str(corpus))
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
