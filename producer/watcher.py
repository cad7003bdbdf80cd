"""The publisher's watcher: is the broker (and the schema registry) there, and re-sending the spool.

A :class:`BrokerWatcher` is what a :class:`~predstream.producer.publisher.Publisher` knows of
the services it sends to, and the thread that finds out:

* it probes the broker (a metadata request for all topics: naming one could auto-create it)
  when the sender asks (:meth:`~BrokerWatcher.probe`), and every second while the broker is
  unreachable. While :attr:`~BrokerWatcher.broker_down`, the sender spools new events; once
  the broker answers again it sets :attr:`~BrokerWatcher.recovered`, and the sender starts a
  fresh producer (an idempotent producer whose broker restarted never delivers again);
* with a schema registry configured, it registers the event schema, and retries while the
  registry does not answer (:attr:`~BrokerWatcher.registry_state`; events wait in the spool);
* with ``settings.spool_auto_drain``, it re-sends the spool
  (:func:`~predstream.producer.spool_drain.drain_spool`) whenever both answer, backing off
  while a drain leaves records behind.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Literal

from predstream.schemas.errors import RegistryUnavailableError

from ._kafka import broker_answers, probe_client
from .registry import RegistryFraming
from .settings import ProducerSettings
from .spool import Spool, list_segments
from .spool_drain import drain_spool

__all__ = ["BrokerWatcher", "RegistryState"]

_log = logging.getLogger(__name__)

#: How often the watcher probes an unreachable broker / looks for spooled events.
_PROBE_INTERVAL_S = 1.0
_DRAIN_CHECK_INTERVAL_S = 2.0

#: ``None``: no registry; ``pending``: the first registration is under way; ``up``; ``down``.
RegistryState = Literal["pending", "up", "down"] | None


class BrokerWatcher:
    """The broker's and the registry's state, shared by the publisher's sender and this
    watcher thread (see the module docstring). ``stop`` ends the thread."""

    def __init__(self, settings: ProducerSettings, spool: Spool, framing: RegistryFraming | None, client_id: str,
                 stop: threading.Event) -> None:
        self.settings = settings
        self._spool = spool
        self._framing = framing
        self._client_id = client_id
        self._stop = stop
        #: the sender spools new events while this is True
        self.broker_down = False
        #: set when the broker answers again after an outage; the sender clears it
        self.recovered = threading.Event()
        self.registry_state: RegistryState = None if framing is None else "pending"
        #: spooled records the auto-drain delivered
        self.resent = 0
        self._probe_now = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="predstream-publisher-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()
        if self._framing is not None:
            self._probe_now.set()  # registers the schema at once

    def probe(self) -> None:
        """Look at the broker now (also wakes the thread, e.g. to stop)."""
        self._probe_now.set()

    def unreachable(self, why: str) -> None:
        """The producer says every broker is down: spool from now on, probe until it answers."""
        if not self.broker_down:
            self.broker_down = True
            _log.warning("publisher: Kafka is unreachable (%s): new events go to the spool %s until it answers",
                         why, self._spool.directory)
            self._probe_now.set()

    def can_drain(self) -> bool:
        """Both the broker and the registry (if any) answer, as far as the watcher knows."""
        return not self.broker_down and self.registry_state != "down"

    def join(self, timeout: float) -> bool:
        """Wait for the thread to end; False when it did not within ``timeout``."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _loop(self) -> None:
        admin = None
        next_drain = time.monotonic() + _DRAIN_CHECK_INTERVAL_S
        backoff = _DRAIN_CHECK_INTERVAL_S
        while not self._stop.is_set():
            self._probe_now.wait(_PROBE_INTERVAL_S)
            if self._stop.is_set():
                break
            try:
                if self._framing is not None and self.registry_state != "up":
                    if self._register_schema():
                        next_drain = time.monotonic() + 0.2
                if self._probe_now.is_set() or self.broker_down:
                    self._probe_now.clear()
                    if admin is None:
                        admin = probe_client(self.settings, self._client_id)
                    reachable = broker_answers(admin)
                    if reachable and self.broker_down and not self.recovered.is_set():
                        _log.info("publisher: Kafka answers again; spooled events will be re-sent")
                        self.recovered.set()
                        next_drain = time.monotonic() + 0.2
                    elif not reachable and not self.broker_down:
                        self.broker_down = True
                        _log.warning("publisher: Kafka is unreachable: new events go to the spool %s until it answers",
                                     self._spool.directory)
                if (self.settings.spool_auto_drain and self.can_drain() and not self.recovered.is_set()
                        and time.monotonic() >= next_drain):
                    next_drain = time.monotonic() + backoff
                    if list_segments(self._spool.directory):
                        backoff = self._auto_drain(backoff)
            except Exception:
                _log.exception("publisher: watcher error (continuing)")

    def _auto_drain(self, backoff: float) -> float:
        """Re-send the spool; return the wait before the next look (longer while records stay)."""
        self._spool.seal()
        report = drain_spool(self.settings, timeout=max(10.0, self.settings.message_timeout_ms / 1000),
                             stop=self._stop, framing=self._framing)
        self.resent += report.sent
        if report.sent:
            _log.info("publisher: auto-drain: %s", report)
        return _DRAIN_CHECK_INTERVAL_S if not report.left else min(backoff * 2, 60.0)

    def _register_schema(self) -> bool:
        """Register the event schema; True when the registry just answered."""
        assert self._framing is not None
        try:
            schema_id = self._framing.register(self._framing.current_fingerprint())
        except RegistryUnavailableError as exc:
            if self.registry_state != "down":
                _log.warning("publisher: %s: new events go to the spool %s until it answers", exc,
                             self._spool.directory)
            self.registry_state = "down"
            return False
        if self.registry_state == "down":
            _log.info("publisher: the schema registry answers again (schema id %d); spooled events will be re-sent",
                      schema_id)
        self.registry_state = "up"
        return True
