"""Test helpers written from the specs, not from our code: the Avro spec's Parsing Canonical
Form and CRC-64-AVRO, a spec-following single-object writer and reader (the official ``avro``
package for the bodies), and frames built the way predstream 0.1 built them.
"""

from __future__ import annotations

import hashlib
import io
import json
from datetime import UTC, datetime
from functools import lru_cache
from importlib import resources
from typing import Any

import fastavro

# -- the Avro spec: Parsing Canonical Form and CRC-64-AVRO ----------------------------

_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


def spec_canonical_form(schema: Any) -> str:
    """The spec's transformation (PRIMITIVES, FULLNAMES, STRIP, ORDER, STRINGS, INTEGERS,
    WHITESPACE): attributes other than name/type/fields/symbols/items/values/size go,
    logical types included."""
    return json.dumps(_pcf(schema, ""), separators=(",", ":"), ensure_ascii=False)


def _fullname(name: str, namespace: str) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _pcf(s: Any, ns: str) -> Any:
    if isinstance(s, str):
        return s if s in _PRIMITIVES else _fullname(s, ns)
    if isinstance(s, list):
        return [_pcf(branch, ns) for branch in s]
    kind = s["type"]
    if isinstance(kind, (dict, list)) or (kind in _PRIMITIVES):
        return _pcf(kind, ns)
    if kind in ("record", "enum", "fixed"):
        full = _fullname(s["name"], s.get("namespace", ns))
        inner = full.rpartition(".")[0]
        out: dict[str, Any] = {"name": full, "type": kind}
        if kind == "record":
            out["fields"] = [{"name": f["name"], "type": _pcf(f["type"], inner)} for f in s["fields"]]
        elif kind == "enum":
            out["symbols"] = list(s["symbols"])
        else:
            out["size"] = int(s["size"])
        return out
    if kind == "array":
        return {"type": "array", "items": _pcf(s["items"], ns)}
    if kind == "map":
        return {"type": "map", "values": _pcf(s["values"], ns)}
    return _fullname(kind, ns)  # {"type": "SomeNamedType"}


_EMPTY = 0xC15D213AA4D7A795


@lru_cache(maxsize=1)
def _table() -> list[int]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_EMPTY & -(fp & 1))
        table.append(fp)
    return table


def crc64_avro(data: bytes) -> int:
    """The spec's 64-bit Rabin fingerprint (its reference code, transcribed)."""
    table, fp = _table(), _EMPTY
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


def spec_header(schema_json: str) -> bytes:
    """The single-object header the spec defines: C3 01 + the fingerprint, little-endian."""
    canonical = spec_canonical_form(json.loads(schema_json))
    return b"\xc3\x01" + crc64_avro(canonical.encode("utf-8")).to_bytes(8, "little")


def avsc_text(version: int) -> str:
    return resources.files("predstream.schemas").joinpath(f"avro/prediction_event.v{version}.avsc").read_text()


def shipped_versions() -> list[int]:
    names = [p.name for p in resources.files("predstream.schemas").joinpath("avro").iterdir()]
    return sorted(int(n.split(".v")[1].split(".")[0]) for n in names if n.startswith("prediction_event.v"))


# -- a spec-following producer and reader (the official avro package for bodies) -------


def avro_package_frame(record: dict[str, Any], version: int) -> bytes:
    """A frame as a spec-following producer writes it: spec header + body by ``avro``."""
    import avro.io
    import avro.schema

    text = avsc_text(version)
    buf = io.BytesIO()
    avro.io.DatumWriter(avro.schema.parse(text)).write(record, avro.io.BinaryEncoder(buf))
    return spec_header(text) + buf.getvalue()


def avro_package_read(frame: bytes) -> dict[str, Any]:
    """Read a frame as a spec-following consumer does: find the writer schema by the header's
    fingerprint among the shipped .avsc files, decode the body after byte 10 with ``avro``."""
    import avro.io
    import avro.schema

    by_header = {spec_header(avsc_text(v)): v for v in shipped_versions()}
    version = by_header[bytes(frame[:10])]  # KeyError: not a spec-correct header of ours
    schema = avro.schema.parse(avsc_text(version))
    return avro.io.DatumReader(schema, schema).read(avro.io.BinaryDecoder(io.BytesIO(frame[10:])))


# -- how predstream 0.1 built frames (its code, restated) ------------------------------


def prompt_id_0_1(messages: list[dict[str, str]] | None, prompt: str | None) -> str:
    canonical = "" if messages is None else json.dumps(
        messages, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256((canonical + "|" + (prompt or "")).encode("utf-8")).hexdigest()


def event_id_0_1(r: dict[str, Any]) -> str:
    parts = (r["job_id"], str(r["step"]), r["sample_source"], r["sample_source_id"] or "",
             "" if r["source_index"] is None else str(r["source_index"]), str(r["sample_index"]),
             r["prompt_id"], str(r["sequence_index"]))
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


def record_0_1(**fields: Any) -> dict[str, Any]:
    """A v2 record with the identities 0.1's producer computed."""
    r: dict[str, Any] = dict(
        job_id="job-0.1", epoch=0.5, step=10, sample_index=0, sequence_index=0, prompt=None, messages=None,
        ground_truth=None, prediction="p", source_index=0, sample_source="dataset", sample_source_id=None,
        model_name=None, generation=None, prompt_tokens=None, completion_tokens=None, generation_ms=None,
        produced_at=datetime(2026, 10, 1, tzinfo=UTC),
    )
    r.update(fields)
    r.setdefault("prompt_id", prompt_id_0_1(r["messages"], r["prompt"]))
    r.setdefault("event_id", event_id_0_1(r))
    return r


def frame_0_1(record: dict[str, Any]) -> bytes:
    """A frame as predstream 0.1 wrote it: schema v2, the fingerprint's bytes reversed."""
    text = avsc_text(2)
    fp_hex = fastavro.schema.fingerprint(fastavro.schema.to_parsing_canonical_form(json.loads(text)), "CRC-64-AVRO")
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(json.loads(text)), record)
    return b"\xc3\x01" + int(fp_hex, 16).to_bytes(8, "little") + buf.getvalue()
