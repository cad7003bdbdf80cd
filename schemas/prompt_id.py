"""The stable identity of a prompt: one definition, used by every side.

``prompt_id`` is the lowercase hex SHA-256 of a UTF-8 byte string built from exactly what a
prediction event carries: its chat ``messages`` (each reduced to ``role`` and ``content``)
and its plain ``prompt``::

    prompt_id = sha256(utf8(canonical(messages) + "|" + prompt)).hexdigest()

The sampler, ``PredictionEvent.create()``, prediction sets and the consumer's verification
all call :func:`compute_prompt_id` on the event's own fields, so they cannot disagree.

Byte-level definition, exact enough to reimplement in any language:

* ``canonical(messages)`` is the JSON text of the list of messages, each written as the
  object ``{"content": <content>, "role": <role>}`` (keys in this order, which is sorted
  order), with separators ``","`` and ``":"`` and no whitespace anywhere. Characters
  are written as themselves (UTF-8), except that ``"`` and ``\\`` are escaped as ``\\"``
  and ``\\\\``, ``\\b \\t \\n \\f \\r`` as those two-character escapes, and every other
  character below U+0020 as ``\\u00XX`` with lowercase hex. Nothing else is escaped
  (not ``/``, not U+007F, not U+2028/U+2029). This is Python's
  ``json.dumps(..., sort_keys=True, separators=(",", ":"), ensure_ascii=False)`` and
  JavaScript's ``JSON.stringify`` of ``[{content, role}, ...]``, byte for byte.
* **Only ``role`` and ``content`` are hashed.** Any other key of a message (``name``,
  ``tool_calls``, ...) is left out of the hashed form, because the event cannot carry it:
  two rows that differ only in such keys have the same ``prompt_id``.
* ``role`` and ``content`` must be strings, and ``prompt`` a string or missing; anything
  else (numbers, ``null``, nested objects) is refused with :class:`PromptIdError`. There
  is no rule for turning a non-string into text, so there is no hashed form for it.
* A missing side (``None``/``null``) contributes the empty string, but the ``"|"`` is
  always present: a row with only ``prompt="hi"`` hashes ``"|hi"``, a row with only
  messages hashes ``"<json>|"``. Both missing is refused.
* An empty list of messages is a list: it hashes as ``"[]"``, so ``([], "hi")`` hashes
  ``"[]|hi"``, which is not ``(None, "hi")``. (The sampler reads a row's empty messages as
  "no messages" and its events carry ``null``; an event that carries ``[]`` is hashed
  with ``[]``. Either way the id is the hash of what the event carries.)
* ``prompt`` and contents are taken verbatim: no stripping, no Unicode normalisation.
* Text must be valid Unicode: a lone surrogate (e.g. from the JSON escape ``"\\ud800"``)
  has no UTF-8 form and is refused with :class:`PromptIdError`.

For lists of ``{role, content}`` strings this is byte for byte what predstream 0.1 hashed,
so events already on a topic keep their ids. Test vectors, reproduced by a JavaScript
implementation in the test suite, live in ``schemas/prompt_id_vectors.json``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from json.encoder import encode_basestring
from typing import Any

__all__ = ["PromptIdError", "canonical_messages", "compute_prompt_id", "prompt_messages"]

_string = encode_basestring  # JSON string literal, non-ASCII as itself (json.dumps with ensure_ascii=False)
_MISSING = object()


class PromptIdError(ValueError):
    """A prompt that has no ``prompt_id``; ``reason`` is a short code for dead letters."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def prompt_messages(messages: Sequence[Any] | None) -> list[dict[str, str]] | None:
    """``messages`` reduced to what is hashed (and what an event carries): a list of
    ``{"content", "role"}`` string dicts, or ``None``. Messages may be mappings or objects
    with ``role``/``content`` attributes (``schemas.ChatMessage``).
    """
    if messages is None:
        return None
    return [{"content": content, "role": role} for role, content in _pairs(messages)]


def canonical_messages(messages: Sequence[Any] | None) -> str:
    """Return the canonical JSON text of ``messages`` ("" for ``None``); see the module doc."""
    if messages is None:
        return ""
    # Byte for byte json.dumps(..., sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    # of [{"content", "role"}, ...], whose string writer this is; about twice as fast.
    return "[" + ",".join('{"content":' + _string(c) + ',"role":' + _string(r) + "}" for r, c in _pairs(messages)) + "]"


def _pairs(messages: Sequence[Any]) -> list[tuple[str, str]]:
    if not isinstance(messages, Sequence) or isinstance(messages, (str, bytes, bytearray)):
        raise PromptIdError(
            f"messages must be a list of {{role, content}} objects, not {_kind(messages)}", "wrong-type:messages"
        )
    out = []
    for i, m in enumerate(messages):
        if isinstance(m, Mapping):
            role, content = m.get("role", _MISSING), m.get("content", _MISSING)
        else:
            role, content = getattr(m, "role", _MISSING), getattr(m, "content", _MISSING)
        if not isinstance(role, str) or not isinstance(content, str):
            raise PromptIdError(
                f"message {i} needs a string 'role' and a string 'content' "
                f"(got {_kind(role)} and {_kind(content)})",
                "wrong-type:messages",
            )
        out.append((role, content))
    return out


def compute_prompt_id(messages: Sequence[Any] | None = None, prompt: str | None = None) -> str:
    """Return the hex SHA-256 identity of a prompt given as chat ``messages`` and/or text.

    Raises :class:`PromptIdError` (a ``ValueError``) when both are missing, when a role,
    a content or the prompt is not a string, or when the text holds a lone surrogate.
    """
    if messages is None and prompt is None:
        raise PromptIdError("prompt_id needs messages or a prompt; both are missing", "missing-field:prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise PromptIdError(f"prompt must be a string, not {_kind(prompt)}", "wrong-type:prompt")
    text = canonical_messages(messages) + "|" + (prompt or "")
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _surrogate_error(exc, messages, prompt) from None
    return hashlib.sha256(data).hexdigest()


def _surrogate_error(exc: UnicodeEncodeError, messages: Any, prompt: str | None) -> PromptIdError:
    char = f"U+{ord(exc.object[exc.start]):04X}"
    field, where = "prompt", "the prompt"
    for i, m in enumerate(prompt_messages(messages) or ()):
        for key in ("role", "content"):
            if not _is_utf8(m[key]):
                field, where = "messages", f"message {i} {key}"
                break
        if field == "messages":
            break
    return PromptIdError(
        f"{where} holds a lone surrogate ({char}), which is not valid Unicode and has no UTF-8 form "
        "(a JSON escape such as \\ud800 without its pair?): fix or drop the text",
        f"invalid-utf8:{field}",
    )


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _kind(value: Any) -> str:
    if value is _MISSING:
        return "nothing"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"a {type(value).__name__}"
