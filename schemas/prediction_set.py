"""A curated prediction set's identity and export file, shared by the database side and the file side.

A set's id is ``"ps_"`` + the first 16 hex characters of the sha256 of the JSON text (keys
sorted, separators ``,`` and ``:``, UTF-8) of its items' identities in order:
``[{"item_index", "source_index", "prompt_id", "ground_truth"}, ...]``. The same items in the
same order always have the same id, whether the set was read from Postgres or from an
exported file.

The export file (``predstream sets export``; read by ``TrainingPredictionsCallback`` on hosts
without database access) is one JSON object: ``set_id, name, source, seed, description`` and
``items: [{item_index, source_index, prompt_id, prompt, messages, ground_truth}, ...]``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

__all__ = ["prediction_set_id", "prediction_set_document"]


def prediction_set_id(items: Iterable[tuple[int, int | None, str, str | None]]) -> str:
    """The id of a set whose items are ``(item_index, source_index, prompt_id, ground_truth)``."""
    identity = [
        {"item_index": i, "source_index": s, "prompt_id": p, "ground_truth": g} for i, s, p, g in items
    ]
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "ps_" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def prediction_set_document(
    *,
    set_id: str,
    name: str,
    source: str | None,
    seed: int | None,
    description: str | None,
    items: Iterable[tuple[int, int | None, str, str | None, Any, str | None]],
) -> dict[str, Any]:
    """The export file's JSON object; items are
    ``(item_index, source_index, prompt_id, prompt, messages, ground_truth)``."""
    return {
        "set_id": set_id,
        "name": name,
        "source": source,
        "seed": seed,
        "description": description,
        "items": [
            {"item_index": i, "source_index": s, "prompt_id": p, "prompt": text, "messages": m, "ground_truth": g}
            for i, s, p, text, m, g in items
        ],
    }
