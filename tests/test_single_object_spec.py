"""Our single-object frames against what we did not write: the Avro spec's vectors, Apache
Avro's own test data (tests/data/apache_avro), the official ``avro`` package, a spec-following
reader and writer written here from the spec, and frames as predstream 0.1 wrote them."""

from __future__ import annotations

import io
import json
import re
import struct
from datetime import UTC, datetime
from pathlib import Path

import fastavro
import pytest
from fastavro.schema import to_parsing_canonical_form

from predstream.producer.spool_drain import frame_headers
from predstream.schemas import GenerationSettings
from predstream.schemas.codec import SCHEMA_VERSIONS, Decoder, SingleObjectEncoder, parse_frame, single_object_header
from predstream.schemas.errors import UnknownSchemaError
from predstream.schemas.transport import Headers
from support import make_event, wait_for
from support.consumer_kit import count_rows, produce, rows_reach, worker_thread
from support.contract_kit import (
    avro_package_frame,
    avro_package_read,
    avsc_text,
    crc64_avro,
    frame_0_1,
    record_0_1,
    shipped_versions,
    spec_canonical_form,
    spec_header,
)

DATA = Path(__file__).parent / "data" / "apache_avro"
ROOT = Path(__file__).resolve().parent.parent


def _apache_schema_tests() -> list[tuple[str, str, int | None]]:
    """(input, canonical, fingerprint or None) of Apache Avro's share/test/data/schema-tests.txt."""
    cases, current, lines, multi = [], {}, [], False
    for line in (DATA / "schema-tests.txt").read_text().splitlines():
        if multi:
            if line == "INPUT":
                current["input"], multi = "\n".join(lines), False
            else:
                lines.append(line)
        elif line.startswith("// ") and line[3:].isdigit():
            if current:
                cases.append(current)
            current = {}
        elif line == "<<INPUT":
            lines, multi = [], True
        elif line.startswith("<<INPUT "):
            current["input"] = line[len("<<INPUT "):]
        elif line.startswith("<<canonical "):
            current["canonical"] = line[len("<<canonical "):]
        elif line.startswith("<<fingerprint "):
            current["fingerprint"] = int(line[len("<<fingerprint "):])
    cases.append(current)
    return [(c["input"], c["canonical"], c.get("fingerprint")) for c in cases]


APACHE_CASES = _apache_schema_tests()


def test_the_schema_int_gets_the_specs_header():
    assert single_object_header('"int"') == bytes.fromhex("c3018f5c393f1ad57572")
    assert spec_header('"int"') == bytes.fromhex("c3018f5c393f1ad57572")  # the independent one agrees


def test_apache_avros_schema_tests_are_all_read():
    assert len(APACHE_CASES) == 34 and sum(c[2] is not None for c in APACHE_CASES) == 26


@pytest.mark.parametrize("schema, canonical, fp", [c for c in APACHE_CASES if c[2] is not None],
                         ids=lambda v: v if isinstance(v, str) and len(v) < 30 else None)
def test_our_header_carries_apache_avros_fingerprint_little_endian(schema, canonical, fp):
    header = single_object_header(schema)
    assert header[2:] == struct.pack("<q", fp)
    assert spec_header(schema) == header  # and so does the spec-following helper


@pytest.mark.parametrize("schema, canonical, fp", APACHE_CASES,
                         ids=lambda v: v if isinstance(v, str) and len(v) < 30 else None)
def test_the_independent_canonical_form_reproduces_apache_avros(schema, canonical, fp):
    assert spec_canonical_form(json.loads(schema)) == canonical
    if fp is not None:
        assert crc64_avro(canonical.encode()) == fp & 0xFFFF_FFFF_FFFF_FFFF


def test_a_message_written_by_javas_binary_message_encoder_is_framed_as_we_frame():
    schema_text = (DATA / "messageV1_test_schema.avsc").read_text()
    message = (DATA / "messageV1_test_message.bin").read_bytes()
    frame = parse_frame(message)
    assert (frame.framing, frame.body_start) == ("single-object", 10)
    assert message[:10] == single_object_header(schema_text)
    assert frame.schema_ref == "fp:" + single_object_header(schema_text)[2:].hex()
    body = fastavro.schemaless_reader(io.BytesIO(message[10:]), fastavro.parse_schema(json.loads(schema_text)))
    assert body == {"id": 42, "name": "Bill", "tags": ["dog_lover", "cat_hater"]}


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_every_schema_version_is_framed_with_the_crc64_of_its_spec_canonical_form(version):
    text = avsc_text(version)
    assert SingleObjectEncoder(version).encode_record(make_event(1).to_avro())[:10] == spec_header(text)
    # the canonical form the spec defines (logical types stripped) is the one fastavro hashes
    assert spec_canonical_form(json.loads(text)) == to_parsing_canonical_form(json.loads(text))
    assert SingleObjectEncoder(version).schema_ref == "fp:" + spec_header(text)[2:].hex()


def test_every_shipped_schema_is_a_known_version():
    assert shipped_versions() == list(SCHEMA_VERSIONS)


def _rich_event(**over):
    return make_event(
        3, messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "héllo \u2603"}],
        generation=GenerationSettings(max_new_tokens=8, do_sample=True, temperature=0.7, top_k=5, seed=-3),
        model_name="m", prompt_tokens=4, completion_tokens=2, generation_ms=1.5, **over)


def test_a_spec_following_reader_with_the_avro_package_reads_our_frames():
    event = _rich_event()
    record = avro_package_read(SingleObjectEncoder().encode(event))
    assert record == event.to_avro()


def test_our_decoder_reads_frames_a_spec_following_producer_wrote_with_the_avro_package():
    event = _rich_event()
    frame = avro_package_frame(event.to_avro(), SCHEMA_VERSIONS[-1])
    assert Decoder().decode(frame) == event
    old = avro_package_frame({k: v for k, v in event.to_avro().items() if k != "attempt"}, 2)
    assert Decoder().decode(old) == event


def test_frames_as_0_1_wrote_them_still_decode_and_name_the_bytes_they_carry():
    record = record_0_1(prompt="2+2=", prediction="4", ground_truth="4")
    frame = frame_0_1(record)
    spec_fp = spec_header(avsc_text(2))[2:]
    assert frame[2:10] == spec_fp[::-1]  # what 0.1 wrote: reversed
    event = Decoder().decode(frame)
    assert (event.event_id, event.prompt_id, event.prediction) == (record["event_id"], record["prompt_id"], "4")
    assert parse_frame(frame).schema_ref == "fp:" + spec_fp[::-1].hex()


def test_the_reversed_order_is_read_only_for_the_versions_0_1_wrote():
    frame = SingleObjectEncoder().encode(make_event(1))
    reversed_v3 = frame[:2] + frame[2:10][::-1] + frame[10:]
    with pytest.raises(UnknownSchemaError, match="fingerprint"):
        Decoder().decode(reversed_v3)


def test_a_respooled_frame_is_sent_with_the_schema_header_of_the_bytes_it_carries():
    new = SingleObjectEncoder().encode(make_event(1))
    old = frame_0_1(record_0_1(prompt="x"))
    for frame in (new, old):
        _key, headers = frame_headers(frame, Decoder())
        assert dict(headers)[Headers.SCHEMA] == ("fp:" + frame[2:10].hex()).encode()


def test_frame_bytes_are_parsed_in_one_place():
    """No module but schemas/codec.py spells the single-object magic; tests build and read
    frames with the codec's functions too. The exception: tests/support/contract_kit.py, the
    writer made from the spec and not from our code (its frames check ours)."""
    own = {"schemas/codec.py", "tests/support/contract_kit.py", "tests/test_single_object_spec.py"}  # and this test
    found = []
    for package in ("schemas", "producer", "consumer", "predstream", "bench", "tests"):
        for path in (ROOT / package).rglob("*.py"):
            where = str(path.relative_to(ROOT))
            if where not in own and re.search(r"\\xc3\\x01|0xc301|\\xC3\\x01", path.read_text(), re.I):
                found.append(where)
    assert found == []


@pytest.mark.integration
def test_spec_frames_and_0_1_frames_on_the_topic_both_become_rows(consumer_settings):
    """Raw bytes on the topic, as another producer and as 0.1 wrote them -> rows."""
    spec_event = _rich_event(job="spec-producer")
    old = record_0_1(job_id="job-0.1", prompt="1+1=", prediction="2", ground_truth="2",
                     produced_at=datetime(2026, 10, 1, tzinfo=UTC))
    produce(consumer_settings.kafka_bootstrap, consumer_settings.topic, [
        (spec_event.prompt_id.encode(), avro_package_frame(spec_event.to_avro(), SCHEMA_VERSIONS[-1]), None),
        (old["prompt_id"].encode(), frame_0_1(old), None),
    ])
    with worker_thread(consumer_settings):
        wait_for(rows_reach(consumer_settings.database_url, 2), 60, "both rows")
    assert count_rows(consumer_settings.database_url,
                      f"event_id = '{spec_event.event_id}' AND job_id = 'spec-producer'") == 1
    assert count_rows(consumer_settings.database_url, f"event_id = '{old['event_id']}' AND prediction = '2'") == 1
