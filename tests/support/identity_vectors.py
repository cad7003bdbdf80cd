"""Writes schemas/prompt_id_vectors.json and schemas/sample_vectors.json from the inputs below.

Run ``python tests/support/identity_vectors.py`` after adding an input. The files are data: the
test suite checks every vector against the Python code (tests/test_contract.py,
tests/test_sample_rank.py) and against an independent JavaScript implementation
(tests/test_identity_vectors_node.py, tests/node/identity_vectors.mjs).
"""

from __future__ import annotations

import json
from pathlib import Path

from predstream.schemas.prompt_id import PromptIdError, canonical_messages, compute_prompt_id
from predstream.schemas.sample_rank import compute_sample_rank

ROOT = Path(__file__).resolve().parents[2]

U = "user"
PROMPT_ID_VECTORS = [
    # the vectors of 0.1, unchanged but for the two whose extra keys are now left out
    ("prompt only", None, "What is 2+2?"),
    ("messages only", [{"role": U, "content": "Hello"}], None),
    ("both", [{"role": "system", "content": "Be brief."}, {"role": U, "content": "Hi"}], "Hi"),
    ("empty prompt", None, ""),
    ("empty messages list", [], None),
    ("keys sorted (0.1 hashed the extra key 'name'; it is now left out)", [{"role": U, "content": "x", "name": "bob"}],
     None),
    ("non-ascii kept as UTF-8", [{"role": U, "content": "café ☕ 日本"}], "naïve"),
    ("escapes", [{"role": U, "content": 'line1\nline2\t"q" \\ \u0001'}], None),
    ("pipe inside prompt", None, "a|b"),
    ("whitespace kept", None, "  padded  \n"),
    ("emoji outside BMP", None, "😀"),
    ("numbers in messages (0.1 hashed the extra keys; they are now left out)",
     [{"role": U, "content": "x", "weight": 1.5, "turn": 3}], None),
    # added in 0.2
    ("messages only, keys given in the other order (same id)", [{"content": "Hello", "role": U}], None),
    ("empty content", [{"role": U, "content": ""}], None),
    ("empty messages list with a prompt: [] is not null", [], "hi"),
    ("extra keys of any type are left out (objects, lists, null)",
     [{"role": U, "content": "x", "meta": {"a": [1, None]}, "tool_calls": [], "name": None}], None),
    ("escapes: quote, backslash, slash, newline, tab", [{"role": U, "content": 'line1\nline2\t"q" \\ / end'}], None),
    ("control characters U+0000..U+001F and U+007F",
     [{"role": U, "content": "".join(chr(c) for c in range(0x20)) + "\x7f"}], None),
    ("U+2028 and U+2029 written as themselves", [{"role": U, "content": "a\u2028b\u2029c"}], "p\u2028q"),
    ("emoji outside the BMP in messages and prompt (a surrogate pair in UTF-16)",
     [{"role": U, "content": "😀 👩‍💻"}], "🎉"),
    ("no Unicode normalisation: e + combining acute", None, "e\u0301"),
    ("no Unicode normalisation: precomposed é", None, "\u00e9"),
    ("byte order mark and U+FFFF inside text", None, "\ufeffx\uffff"),
    ("pipe inside a message", [{"role": U, "content": "a|b"}], None),
    ("non-ASCII role", [{"role": "système", "content": "ok"}], None),
]

REFUSED = [
    ("both missing", None, None),
    ("content is a number", [{"role": U, "content": 5}], None),
    ("role is null", [{"role": None, "content": "x"}], None),
    ("content missing", [{"role": U}], None),
    ("a message is not an object", ["hello"], None),
    ("messages is a string", "hello", None),
    ("prompt is a number", None, 42),
    ("lone high surrogate in the prompt", None, "bad \ud800"),
    ("lone low surrogate in a message", [{"role": U, "content": "x\udc00"}], None),
    ("surrogates in the wrong order", None, "\udc00\ud800"),
]

RANK_VECTORS = [
    ("0", "9de4d05ae3610b046c100e740c6552a52335cd304c9dd18e07ea6327c76abf3b"),
    ("7", "9de4d05ae3610b046c100e740c6552a52335cd304c9dd18e07ea6327c76abf3b"),
    ("-3", "9de4d05ae3610b046c100e740c6552a52335cd304c9dd18e07ea6327c76abf3b"),
    ("42", "3fd36f3fc80386cbbbf5fa3f42c207aad401a22731f7e71ecbe652112b26f8b8"),
    ("18446744073709551616", "3fd36f3fc80386cbbbf5fa3f42c207aad401a22731f7e71ecbe652112b26f8b8"),
]


def _rows(prompts: list[str]) -> list[dict]:
    return [{"messages": None, "prompt": p} for p in prompts]


def _sample_cases() -> list[dict]:
    ten = _rows([f"{i}+{i}=" for i in range(10)])
    dup = _rows(["alpha", "beta", "gamma", "alpha", "delta", "epsilon"])
    seed_dup = next(s for s in range(1000) if _picks(dup, s, 1) == [0])  # the duplicate ranks first
    chat = [{"messages": [{"role": "system", "content": "Be brief."}, {"role": U, "content": f"q{i}"}],
             "prompt": None} for i in range(4)] + _rows(["p0", "p1", "p2"])
    return [
        _case("ten prompts, seed 7, n 3", 7, 3, ten),
        _case("the same ten with two rows appended: the picks stay unless a new row outranks one", 7, 3,
              ten + _rows(["10+10=", "11+11="])),
        _case("the same ten, reversed: the same prompts are picked", 7, 3, ten[::-1]),
        _case("duplicate prompt at source_index 0 and 3: equal ranks, ties broken by source_index, n 1",
              seed_dup, 1, dup),
        _case("the same, n 2: both copies are picked", seed_dup, 2, dup),
        _case("chat and prompt rows, negative seed", -5, 4, chat),
        _case("n larger than the rows: all of them", 0, 50, _rows(["x", "y"])),
    ]


def _picks(rows: list[dict], seed: int, n: int) -> list[int]:
    ranked = sorted((compute_sample_rank(seed, compute_prompt_id(r["messages"], r["prompt"])), i) for i,
                    r in enumerate(rows))
    return sorted(i for _, i in ranked[:n])


def _case(name: str, seed: int, n: int, rows: list[dict]) -> dict:
    ids = [compute_prompt_id(r["messages"], r["prompt"]) for r in rows]
    return {"name": name, "seed": seed, "n": n, "rows": rows, "prompt_ids": ids,
            "ranks": [compute_sample_rank(seed, i) for i in ids], "sample_source_indices": _picks(rows, seed, n)}


def _dump(doc: dict) -> bytes:
    # Lone surrogates (in the refused vectors) become JSON's own \\udXXX escapes.
    return (json.dumps(doc, ensure_ascii=False, indent=1) + "\n").encode("utf-8", "backslashreplace")


def main() -> None:
    vectors = []
    for name, messages, prompt in PROMPT_ID_VECTORS:
        text = canonical_messages(messages) + "|" + (prompt or "")
        vectors.append({"name": name, "messages": messages, "prompt": prompt,
                        "hashed_text_utf8_hex": text.encode("utf-8").hex(),
                        "prompt_id": compute_prompt_id(messages, prompt)})
    refused = []
    for name, messages, prompt in REFUSED:
        try:
            compute_prompt_id(messages, prompt)
        except PromptIdError as exc:
            refused.append({"name": name, "messages": messages, "prompt": prompt, "reason": exc.reason})
        else:
            raise SystemExit(f"refused vector {name!r} was accepted")
    (ROOT / "schemas" / "prompt_id_vectors.json").write_bytes(_dump({
        "definition": (
            "prompt_id = lowercase hex sha256(utf8(canonical(messages) + '|' + prompt)). canonical(messages): "
            "null -> ''; else the JSON text of [{\"content\": content, \"role\": role}, ...] with no whitespace, "
            "characters as themselves except the escapes JSON requires (\\\" \\\\ \\b \\t \\n \\f \\r, other "
            "U+0000..U+001F as \\u00xx lowercase): JavaScript's JSON.stringify, Python's json.dumps(sort_keys=True, "
            "separators=(',', ':'), ensure_ascii=False). Keys other than role and content are left out. role, "
            "content and prompt must be strings (prompt may be null, not both sides) and well-formed Unicode: a lone "
            "surrogate in any of them is refused (check the strings themselves: JSON.stringify escapes it). "
            "A null side is ''; [] is '[]'. See schemas/prompt_id.py."
        ),
        "vectors": vectors,
        "refused": refused,
    }))
    (ROOT / "schemas" / "sample_vectors.json").write_bytes(_dump({
        "definition": (
            "rank = lowercase hex HMAC-SHA256(key = utf8(seed in base 10, '-' for negatives), message = "
            "ascii(prompt_id)). The sample is the n rows with the smallest (rank, source_index), listed by "
            "source_index; source_index is the row's position in 'rows'. See schemas/sample_rank.py."
        ),
        "ranks": [{"seed": s, "prompt_id": p, "rank": compute_sample_rank(int(s), p)} for s, p in RANK_VECTORS],
        "cases": _sample_cases(),
    }))


if __name__ == "__main__":
    main()
