"""The transcoder (Avro body -> PostgreSQL binary COPY row) writes what the pydantic path writes, or defers.

The consumer turns most messages straight into COPY rows (``consumer/transcode.py``, code
generated from the contract). It is held here to the pydantic path (``Decoder.decode`` and
the sink's ``row_values``), on every input: valid events must come out as the same row;
anything else must be refused by both, or left by the transcoder to the pydantic path,
which then decides (so dead-letter reasons do not change). See also
``tests/test_sink_copy_rows.py`` (the same rows in a real Postgres) and
``tests/fuzz/fuzz_transcoder.py`` (coverage-guided).
"""

from __future__ import annotations

import io
import math
from datetime import UTC, datetime

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from predstream.consumer._columns import COLUMN_TYPES, DIRECT_COLUMNS
from predstream.consumer.transcode import Transcoder, copy_columns
from predstream.schemas.codec import SINGLE_OBJECT_MAGIC, SingleObjectEncoder, load_schema, single_object_header
from predstream.schemas.event import MAX_STEP, PredictionEvent, event_id
from predstream.schemas.prompt_id import compute_prompt_id
from support.copy_rows import Outcome, compare
from support.fuzzing import short_fuzz_run
from support.mutations import mutated

_FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ENC = SingleObjectEncoder()
TC = Transcoder()
HEADER = ENC._prefix
SCHEMA = load_schema()

# -- valid events -------------------------------------------------------------------------

_chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
_text = st.text(_chars, max_size=40)
_int4 = st.integers(0, 2**31 - 1)
_small = st.integers(0, 300)  # one- and two-byte varints, where the fast paths are
_float = st.floats(min_value=0, max_value=1e12, allow_nan=False, allow_infinity=False) | st.just(-0.0)
_generation = st.fixed_dictionaries({
    "max_new_tokens": st.integers(1, 1_000_000), "do_sample": st.booleans(),
    "temperature": st.none() | _float, "top_p": st.none() | st.floats(0, 1),
    "top_k": st.none() | _int4, "num_beams": st.integers(1, 2**31 - 1),
    "num_return_sequences": st.integers(1, 2**31 - 1), "seed": st.none() | st.integers(-(2**63), 2**63 - 1),
})
_messages = st.lists(st.fixed_dictionaries({"role": st.text(_chars, min_size=1, max_size=10), "content": _text}),
                     max_size=4)


@st.composite
def valid_events(draw) -> PredictionEvent:
    messages = draw(st.none() | _messages)
    prompt = draw(_text if messages is None else st.none() | _text)
    return PredictionEvent.create(
        job_id=draw(st.text(_chars, min_size=1, max_size=40)),
        epoch=draw(st.floats(0, 2**31 - 1, exclude_max=True) | st.just(-0.0)),
        step=draw(_small | st.integers(0, MAX_STEP)), sample_index=draw(_small | _int4),
        sequence_index=draw(_small | _int4), prompt=prompt, messages=messages,
        ground_truth=draw(st.none() | _text), prediction=draw(_text | st.text(_chars, min_size=100, max_size=400)),
        source_index=draw(st.none() | _small | _int4),
        sample_source=draw(st.sampled_from(["dataset", "prediction_set"])),
        sample_source_id=draw(st.none() | _text), model_name=draw(st.none() | _text),
        generation=draw(st.none() | _generation), prompt_tokens=draw(st.none() | _small | _int4),
        completion_tokens=draw(st.none() | _small | _int4), generation_ms=draw(st.none() | _float),
        produced_at=draw(st.datetimes(datetime(1, 1, 1), datetime(9999, 12, 31), timezones=st.just(UTC))),
        attempt=draw(_small | _int4),
    )


@_FUZZ
@given(valid_events(), st.integers(0, 2**31 - 1), st.integers(0, 2**63 - 1))
def test_every_valid_event_is_transcoded_into_the_row_the_pydantic_path_writes(event, partition, offset):
    assert compare(TC, ENC.encode(event), "a.topic", partition, offset) == Outcome.SAME


def test_prompts_seen_before_and_repeated_fields_come_out_the_same_as_the_first_time():
    # the transcoder remembers checked prompts and repeated runs of fields: the second and
    # later times must give the rows of the first
    from support import make_event

    tc = Transcoder()
    events = [make_event(i % 7, step=s, messages=[{"role": "user", "content": f"q{i % 7}"}] if i % 2 else None,
                         generation={"max_new_tokens": 4 + (s % 2)}, model_name=f"m{s % 3}")
              for s in range(4) for i in range(14)]
    assert [compare(tc, ENC.encode(e), "t", 1, k) for k, e in enumerate(events)] == [Outcome.SAME] * len(events)


# -- invalid events, with identities computed from their own (invalid) fields ---------------

_any_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12) | st.sampled_from(
    ["", "\x00", "a\x00b", "x" * 257, "é" * 200, "ok"])
_avro_int = st.integers(-(2**31), 2**31 - 1) | st.sampled_from([-1, 0, 63, 64, 8191, 8192, 2**31 - 1])
_avro_long = st.integers(-(2**63), 2**63 - 1) | st.sampled_from([-1, 0, 2**31 - 1, 2**31, 2**63 - 1])
_avro_double = st.floats() | st.sampled_from([-0.0, -1e-300, 2.0**31, 2.0**31 - 0.5, math.inf, math.nan])


_role = st.sampled_from(["", "u", "r" * 64, "r" * 65, "\x00"]) | _any_text
#: per field, values across (and beyond) its rules
_WIDE = {
    "job_id": _any_text, "epoch": _avro_double, "step": _avro_long, "sample_index": _avro_int,
    "sequence_index": _avro_int, "prompt": st.none() | _any_text,
    "messages": st.none() | st.lists(st.fixed_dictionaries({"role": _role, "content": _any_text}), max_size=3),
    "ground_truth": st.none() | _any_text, "prediction": _any_text, "source_index": st.none() | _avro_long,
    "sample_source": st.sampled_from(["dataset", "prediction_set", "Dataset", ""]),
    "sample_source_id": st.none() | _any_text, "model_name": st.none() | _any_text,
    "generation": st.none() | st.fixed_dictionaries({
        "max_new_tokens": _avro_int, "do_sample": st.booleans(), "temperature": st.none() | _avro_double,
        "top_p": st.none() | _avro_double, "top_k": st.none() | _avro_int, "num_beams": _avro_int,
        "num_return_sequences": _avro_int, "seed": st.none() | _avro_long}),
    "prompt_tokens": st.none() | _avro_int, "completion_tokens": st.none() | _avro_int,
    "generation_ms": st.none() | _avro_double,
    "produced_at": st.integers(-(2**63), 2**63 - 1) | st.integers(-(2**60), 2**60), "attempt": _avro_int,
}


@st.composite
def records(draw) -> dict:
    """A valid event's record with up to three fields set to values across (and beyond) their
    rules, and identities computed from the result where that is possible (so that the rules
    themselves decide), sometimes not."""
    rec = draw(valid_events()).to_avro()
    for name in draw(st.lists(st.sampled_from(sorted(_WIDE)), max_size=3, unique=True)):
        rec[name] = draw(_WIDE[name])
    try:
        rec["prompt_id"] = compute_prompt_id(rec["messages"], rec["prompt"])
    except ValueError:
        rec["prompt_id"] = draw(st.sampled_from(["0" * 64, "A" * 64, "x"]))
    if draw(st.integers(0, 9)):
        rec["event_id"] = event_id(
            job_id=rec["job_id"], step=rec["step"], sample_source=rec["sample_source"],
            sample_source_id=rec["sample_source_id"], source_index=rec["source_index"],
            sample_index=rec["sample_index"], prompt_id=rec["prompt_id"], sequence_index=rec["sequence_index"])
    else:
        rec["event_id"] = draw(st.sampled_from(["f" * 64, "F" * 64, rec["event_id"].upper()]))
    return rec


def _frame(record: dict) -> bytes:
    buf = io.BytesIO()
    buf.write(HEADER)
    fastavro.schemaless_writer(buf, SCHEMA, record)
    return buf.getvalue()


@_FUZZ
@given(records())
def test_a_record_that_breaks_a_rule_is_refused_by_both_or_left_to_the_pydantic_path(record):
    assert compare(TC, _frame(record)) in (Outcome.SAME, Outcome.REFUSED, Outcome.DEFERRED)


_VALID = [ENC.encode(e) for e in (
    PredictionEvent.create(job_id="j", epoch=1.5, step=300, sample_index=70, prompt="p" * 90, prediction="x" * 70,
                           sample_source="dataset", source_index=9000, model_name="m", prompt_tokens=5,
                           completion_tokens=200, generation_ms=1.25, attempt=1),
    PredictionEvent.create(job_id="j", epoch=0.0, step=0, sample_index=0, prompt=None,
                           messages=[{"role": "user", "content": "héllo"}] * 2, prediction="y", ground_truth="4",
                           sample_source="prediction_set", sample_source_id="ps_1",
                           generation={"max_new_tokens": 8, "do_sample": True, "temperature": 0.7, "seed": -3}),
)]


@_FUZZ
@given(st.one_of(
    mutated(_VALID, 4),
    st.binary(max_size=300),
    st.binary(max_size=300).map(lambda b: HEADER + b),
))
def test_mutated_and_random_bytes_are_refused_by_both_or_left_to_the_pydantic_path(data):
    compare(TC, data)


@pytest.mark.parametrize("field, value", [
    ("job_id", "a\x00b"), ("prediction", "\x00"), ("epoch", -1.0), ("epoch", math.inf), ("step", MAX_STEP + 1),
    ("sample_index", -1), ("attempt", -5), ("sample_source", "elsewhere"), ("job_id", ""), ("job_id", "j" * 257),
    ("model_name", "m" * 1025), ("source_index", 2**31), ("prompt_tokens", -1), ("generation_ms", -0.5),
])
def test_one_broken_rule_is_left_to_the_pydantic_path_which_names_it(field, value):
    rec = PredictionEvent.create(job_id="j", epoch=1.0, step=3, sample_index=1, prompt="p", prediction="x",
                                 sample_source="dataset").to_avro()
    rec[field] = value
    rec["event_id"] = event_id(job_id=rec["job_id"], step=rec["step"], sample_source=rec["sample_source"],
                               sample_source_id=rec["sample_source_id"], source_index=rec["source_index"],
                               sample_index=rec["sample_index"], prompt_id=rec["prompt_id"],
                               sequence_index=rec["sequence_index"])
    assert compare(TC, _frame(rec)) == Outcome.REFUSED


def test_what_it_is_unsure_about_is_left_to_the_pydantic_path():
    base = dict(job_id="j", step=3, sample_index=1, prediction="x", sample_source="dataset")
    unsure = [
        # the INTEGER epoch does not fit: the database decides
        PredictionEvent.create(**base, epoch=2.0**31, prompt="p"),
        PredictionEvent.create(**base, epoch=1.0, prompt="é" * 150_000),  # 300,000 bytes, 150,000 characters
    ]
    old = SingleObjectEncoder(2).encode_record({k: v for k, v in unsure[0].to_avro().items() if k != "attempt"})
    for data in [ENC.encode(e) for e in unsure] + [old, b"\x00\x00\x00\x00\x01" + ENC.encode(unsure[0])[10:]]:
        assert compare(TC, data) in (Outcome.DEFERRED, Outcome.REFUSED)
        assert TC.transcode(data) is None
    assert compare(TC, ENC.encode(unsure[1])) == Outcome.DEFERRED  # and the pydantic path accepts it


def test_registry_framed_events_are_transcoded_once_the_decoder_has_looked_their_schema_id_up():
    """Frames written by confluent-kafka's own AvroSerializer (``ConfluentEncoder``) through a
    real HTTP registry: the first of an id takes the pydantic path, which asks the registry;
    after that the transcoder writes the same rows as for single-object frames. An id of
    another schema (an older version, registered under the same subject) is never learned."""
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

    from predstream.schemas.codec import ConfluentEncoder, Decoder, confluent_frame, load_schema_text
    from support.registry_double import RegistryDouble

    events = [PredictionEvent.create(job_id="j-reg", epoch=1.0, step=s, sample_index=i, prompt=f"p{i}",
                                     prediction=f"x{s}", sample_source="dataset", source_index=i, attempt=1)
              for s in (1, 2) for i in range(3)]
    with RegistryDouble() as registry:
        encoder = ConfluentEncoder(registry.url, "predictions")
        frames = [encoder.encode(e) for e in events]
        old_id = SchemaRegistryClient({"url": registry.url}).register_schema(
            "predictions-value", Schema(load_schema_text(2), "AVRO"))
        old = confluent_frame(old_id, SingleObjectEncoder(2).encode_record(
            {k: v for k, v in events[0].to_avro().items() if k != "attempt"})[10:])
        tc, decoder = Transcoder(), Decoder(registry.url)
        assert {f[:1] for f in frames} == {b"\x00"} and tc.transcode(frames[0]) is None
        asked = dict(registry.requests)
        tc.learn(frames[0], decoder)  # not looked up yet: nothing learned, nothing asked
        assert tc.transcode(frames[0]) is None and dict(registry.requests) == asked
        assert decoder.decode(frames[0]) == events[0]
        tc.learn(frames[0], decoder)
        asked = dict(registry.requests)
        for i, (event, frame) in enumerate(zip(events, frames, strict=True)):
            row, same = tc.transcode(frame, "t", 2, i), TC.transcode(ENC.encode(event), "t", 2, i)
            assert row is not None and same is not None
            assert row.data == same.data and row.event_id == same.event_id and row.value == frame
            assert row.record().event == event  # the sink's slow path reads it without a registry
        assert dict(registry.requests) == asked  # the transcoder never asks the registry
        assert decoder.decode(old).job_id == "j-reg"  # another schema: decoded, and never learned
        tc.learn(old, decoder)
        assert tc.transcode(old) is None
        assert tc.transcode(b"\x00\x00\x00\x00\x63" + frames[1][5:]) is None  # an id not looked up


def test_a_message_without_a_value_is_left_to_the_pydantic_path():
    assert TC.transcode(None) is None and TC.transcode(b"") is None and TC.transcode(SINGLE_OBJECT_MAGIC) is None


# -- generated from the contract -------------------------------------------------------------


def test_the_contract_is_transcoded():
    # Off means every event takes the pydantic path: correct, and three times the CPU. The
    # generator refuses what it cannot check exactly, e.g. a changed model validator.
    from predstream.consumer._transcode_gen import CONTRACT_VALIDATOR_SHA, generate, validator_sha

    rule = PredictionEvent.__pydantic_core_schema__["function"]["function"]
    assert validator_sha(rule) == CONTRACT_VALIDATOR_SHA, (
        "PredictionEvent's validator changed: check that consumer/_transcode_gen.py still codes its rules, "
        f"then set CONTRACT_VALIDATOR_SHA = {validator_sha(rule)!r}")
    generate(SCHEMA, PredictionEvent, {c: COLUMN_TYPES[c] for c in DIRECT_COLUMNS})  # raises Unsupported if not
    assert TC.available


def test_the_transcoder_reads_every_field_of_the_model_in_the_wire_order_and_fills_every_column():
    generated = TC.generated
    assert generated is not None
    assert set(generated.fields) == set(PredictionEvent.model_fields)
    assert list(generated.fields) == [f["name"] for f in SCHEMA["fields"]]
    assert sorted(generated.columns) == sorted(DIRECT_COLUMNS) and generated.columns[-1] == "ingested_at"
    assert copy_columns() == generated.columns


def test_a_field_added_to_the_model_and_the_schema_is_read_and_checked_by_the_generated_code():
    import json

    from pydantic import Field

    from predstream.schemas.codec import load_schema_text

    text = json.loads(load_schema_text())
    text["fields"].append({"name": "reviewer_score", "type": "int", "default": 0})
    schema = fastavro.parse_schema(text)

    class Extended(PredictionEvent):
        reviewer_score: int = Field(default=0, ge=0, le=10)

    header = single_object_header(json.dumps(text))
    extended = Transcoder(Extended, schema, header=header)
    assert extended.available and "reviewer_score" in extended.generated.fields
    assert extended.generated.source != TC.generated.source and "<= 10: raise _Defer" in extended.generated.source
    assert extended.generated.columns == TC.generated.columns  # no column for it: read and checked only
    event = PredictionEvent.create(job_id="j", epoch=1.0, step=3, sample_index=1, prompt="p", prediction="x",
                                   sample_source="dataset")
    for score, accepted in ((7, True), (11, False)):
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, schema, {**event.to_avro(), "reviewer_score": score})
        assert (extended.transcode(header + buf.getvalue()) is not None) is accepted
    assert extended.transcode(ENC.encode(event)) is None  # a body of the schema without the field: not its own


def test_a_tighter_rule_in_the_model_changes_what_the_generated_code_accepts():
    from pydantic import Field

    class Strict(PredictionEvent):
        job_id: str = Field(min_length=1, max_length=3)

    strict = Transcoder(Strict)
    assert strict.available and "> 3: raise _Defer" in strict.generated.source
    short = ENC.encode(PredictionEvent.create(job_id="abc", epoch=1.0, step=3, sample_index=1, prompt="p",
                                              prediction="x", sample_source="dataset"))
    long = ENC.encode(PredictionEvent.create(job_id="abcd", epoch=1.0, step=3, sample_index=1, prompt="p",
                                             prediction="x", sample_source="dataset"))
    assert strict.transcode(short) is not None and strict.transcode(long) is None
    assert TC.transcode(long) is not None


def test_a_model_with_a_rule_the_generator_does_not_know_turns_the_transcoder_off(caplog):
    from pydantic import model_validator

    class Other(PredictionEvent):
        @model_validator(mode="after")
        def _contract(self):  # a new rule the transcoder could not check
            return self

    off = Transcoder(Other)
    assert not off.available and "the transcoder is off" in caplog.text
    assert off.transcode_many([]) == [] and off.transcode(_VALID[0]) is None


def test_the_column_types_it_writes_are_those_of_the_migrated_table(database_url):
    import psycopg

    with psycopg.connect(database_url) as conn:
        found = dict(conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = 'training_predictions'::regclass AND attnum > 0 AND NOT attisdropped").fetchall())
    assert {c: found[c] for c in COLUMN_TYPES} == COLUMN_TYPES


def test_a_short_atheris_run_of_the_transcoder_finds_nothing():
    """Coverage-guided fuzzing for a few seconds (longer runs: see tests/fuzz/fuzz_transcoder.py)."""
    short_fuzz_run("fuzz_transcoder.py", runs=100000)


@pytest.mark.parametrize("produced_at", [datetime(1969, 12, 7, tzinfo=UTC), datetime(1969, 12, 31, 23, 59, tzinfo=UTC),
                                         datetime(1900, 1, 1, tzinfo=UTC), datetime(2026, 12, 2, tzinfo=UTC)])
def test_a_timestamp_near_the_end_of_the_body_is_transcoded_whatever_its_length(produced_at):
    """produced_at is near the end of the body: a short varint (a time shortly before 1970)
    leaves fewer than 8 bytes to look at, which once made the transcoder defer valid events."""
    from support.events import make_event

    assert compare(TC, ENC.encode(make_event(produced_at=produced_at))) == Outcome.SAME
