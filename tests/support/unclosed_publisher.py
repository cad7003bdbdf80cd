"""A process that publishes events and exits without closing its publisher.

Run by ``tests/test_publisher.py``::

    python tests/support/unclosed_publisher.py BOOTSTRAP TOPIC SPOOL_DIR N

It prints ``published <monotonic time>`` after handing N events to the publisher and
returns from ``main`` at once: the publisher's ``atexit`` hook must deliver or spool them.
"""

from __future__ import annotations

import logging
import sys
import time


def main() -> None:
    bootstrap, topic, spool_dir, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    from predstream.producer import ProducerSettings, Publisher
    from predstream.schemas.event import PredictionEvent

    settings = ProducerSettings(kafka_bootstrap=bootstrap, topic=topic, spool_dir=spool_dir, flush_timeout_s=60,
                                spool_auto_drain=False)
    publisher = Publisher(settings, job_id="unclosed")
    publisher.publish_many(
        PredictionEvent.create(job_id="unclosed", epoch=0.0, step=i, sample_index=0, source_index=0, prompt="p",
                               ground_truth="g", prediction=str(i), sample_source="dataset", sample_source_id="d")
        for i in range(n)
    )
    print(f"published {time.monotonic()}", flush=True)


if __name__ == "__main__":
    main()
