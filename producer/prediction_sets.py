"""Prediction sets on the training side: load a set as samples, from a file or from Postgres.

What a set is — its items, their rules, ``set_id``, the export file — is defined once, in
:mod:`predstream.schemas.prediction_set`; storing sets is the consumer's
(``predstream sets``). Here a set becomes what the generator takes: :class:`Sample` objects
with ``sample_source="prediction_set"``, ``sample_source_id=<set_id>`` and
``sample_index=<item_index>`` (:func:`prediction_set_samples`), and a sample becomes an item
(:func:`prediction_set_from_samples`, what ``predstream sets create`` stores).

Sets are read from an export file (:func:`predstream.schemas.read_prediction_set_file`) or
from the database named by ``ProducerSettings.database_url`` (:func:`fetch_prediction_set`);
:mod:`.set_copies` adds the verified local copy that serves while the database is down.

psycopg is imported only when a set is read from Postgres.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from predstream.schemas.errors import PredictionSetError, PredictionSetUnavailableError
from predstream.schemas.prediction_set import (
    FIX_EDITED_IN_DATABASE,
    PredictionSet,
    PredictionSetItem,
    new_prediction_set,
    read_prediction_set_file,
    stored_prediction_set,
)
from predstream.schemas.redaction import redact_url

from .sampler import Sample
from .settings import ProducerSettings

__all__ = [
    "prediction_set_samples",
    "prediction_set_from_samples",
    "fetch_prediction_set",
    "load_prediction_set",
    "is_prediction_set_file",
]

_ITEM_KEYS = ("item_index", "source_index", "prompt_id", "prompt", "messages", "ground_truth")


def prediction_set_samples(pset: PredictionSet) -> list[Sample]:
    """The set's items as samples for the generator, in item order."""
    return [
        Sample(sample_index=i.item_index, source_index=i.source_index, prompt_id=i.prompt_id, prompt=i.prompt,
               messages=None if i.messages is None else tuple(i.messages_list() or ()), ground_truth=i.ground_truth,
               sample_source="prediction_set", sample_source_id=pset.set_id)
        for i in pset.items
    ]


def prediction_set_from_samples(
    name: str,
    samples: Sequence[Sample],
    *,
    source: str | None = None,
    seed: int | None = None,
    description: str | None = None,
) -> PredictionSet:
    """A new set of sampled rows (e.g. :func:`predstream.producer.sample_dataset`), checked by the
    rules of :mod:`predstream.schemas.prediction_set`.

    Items are numbered 0..N-1 in the given order; ``source`` defaults to the samples'
    ``sample_source_id`` when they all share one.
    """
    if source is None:
        ids = {s.sample_source_id for s in samples}
        source = ids.pop() if len(ids) == 1 else None
    items = [
        PredictionSetItem(item_index=i, prompt_id=s.prompt_id, source_index=s.source_index, prompt=s.prompt,
                          messages=s.messages, ground_truth=s.ground_truth)
        for i, s in enumerate(samples)
    ]
    return new_prediction_set(name, items, source=source, seed=seed, description=description)


def is_prediction_set_file(name_or_path: str | os.PathLike[str]) -> bool:
    """Whether ``prediction_set=`` names a file (a path object, an existing file, or a name
    ending in ``.json``) rather than a set in the database."""
    text = os.fspath(name_or_path)
    return isinstance(name_or_path, os.PathLike) or Path(text).is_file() or text.lower().endswith(".json")


def fetch_prediction_set(name_or_id: str, settings: ProducerSettings | None) -> PredictionSet:
    """Read a set by ``set_id`` or ``name`` (an exact ``set_id`` match wins) from the database
    of ``settings.database_url``; :class:`PredictionSetUnavailableError` when it does not answer."""
    database_url = settings.database_url if settings is not None else None
    if not database_url:
        raise PredictionSetError(
            f"prediction set {name_or_id!r} is not a file and no database is given: pass settings with a "
            "database_url (ProducerSettings reads PREDSTREAM_DATABASE_URL) to read it from Postgres, or export "
            "it to a file with `predstream sets export`"
        )
    import psycopg
    from psycopg.rows import dict_row

    try:
        with psycopg.connect(database_url, row_factory=dict_row, connect_timeout=10) as conn:
            head = conn.execute(
                "SELECT set_id, name, source, seed, description, item_count FROM prediction_sets"
                " WHERE set_id = %s OR name = %s ORDER BY (set_id = %s) DESC LIMIT 1",
                (name_or_id, name_or_id, name_or_id),
            ).fetchone()
            if head is None:
                raise PredictionSetError(
                    f"no prediction set named {name_or_id!r} in {redact_url(database_url)}: "
                    "list them with `predstream sets list`"
                )
            rows = conn.execute(
                "SELECT " + ", ".join(_ITEM_KEYS) + " FROM prediction_set_items WHERE set_id = %s ORDER BY item_index",
                (head["set_id"],),
            ).fetchall()
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        first = redact_url(first, database_url)
        if isinstance(exc, psycopg.OperationalError):  # the server did not answer (or went away)
            raise PredictionSetUnavailableError(
                f"cannot read prediction set {name_or_id!r}: the database at {redact_url(database_url)} "
                f"does not answer: {first}"
            ) from None
        hint = "; run `predstream migrate` first" if getattr(exc, "sqlstate", None) == "42P01" else ""
        raise PredictionSetError(
            f"cannot read prediction set {name_or_id!r} from {redact_url(database_url)}: {first}{hint}"
        ) from None
    return stored_prediction_set(
        set_id=head["set_id"], name=head["name"], source=head["source"], seed=head["seed"],
        description=head["description"], rows=rows, where=f"prediction set {head['name']!r} ({head['set_id']})",
        fix=FIX_EDITED_IN_DATABASE, item_count=head["item_count"],
    )


def load_prediction_set(name_or_path: str | os.PathLike[str], settings: ProducerSettings | None = None) -> list[Sample]:
    """The samples of a prediction set, from an export file or from Postgres.

    ``name_or_path`` is read as a file when :func:`is_prediction_set_file` says so; otherwise
    it is a set name or ``set_id`` looked up in ``settings.database_url``. (Training uses
    :func:`predstream.producer.set_copies.load_set_for_training`, which also keeps a local copy.)
    """
    if is_prediction_set_file(name_or_path):
        return prediction_set_samples(read_prediction_set_file(name_or_path))
    return prediction_set_samples(fetch_prediction_set(os.fspath(name_or_path), settings))
