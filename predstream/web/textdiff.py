"""What changed from one prediction to the next: a word-level diff, as segments to render.

The segments are plain text with an operation; the template escapes the text (model output
is untrusted) and wraps it in ``<del>``/``<ins>``. Very long texts are compared on their
first :data:`MAX_TOKENS` tokens, then the rest is one replaced segment, so one huge
prediction cannot stall a page.
"""

from __future__ import annotations

import difflib
import re
from typing import Literal

__all__ = ["Segment", "word_diff", "MAX_TOKENS"]

MAX_TOKENS = 2000
_TOKEN = re.compile(r"\s+|\w+|[^\w\s]", re.UNICODE)

Op = Literal["same", "del", "ins"]
Segment = tuple[Op, str]


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def word_diff(before: str, after: str) -> list[Segment]:
    """Segments turning ``before`` into ``after``: ("same"|"del"|"ins", text), in order."""
    a, b = _tokens(before), _tokens(after)
    tail: list[Segment] = []
    if len(a) > MAX_TOKENS or len(b) > MAX_TOKENS:
        rest_a, rest_b = "".join(a[MAX_TOKENS:]), "".join(b[MAX_TOKENS:])
        a, b = a[:MAX_TOKENS], b[:MAX_TOKENS]
        if rest_a != rest_b:
            tail = [s for s in (("del", rest_a), ("ins", rest_b)) if s[1]]
        elif rest_a:
            tail = [("same", rest_a)]
    out: list[Segment] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            out.append(("same", "".join(a[i1:i2])))
            continue
        if i2 > i1:
            out.append(("del", "".join(a[i1:i2])))
        if j2 > j1:
            out.append(("ins", "".join(b[j1:j2])))
    return out + tail
