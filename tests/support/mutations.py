"""A hypothesis strategy shared by the fuzz tests: valid bytes, damaged a few times."""

from __future__ import annotations

from hypothesis import strategies as st

#: bytes that mean something to a varint, a union index, a boolean or a length
SPECIAL_BYTES = [0x00, 0x01, 0x02, 0x7F, 0x80, 0xFE, 0xFF]


@st.composite
def mutated(draw, samples: list[bytes], max_mutations: int = 6) -> bytes:
    """One of ``samples`` with 1 to ``max_mutations`` bit flips, special bytes, insertions,
    deletions or truncations."""
    data = bytearray(draw(st.sampled_from(samples)))
    for _ in range(draw(st.integers(1, max_mutations))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[pos] = draw(st.sampled_from(SPECIAL_BYTES))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=12))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 12))]
        elif op == "truncate":
            del data[pos:]
    return bytes(data)
