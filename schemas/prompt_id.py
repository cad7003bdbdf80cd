"""The stable identity of a prompt.

``prompt_id`` is the lowercase hex SHA-256 of a UTF-8 byte string built from the chat
``messages`` and the plain ``prompt`` of a dataset row::

    prompt_id = sha256(utf8(canonical(messages) + "|" + prompt)).hexdigest()

Byte-level definition, exact enough to reimplement in any language:

* ``canonical(messages)`` is the JSON text of the messages list with object keys sorted
  (by Unicode code point), separators ``","`` and ``":"`` (no whitespace anywhere),
  non-ASCII characters written as themselves (``ensure_ascii=False``, encoded as UTF-8),
  and Python's ``json`` escaping otherwise (``\\"``, ``\\\\``, ``\\n``, ``\\u0000``-style
  escapes for the other control characters). Numbers are written as Python's ``json``
  writes them; ``NaN`` and infinities are rejected.
* A missing side (``None``) contributes the empty string, but the ``"|"`` separator is
  always present. So a row with only ``prompt="hi"`` hashes ``"|hi"``, a row with only
  messages hashes ``"<json>|"``, and an empty list of messages hashes ``"[]|..."``
  (an empty list is not the same as no messages).
* ``prompt`` is taken verbatim: no stripping, no Unicode normalisation.

Test vectors live in ``schemas/prompt_id_vectors.json``; the test suite checks them.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping, Sequence

__all__ = ["canonical_messages", "prompt_id"]


def canonical_messages(messages: Sequence[Mapping[str, Any]] | None) -> str:
    """Return the canonical JSON text of ``messages`` ("" for ``None``)."""
    if messages is None:
        return ""
    return json.dumps(
        list(messages),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )


def prompt_id(
    messages: Sequence[Mapping[str, Any]] | None = None, prompt: str | None = None
) -> str:
    """Return the hex SHA-256 identity of a prompt given as chat ``messages`` and/or text."""
    if messages is None and prompt is None:
        raise ValueError("prompt_id needs messages or a prompt; both are missing")
    text = canonical_messages(messages) + "|" + (prompt if prompt is not None else "")
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
