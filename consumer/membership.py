"""A worker's place in its consumer group: joined, or stuck joining, and how it gets out.

A worker is *joining* from its subscription, and again from each revocation (a rebalance
begins) or loss of its partitions, until librdkafka hands it an assignment. An assignment
may be empty (more workers than partitions): that worker has joined and is healthy.
:class:`Membership` records this from the rebalance callbacks; a worker that has been joining
for longer than ``join_timeout_s`` is unhealthy, and :func:`unwedge_group` gets it out.

Why a worker gets stuck (measured on tansu 0.6, the local stack's broker, 2026-12): when a
member leaves the group while it is the leader of a forming generation (a Ctrl-C or SIGTERM
during a consumer's first join; the last of two workers stopping during the rebalance the
first one's leave started), tansu removes the member but keeps it as the group's leader. It
never evicts it, so every later member waits for a SyncGroup from a leader that is gone:
restarted consumers loop on the join for good (still stuck after 420 s). Tried, by
experiment (``tests/journeys/test_journeys_ops.py`` keeps the reproduction):

* rejoining as a new member (close, new consumer): still stuck;
* a fresh ``group.instance.id`` (static membership): still stuck;
* waiting, with no member, past the session timeout: still stuck;
* deleting the group (``DeleteGroups``) and committing its offsets back with a group-less
  commit: the next join forms the group in one round (about 5 s) and the offsets are kept.

So :func:`unwedge_group` reads the group's committed offsets, leaves (closes the consumer),
deletes the group and commits the offsets back. Apache Kafka evicts such a leader and never
gets here; were it to, it refuses to delete a group that still has members
(``NON_EMPTY_GROUP``), and the worker simply rejoins.

Prevention makes the wedge rare in the first place: a stopping worker leaves only from a
formed group, finishing a join in progress first, and the workers of one supervisor leave
one after the other (:meth:`Membership.settle`: measured 6 of 6 clean restarts after stopping
``--workers 2`` and ``--workers 3``, against 1 of 3 wedged without the stagger); and the
supervisor restarts a dead worker instead of stopping the others.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._kafka import list_partitions
from .settings import ConsumerSettings

if TYPE_CHECKING:
    from confluent_kafka import Consumer

__all__ = ["Membership", "unwedge_group"]

_log = logging.getLogger(__name__)


@dataclass
class Membership:
    """Join state from the rebalance callbacks (times from :func:`time.monotonic`)."""

    join_timeout_s: float
    #: since when the worker has been (re)joining; ``None`` while it holds an assignment
    joining_since: float | None = None
    #: partitions of the current assignment
    partitions: int = 0
    #: completed joins (assignments received, empty ones included)
    joins: int = 0
    #: times :func:`unwedge_group` ran
    recoveries: int = 0

    def joining(self, now: float | None = None) -> None:
        """A subscription, revocation or loss: the worker is (re)joining."""
        if self.joining_since is None:
            self.joining_since = time.monotonic() if now is None else now
        self.partitions = 0

    def joined(self, partitions: int) -> float:
        """An assignment (maybe empty) arrived; return how long the join took."""
        took = 0.0 if self.joining_since is None else time.monotonic() - self.joining_since
        self.joining_since = None
        self.partitions = partitions
        self.joins += 1
        return took

    def joining_for(self, now: float | None = None) -> float:
        """Seconds since the worker began (re)joining; 0 while it holds an assignment."""
        if self.joining_since is None:
            return 0.0
        return (time.monotonic() if now is None else now) - self.joining_since

    def stuck(self, now: float | None = None) -> bool:
        """Joining for longer than ``join_timeout_s``."""
        return self.joining_for(now) > self.join_timeout_s

    def settle(self, consumer: Consumer, window_s: float, limit_s: float, worker: str) -> None:
        """Before leaving the group: finish a join in progress, for at most ``limit_s``.

        A member that leaves a forming generation while it is its leader wedges the group on
        some brokers (tansu 0.6: see the module docstring). So a worker leaves only from a
        formed group: it polls ``consumer`` (its partitions paused) until it has seen a look
        window of ``window_s`` with no rebalance, looking again when one begins. Messages
        fetched meanwhile are dropped: their offsets are not committed, the next owner reads them.
        """
        now = time.monotonic()
        deadline = now + limit_s
        look, joins = now + window_s, self.joins
        told = False
        while time.monotonic() < deadline:
            joining = self.joining_since is not None
            if self.joins != joins:  # rejoined: look again from here
                look, joins = time.monotonic() + window_s, self.joins
            if not joining and time.monotonic() >= look:
                return
            if joining and not told:
                told = True
                _log.info("worker %s: finishing the group join in progress before leaving", worker,
                          extra={"worker": worker})
            try:
                consumer.poll(0.1)
            except Exception:  # closing anyway
                return

    def details(self) -> dict[str, Any]:
        """For ``/healthz``: ``group`` is ``joined`` or ``joining``."""
        if self.joining_since is None:
            return {"group": "joined", "partitions": self.partitions}
        return {"group": "joining", "joining_s": round(self.joining_for(), 1)}


def unwedge_group(settings: ConsumerSettings, consumer: Consumer, timeout_s: float = 10.0) -> str:
    """Leave the group (closes ``consumer``), delete it and commit its offsets back.

    Returns one line saying what was done. Never raises for broker trouble: the worker
    rejoins with a new consumer whatever happened here.
    """
    from confluent_kafka import Consumer, KafkaException, TopicPartition
    from confluent_kafka.admin import AdminClient

    group, topic = settings.group_id, settings.topic
    saved: list[TopicPartition] = []
    try:
        parts = list_partitions(consumer, topic, timeout_s) or []
        saved = [tp for tp in consumer.committed([TopicPartition(topic, p) for p in parts], timeout=timeout_s)
                 if tp.offset >= 0]
    except KafkaException as exc:
        _close(consumer)
        return f"could not read the group's offsets ({exc.args[0].str()}); rejoined without deleting the group"
    _close(consumer)
    admin = AdminClient(settings.kafka_config(**{"client.id": "predstream-unwedge"}))
    try:
        admin.delete_consumer_groups([group], request_timeout=timeout_s)[group].result(timeout=timeout_s)
    except Exception as exc:  # NON_EMPTY_GROUP on Apache Kafka, or not supported: just rejoin
        reason = exc.args[0].str() if exc.args and hasattr(exc.args[0], "str") else str(exc)
        return f"left and rejoined (the group was not deleted: {reason})"
    if not saved:
        return "left, deleted the group (it had no committed offsets) and rejoined"
    restorer = Consumer(settings.kafka_config(**{"group.id": group, "client.id": "predstream-unwedge",
                                                 "enable.auto.commit": False}))
    try:
        restorer.commit(offsets=saved, asynchronous=False)
    except KafkaException as exc:
        where = ",".join(f"{tp.partition}:{tp.offset}" for tp in saved)
        _log.error("group %s was deleted but its offsets could not be committed back (%s): its partitions "
                   "start again from the beginning (the upsert absorbs the repeats); they were %s",
                   group, exc.args[0].str(), where)
        return "left, deleted the group and rejoined; its offsets were NOT restored"
    finally:
        _close(restorer)
    return f"left, deleted the group, committed its offsets back ({len(saved)} partition(s)) and rejoined"


def _close(consumer: Consumer) -> None:
    try:
        consumer.close()
    except Exception as exc:  # a consumer that lost its broker
        _log.debug("consumer close: %s", exc)
