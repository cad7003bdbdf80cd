"""One prompt_id definition: the sampler, PredictionEvent.create() and a consumer that
recomputes the id from a decoded event all hash exactly what the event carries."""

from __future__ import annotations

import hashlib
import json
from importlib import resources

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from predstream.producer.sampler import sample_dataset
from predstream.schemas import Decoder, InvalidEventError, PredictionEvent, SingleObjectEncoder, compute_prompt_id
from predstream.schemas.prompt_id import PromptIdError

_VECTORS = json.loads(resources.files("predstream.schemas").joinpath("prompt_id_vectors.json")
                      .read_text(encoding="utf-8"))


@pytest.mark.parametrize("vector", _VECTORS["refused"], ids=lambda v: v["name"])
def test_what_has_no_hashed_form_is_refused_with_its_reason(vector):
    with pytest.raises(PromptIdError) as caught:
        compute_prompt_id(vector["messages"], vector["prompt"])
    assert caught.value.reason == vector["reason"]
    assert isinstance(caught.value, ValueError)


def test_a_lone_surrogate_is_refused_with_a_message_that_says_where():
    with pytest.raises(PromptIdError, match=r"message 1 content holds a lone surrogate \(U\+D800\)"):
        compute_prompt_id([{"role": "user", "content": "ok"}, {"role": "user", "content": "bad \ud800"}], None)
    with pytest.raises(PromptIdError, match=r"the prompt holds a lone surrogate \(U\+DC00\)"):
        compute_prompt_id(None, "\udc00")


def test_a_number_where_text_belongs_is_refused_not_hashed():
    with pytest.raises(PromptIdError, match="got a string and a number"):
        compute_prompt_id([{"role": "user", "content": 3}], None)


_ROWS = [
    {"messages": [{"role": "user", "content": "2+2?", "name": "ann"}, {"role": "assistant", "content": "4"}]},
    {"messages": [], "prompt": "empty messages count as none"},
    {"messages": [{"role": "system", "content": "é \u2028 😀"}, {"role": "user", "content": "q"}], "prompt": "p"},
    {"prompt": "plain"},
]


def _event_fields(s) -> dict:
    return dict(job_id="j", epoch=0.0, step=1, sample_index=s.sample_index, prompt=s.prompt,
                messages=s.messages_list(), ground_truth=s.ground_truth, prediction="x",
                source_index=s.source_index, sample_source=s.sample_source, sample_source_id=s.sample_source_id)


def test_sampler_event_and_consumer_recompute_the_same_id():
    decoder, encoder = Decoder(), SingleObjectEncoder()
    for s in sample_dataset(_ROWS, len(_ROWS), seed=0):
        computed_by_create = PredictionEvent.create(**_event_fields(s))
        assert computed_by_create.prompt_id == s.prompt_id
        read_back = decoder.decode(encoder.encode(PredictionEvent.create(**_event_fields(s), prompt_id=s.prompt_id)))
        assert compute_prompt_id(read_back.messages_as_dicts(), read_back.prompt) == s.prompt_id
        assert compute_prompt_id(read_back.messages, read_back.prompt) == s.prompt_id  # ChatMessage objects too
    # the extra key 'name' and the trailing answer are not part of the prompt the event carries
    first = sample_dataset(_ROWS[:1], 1)[0]
    assert first.prompt_id == compute_prompt_id([{"role": "user", "content": "2+2?"}], None)


def test_an_event_carrying_an_empty_list_is_hashed_with_it():
    event = PredictionEvent.create(**{**_event_fields(sample_dataset(_ROWS[1:2], 1)[0]), "messages": []})
    assert event.prompt_id == compute_prompt_id([], event.prompt) != compute_prompt_id(None, event.prompt)


def test_create_names_the_reason_for_a_prompt_without_a_hashed_form():
    fields = _event_fields(sample_dataset(_ROWS[3:], 1)[0])
    with pytest.raises(InvalidEventError) as caught:
        PredictionEvent.create(**{**fields, "prompt": "bad \ud800"})
    assert caught.value.reason == "invalid-utf8:prompt"


_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.fixed_dictionaries({"role": _TEXT, "content": _TEXT}), max_size=4), st.none() | _TEXT)
def test_lists_of_role_content_strings_hash_exactly_as_in_0_1(messages, prompt):
    """0.1 hashed json.dumps(messages, sort_keys=True, separators=(",", ":"), ensure_ascii=False):
    events already on a topic keep their ids."""
    text = json.dumps(messages, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "|" + (prompt or "")
    assert compute_prompt_id(messages, prompt) == hashlib.sha256(text.encode("utf-8")).hexdigest()
