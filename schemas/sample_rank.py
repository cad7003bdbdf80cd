"""Which rows a seeded sample takes: a keyed hash of ``(seed, prompt_id)``, smallest first.

The rule (``predstream.producer.sampler.sample_dataset`` applies it; any other trainer can too):

1. Every usable row gets the rank ``HMAC-SHA256(key=utf8(decimal(seed)), msg=ascii(prompt_id))``:
   the key is the seed written in base 10 (``"7"``, ``"-3"``, ``"0"``: no ``+``, no leading
   zeros), the message the row's 64 lowercase hex ``prompt_id``.
2. Rows are ordered by rank (the 32 bytes compared as unsigned big-endian numbers, which is
   the order of the lowercase hex strings), then by ``source_index``; the ``n`` first are
   the sample.
3. The sample is listed in ``source_index`` order and numbered ``sample_index`` 0..n-1.

A row's rank depends only on the seed and its own prompt, not on the dataset's length or
order, so an eval set that grows keeps its sample: appending ``m`` rows to ``n`` replaces
only the picks that a new row outranks, on average ``N * m / (n + m)`` of ``N`` (0.73 of 8
for 1,000 -> 1,100 rows), and rows that are removed or reordered only matter if picked.
Rows with the same prompt (duplicates at other ``source_index``) have the same rank, so
they are picked together (or the lower ``source_index`` first, when one place is left).

Vectors for other languages: ``schemas/sample_vectors.json``.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["compute_sample_rank"]


def compute_sample_rank(seed: int, prompt_id: str) -> str:
    """The rank of a row with ``prompt_id`` in a sample drawn with ``seed`` (64 hex digits)."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an integer, not {type(seed).__name__}")
    return hmac.new(str(seed).encode("ascii"), prompt_id.encode("ascii"), hashlib.sha256).hexdigest()
