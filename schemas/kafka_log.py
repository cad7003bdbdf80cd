"""librdkafka's own log lines, with a broker outage reported once, not twenty times a second.

While a broker is unreachable, librdkafka logs a ``FAIL`` line for every connection attempt
(about 20 a second for a consumer and its dead-letter producer: 510 lines in 25 s). A
:class:`BrokerLog` is the ``logger`` librdkafka writes to; it turns those lines into

* one WARNING when a broker first fails (``kafka broker 127.0.0.1:9092 unreachable: ...``);
* one INFO line when a client reports the broker up again (via :meth:`BrokerLog.on_stats`,
  librdkafka's ``stats_cb``), with how long the outage lasted and how many failure lines
  were counted and not printed;
* DEBUG lines for the repeats in between.

Every other line passes through to the ``predstream.librdkafka`` logger at its own level.

:data:`BROKER_LOG` is the process's announcing sink: the default ``logger`` of every client
built by :meth:`predstream.schemas.settings.StreamSettings.kafka_config`. Short commands that only read
(``dlq list``, replay planning) give their clients a :func:`quiet_log` instead, which prints
nothing at INFO and keeps the last failure for the command's own one-line error.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import SchemaError

if TYPE_CHECKING:
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.admin._metadata import ClusterMetadata

__all__ = ["BrokerLog", "BROKER_LOG", "BrokerUnreachableError", "CONNECT_TIMEOUT_S", "cluster_metadata", "quiet_log"]

_LOG = logging.getLogger("predstream.librdkafka")

# a broker's address at the start of a FAIL line's message: "127.0.0.1:9092/bootstrap: ...",
# "GroupCoordinator: 127.0.0.1:9092: ...", "sasl_ssl://broker-1:9093/1: ..."
_ADDRESS = re.compile(r"(?:[a-z_]+://)?([A-Za-z0-9_.\-]+:\d+|\[[0-9a-fA-F:]+\]:\d+)")
_THREAD = re.compile(r"^\[thrd:[^\]]*\]:\s*")
_DISCONNECTED = re.compile(r"(^|: )Disconnected\b")
#: Failure lines served this soon after a broker came back are late news of the outage
#: (librdkafka queues log lines until the client is polled), not a new one.
_LATE_S = 3.0


@dataclass
class _Outage:
    since: float
    reason: str
    repeats: int = 0


class BrokerLog:
    """A librdkafka ``logger`` that reports each broker outage once (see the module doc).

    ``announce=False`` keeps even the first failure at DEBUG (for short commands whose own
    error line says what went wrong: :meth:`last_failure`).
    """

    def __init__(self, logger: logging.Logger = _LOG, *, announce: bool = True) -> None:
        self._logger = logger
        self._announce = announce
        self._lock = threading.Lock()
        self._outages: dict[str, _Outage] = {}
        self._ended: dict[str, float] = {}  # address -> when its last outage ended
        self._last_failure: str | None = None

    # -- what librdkafka calls -------------------------------------------------------

    def log(self, level: int, fmt: str, *args: Any) -> None:
        """``logging.Logger.log``'s signature: librdkafka calls ``log(level, "%s [%s] %s", fac, client, text)``."""
        if len(args) == 3 and str(args[0]) == "FAIL":
            self._failure(str(args[1]), _THREAD.sub("", str(args[2])))
            return
        self._logger.log(level, fmt, *args)

    def on_stats(self, stats_json: str) -> None:
        """librdkafka's ``stats_cb``: a broker a client sees ``UP`` ends its outage."""
        if not self._outages:  # the usual case: nothing to parse
            return
        try:
            brokers = json.loads(stats_json).get("brokers", {}).values()
        except (ValueError, AttributeError):
            return
        up = {b["nodename"] for b in brokers
              if isinstance(b, dict) and b.get("state") == "UP" and isinstance(b.get("nodename"), str)}
        for address in up & set(self._outages):
            self.broker_up(address)

    # -- queries and explicit signals -------------------------------------------------

    def broker_up(self, address: str) -> None:
        """Report ``address`` reachable again (ends its outage with one line)."""
        with self._lock:
            outage = self._outages.pop(address, None)
            if outage is not None:
                self._ended[address] = time.monotonic()
        if outage is not None and self._announce:
            self._logger.info(
                "kafka broker %s reachable again after %.0f s (%d repeated failure line(s) counted, not printed)",
                address, time.monotonic() - outage.since, outage.repeats,
            )

    def outage(self) -> tuple[str, float, str] | None:
        """``(address, seconds, reason)`` of the longest ongoing outage, or ``None``."""
        with self._lock:
            if not self._outages:
                return None
            address, o = min(self._outages.items(), key=lambda kv: kv[1].since)
            return address, time.monotonic() - o.since, o.reason

    def last_failure(self) -> str | None:
        """The last connection failure librdkafka reported (one line), if any."""
        return self._last_failure

    # -- internals ---------------------------------------------------------------------

    def _failure(self, client: str, text: str) -> None:
        match = _ADDRESS.search(text)
        address = match.group(1) if match else "?"
        reason = text.split(": ", 1)[1] if ": " in text else text
        reason = " ".join(reason.split())[:300]
        # a connection the broker closed (idle, restarting) is no outage by itself; the
        # failed connects that follow when the broker is really gone are
        disconnected = _DISCONNECTED.search(text) is not None
        if not disconnected:
            self._last_failure = reason
        with self._lock:
            outage = self._outages.get(address)
            late = time.monotonic() - self._ended.get(address, float("-inf")) < _LATE_S
            first = outage is None and not disconnected and not late
            if first:
                self._outages[address] = _Outage(time.monotonic(), reason)
            elif outage is not None:
                outage.repeats += 1
        if first and self._announce:
            self._logger.warning(
                "kafka broker %s unreachable: %s; retrying (repeats are counted, not printed)", address, reason
            )
        else:
            self._logger.debug("[%s] %s", client, text)


#: The process's announcing sink (the default ``logger`` of ``StreamSettings.kafka_config``).
BROKER_LOG = BrokerLog()


def quiet_log() -> BrokerLog:
    """A sink for one short command's clients: failures at DEBUG, the last one kept."""
    return BrokerLog(announce=False)


#: How long a short command waits for the broker's first answer before it gives up ...
CONNECT_TIMEOUT_S = 10.0
#: ... or how long it keeps trying while every connection attempt fails.
_GIVE_UP_S = 3.0


class BrokerUnreachableError(SchemaError):
    """The broker did not answer a short command in time; the message says what to check."""

    reason = "broker-unreachable"


def cluster_metadata(
    client: Producer | Consumer | AdminClient, bootstrap: str, log: BrokerLog, timeout_s: float = CONNECT_TIMEOUT_S
) -> ClusterMetadata:
    """The cluster's metadata (all topics: asking for one may create it on some brokers).

    Raises :class:`BrokerUnreachableError` with one line when the broker does not answer
    within ``timeout_s``, or sooner (after :data:`_GIVE_UP_S`) when every connection attempt
    so far failed (refused, unknown host): the line carries librdkafka's reason.
    """
    from confluent_kafka import KafkaException

    started = time.monotonic()
    deadline = started + timeout_s
    while True:
        try:
            metadata: ClusterMetadata = client.list_topics(timeout=max(0.1, min(1.0, deadline - time.monotonic())))
            return metadata
        except KafkaException as exc:
            error = exc.args[0].str()
        client.poll(0)  # serves librdkafka's log lines: the connection failures, if any
        now = time.monotonic()
        failing = log.last_failure() is not None and now - started >= _GIVE_UP_S
        if now >= deadline or failing:
            why = log.last_failure() or error
            raise BrokerUnreachableError(
                f"cannot reach the Kafka broker at {bootstrap} ({why}) after {now - started:.0f} s: is it running? "
                "Check PREDSTREAM_KAFKA_BOOTSTRAP or --bootstrap"
            )
