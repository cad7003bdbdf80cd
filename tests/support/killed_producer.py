"""A training process that records predictions with no broker reachable, then is killed -9.

Run by ``tests/test_faults_producer.py``::

    python tests/support/killed_producer.py SPOOL_DIR BOOTSTRAP {after-train-end|after-step-end}

* ``after-train-end``: steps 1..3 are recorded, ``on_train_end`` returns (it flushes: what is
  undelivered at its deadline is spooled), then the process kills itself with SIGKILL.
* ``after-step-end``: the process kills itself right after ``on_step_end`` of step 3 returned,
  as soon as the publisher reports that step's events spooled: no flush, no close, the
  active spool segment still open and locked.

Before dying it prints one JSON line: the publisher's counts and the recorded event ids.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from types import SimpleNamespace


def main() -> None:
    spool_dir, bootstrap, mode = sys.argv[1:4]
    from predstream.producer import Publisher, TrainingPredictionsCallback
    from predstream.producer.settings import ProducerSettings
    from predstream.tinymodel import addition_rows, build_model, build_tokenizer

    settings = ProducerSettings(kafka_bootstrap=bootstrap, topic="t.killed", spool_dir=spool_dir,
                                message_timeout_ms=1000, flush_timeout_s=5, spool_auto_drain=False)
    publisher = Publisher(settings, job_id="killed")
    ids: list[str] = []
    real_publish_many = publisher.publish_many

    def publish_many(events):
        events = list(events)
        ids.extend(e.event_id for e in events)
        real_publish_many(events)

    publisher.publish_many = publish_many  # type: ignore[method-assign]
    cb = TrainingPredictionsCallback(dataset=addition_rows(30, seed=1), n_samples=5, every_n_steps=1, on_evaluate=False,
                                     job_id="killed", publisher=publisher, max_new_tokens=3, raise_errors=True)
    args = SimpleNamespace(output_dir=spool_dir, run_name=None)
    cb.on_train_begin(args, SimpleNamespace(global_step=0), None)
    tok = build_tokenizer()
    model = build_model(tok, seed=0)
    for step in (1, 2, 3):
        cb.on_step_end(args, SimpleNamespace(global_step=step, epoch=step / 10), None, model=model,
                       processing_class=tok)
    if mode == "after-train-end":
        cb.on_train_end(args, None, None)
    else:
        deadline = time.monotonic() + 30
        while publisher.stats().spooled < len(ids) and time.monotonic() < deadline:
            time.sleep(0.001)
    stats = publisher.stats()
    print(json.dumps({"published": stats.published, "delivered": stats.delivered, "spooled": stats.spooled,
                      "dropped": stats.dropped, "ids": ids}), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    main()
