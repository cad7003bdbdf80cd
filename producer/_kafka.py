"""The producer side's Kafka clients: the producers of the publisher and the spool drain,
and the probe that asks whether the broker answers.

Both produce with an idempotent producer (``acks=all``); librdkafka's own log lines go to
the ``predstream.librdkafka`` logger at DEBUG (the publisher reports an outage once, itself).
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from .settings import ProducerSettings

__all__ = ["PURGED", "LibrdkafkaLog", "producer_config", "probe_client", "broker_answers"]

_rdkafka_log = logging.getLogger("predstream.librdkafka")

#: Delivery errors of messages purged on purpose (a producer replaced, a drain's deadline).
PURGED = (KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT)


class LibrdkafkaLog:
    """librdkafka's own log lines, at DEBUG: outages are reported once by the publisher."""

    def log(self, level: int, msg: str, *args: Any) -> None:
        _rdkafka_log.debug(msg, *args)


def producer_config(settings: ProducerSettings, client_id: str, **callbacks: Any) -> dict[str, Any]:
    """librdkafka settings of an idempotent producer (``settings.kafka_options`` win)."""
    return settings.kafka_config(
        **{
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": settings.compression,
            "queue.buffering.max.messages": settings.queue_max_messages,
            "message.timeout.ms": settings.message_timeout_ms,
            "linger.ms": 20,
            "client.id": client_id,
            "logger": LibrdkafkaLog(),
            **callbacks,
        }
    )


def probe_client(settings: ProducerSettings, client_id: str) -> AdminClient:
    """An admin client for :func:`broker_answers` (its errors are the probe's answer, not log lines)."""
    conf = settings.kafka_config(**{"client.id": client_id + "-probe", "logger": LibrdkafkaLog(),
                                    "error_cb": lambda err: None})
    return AdminClient(conf)


def broker_answers(admin: AdminClient, timeout: float = 1.0) -> bool:
    """A lightweight metadata request (all topics: naming one could auto-create it)."""
    try:
        md = admin.list_topics(timeout=timeout)
        return bool(md.brokers)
    except KafkaException:
        return False
    finally:
        admin.poll(0)
