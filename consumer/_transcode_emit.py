"""The transcoder's function as a whole: the loop over messages, the frame check, the
fields in the wire's order (grouped as :mod:`._transcode_gen` says), the identity check and
the row. See :mod:`predstream.consumer._transcode_gen` for the rules."""

from __future__ import annotations

from typing import Any

from ._transcode_gen import (
    DERIVED,
    EVENT_ID_PARTS,
    PROMPT_GROUP,
    PROMPT_KEY,
    REPEAT_GROUPS,
    Generated,
    Unsupported,
    _Gen,
    _Piece,
    _unwrap_default,
    _Val,
)
from ._transcode_row import pieces_of, render

__all__ = ["emit_function"]

#: the per-row fields of :class:`predstream.consumer.transcode.CopyRow` besides the data
_RECENCY = ("attempt", "produced_at")
_COORDINATES = ("topic", "partition", "offset")


def emit_function(gen: _Gen, avro: dict[str, Any], fields_core: dict[str, Any]) -> Generated:
    order = [f["name"] for f in avro["fields"]]
    if set(order) != set(fields_core):
        raise Unsupported(f"the Avro record and the model differ in fields: {sorted(set(order) ^ set(fields_core))}")
    needed = {"event_id", "prompt_id", "prompt", "messages", *EVENT_ID_PARTS, *_RECENCY}
    if not needed <= set(order):
        raise Unsupported(f"the contract lacks {sorted(needed - set(order))}")
    avro_type = {f["name"]: f["type"] for f in avro["fields"]}
    columns = [c for c in gen.columns if c != "ingested_at"]
    if list(gen.columns)[-1:] != ["ingested_at"]:
        raise Unsupported("the columns must end with ingested_at (the batch's time)")
    for c in columns:
        if c not in fields_core and c not in DERIVED:
            raise Unsupported(f"no field fills column {c}")
        if c in DERIVED and DERIVED[c][0] != "coordinate" and not set(DERIVED[c][1:]) <= set(order):
            raise Unsupported(f"column {c} is derived from fields the contract lacks")
    # outside its group, a field's value is kept when the identity, recency or a column needs it
    keep = {*EVENT_ID_PARTS, *_RECENCY, *(d for c in columns if c in DERIVED for d in DERIVED[c][1:])}

    vals: dict[str, _Val] = {}
    out_columns: list[str] = []
    row: list[_Piece] = [_Piece("s", str(len(gen.columns)), "h")]

    def column_pieces(name: str, ind: int) -> tuple[list[str], list[_Piece]]:
        """The columns filled once ``name`` is read (its own, then those derived from it)."""
        names, pieces = [], []
        if name in columns and name not in DERIVED:
            names.append(name)
            pieces += pieces_of(vals[name], gen.columns[name])
        for c in columns:
            rule = DERIVED.get(c)
            if rule is None or rule[0] == "coordinate" or max(order.index(d) for d in rule[1:]) != order.index(name):
                continue
            names.append(c)
            pieces += _derived(gen, c, rule, vals, ind)
        return names, pieces

    def read(name: str, ind: int, py: bool) -> None:
        column = name if name in columns and name not in DERIVED else None
        vals[name] = gen.value(avro_type[name], _unwrap_default(fields_core[name]["schema"]), ind, column, py)

    groups = _groups(order)
    header_suffix = b""
    prompt_group = groups.pop(PROMPT_GROUP, None)
    body = 4
    gen.emit(body, "buf = msg.value()")
    gen.emit(body, "size = len(buf)")
    gen.emit(body, "if size > _MAX: raise _Defer")
    gen.emit(body, "if buf.startswith(_HDR): pos = _START")
    # a Confluent frame whose registry id is known to name this schema (Transcoder.learn)
    gen.emit(body, "elif buf[:5] in _IDS and buf.startswith(_SUFFIX, 5): pos = 5")
    gen.emit(body, "else: raise _Defer")
    entries: list[tuple[list[str], list[_Piece]]] = []  # (columns, their pieces), in reading order
    mark = (0, 0)

    def close_entry() -> None:
        nonlocal mark
        entries.append((out_columns[mark[0]:], row[mark[1]:]))
        mark = (len(out_columns), len(row))

    i = 0
    while i < len(order):
        close_entry()
        name = order[i]
        group = groups.get(name)
        if prompt_group is not None and name == PROMPT_GROUP[0]:
            # the prompt of the event that had this key last time? (its bytes decide)
            gen.emit(body, f"m = pmemo.get({vals[PROMPT_KEY].var})")
            gen.emit(body, "if m is not None and buf.startswith(m[0], pos):")
            gen.emit(body + 1, "pos += len(m[0]); pchunk = m[1]; ppid = m[2]")
            gen.emit(body, "else:")
            gen.emit(body + 1, "pchunk = None; gs = pos")
            for f in PROMPT_GROUP:
                gen.skip(avro_type[f], body + 1)
            gen.emit(body + 1, "ge = pos")
            i += len(PROMPT_GROUP)
            continue
        if group is not None:
            _repeat_group(gen, group, body, read, column_pieces, vals, keep, out_columns, row, len(groups))
            groups[name] = group  # (kept for the index)
            i += len(group)
            continue
        read(name, body, False)
        if i == 0 and vals[name].hexid:  # its length (80 01) is checked with the frame's header
            del gen.lines[-2]  # (the line before the slice)
            header_suffix = b"\x80\x01"
        names, pieces = column_pieces(name, body)
        out_columns += names
        row += pieces
        if name == "prompt_id" and prompt_group is not None:
            _prompt_memo(gen, body, avro_type, read, column_pieces, vals, out_columns, row)
        i += 1
    close_entry()
    gen.emit(body, "if pos != size: raise _Defer")
    unverified = {name for name, v in vals.items() if v.hexid} - {"event_id", "prompt_id"}
    if unverified:
        raise Unsupported(f"{sorted(unverified)}: a sha256 pattern that no identity check verifies")
    _identity(gen, body, vals)
    # the Kafka coordinates, then the batch's time (added by the sink)
    gen.emit(body, "topic = msg.topic(); partition = msg.partition(); offset = msg.offset()")
    for c in columns:
        rule = DERIVED.get(c)
        if rule is None or rule[0] != "coordinate":
            continue
        if rule[1] == "topic":
            gen.emit(body, "tchunk = topics.get(topic)")
            gen.emit(body, "if tchunk is None: tchunk = topics[topic] = _topic_chunk(topic)")
            entries.append(([c], [_Piece("b", "tchunk")]))
        else:
            entries.append(([c], [_Piece("s", "4" if rule[1] == "partition" else "8", "i"),
                                  _Piece("s", rule[1], "i" if rule[1] == "partition" else "q")]))
    entries = _column_order(entries)
    out_columns = [c for names, _ in entries for c in names]
    row = [p for _, pieces in entries for p in pieces]
    out_columns.append("ingested_at")
    if sorted(out_columns) != sorted(gen.columns):
        raise Unsupported(f"columns left unfilled: {sorted(set(gen.columns) - set(out_columns))}")
    attempt, produced = vals["attempt"].var, vals["produced_at"].var
    parts = render(gen, row, body, joined=False)  # the sink joins a batch's rows once
    gen.emit(body, f"append(_new(_Row, ({parts}, {vals['event_id'].var}, {attempt}, {produced}, "
                   "buf, topic, partition, offset)))")
    source = "\n".join([
        "def transcode_many(msgs):",
        "    out = []",
        "    append = out.append",
        "    topics = _TOPICS",
        "    pmemo = _PMEMO",
        *[f"    r{k} = _LAST[{k}]" for k in range(len(REPEAT_GROUPS))],
        "    try:",
        "        for msg in msgs:",
        "            try:",
        *gen.lines,
        "            except _ERRORS:",
        "                append(None)",
        "    finally:",
        *[f"        _LAST[{k}] = r{k}" for k in range(len(REPEAT_GROUPS))],
        "    return out",
    ])
    return Generated(source, tuple(out_columns), tuple(order), dict(gen.consts), header_suffix)


def _column_order(entries: list[tuple[list[str], list[_Piece]]]) -> list[tuple[list[str], list[_Piece]]]:
    """The COPY column order (free to choose): every fixed-size column in one run, just before
    the last text read whose length is not a constant, so that one ``struct`` call packs the
    run and that length; the row's field count first."""
    header, first = entries[0][1][0], (entries[0][0], entries[0][1][1:])
    entries = [first, *entries[1:]]
    fixed = [e for e in entries if e[1] and all(p.kind in ("s", "n") for p in e[1])]
    texts = [e for e in entries if len(e[1]) == 2 and e[1][0].kind == "s" and not _literal(e[1][0].expr)
             and e[1][1].kind == "b"]
    last = texts[-1:]
    rest = [e for e in entries if e not in fixed and e not in last]
    ordered = [([], [header]), *rest, *fixed]
    if last:
        names, (length, data) = last[0]
        ordered += [(names, [length]), ([], [data])]
    return ordered


def _literal(expr: str) -> bool:
    return expr.lstrip("-").isdigit()


def _groups(order: list[str]) -> dict[Any, tuple[str, ...]]:
    """The groups that are consecutive in ``order``, by their first field (the prompt group by itself)."""
    found: dict[Any, tuple[str, ...]] = {}
    for group in (PROMPT_GROUP, *REPEAT_GROUPS):
        if not set(group) <= set(order):
            continue
        start = order.index(group[0])
        if tuple(order[start:start + len(group)]) != group:
            continue
        if group == PROMPT_GROUP:
            # checked once prompt_id is read; remembered under a field read before it
            if order.index("prompt_id") >= start + len(group) and PROMPT_KEY in order[:start]:
                found[PROMPT_GROUP] = group
        else:
            found[group[0]] = group
    if PROMPT_GROUP not in found:
        raise Unsupported(f"{', '.join(PROMPT_GROUP)} must come, in this order, after {PROMPT_KEY} "
                          "and before prompt_id")
    return found


def _repeat_group(gen: _Gen, group: tuple[str, ...], ind: int, read: Any, column_pieces: Any,
                  vals: dict[str, _Val], keep: set[str], out_columns: list[str], row: list[_Piece],
                  _n: int) -> None:
    """A run of fields that usually repeats: one ``startswith`` against the previous event's
    bytes; else read and check them, and remember the bytes, the COPY fields and the values."""
    k = REPEAT_GROUPS.index(group)
    chunk = gen.var("g")
    gen.emit(ind, f"if buf.startswith(r{k}[0], pos):")
    hit = len(gen.lines)
    gen.emit(ind, "else:")
    gen.emit(ind + 1, "gs = pos")
    pieces: list[_Piece] = []
    for name in group:
        read(name, ind + 1, False)
        names, got = column_pieces(name, ind + 1)
        out_columns += names
        pieces += got
    kept = [vals[f].var for f in group if f in keep]
    gen.emit(ind + 1, f"{chunk} = {render(gen, pieces, ind + 1)}")
    gen.emit(ind + 1, f"r{k} = (buf[gs:pos], {chunk}" + "".join(f", {v}" for v in kept) + ")")
    restore = [f"pos += len(r{k}[0])", f"{chunk} = r{k}[1]", *(f"{v} = r{k}[{j + 2}]" for j, v in enumerate(kept))]
    gen.lines.insert(hit, "    " * (ind + 1) + "; ".join(restore))
    row.append(_Piece("b", chunk))


def _prompt_memo(gen: _Gen, ind: int, avro_type: dict[str, Any], read: Any, column_pieces: Any,
                 vals: dict[str, _Val], out_columns: list[str], row: list[_Piece]) -> None:
    """Right after ``prompt_id``: the prompt's fields checked and hashed, unless remembered."""
    pid = vals["prompt_id"].var
    gen.emit(ind, "if pchunk is None:")
    gen.emit(ind + 1, "keep = pos; pos = gs")
    pieces: list[_Piece] = []
    for name in PROMPT_GROUP:
        read(name, ind + 1, name in ("prompt", "messages"))
        names, got = column_pieces(name, ind + 1)
        out_columns += names
        pieces += got
    prompt, messages = vals["prompt"], vals["messages"]
    gen.emit(ind + 1, "if pos != ge: raise _Defer")
    gen.emit(ind + 1, f"if {prompt.py} is None and {messages.py} is None: raise _Defer")  # the contract's rule
    gen.emit(ind + 1, f"ppid = _prompt_id({messages.py}, {prompt.py}).encode()")
    gen.emit(ind + 1, f"pchunk = {render(gen, pieces, ind + 1)}")
    gen.emit(ind + 1, "if ge - gs <= _MEMO_BYTES:")
    gen.emit(ind + 2, "if len(pmemo) >= _MEMO_ENTRIES: pmemo.clear()")
    gen.emit(ind + 2, f"pmemo[{vals[PROMPT_KEY].var}] = (buf[gs:ge], pchunk, ppid)")
    gen.emit(ind + 1, "pos = keep")
    gen.emit(ind, f"if {pid} != ppid: raise _Defer")  # prompt_id is the hash of the event's own prompt
    row.append(_Piece("b", "pchunk"))


def _derived(gen: _Gen, column: str, rule: tuple[str, ...], vals: dict[str, _Val], ind: int) -> list[_Piece]:
    kind, source = rule[0], vals[rule[1]]
    ctype = gen.columns[column]
    if kind == "copy":
        return pieces_of(source, ctype)
    if kind == "floor":  # the integer part of a float checked >= 0 and finite
        if source.kind != "float" or source.nullable or ctype != "integer":
            raise Unsupported(f"{column}: floor of {rule[1]}")
        v = gen.var("i")
        gen.emit(ind, f"if {source.var} >= 2147483648.0: raise _Defer")  # the INTEGER column's range
        gen.emit(ind, f"{v} = int({source.var})")
        return [_Piece("s", "4", "i"), _Piece("s", v, "i")]
    if kind == "set_id":  # the prediction set's id: sample_source_id when the source is a prediction set
        src, set_id = vals[rule[1]], vals[rule[2]]
        if src.kind != "text" or set_id.kind != "text" or ctype != "text":
            raise Unsupported(f"{column}: set_id from {rule[1:]}")
        n, s = gen.var("n"), gen.var("s")
        gen.emit(ind, f"if {src.var} == b'prediction_set': {n} = {set_id.nvar}; {s} = {set_id.var}")
        gen.emit(ind, f"else: {n} = -1; {s} = b''")
        return [_Piece("s", n, "i"), _Piece("b", s)]
    raise Unsupported(f"{column}: rule {kind}")


def _identity(gen: _Gen, ind: int, vals: dict[str, _Val]) -> None:
    """``event_id`` recomputed from the event's own fields (``schemas.event.event_id``)."""
    fmt, args = [], []
    for name in EVENT_ID_PARTS:
        val = vals[name]
        if val.kind == "text":  # bytes; a null text is b'' here, as event_id() writes None as ""
            fmt.append("%b")
            args.append(val.var)
        elif val.kind == "int" and val.nullable:
            fmt.append("%b")
            args.append(f"(b'' if {val.var} is None else b'%d' % {val.var})")
        elif val.kind == "int":
            fmt.append("%d")
            args.append(val.var)
        else:
            raise Unsupported(f"event_id part {name} of kind {val.kind}")
    template = "\\x1f".join(fmt)
    gen.emit(ind, f"if _hex(_sha256(b'{template}' % ({', '.join(args)},)).digest()) != "
                  f"{vals['event_id'].var}: raise _Defer")
