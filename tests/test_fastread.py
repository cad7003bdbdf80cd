"""The compiled Avro reader (``predstream.schemas._fastread``) reads exactly what fastavro reads.

The consumer decodes every body written with the current schema with it, so it is held to
fastavro's answer: the same dict for every valid body, and a refusal wherever fastavro
refuses, on random and mutated bytes too.
"""

from __future__ import annotations

import io
import math
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from predstream.schemas._fastread import MalformedAvro, compile_reader
from predstream.schemas.codec import SCHEMA_VERSIONS, load_schema
from support.mutations import mutated

_FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SCHEMA = load_schema()
READ = compile_reader(SCHEMA)

_text = st.text(max_size=30)
_int = st.integers(-(2**31), 2**31 - 1)
_long = st.integers(-(2**63), 2**63 - 1)
_double = st.floats(allow_nan=False)  # NaN != NaN: compared apart below
_gen = st.fixed_dictionaries({
    "max_new_tokens": _int, "do_sample": st.booleans(), "temperature": st.none() | _double,
    "top_p": st.none() | _double, "top_k": st.none() | _int, "num_beams": _int,
    "num_return_sequences": _int, "seed": st.none() | _long,
})
_records = st.fixed_dictionaries({
    "event_id": _text, "job_id": _text, "epoch": _double, "step": _long, "sample_index": _int,
    "sequence_index": _int, "prompt": st.none() | _text,
    "messages": st.none() | st.lists(st.fixed_dictionaries({"role": _text, "content": _text}), max_size=5),
    "ground_truth": st.none() | _text, "prediction": _text, "prompt_id": _text, "source_index": st.none() | _long,
    "sample_source": _text, "sample_source_id": st.none() | _text, "model_name": st.none() | _text,
    "generation": st.none() | _gen, "prompt_tokens": st.none() | _int, "completion_tokens": st.none() | _int,
    "generation_ms": st.none() | _double,
    "produced_at": st.integers(-(2**40), 2**52),  # microseconds since the epoch
    "attempt": _int,
})


def _body(record: dict[str, Any], schema: Any = SCHEMA) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema, record)
    return buf.getvalue()


def _fastavro(body: bytes, schema: Any = SCHEMA) -> dict[str, Any] | None:
    """fastavro's reading of a whole body, or None when it refuses it or leaves bytes over."""
    stream = io.BytesIO(body)
    try:
        record = fastavro.schemaless_reader(stream, schema, None)
    except Exception:
        return None
    return record if stream.tell() == len(body) else None


def _compiled(body: bytes, read: Any = READ) -> dict[str, Any] | None:
    try:
        return read(b"xx" + body, 2)  # read from an offset, as the decoder does after the header
    except MalformedAvro:
        return None


@_FUZZ
@given(_records)
def test_every_body_of_the_current_schema_reads_as_fastavro_reads_it(record):
    body = _body(record)
    assert _compiled(body) == _fastavro(body) is not None


_RECORD = {
    "event_id": "e" * 64, "job_id": "job", "epoch": 1.25, "step": 300, "sample_index": 7, "sequence_index": 0,
    "prompt": None, "messages": [{"role": "user", "content": "héllo"}] * 2, "ground_truth": "4", "prediction": "5",
    "prompt_id": "p" * 64, "source_index": 70_000, "sample_source": "dataset", "sample_source_id": None,
    "model_name": "m", "generation": None, "prompt_tokens": 12, "completion_tokens": 3, "generation_ms": 2.5,
    "produced_at": 1_764_150_000_000_000, "attempt": 2,
}
_GEN = {"max_new_tokens": 8, "do_sample": True, "temperature": 0.7, "top_p": None, "top_k": 50,
        "num_beams": 1, "num_return_sequences": 1, "seed": -3}


def test_nan_and_infinities_come_back():
    got = _compiled(_body({**_RECORD, "epoch": math.nan, "generation_ms": -math.inf}))
    assert math.isnan(got["epoch"]) and got["generation_ms"] == -math.inf


_VALID = [
    _body(_RECORD),
    _body({**_RECORD, "messages": None, "generation": _GEN, "prompt": "p" * 200}),
]


def _same(a: Any, b: Any) -> bool:
    """Equal, counting NaN equal to NaN (a flipped bit easily makes one)."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(_same, a, b))
    return a == b and type(a) is type(b)


@_FUZZ
@given(st.one_of(mutated(_VALID, 4), st.binary(max_size=200)))
def test_mutated_and_random_bodies_read_as_fastavro_reads_them_or_are_refused_by_both(body):
    theirs = _fastavro(body)
    try:
        ours = READ(body, 0)
    except MalformedAvro as exc:
        # the refusals fastavro does not make: it reads any non-zero boolean byte as true,
        # a negative union index as a Python index from the end of the branches, and a
        # varint of any length
        lenient = any(what in str(exc) for what in ("boolean byte", "union branch -", "longer than 10 bytes"))
        assert theirs is None or lenient, (body, theirs, exc)
    else:
        assert _same(ours, theirs), (body, ours, theirs)


@pytest.mark.parametrize("varint, value", [
    (b"\xfe" * 9 + b"\x01", 9187059548520701887),  # 64 bits: read as is
    (b"\xfe" * 9 + b"\x03", 9187059548520701887),  # 65 bits: the 65th dropped, as fastavro does
    (b"\xff" * 9 + b"\x7f", -(2**63)),
])
def test_a_ten_byte_varint_keeps_64_bits_like_fastavro(varint, value):
    long_only = fastavro.parse_schema({"type": "record", "name": "r", "fields": [{"name": "a", "type": "long"}]})
    assert compile_reader(long_only)(varint, 0) == {"a": value} == _fastavro(varint, long_only)


@pytest.mark.parametrize("body, problem", [
    (b"", "ends too early"),
    (b"\xff" * 11, "longer than 10 bytes"),
    (_VALID[0] + b"\x00", "trailing"),
    (_VALID[0][:-1], "ends too early"),
])
def test_malformed_bodies_are_refused_with_what_is_wrong(body, problem):
    with pytest.raises(MalformedAvro, match=problem):
        READ(body, 0)


def test_a_huge_length_is_refused_without_allocating_it():
    string_first = compile_reader(fastavro.parse_schema(
        {"type": "record", "name": "r", "fields": [{"name": "s", "type": "string"}]}))
    with pytest.raises(MalformedAvro, match="does not fit"):
        string_first(b"\xfe\xff\xff\xff\xff\xff\xff\xff\x7f", 0)  # 2^62 bytes
    with pytest.raises(MalformedAvro, match="does not fit"):
        string_first(b"\x01", 0)  # a negative length


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_every_published_schema_version_compiles(version):
    assert compile_reader(load_schema(version)) is not None


@pytest.mark.parametrize("field_type", [
    {"type": "enum", "name": "e", "symbols": ["a"]},
    {"type": "map", "values": "string"},
    {"type": "fixed", "name": "f", "size": 4},
    {"type": "int", "logicalType": "date"},
])
def test_types_it_does_not_cover_leave_the_reading_to_fastavro(field_type):
    schema = fastavro.parse_schema({"type": "record", "name": "r", "fields": [{"name": "x", "type": field_type}]})
    assert compile_reader(schema) is None


def test_an_event_framed_through_a_schema_registry_is_read_by_the_compiled_reader():
    from confluent_kafka.schema_registry import SchemaRegistryClient

    from predstream.schemas.codec import ConfluentEncoder, Decoder
    from predstream.schemas.event import PredictionEvent

    registry = SchemaRegistryClient.new_client({"url": "mock://fastread"})
    event = PredictionEvent.create(job_id="j", epoch=0.5, step=1, sample_index=0, prompt="p", prediction="x",
                                   sample_source="dataset")
    decoder = Decoder(client=registry)
    assert decoder.decode(ConfluentEncoder("mock://fastread", "t", client=registry).encode(event)) == event
    # the registered current schema resolves to the decoder's own, the compiled reader's
    (writer,) = decoder._by_id.values()
    assert writer is decoder._reader
