"""Samples stay put as the eval set grows: rows are ranked by HMAC-SHA256(seed, prompt_id)."""

from __future__ import annotations

import heapq
import json
from importlib import resources
from math import comb

import pytest

from predstream.producer.sampler import sample_dataset
from predstream.schemas import compute_prompt_id
from predstream.schemas.sample_rank import compute_sample_rank

_DOC = json.loads(resources.files("predstream.schemas").joinpath("sample_vectors.json").read_text(encoding="utf-8"))


def test_every_rank_vector_is_reproduced():
    for v in _DOC["ranks"]:
        assert compute_sample_rank(int(v["seed"]), v["prompt_id"]) == v["rank"], v


@pytest.mark.parametrize("case", _DOC["cases"], ids=lambda c: c["name"][:40])
def test_the_sampler_picks_what_each_vector_says(case):
    picked = sample_dataset(case["rows"], case["n"], seed=case["seed"], dataset_id="vectors")
    assert [s.source_index for s in picked] == case["sample_source_indices"]
    assert [s.prompt_id for s in picked] == [case["prompt_ids"][i] for i in case["sample_source_indices"]]
    assert [s.sample_index for s in picked] == list(range(len(picked)))


def test_a_seed_must_be_an_integer():
    with pytest.raises(TypeError):
        compute_sample_rank("7", "0" * 64)  # type: ignore[arg-type]


def _picks(ids: list[str], seed: int, n: int) -> set[int]:
    return {i for _, i in heapq.nsmallest(n, ((compute_sample_rank(seed, p), i) for i, p in enumerate(ids)))}


def test_appending_100_rows_to_1000_keeps_nearly_every_pick():
    """Expected value: the new sample is the 8 smallest ranks of 1,100 independent uniform
    ranks; the number of the 100 new rows among them is hypergeometric with mean
    8 * 100 / 1100 = 0.73, so 7.27 of 8 picks are kept on average, and at least 7 with
    probability P(k <= 1) = 0.84. Old rows never enter the sample: only new rows displace."""
    ids = [compute_prompt_id(None, f"question {i}: what is {i} + {i}?") for i in range(1100)]
    seeds = range(300)
    kept = []
    for seed in seeds:
        before, after = _picks(ids[:1000], seed, 8), _picks(ids, seed, 8)
        assert {i for i in after if i < 1000} <= before  # no old row that was left out comes in
        assert len(before - after) == len({i for i in after if i >= 1000})  # each loss is a new row's place
        kept.append(len(before & after))
    total, new, n = 1100, 100, 8
    p_at_most_one_new = sum(comb(new, k) * comb(total - new, n - k) for k in (0, 1)) / comb(total, n)
    mean = sum(kept) / len(kept)
    assert abs(mean - (n - n * new / total)) < 0.2, mean  # 4 standard errors over 300 seeds
    assert abs(sum(k >= 7 for k in kept) / len(kept) - p_at_most_one_new) < 0.08
    assert sorted(kept)[len(kept) // 2] >= 7  # the typical seed keeps at least 7 of 8


def test_sample_dataset_keeps_its_picks_when_the_file_grows(tmp_path):
    path = tmp_path / "eval.jsonl"
    rows = [{"prompt": f"question {i}", "answer": str(i)} for i in range(1100)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows[:1000]))
    before = {s.prompt_id for s in sample_dataset(path, 8, seed=7)}
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    after = sample_dataset(path, 8, seed=7)
    ids = [compute_prompt_id(None, r["prompt"]) for r in rows]
    assert {s.prompt_id for s in after} == {ids[i] for i in _picks(ids, 7, 8)}
    new_ones = {s.prompt_id for s in after if s.source_index >= 1000}
    assert len(before - {s.prompt_id for s in after}) == len(new_ones)  # only a new row takes a pick's place


def test_duplicate_prompts_share_a_rank_and_are_picked_together():
    rows = [{"prompt": "same"}] + [{"prompt": f"other {i}"} for i in range(30)] + [{"prompt": "same"}]
    seed = next(s for s in range(500) if min(_picks([compute_prompt_id(None, r["prompt"]) for r in rows], s, 1)) == 0)
    picked = sample_dataset(rows, 2, seed=seed)
    assert [s.source_index for s in picked] == [0, 31] and picked[0].prompt_id == picked[1].prompt_id
    assert [s.source_index for s in sample_dataset(rows, 1, seed=seed)] == [0]  # ties: lower source_index
