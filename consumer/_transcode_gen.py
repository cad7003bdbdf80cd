"""Generate, from the contract, the code that turns Avro bodies into PostgreSQL binary COPY rows.

Inputs: the Avro reader schema (the wire), the pydantic model's *core schema* (the rules
pydantic-core enforces: ranges, lengths, literals, nullability, nested models), and the
table's columns with their types. Output: the Python source of one function,
``transcode_many(msgs)``, compiled with ``exec`` by :mod:`predstream.consumer.transcode`
(as :mod:`dataclasses` builds an ``__init__``, and as ``schemas/_fastread.py`` builds its
reader). For each message it reads the body field by field, checks every rule of the
model inline, recomputes both identities, and writes the row's COPY bytes; it never builds
a dict, a model instance or a row tuple of Python values.

It *defers* (yields ``None`` for that message, and the caller takes the pydantic path)
whenever a value is not plainly valid: a rule broken, a length in bytes above a limit in
characters, invalid UTF-8, a frame it does not know, an identity that does not match.
Deferring is always safe; accepting is allowed only when the pydantic path would accept
the same bytes and store the same values (``tests/test_transcode.py`` holds it to that).

Rules outside the core schema (the model's ``_contract`` validator: no NUL in any text, a
prompt or messages, UTC) are implemented here by name; :func:`generate` refuses a model
whose validator's source is not the one these rules were written from
(:data:`CONTRACT_VALIDATOR_SHA`), so a changed rule cannot be skipped silently.

Speed comes from three things besides straight-line code: runs of fields that repeat from
one event to the next (the job, the sample source and model, the generation settings) are
checked with one ``startswith`` against the previous event's bytes; the prompt's fields
(prompt, messages, ground truth) are validated and hashed once per distinct prompt,
remembered with their bytes under the event's ``sample_index`` (which names the prompt
within a run) and matched byte for byte; and fixed-size values are packed with one
``struct`` call per run of columns.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import struct
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Unsupported", "Generated", "generate", "CONTRACT_VALIDATOR_SHA", "validator_sha"]


class Unsupported(Exception):
    """The schemas use something the generator cannot turn into code (then nothing is transcoded)."""


#: :func:`validator_sha` of the model validator whose rules (no NUL in any text, a prompt or
#: messages, produced_at in UTC) are coded here.
CONTRACT_VALIDATOR_SHA = "4c6276aa265c508c"

_INT4 = (-(2**31), 2**31 - 1)
_INT8 = (-(2**63), 2**63 - 1)
_MAX_FLOAT = 1.7976931348623157e308
#: datetime's range, in microseconds since 1970 (year 1 to 9999)
_TS_RANGE = (-62_135_596_800_000_000, 253_402_300_799_999_999)
#: PostgreSQL's timestamp epoch (2000-01-01) in microseconds since 1970
PG_EPOCH_US = 946_684_800_000_000
_JSONB = "jsonb"
_TEXT = "text"
_TSTZ = "timestamp with time zone"

#: How the columns that are not a field of the same name are filled.
DERIVED: dict[str, tuple[str, ...]] = {
    "epoch": ("floor", "epoch"),  # the integer epoch the old readers use
    "epoch_exact": ("copy", "epoch"),
    "set_id": ("set_id", "sample_source", "sample_source_id"),  # the id when the source is a prediction set
    "created_at": ("copy", "produced_at"),
    "kafka_partition": ("coordinate", "partition"),
    "kafka_offset": ("coordinate", "offset"),
    "kafka_topic": ("coordinate", "topic"),
}
#: The fields hashed into ``event_id``, in order (``schemas.event.event_id``).
EVENT_ID_PARTS = ("job_id", "step", "sample_source", "sample_source_id", "source_index", "sample_index",
                  "prompt_id", "sequence_index")
#: Fields validated once per prompt: remembered (their bytes, COPY fields and prompt_id) under
#: the value of PROMPT_KEY, which comes before them, and matched byte for byte.
PROMPT_GROUP = ("prompt", "messages", "ground_truth")
#: A field read before the prompt's that, within a run, names the prompt (a guess, verified).
PROMPT_KEY = "sample_index"
#: Runs of fields that usually repeat from one event to the next.
REPEAT_GROUPS = (("job_id",), ("sample_source", "sample_source_id", "model_name", "generation"))


def validator_sha(fn: Callable[..., Any]) -> str:
    """A fingerprint of what a validator does: its body's code, without comments, layout or
    annotations (so that only a change of the code asks for a review of the rules)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.FunctionDef) else tree.body
    return hashlib.sha256("\n".join(ast.unparse(stmt) for stmt in body).encode()).hexdigest()[:16]


@dataclass
class Generated:
    source: str
    #: the COPY column order of the rows (the batch time, ``ingested_at``, last)
    columns: tuple[str, ...]
    #: the model's fields, in the order the code reads them
    fields: tuple[str, ...]
    #: the constants the source refers to (packers, literals)
    constants: dict[str, Any]
    #: bytes every body starts with, checked with the frame's header (``_HDR``)
    header_suffix: bytes = b""


@dataclass
class _Val:
    """Where the generated code keeps one field's value."""

    kind: str  # text | int | float | ts | json | bool
    var: str  # bytes (text, json: with the jsonb version byte), int, float or int microseconds
    nvar: str = ""  # text/json: the byte length (-1 when null)
    nullable: bool = False
    py: str = ""  # the decoded Python value, where the code needs one
    fmt: str = ""  # struct code of the fixed-size value
    hexid: bool = False  # 64 bytes that must equal a recomputed identity (then they are lowercase hex)


@dataclass
class _Piece:
    kind: str  # "s": a struct value, "b": bytes, "n": a struct value or NULL (when ``test`` is None)
    expr: str
    fmt: str = ""
    test: str = ""


@dataclass
class _Gen:
    columns: dict[str, str]
    lines: list[str] = field(default_factory=list)
    n: int = 0
    consts: dict[str, Any] = field(default_factory=dict)
    packers: dict[str, str] = field(default_factory=dict)

    def emit(self, ind: int, line: str) -> None:
        self.lines.append("    " * ind + line)

    def var(self, stem: str) -> str:
        self.n += 1
        return f"{stem}{self.n}"

    def packer(self, fmt: str) -> str:
        """The name of a ``struct.Struct(fmt).pack`` kept in the namespace."""
        name = self.packers.get(fmt)
        if name is None:
            name = self.packers[fmt] = f"_P{len(self.packers)}"
            self.consts[name] = struct.Struct(fmt).pack
        return name

    def const(self, value: Any) -> str:
        for name, v in self.consts.items():
            if not callable(v) and type(v) is type(value) and v == value:
                return name
        name = f"_C{len(self.consts)}"
        self.consts[name] = value
        return name

    # -- reading values ----------------------------------------------------------

    def varint(self, ind: int, t: str, lo: int, hi: int) -> None:
        """A zig-zag long into ``t``, deferring outside ``lo..hi``; one- and two-byte values of
        a range that excludes negatives are read inline."""
        self.emit(ind, f"{t} = buf[pos]; pos += 1")
        if lo < 0:
            self.emit(ind, f"if {t} & 0x80: {t}, pos = _zz(buf, pos, {t})")
            self.emit(ind, f"else: {t} = ({t} >> 1) ^ -({t} & 1)")
            if (lo, hi) != _INT8:
                self.emit(ind, f"if not {lo} <= {t} <= {hi}: raise _Defer")
            return
        check = f"if not {lo} <= {t} <= {hi}: raise _Defer"
        self.emit(ind, f"if {t} & 0x81:")  # two bytes or more, or negative
        self.emit(ind + 1, f"if {t} & 1: raise _Defer")  # a zig-zag value's sign is bit 0 of its first byte
        self.emit(ind + 1, "c = buf[pos]")
        self.emit(ind + 1, "if c & 0x80:")
        self.emit(ind + 2, f"{t}, pos = _zz(buf, pos, {t})")
        if hi < _INT8[1] or lo > 0:
            self.emit(ind + 2, check)
        self.emit(ind + 1, f"else: pos += 1; {t} = ({t} & 0x7F | c << 7) >> 1")
        if lo > 0 or hi < 8191:
            self.emit(ind + 1, check)
        self.emit(ind, f"else: {t} >>= 1")
        if lo > 0 or hi < 63:
            self.emit(ind, check)

    def value(self, avro: Any, core: dict[str, Any], ind: int, column: str | None, py: bool) -> _Val:
        """Read, check and (``py``) decode one value of Avro type ``avro`` under the rules ``core``."""
        avro = _plain(avro)
        kind = core["type"]
        if kind == "nullable":
            return self._nullable(avro, core["schema"], ind, column, py)
        if isinstance(avro, list):
            raise Unsupported(f"a union {avro} for a non-nullable value")
        if kind in ("str", "literal"):
            return self._string(avro, core, ind, column, py)
        if kind == "int":
            return self._int(avro, core, ind, column, py)
        if kind == "float":
            return self._float(avro, core, ind, column, py)
        if kind == "bool":
            _keys(core, {"type"})
            if avro != "boolean":
                raise Unsupported(f"bool from {avro}")
            v = self.var("b")
            self.emit(ind, f"{v} = buf[pos]; pos += 1")
            self.emit(ind, f"if {v} > 1: raise _Defer")
            self.emit(ind, f"{v} = {v} == 1")
            return _Val("bool", v, py=v)
        if kind == "datetime":
            return self._timestamp(avro, core, ind, column)
        if kind in ("model", "tuple", "list"):
            if column is not None and self.columns[column] != _JSONB:
                raise Unsupported(f"{column}: a nested value needs a jsonb column")
            obj = self._object(avro, core, ind)
            j, n = self.var("j"), self.var("n")
            self.emit(ind, f"{j} = b'\\x01' + _dumps({obj}).encode(); {n} = len({j})")
            return _Val("json", j, n, py=obj)
        raise Unsupported(f"core schema type {kind}")

    def _nullable(self, avro: Any, core: dict[str, Any], ind: int, column: str | None, py: bool) -> _Val:
        if not isinstance(avro, list) or len(avro) != 2 or "null" not in avro:
            raise Unsupported(f"nullable value from {avro}")
        null_index = avro.index("null")
        u = self.var("u")
        self.emit(ind, f"{u} = buf[pos]; pos += 1")
        self.emit(ind, f"if {u} == {2 * (1 - null_index)}:")  # the value's branch (zig-zag index)
        val = self.value(avro[1 - null_index], _unwrap_default(core), ind + 1, column, py)
        nulls = [f"{val.var} = None"]
        if val.kind in ("text", "json"):  # a COPY NULL is the length -1 and no bytes
            nulls = [f"{val.var} = b''", f"{val.nvar} = -1"]
        if val.py and val.py != val.var:
            nulls.append(f"{val.py} = None")
        self.emit(ind, f"elif {u}: raise _Defer")
        self.emit(ind, "else: " + "; ".join(nulls))
        return _Val(val.kind, val.var, val.nvar, nullable=True, py=val.py, fmt=val.fmt)

    def _string(self, avro: Any, core: dict[str, Any], ind: int, column: str | None, py: bool) -> _Val:
        if avro != "string":
            raise Unsupported(f"text from {avro}")
        if column is not None and self.columns[column] != _TEXT:
            raise Unsupported(f"{column}: text into a {self.columns[column]} column")
        n, s = self.var("n"), self.var("s")
        if core["type"] != "literal":
            _keys(core, {"type", "min_length", "max_length", "pattern"})
        if core.get("pattern") == "^[0-9a-f]{64}$":  # 64 bytes, whose length is the varint 80 01
            if set(core) - {"type", "pattern", "metadata"}:
                raise Unsupported(f"an identity with other rules: {core}")
            self.emit(ind, "if buf[pos] != 0x80 or buf[pos + 1] != 1: raise _Defer")
            self.emit(ind, f"{s} = buf[pos + 2:pos + 66]; pos += 66")
            return _Val("text", s, "64", hexid=True)
        self.varint(ind, n, 0, _INT8[1])
        self.emit(ind, f"{s} = buf[pos:pos + {n}]; pos += {n}")
        checked_nul, length = False, n
        if core["type"] == "literal":
            _keys(core, {"type", "expected"})
            values = core["expected"]
            if not all(isinstance(x, str) and "\x00" not in x for x in values):
                raise Unsupported(f"literal {values}")
            self.emit(ind, f"if {s} not in {self.const(frozenset(x.encode() for x in values))}: raise _Defer")
            checked_nul = True
        else:
            if core.get("pattern") is not None:
                raise Unsupported(f"string pattern {core['pattern']}")
            if core.get("max_length") is not None:  # characters <= bytes
                self.emit(ind, f"if {n} > {int(core['max_length'])}: raise _Defer")
            if core.get("min_length"):  # bytes >= characters: defer when unsure
                self.emit(ind, f"if {n} < {int(core['min_length'])}: raise _Defer")
        if not checked_nul:  # the contract's rule: no NUL in any text (Postgres cannot store it)
            self.emit(ind, f"if 0 in {s}: raise _Defer")
        text = ""
        if py:
            text = self.var("t")
            self.emit(ind, f"{text} = {s}.decode()")
        elif not checked_nul:
            self.emit(ind, f"if not {s}.isascii(): {s}.decode()")  # UTF-8, or UnicodeDecodeError
        return _Val("text", s, length, py=text)

    def _int(self, avro: Any, core: dict[str, Any], ind: int, column: str | None, py: bool) -> _Val:
        _keys(core, {"type", "ge", "le"})
        if avro not in ("int", "long"):
            raise Unsupported(f"int from {avro}")
        lo, hi = int(core.get("ge", _INT8[0])), int(core.get("le", _INT8[1]))
        fmt = "q"
        if column is not None:
            ctype = self.columns[column]
            if ctype == "integer":
                lo, hi, fmt = max(lo, _INT4[0]), min(hi, _INT4[1]), "i"
            elif ctype != "bigint":
                raise Unsupported(f"{column}: int into a {ctype} column")
        v = self.var("i")
        self.varint(ind, v, max(lo, _INT8[0]), min(hi, _INT8[1]))
        return _Val("int", v, py=v, fmt=fmt)

    def _float(self, avro: Any, core: dict[str, Any], ind: int, column: str | None, py: bool) -> _Val:
        _keys(core, {"type", "ge", "le", "allow_inf_nan"})
        if core.get("allow_inf_nan", True):
            raise Unsupported("a float that may be infinite or NaN")
        if column is not None and self.columns[column] != "double precision":
            raise Unsupported(f"{column}: float into a {self.columns[column]} column")
        size, unpack = {"double": (8, "_DOUBLE"), "float": (4, "_FLOAT")}.get(avro, (0, ""))
        if not size:
            raise Unsupported(f"float from {avro}")
        v = self.var("d")
        lo, hi = float(core.get("ge", -_MAX_FLOAT)), float(core.get("le", _MAX_FLOAT))
        self.emit(ind, f"{v} = {unpack}(buf, pos)[0]; pos += {size}")
        self.emit(ind, f"if not {lo!r} <= {v} <= {hi!r}: raise _Defer")  # NaN fails it too
        return _Val("float", v, py=v, fmt="d")

    def _timestamp(self, avro: Any, core: dict[str, Any], ind: int, column: str | None) -> _Val:
        _keys(core, {"type", "tz_constraint", "microseconds_precision"})
        if avro != {"type": "long", "logicalType": "timestamp-micros"} or core.get("tz_constraint") != "aware":
            raise Unsupported(f"datetime from {avro}")
        if column is not None and self.columns[column] != _TSTZ:
            raise Unsupported(f"{column}: a timestamp into a {self.columns[column]} column")
        v = self.var("ts")
        # today's timestamps are 8-byte varints: their 7-bit groups gathered in one expression
        # (a shorter one may end the body: then fewer than 8 bytes are left to look at)
        self.emit(ind, f"{v} = _le64(buf, pos)[0] if size - pos >= 8 else 0")
        self.emit(ind, f"if {v} & 0x8080808080808080 == 0x0080808080808080:")
        # the eight 7-bit groups, 8 bits apart, closed up in three steps (pairs, fours, all)
        self.emit(ind + 1, f"pos += 8; {v} = ({v} & 0x007f007f007f007f) | (({v} & 0x7f007f007f007f00) >> 1)")
        self.emit(ind + 1, f"{v} = ({v} & 0x00003fff00003fff) | (({v} & 0x3fff00003fff0000) >> 2)")
        self.emit(ind + 1, f"{v} = ({v} & 0x000000000fffffff) | (({v} & 0x0fffffff00000000) >> 4)")
        self.emit(ind + 1, f"{v} = ({v} >> 1) ^ -({v} & 1)")
        self.emit(ind, f"else: {v} = buf[pos]; pos += 1; {v}, pos = _zz(buf, pos, {v})")
        self.emit(ind, f"if not {_TS_RANGE[0]} <= {v} <= {_TS_RANGE[1]}: raise _Defer")
        return _Val("ts", v, py=v, fmt="q")

    def _object(self, avro: Any, core: dict[str, Any], ind: int) -> str:
        """A nested record (a dict) or an array of records (a list), as Python values."""
        kind = core["type"]
        if kind == "model":
            if not isinstance(avro, dict) or avro.get("type") != "record":
                raise Unsupported(f"a model from {avro}")
            fields_core = _model_fields(core)
            if [f["name"] for f in avro["fields"]] != list(fields_core):
                raise Unsupported(f"record {avro.get('name')} and model {core.get('cls')} differ in fields")
            got = []
            for f in avro["fields"]:
                val = self.value(f["type"], _unwrap_default(fields_core[f["name"]]["schema"]), ind, None, True)
                got.append((f["name"], val.py or val.var))
            d = self.var("o")
            self.emit(ind, f"{d} = {{" + ", ".join(f"{k!r}: {v}" for k, v in got) + "}")
            return d
        _keys(core, {"type", "items_schema", "item_schema", "max_length", "min_length", "variadic_item_index"})
        items = core.get("item_schema") or (core.get("items_schema") or [None])[0]
        if kind == "tuple" and core.get("variadic_item_index") != 0 or items is None:
            raise Unsupported("a fixed-length tuple")
        if not isinstance(avro, dict) or avro.get("type") != "array":
            raise Unsupported(f"a list from {avro}")
        lst, count = self.var("a"), self.var("c")
        self.emit(ind, f"{lst} = []")
        self.emit(ind, "while True:")
        self.emit(ind + 1, f"{count} = buf[pos]; pos += 1")
        self.emit(ind + 1, f"if {count} & 0x80: {count}, pos = _zz(buf, pos, {count})")
        self.emit(ind + 1, f"else: {count} = ({count} >> 1) ^ -({count} & 1)")
        self.emit(ind + 1, f"if {count} == 0: break")
        self.emit(ind + 1, f"if {count} < 0:")  # a block that states its size in bytes
        self.emit(ind + 2, f"{count} = -{count}; c = buf[pos]; pos += 1")
        self.emit(ind + 2, "if c & 0x80: c, pos = _zz(buf, pos, c)")
        self.emit(ind + 1, f"if {count} > size - pos: raise _Defer")
        self.emit(ind + 1, f"for _ in range({count}):")
        item = self._object(avro["items"], items, ind + 2)
        self.emit(ind + 2, f"{lst}.append({item})")
        if core.get("max_length") is not None:
            self.emit(ind, f"if len({lst}) > {int(core['max_length'])}: raise _Defer")
        if core.get("min_length"):
            self.emit(ind, f"if len({lst}) < {int(core['min_length'])}: raise _Defer")
        return lst

    # -- skipping values (to find where a run of fields ends) ------------------------

    def skip(self, avro: Any, ind: int) -> None:
        avro = _plain(avro)
        if isinstance(avro, list):
            u = self.var("u")
            self.emit(ind, f"{u} = buf[pos]; pos += 1")
            for i, branch in enumerate(avro):
                self.emit(ind, f"{'if' if i == 0 else 'elif'} {u} == {2 * i}:")
                mark = len(self.lines)
                self.skip(branch, ind + 1)
                if len(self.lines) == mark:
                    self.emit(ind + 1, "pass")
            self.emit(ind, "else: raise _Defer")
        elif avro in ("string", "bytes"):
            n = self.var("n")
            self.varint(ind, n, 0, _INT8[1])
            self.emit(ind, f"pos += {n}")
        elif avro in ("int", "long") or avro == {"type": "long", "logicalType": "timestamp-micros"}:
            b = self.var("b")
            self.emit(ind, f"{b} = buf[pos]; pos += 1")
            self.emit(ind, f"if {b} & 0x80: {b}, pos = _zz(buf, pos, {b})")
        elif avro in ("double", "float", "boolean", "null"):
            if avro != "null":
                self.emit(ind, f"pos += {dict(double=8, float=4, boolean=1)[avro]}")
        elif isinstance(avro, dict) and avro.get("type") == "record":
            for f in avro["fields"]:
                self.skip(f["type"], ind)
        elif isinstance(avro, dict) and avro.get("type") == "array":
            count = self.var("c")
            self.emit(ind, "while True:")
            self.emit(ind + 1, f"{count} = buf[pos]; pos += 1")
            self.emit(ind + 1, f"if {count} & 0x80: {count}, pos = _zz(buf, pos, {count})")
            self.emit(ind + 1, f"else: {count} = ({count} >> 1) ^ -({count} & 1)")
            self.emit(ind + 1, f"if {count} == 0: break")
            self.emit(ind + 1, f"if {count} < 0:")
            self.emit(ind + 2, f"{count} = -{count}; c = buf[pos]; pos += 1")
            self.emit(ind + 2, "if c & 0x80: c, pos = _zz(buf, pos, c)")
            self.emit(ind + 1, f"if {count} > size - pos: raise _Defer")
            self.emit(ind + 1, f"for _ in range({count}):")
            mark = len(self.lines)
            self.skip(avro["items"], ind + 2)
            if len(self.lines) == mark:
                self.emit(ind + 2, "pass")
        else:
            raise Unsupported(f"cannot skip {avro}")

    # -- writing -----------------------------------------------------------------


def _plain(avro: Any) -> Any:
    """``{"type": "string"}`` as ``"string"``; a logical type kept as ``{"type", "logicalType"}``."""
    if isinstance(avro, dict):
        kind = avro.get("type")
        if isinstance(kind, str) and kind not in ("record", "array", "map", "enum", "fixed"):
            logical = avro.get("logicalType")
            return {"type": kind, "logicalType": logical} if logical else kind
    return avro


def _keys(core: dict[str, Any], allowed: set[str]) -> None:
    extra = set(core) - allowed - {"metadata", "ref", "serialization"}
    if extra:
        raise Unsupported(f"core schema {core['type']} with {sorted(extra)}")


def _unwrap_default(core: dict[str, Any]) -> dict[str, Any]:
    return core["schema"] if core["type"] == "default" else core


def _model_fields(core: dict[str, Any]) -> dict[str, Any]:
    """The fields of a ``model`` core schema (with no validator of its own)."""
    inner = core["schema"]
    if inner["type"] != "model-fields" or inner.get("computed_fields"):
        raise Unsupported(f"model {core.get('cls')} with validators or computed fields")
    if core.get("config", {}).get("extra_fields_behavior") != "forbid":
        raise Unsupported(f"model {core.get('cls')} allows extra fields")
    return dict(inner["fields"])


def generate(avro: dict[str, Any], model: type, columns: dict[str, str]) -> Generated:
    """Generate the transcoder of ``avro`` bodies into rows of ``columns`` (name -> type),
    under the rules of ``model`` (a pydantic model; see the module docstring).

    Raises :class:`Unsupported` for anything it cannot check exactly.
    """
    from ._transcode_emit import emit_function

    core = model.__pydantic_core_schema__  # type: ignore[attr-defined]
    if core["type"] == "function-after":
        fn = core["function"]["function"]
        if validator_sha(fn) != CONTRACT_VALIDATOR_SHA:
            raise Unsupported(
                f"{model.__name__}'s validator {fn.__qualname__} is not the one whose rules the transcoder "
                "implements: teach consumer/_transcode_gen.py the new rules, then update CONTRACT_VALIDATOR_SHA"
            )
        core = core["schema"]
    if core["type"] != "model":
        raise Unsupported(f"{model.__name__} has validators the transcoder does not know")
    if not isinstance(avro, dict) or avro.get("type") != "record":
        raise Unsupported("the Avro schema is not a record")
    return emit_function(_Gen(dict(columns)), avro, _model_fields(core))
