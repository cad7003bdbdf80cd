"""Secrets out of what people read: database URLs and the errors that quote them.

One function, :func:`redact_url`, used by every side (the consumer's errors and logs, the
training side's prediction-set loader, the CLI's one-line errors). Only the password is
hidden, so a typo in the rest of a URL stays readable. (Kafka client configs are redacted
by :func:`predstream.schemas.transport.redact`.)
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["redact_url"]

# user:password@ up to the last "@" of the authority (an unencoded "@" in a password);
# password=value in a conninfo or URL query, quoted values included.
_PASSWORD = re.compile(r"(://[^:/@\s]+:)[^/\s]*(@)|(password\s*=\s*)('(?:[^'\\]|\\.)*'?|\S+)", re.IGNORECASE)
# libpq quotes pieces of a malformed URL or conninfo in its errors: they may hold the password.
_LIBPQ_ECHO = re.compile(
    r'(invalid percent-encoded token: |missing "=" after |invalid URI query parameter: |'
    r'invalid connection option |unterminated quoted string in connection info string)("[^"]*")?'
)
# user:password@ without a scheme's "//" (e.g. a mistyped "postgres:/user:pw@host")
_USERINFO = re.compile(r'(^|[/"])([^:/@\s"]+):[^@\s"]*@')


def _passwords(url: str) -> list[str]:
    """The password(s) written in ``url`` (URL userinfo or conninfo ``password=``), raw and decoded."""
    from urllib.parse import unquote

    found = []
    for m in re.finditer(r"password\s*=\s*('(?:[^'\\]|\\.)*'?|\S+)", url, re.IGNORECASE):
        value = m.group(1)
        found.append(value.strip("'").replace("\\'", "'") if value.startswith("'") else value)
    if "@" in url:
        left = url.rsplit("@", 1)[0]
        left = left.split("://", 1)[1] if "://" in left else left.rsplit("/", 1)[-1]
        if ":" in left:
            found.append(left.split(":", 1)[1])
    return [p for raw in found for p in {raw, unquote(raw)} if p]


def redact_url(text: str, urls: str | Iterable[str | None] | None = None) -> str:
    """``text`` (a database URL, conninfo or error message) with passwords replaced by ``***``.

    Hides the password of every URL (``user:password@``) and conninfo (``password=...``) in
    the text, and in what libpq quotes from a malformed one. ``urls``: the URL(s) the text
    may be about, when known; then a quoted piece loses only those URLs' passwords, so the
    user's own typo stays readable (``missing "=" after "not-a-url"``). Unknown, a quoted
    piece is shown unless it looks like ``user:password@`` or is a percent-encoding error
    (which may be in the password).
    """
    text = _PASSWORD.sub(lambda m: (m.group(1) + "***" + m.group(2)) if m.group(1) else m.group(3) + "***", text)
    given = [urls] if isinstance(urls, str) else [u for u in (urls or ()) if u]
    secrets = sorted({p for u in given for p in _passwords(u)}, key=len, reverse=True) if given else None

    def _echo(m: re.Match[str]) -> str:
        if m.group(2) is None:
            return m.group(0)
        inner = m.group(2)[1:-1]
        if secrets is not None:
            for secret in secrets:
                inner = inner.replace(secret, "***")
        elif m.group(1).startswith("invalid percent-encoded token"):
            inner = "***"
        else:
            inner = _USERINFO.sub(lambda u: f"{u.group(1)}{u.group(2)}:***@", inner)
        return f'{m.group(1)}"{inner}"'

    return _LIBPQ_ECHO.sub(_echo, text)
