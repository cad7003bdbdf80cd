"""Batched generation: left padding is invisible, the model's mode survives, counts add up."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from predstream.producer.generator import Generator, join_messages  # noqa: E402
from predstream.producer.sampler import sample_dataset  # noqa: E402
from predstream.tinymodel import build_model, build_tokenizer  # noqa: E402

pytestmark = pytest.mark.train

_PROMPTS = ["1+2=", "12+34=", "hello, world", "x", "99+1=", "a much longer prompt than the rest"]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="module")
def model(tokenizer):
    # A wide initialisation gives an untrained model varied, prompt-dependent output.
    return build_model(tokenizer, seed=1, init_std=0.3)


@pytest.fixture(scope="module")
def samples():
    rows = [{"prompt": p} for p in _PROMPTS] + [{"messages": [{"role": "user", "content": "hi"}]}]
    return sample_dataset(rows, len(rows), seed=0)


def test_left_padded_batch_gives_the_same_greedy_output_as_one_at_a_time(model, tokenizer, samples):
    batched = Generator(max_new_tokens=8, batch_size=len(samples)).generate(model, tokenizer, samples)
    single = Generator(max_new_tokens=8, batch_size=1).generate(model, tokenizer, samples)
    assert [g.prediction for g in batched] == [g.prediction for g in single]
    assert [(g.prompt_tokens, g.completion_tokens) for g in batched] == [
        (g.prompt_tokens, g.completion_tokens) for g in single
    ]
    assert len({g.prediction for g in batched}) > 1, "the model should answer prompts differently"
    assert [g.sample for g in batched] == list(samples)


def test_generation_restores_the_models_mode_and_leaves_training_rng_alone(model, tokenizer, samples):
    gen = Generator(max_new_tokens=4, do_sample=True, top_k=5)
    for mode in (True, False):
        model.train(mode)
        torch.manual_seed(123)
        expected_next = torch.rand(1)
        torch.manual_seed(123)
        gen.generate(model, tokenizer, samples[:2])
        assert model.training is mode
        assert torch.equal(torch.rand(1), expected_next), "sampling must not consume the training RNG"
    model.eval()


def test_seeded_sampling_repeats_itself(model, tokenizer, samples):
    gen = Generator(max_new_tokens=6, do_sample=True, temperature=1.0, seed=5)
    first = [g.prediction for g in gen.generate(model, tokenizer, samples)]
    assert first == [g.prediction for g in gen.generate(model, tokenizer, samples)]


def test_token_counts_and_prompt_rendering(model, tokenizer, samples):
    results = Generator(max_new_tokens=5, num_return_sequences=2, do_sample=True, seed=0).generate(
        model, tokenizer, samples
    )
    assert len(results) == 2 * len(samples)
    assert [(r.sample.sample_index, r.sequence_index) for r in results[:4]] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    for r in results:
        if r.sample.prompt is not None:
            assert r.prompt_tokens == len(r.sample.prompt)  # one token per character
        else:
            assert r.prompt_tokens == len(join_messages(r.sample.messages_list()))
        assert 1 <= r.completion_tokens <= 5
        assert len(r.prediction) <= r.completion_tokens
        assert r.generation_ms > 0


def test_chat_template_is_used_when_the_tokenizer_has_one(samples):
    tok = build_tokenizer(chat_template=True)
    chat = [s for s in samples if s.messages is not None][0]
    text, templated = Generator().render(tok, chat)
    assert templated and text == "user: hi\nassistant: "


class _ScriptedLM(torch.nn.Module):
    """A stand-in model whose generate() appends a fixed continuation (EOS = 2, PAD = 0)."""

    def __init__(self, continuation):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.continuation = continuation
        self.seen = None

    def generate(self, input_ids, attention_mask, **kwargs):
        self.seen = (input_ids.clone(), attention_mask.clone(), kwargs)
        tail = torch.tensor([self.continuation] * input_ids.shape[0])
        return torch.cat([input_ids, tail], dim=1)


def test_completion_stops_at_the_first_eos_and_excludes_prompt_and_padding(tokenizer, samples):
    digits = tokenizer.convert_tokens_to_ids(["4", "6"])
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    lm = _ScriptedLM([*digits, eos, pad, pad, eos])
    two = [samples[0], samples[1]]  # "1+2=" (4 tokens) and "12+34=" (6 tokens)
    results = Generator(max_new_tokens=6).generate(lm, tokenizer, two)
    assert [(r.prediction, r.completion_tokens, r.prompt_tokens) for r in results] == [("46", 3, 4), ("46", 3, 6)]
    input_ids, mask, kwargs = lm.seen
    assert input_ids[0, :2].tolist() == [pad, pad] and mask[0].tolist() == [0, 0, 1, 1, 1, 1]  # LEFT padding
    assert kwargs["pad_token_id"] == pad and kwargs["max_new_tokens"] == 6 and kwargs["do_sample"] is False
