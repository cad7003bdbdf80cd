"""Load a prediction set for training without depending on the database being up.

``TrainingPredictionsCallback(prediction_set=...)`` calls :func:`load_set_for_training` at
train begin, with its ``ProducerSettings``:

* a file (an existing path, or a name ending in ``.json``) is read and verified;
* a name or ``set_id`` is read from the database (``settings.database_url``: the callback's
  ``database_url=``, else ``PREDSTREAM_DATABASE_URL``, else the local stack's) and a copy is
  written to ``settings.prediction_sets_dir`` (``<spool_dir>/prediction-sets/<set_id>.json``,
  the export file format of :mod:`predstream.schemas.prediction_set`);
* when the database does not answer, or none is configured, the newest local copy of that
  set is used instead, with one warning. A copy is verified when read (``set_id``
  recomputed from its items), like every other loader.

With neither the database nor a copy, one :class:`PredictionSetError` says what to do.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from predstream.schemas.errors import PredictionSetError, PredictionSetUnavailableError
from predstream.schemas.prediction_set import PredictionSet, read_prediction_set_file, write_prediction_set_file

from .prediction_sets import fetch_prediction_set, is_prediction_set_file
from .settings import ProducerSettings

__all__ = ["load_set_for_training", "write_local_copy", "find_local_copy"]

_log = logging.getLogger(__name__)


def load_set_for_training(name_or_path: str | os.PathLike[str], settings: ProducerSettings) -> PredictionSet:
    """The set to train with: a file, the database's (copied locally), or the local copy."""
    if is_prediction_set_file(name_or_path):
        return read_prediction_set_file(name_or_path)
    name = os.fspath(name_or_path)
    copies_dir = settings.prediction_sets_dir
    if settings.database_url:
        try:
            pset = fetch_prediction_set(name, settings)
        except PredictionSetUnavailableError as exc:
            why = str(exc)
        else:
            write_local_copy(pset, copies_dir)
            return pset
    else:
        why = f"no database is configured for prediction set {name!r} (PREDSTREAM_DATABASE_URL, or `predstream up`)"
    copy = find_local_copy(name, copies_dir)
    if copy is None:
        raise PredictionSetError(
            f"{why}; and there is no local copy of it in {copies_dir} (one is written whenever a run loads "
            "the set from the database). Start the database, or export the set where it answers with "
            f"`predstream sets export {name} {name}.json` and pass prediction_set=\"{name}.json\""
        )
    path, pset = copy
    _log.warning("%s; training with the local copy %s (%s, %d items, verified)",
                 why, path, pset.set_id, len(pset.items))
    return pset


def write_local_copy(pset: PredictionSet, copies_dir: Path) -> Path | None:
    """Write ``pset`` as ``<copies_dir>/<set_id>.json`` (atomically; ranks may race). A
    failure is logged, not raised: the copy only matters during a later outage."""
    try:
        copies_dir.mkdir(parents=True, exist_ok=True)
        return write_prediction_set_file(pset, copies_dir / f"{pset.set_id}.json")
    except OSError as exc:
        _log.warning("cannot keep a local copy of prediction set %r in %s (%s): training will need the "
                     "database at the next start", pset.name, copies_dir, exc.strerror or exc)
        return None


def find_local_copy(name_or_id: str, copies_dir: Path) -> tuple[Path, PredictionSet] | None:
    """The newest copy whose ``set_id`` or name is ``name_or_id`` (an exact ``set_id`` wins),
    verified; :class:`PredictionSetError` when that copy fails verification."""
    try:
        paths = sorted(copies_dir.glob("ps_*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    except OSError:
        return None
    by_id = copies_dir / f"{name_or_id}.json"
    if by_id in paths:
        paths.remove(by_id)
        paths.insert(0, by_id)
    for path in paths:
        try:
            head = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # unreadable: not this set's copy as far as we can tell; read_ below names it
        if not isinstance(head, dict) or name_or_id not in (head.get("set_id"), head.get("name")):
            continue
        try:
            return path, read_prediction_set_file(path)
        except PredictionSetError as exc:
            raise PredictionSetError(
                f"the local copy of prediction set {name_or_id!r} cannot be used: {exc}. Delete {path}; "
                "it is written again the next time the database answers"
            ) from None
    return None
