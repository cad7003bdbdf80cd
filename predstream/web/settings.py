"""Settings of ``predstream serve``, read from ``PREDSTREAM_*`` and validated at start-up.

Where the server listens
------------------------
It binds to loopback (``127.0.0.1``) unless told otherwise. A host that is not a loopback
address (``0.0.0.0``, a LAN address, a name) makes the pages and the API reachable from
other machines, so it is refused unless ``PREDSTREAM_WEB_PUBLIC=true`` (``--public``) says
that this is meant. The pages have no login: put a reverse proxy with authentication in
front of a public server.

Which database role
-------------------
``database_url`` should name the read-only role of ``docs/reader_role.sql``
(``predstream_reader``): the server only ever runs ``SELECT`` (and opens every transaction
read-only besides). When neither ``--database-url`` nor ``PREDSTREAM_DATABASE_URL`` is set,
the CLI falls back to the running local stack's database, as every other command does.
"""

from __future__ import annotations

import ipaddress

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import SettingsConfigDict

from predstream.schemas.errors import ConfigError
from predstream.schemas.settings import StreamSettings, check_database_url

__all__ = ["ServeSettings", "is_loopback"]


def is_loopback(host: str) -> bool:
    """Whether ``host`` only ever reaches this machine (``127.0.0.0/8``, ``::1``, ``localhost``)."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ServeSettings(StreamSettings):
    """Everything ``predstream serve`` needs.

    It extends :class:`~predstream.schemas.StreamSettings` (broker, topic, registry) because
    the API's one write endpoint publishes events through the same publisher as training;
    the read side needs only ``database_url``.
    """

    # a validation error must not echo the database URL (its password) or the token back
    model_config = SettingsConfigDict(hide_input_in_errors=True)

    #: The read-only role's URL, ``postgresql://predstream_reader:...@host/db``; the CLI
    #: falls back to the running local stack's Postgres.
    database_url: str | None = None
    #: Allow a ``web_host`` that other machines can reach (declared first: ``web_host``'s
    #: check reads it).
    web_public: bool = False
    #: Address to listen on; loopback unless ``web_public`` is set.
    web_host: str = Field(default="127.0.0.1", min_length=1)
    #: Port to listen on (0: any free port; the server prints the one it took).
    web_port: int = Field(default=8765, ge=0, le=65535)
    #: Bearer token of the write endpoint (``POST /api/v1/predictions``); unset: no writes.
    web_token: SecretStr | None = None
    #: Connections the server keeps open to Postgres (one request uses one at a time).
    web_pool_size: int = Field(default=4, ge=1, le=64)
    #: A query that runs longer is cancelled (and the request answers 503).
    web_statement_timeout_ms: int = Field(default=10_000, ge=100, le=600_000)

    @field_validator("database_url")
    @classmethod
    def _conninfo(cls, v: str | None) -> str | None:
        return check_database_url(v)

    @field_validator("web_host")
    @classmethod
    def _loopback_unless_public(cls, v: str, info: ValidationInfo) -> str:
        if not info.data.get("web_public") and not is_loopback(v):
            raise ValueError(
                f"{v!r} is not a loopback address, so other machines could read every prediction: "
                "also set PREDSTREAM_WEB_PUBLIC=true (or pass --public) if that is meant, else use 127.0.0.1"
            )
        return v

    def require_database_url(self) -> str:
        """The database URL; a clear error when none is set."""
        if self.database_url:
            return self.database_url
        raise ConfigError(
            "no database: set PREDSTREAM_DATABASE_URL=postgresql://predstream_reader@host/db "
            "or start the local stack with `predstream up`"
        )
