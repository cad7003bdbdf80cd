"""How the transcoder's generated code assembles a row's COPY fields from the values it read:
each field's length and bytes (:func:`pieces_of`), and one expression for a run of them
(:func:`render`), fixed-size values packed with one ``struct`` call per run. Part of
:mod:`predstream.consumer._transcode_gen`."""

from __future__ import annotations

import struct

from ._transcode_gen import PG_EPOCH_US, _Gen, _Piece, _Val

__all__ = ["pieces_of", "render"]


def _out(val: _Val) -> str:
    if val.kind == "ts":
        return f"{val.var} - {PG_EPOCH_US}"
    return val.var


def _is_literal(expr: str) -> bool:
    return expr.lstrip("-").isdigit()


def pieces_of(val: _Val, ctype: str) -> list[_Piece]:
    """The COPY field of a value: its length, then its bytes."""
    if val.kind in ("text", "json"):
        return [_Piece("s", val.nvar, "i"), _Piece("b", val.var)]
    if val.nullable:
        return [_Piece("n", _out(val), val.fmt, val.var)]
    size = struct.calcsize(">" + val.fmt)
    return [_Piece("s", str(size), "i"), _Piece("s", _out(val), val.fmt)]


def render(gen: _Gen, pieces: list[_Piece], ind: int, *, joined: bool = True) -> str:
    """An expression joining ``pieces`` (``joined=False``: a tuple of them, for the caller
    to join): each run of fixed-size values packed in one call.

    A run with nullable values (``n``) is packed whole when none is null (statements at
    ``ind`` before the expression), else value by value."""
    parts: list[str] = []
    run: list[_Piece] = []

    def pack(items: list[_Piece]) -> str:
        fmt = ">" + "".join(p.fmt for p in items)
        if all(_is_literal(p.expr) for p in items):
            return gen.const(struct.pack(fmt, *(int(p.expr) for p in items)))
        return f"{gen.packer(fmt)}({', '.join(p.expr for p in items)})"

    def flush() -> None:
        if not run:
            return
        nullable = [p for p in run if p.kind == "n"]
        if not nullable:
            parts.append(pack(run))
            run.clear()
            return
        var = gen.var("k")
        whole = [q for p in run for q in ([_Piece("s", str(struct.calcsize(">" + p.fmt)), "i"), p]
                                          if p.kind == "n" else [p])]
        gen.emit(ind, "if " + " and ".join(f"{p.test} is not None" for p in nullable) + f": {var} = {pack(whole)}")
        alone, items = [], []
        for p in run + [_Piece("b", "")]:
            if p.kind == "s":
                alone.append(p)
                continue
            if alone:
                items.append(pack(alone))
                alone = []
            if p.kind == "n":
                size = struct.calcsize(">" + p.fmt)
                null = gen.const(b"\xff\xff\xff\xff")
                items.append(f"({null} if {p.test} is None else {gen.packer('>i' + p.fmt)}({size}, {p.expr}))")
        gen.emit(ind, f"else: {var} = b''.join(({', '.join(items)},))")
        parts.append(var)
        run.clear()

    for p in pieces:
        if p.kind in ("s", "n"):
            run.append(p)
        else:
            flush()
            parts.append(p.expr)
    flush()
    if not joined:
        return "(" + ", ".join(parts) + ",)"
    if len(parts) == 1:
        return parts[0]
    return "b''.join((" + ", ".join(parts) + ",))"
