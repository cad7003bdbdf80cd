"""A tiny causal LM and a synthetic task, built locally: no model hub, no downloads.

Tests and the demo need a model whose predictions visibly change during a short CPU
training run. This module builds one from a config:

* :func:`build_tokenizer` — a character-level ``tokenizers`` WordLevel vocabulary
  (printable ASCII plus ``[PAD] [BOS] [EOS] [UNK]``) wrapped in
  ``PreTrainedTokenizerFast``, with a pad token and LEFT padding (what batched generation
  needs). ``chat_template=True`` adds a small "role: content" template.
* :func:`build_model` — a GPT-2 of a few layers, 128 wide (about 0.8M parameters with 4
  layers), randomly initialised from a seed. ``config._name_or_path`` is
  ``"predstream/tiny-gpt2"``, which becomes the events' ``model_name``.
* :func:`addition_rows` — the synthetic task: ``{"prompt": "12+34=", "ground_truth": "46"}``.
  2-digit addition is learnt slowly enough that predictions change from step to step.
* :func:`TokenizedTask` / :func:`collate` — training examples ``prompt + answer + [EOS]``
  for the ``transformers.Trainer`` (loss on the answer only, right padding).

Nothing in the library assumes this model; real users pass their own.
Needs the ``train`` extra (torch, transformers, tokenizers).
"""

from __future__ import annotations

import random
import string
from collections.abc import Sequence
from typing import Any

try:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
except ImportError as exc:  # pragma: no cover - exercised by tests/test_imports.py
    raise ImportError(
        f"predstream.tinymodel needs torch, transformers and tokenizers ({exc.name} is missing): "
        "pip install 'predstream[train]'"
    ) from exc

__all__ = [
    "MODEL_NAME",
    "SPECIAL_TOKENS",
    "CHAT_TEMPLATE",
    "build_tokenizer",
    "build_model",
    "addition_rows",
    "TokenizedTask",
    "collate",
]

MODEL_NAME = "predstream/tiny-gpt2"
SPECIAL_TOKENS = ("[PAD]", "[BOS]", "[EOS]", "[UNK]")
#: The optional chat template: one "role: content" line per message, then "assistant: ".
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)
_CHARS = [c for c in string.printable if c not in "\t\r\x0b\x0c"]


def build_tokenizer(*, chat_template: bool = False) -> PreTrainedTokenizerFast:
    """A character-level tokenizer over printable ASCII, left padding, ``[PAD]`` pad token."""
    vocab = {tok: i for i, tok in enumerate([*SPECIAL_TOKENS, *_CHARS])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    core.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="[PAD]",
        bos_token="[BOS]",
        eos_token="[EOS]",
        unk_token="[UNK]",
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    if chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_model(
    tokenizer: PreTrainedTokenizerFast,
    *,
    n_layer: int = 2,
    n_embd: int = 128,
    n_head: int = 4,
    n_positions: int = 128,
    seed: int = 0,
    init_std: float = 0.02,
) -> GPT2LMHeadModel:
    """A randomly initialised GPT-2 sized for ``tokenizer``; same ``seed``, same weights.

    A larger ``init_std`` (e.g. 0.5) gives an untrained model varied, prompt-dependent
    output, which generation tests want.
    """
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=init_std,
    )
    config._name_or_path = MODEL_NAME
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def addition_rows(n: int, *, seed: int = 0, digits: int = 2) -> list[dict[str, str]]:
    """``n`` rows of the addition task: ``{"prompt": "a+b=", "ground_truth": str(a+b)}``.

    Operands are drawn uniformly from ``0 .. 10**digits - 1`` (no zero padding, so prompt
    lengths vary and batched generation really pads).
    """
    rng = random.Random(seed)
    top = 10**digits - 1
    rows = []
    for _ in range(n):
        a, b = rng.randint(0, top), rng.randint(0, top)
        rows.append({"prompt": f"{a}+{b}=", "ground_truth": str(a + b)})
    return rows


class TokenizedTask(torch.utils.data.Dataset[dict[str, Any]]):
    """Training examples ``prompt + ground_truth + [EOS]``; labels mask the prompt."""

    def __init__(self, rows: Sequence[dict[str, str]], tokenizer: PreTrainedTokenizerFast) -> None:
        self._items = []
        for row in rows:
            prompt = tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]
            answer = tokenizer(row["ground_truth"], add_special_tokens=False)["input_ids"]
            ids = prompt + answer + [tokenizer.eos_token_id]
            labels = [-100] * len(prompt) + answer + [tokenizer.eos_token_id]
            self._items.append((ids, labels))
        self.pad_token_id = tokenizer.pad_token_id

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        ids, labels = self._items[i]
        return {"input_ids": ids, "labels": labels}


def collate(batch: Sequence[dict[str, Any]], pad_token_id: int = 0) -> dict[str, torch.Tensor]:
    """Right-pad a batch of :class:`TokenizedTask` items (pads get label -100, mask 0)."""
    width = max(len(item["input_ids"]) for item in batch)
    ids, labels, mask = [], [], []
    for item in batch:
        pad = width - len(item["input_ids"])
        ids.append(item["input_ids"] + [pad_token_id] * pad)
        labels.append(item["labels"] + [-100] * pad)
        mask.append([1] * len(item["input_ids"]) + [0] * pad)
    return {
        "input_ids": torch.tensor(ids),
        "labels": torch.tensor(labels),
        "attention_mask": torch.tensor(mask),
    }
