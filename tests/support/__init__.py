"""What the tests share: one ``wait_for``, one event factory, and the kits of each area.

``tests/`` is on ``sys.path`` (``pythonpath`` in pyproject.toml's pytest settings), so a test
writes ``from support import make_event, wait_for`` or ``from support.consumer_kit import ...``.

* :mod:`.waiting` — ``wait_for``; :mod:`.events` — ``make_event``, ``make_events``, ``T0``;
* :mod:`.consumer_kit` — producing raw messages, counting rows, running workers and the CLI;
* :mod:`.contract_kit` — frames and canonical forms written from the specs, 0.1's frames;
* :mod:`.fault_kit` — many small events fast, consumer processes to kill, row audits;
* :mod:`.registry_double` — a schema registry over real HTTP that can go down;
* :mod:`.mutations` — a hypothesis strategy of damaged bytes; :mod:`.fuzzing` — a short atheris run;
* scripts run as separate processes: ``dist_worker.py``, ``killed_producer.py``,
  ``unclosed_publisher.py``, ``train_then_evaluate.py``; ``identity_vectors.py`` writes the
  shipped identity vectors.
"""

from .events import T0, make_event, make_events
from .waiting import wait_for

__all__ = ["T0", "make_event", "make_events", "wait_for"]
