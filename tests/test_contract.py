"""The event contract: prompt_id, validation, both framings, schema evolution."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from importlib import resources

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from predstream.schemas import (
    SCHEMA_VERSIONS,
    ConfluentEncoder,
    Decoder,
    FramingError,
    GenerationSettings,
    InvalidEventError,
    MalformedBodyError,
    PredictionEvent,
    SingleObjectEncoder,
    UnknownSchemaError,
    compute_prompt_id,
    load_schema,
)
from predstream.schemas.codec import (
    SINGLE_OBJECT_MAGIC,
    load_schema_text,
    parse_frame,
    schema_fingerprint,
    single_object_frame,
)
from support import T0, make_event

_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=200)


# -- prompt_id ---------------------------------------------------------------------


def test_prompt_id_matches_every_shipped_vector():
    doc = json.loads(resources.files("predstream.schemas").joinpath("prompt_id_vectors.json").read_text())
    assert len(doc["vectors"]) >= 10
    for v in doc["vectors"]:
        assert compute_prompt_id(v["messages"], v["prompt"]) == v["prompt_id"], v["name"]
        import hashlib

        assert hashlib.sha256(bytes.fromhex(v["hashed_text_utf8_hex"])).hexdigest() == v["prompt_id"], v["name"]


def test_prompt_id_ignores_key_order_but_not_content():
    a = compute_prompt_id([{"role": "user", "content": "hi"}], None)
    b = compute_prompt_id([{"content": "hi", "role": "user"}], None)
    assert a == b
    assert a != compute_prompt_id([{"role": "user", "content": "hi "}], None)
    assert compute_prompt_id(None, "x") != compute_prompt_id([], "x")  # no messages is not an empty list


def test_prompt_id_needs_a_prompt():
    with pytest.raises(ValueError):
        compute_prompt_id(None, None)


# -- validation --------------------------------------------------------------------


@pytest.mark.parametrize(
    "over, reason",
    [
        ({"prediction": "a\x00b"}, "nul-character:prediction"),
        ({"step": -1}, "out-of-range:step"),
        ({"epoch": float("nan")}, "out-of-range:epoch"),
        ({"prediction": "x" * 200_001}, "too-large:prediction"),
        ({"job_id": ""}, "invalid:job_id"),
        ({"step": 2**40}, "out-of-range:step"),
        ({"prompt": None}, "missing-field:prompt"),
        ({"prompt": None, "messages": [1, 2]}, "wrong-type:messages"),
        ({"sample_source": "elsewhere"}, "invalid:sample_source"),
    ],
)
def test_invalid_events_are_refused_with_a_reason(over, reason):
    with pytest.raises(InvalidEventError) as info:
        # epoch and time fixed: a bad step must not make them bad too (make_event derives them from step)
        make_event(**{"epoch": 1.5, "produced_at": T0, **over})
    assert info.value.reason == reason
    assert str(info.value)  # a message for people


def test_event_id_is_deterministic_and_ignores_prediction_and_time():
    a = make_event(prediction="1", produced_at=datetime(2026, 1, 1, tzinfo=UTC))
    b = make_event(prediction="2")
    assert a.event_id == b.event_id
    assert a.event_id != make_event(step=31).event_id
    assert a.event_id != make_event(sequence_index=1).event_id


# -- codec ---------------------------------------------------------------------------

_events = st.builds(
    lambda job, step, prompt, pred, gt, msgs, src, ms: PredictionEvent.create(
        job_id=job or "j", epoch=step / 10, step=step, sample_index=step % 50, prompt=prompt,
        messages=msgs, ground_truth=gt, prediction=pred, sample_source="dataset", source_index=src,
        generation=GenerationSettings(max_new_tokens=16, do_sample=True, temperature=0.7, top_p=0.9),
        prompt_tokens=5, completion_tokens=3, generation_ms=ms,
        produced_at=datetime(2026, 11, 1, tzinfo=UTC) + timedelta(microseconds=step),
    ),
    _text.filter(lambda s: 0 < len(s) <= 256),
    st.integers(0, 2**31 - 1),
    st.one_of(st.none(), _text),
    _text,
    st.one_of(st.none(), _text),
    st.one_of(st.none(),
              st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "system"]), "content": _text}),
                       max_size=4)),
    st.one_of(st.none(), st.integers(0, 2**31 - 1)),
    st.floats(0, 1e6, allow_nan=False),
).filter(lambda e: True)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(st.data())
def test_single_object_round_trip_is_lossless(data):
    try:
        event = data.draw(_events)
    except InvalidEventError:  # neither prompt nor messages drawn
        return
    frame = SingleObjectEncoder().encode(event)
    assert parse_frame(frame).framing == "single-object"
    assert Decoder().decode(frame) == event


def test_confluent_framing_round_trips_through_a_registry():
    enc = ConfluentEncoder("mock://contract", "training.predictions")
    event = make_event()
    frame = enc.encode(event)
    assert frame[0] == 0 and enc.schema_ref.startswith("id:")
    assert Decoder(client=enc.client).decode(frame) == event


def test_one_decoder_reads_both_framings():
    enc = ConfluentEncoder("mock://both", "training.predictions")
    dec = Decoder(client=enc.client)
    a, b = make_event(step=1), make_event(step=2)
    assert dec.decode(enc.encode(a)) == a
    assert dec.decode(SingleObjectEncoder().encode(b)) == b


def test_confluent_frame_without_a_registry_is_an_unknown_schema():
    frame = ConfluentEncoder("mock://noreg", "t").encode(make_event())
    with pytest.raises(UnknownSchemaError, match="PREDSTREAM_SCHEMA_REGISTRY_URL"):
        Decoder().decode(frame)


@pytest.mark.parametrize(
    "frame, error",
    [
        (b"", FramingError),
        (b"\x7fhello", FramingError),
        (SINGLE_OBJECT_MAGIC + b"\x00", FramingError),
        (single_object_frame(b"\x11" * 8, b"body"), UnknownSchemaError),
        (single_object_frame(schema_fingerprint(load_schema_text(2)), b"\xff\xff\xff"), MalformedBodyError),
    ],
)
def test_unreadable_frames_raise_decode_errors(frame, error):
    with pytest.raises(error):
        Decoder().decode(frame)


def test_trailing_bytes_are_malformed():
    frame = SingleObjectEncoder().encode(make_event()) + b"extra"
    with pytest.raises(MalformedBodyError, match="trailing"):
        Decoder().decode(frame)


# -- schema evolution ------------------------------------------------------------------


def _v1_record() -> dict:
    e = make_event(2, step=30, prompt="12+34=", ground_truth="46", prediction="46")
    r = e.to_avro()
    return {k: r[k] for k in (f["name"] for f in json.loads(load_schema_text(1))["fields"])}


def test_event_written_by_a_v1_producer_decodes_with_the_current_reader():
    frame = SingleObjectEncoder(version=1).encode_record(_v1_record())
    event = Decoder().decode(frame)
    assert event.sequence_index == 0 and event.generation is None and event.messages is None
    assert event.prompt == "12+34=" and event.step == 30


def test_v2_event_is_readable_by_a_v1_reader():
    """Forward compatibility: consumers not yet upgraded can still read new events."""
    event = make_event(generation=GenerationSettings(max_new_tokens=8), messages=[{"role": "user", "content": "hi"}])
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, load_schema(2), event.to_avro())
    buf.seek(0)
    old = fastavro.schemaless_reader(buf, load_schema(2), load_schema(1))
    assert old["event_id"] == event.event_id and old["prediction"] == event.prediction


def test_event_written_by_a_v2_producer_decodes_with_the_v3_reader_as_attempt_0():
    event = make_event(messages=[{"role": "user", "content": "hi"}], prompt=None)
    frame = SingleObjectEncoder(version=2).encode(event.model_copy(update={"attempt": 5}))
    got = Decoder().decode(frame)
    assert got.attempt == 0 and got == event


def test_v3_event_is_readable_by_a_v2_reader_which_ignores_the_attempt():
    event = make_event(attempt=3)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, load_schema(3), event.to_avro())
    buf.seek(0)
    old = fastavro.schemaless_reader(buf, load_schema(3), load_schema(2))
    assert "attempt" not in old and old == {k: v for k, v in event.to_avro().items() if k != "attempt"}


def test_attempt_is_not_part_of_the_event_identity_and_is_never_negative():
    assert make_event(attempt=4).event_id == make_event().event_id
    assert Decoder().decode(SingleObjectEncoder().encode(make_event(attempt=4))).attempt == 4
    with pytest.raises(InvalidEventError) as info:
        make_event(attempt=-1)
    assert info.value.reason == "out-of-range:attempt"


def test_every_field_of_every_schema_is_documented():
    for version in SCHEMA_VERSIONS:
        doc = json.loads(load_schema_text(version))
        assert doc.get("doc")
        for f in doc["fields"]:
            assert f.get("doc"), f"v{version} field {f['name']} has no doc"


@pytest.mark.parametrize("version", SCHEMA_VERSIONS[1:])
def test_fields_added_by_each_version_all_have_defaults(version):
    before = {f["name"] for f in json.loads(load_schema_text(version - 1))["fields"]}
    added = [f for f in json.loads(load_schema_text(version))["fields"] if f["name"] not in before]
    assert added and all("default" in f for f in added), [f["name"] for f in added]
