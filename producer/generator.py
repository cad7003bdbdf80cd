"""Generate predictions for eval samples: batched, left-padded, without touching training.

:class:`Generator` turns :class:`~predstream.producer.sampler.Sample` objects into
:class:`Generation` results with any causal LM that has ``generate()`` (a
``transformers`` model) and its tokenizer:

* Prompt text: chat ``messages`` go through ``tokenizer.apply_chat_template(...,
  add_generation_prompt=True)`` when the tokenizer has a chat template, and are encoded
  without adding special tokens (the template has them). Without a template, messages are
  joined as ``"<role>: <content>"`` lines followed by ``"assistant: "`` (see
  :func:`join_messages`). A plain ``prompt`` is encoded as it is, with the tokenizer's
  special tokens. A prompt longer than the model's context minus ``max_new_tokens`` keeps
  its END (left truncation); a ``max_new_tokens`` that leaves no room in the context is a
  ``ValueError`` (:meth:`Generator.check_fits`, which the callback calls at train begin).
* Batches of ``batch_size`` prompts are LEFT-padded (the pad token, else EOS) with an
  attention mask, moved to ``model.device`` and generated under ``torch.inference_mode()``.
  The model is put in eval mode and given back in the mode it was in. Generation runs in a
  forked RNG, so the training's random streams are not disturbed; with ``seed`` set, the
  sampling RNG is seeded with it at the start of every :meth:`Generator.generate` call.
* Per sequence: ``prediction`` is the decoded new tokens (prompt excluded, special tokens
  skipped) up to the first EOS; ``completion_tokens`` counts the new tokens up to AND
  including the first EOS (all of them when none came); ``prompt_tokens`` the prompt's
  tokens without padding; ``generation_ms`` the batch's wall time divided by the number
  of sequences it produced.

Needs the ``train`` extra (torch). Nothing here assumes a particular model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

try:
    import torch
except ImportError as exc:  # pragma: no cover - exercised by tests/test_imports.py
    raise ImportError(
        f"producer.generator needs torch ({exc.name} is missing): pip install 'predstream[train]'"
    ) from exc

from predstream.schemas import MAX_TEXT_CHARS, GenerationSettings

from .sampler import Sample

__all__ = ["Generator", "Generation", "join_messages", "generation_settings"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Generation:
    """One generated sequence for one sample."""

    sample: Sample
    sequence_index: int
    prediction: str
    prompt_tokens: int
    completion_tokens: int
    generation_ms: float


def generation_settings(settings: GenerationSettings | None = None, **overrides: Any) -> GenerationSettings:
    """``GenerationSettings`` from defaults (``max_new_tokens=64``, greedy) plus overrides."""
    base = settings.model_dump() if settings is not None else {"max_new_tokens": 64}
    base.update({k: v for k, v in overrides.items() if v is not None})
    return GenerationSettings(**base)


def join_messages(messages: Sequence[Mapping[str, str]]) -> str:
    """The fallback prompt for a tokenizer without a chat template: one ``"role: content"``
    line per message, then ``"assistant: "``."""
    return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "


class Generator:
    """Batched generation with fixed settings.

    ``Generator(max_new_tokens=32, batch_size=16)`` or ``Generator(GenerationSettings(...))``;
    keyword overrides win over ``settings``.
    """

    def __init__(self, settings: GenerationSettings | None = None, *, batch_size: int = 32, **overrides: Any) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        self.settings = generation_settings(settings, **overrides)
        self.batch_size = batch_size

    # -- prompts ------------------------------------------------------------------

    def render(self, tokenizer: Any, sample: Sample) -> tuple[str, bool]:
        """The prompt text of ``sample`` and whether it came from the chat template."""
        messages = sample.messages_list()
        if messages is None:
            return sample.prompt or "", False
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            return text, True
        return join_messages(messages), False

    def check_fits(self, model: Any) -> None:
        """Raise ``ValueError`` (one clear line) when ``max_new_tokens`` leaves no room for a
        prompt in the model's context (the model would fail at every generation)."""
        _prompt_limit(model, self.settings.max_new_tokens)

    def encode(self, tokenizer: Any, sample: Sample, limit: int | None = None) -> list[int]:
        """The prompt's token ids (at most ``limit``, keeping the end)."""
        text, templated = self.render(tokenizer, sample)
        ids = list(tokenizer(text, add_special_tokens=not templated)["input_ids"])
        if not ids:  # an empty prompt: start from BOS (or EOS) so there is something to continue
            start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
            ids = [start if start is not None else 0]
        if limit is not None and len(ids) > limit:
            _log.warning(
                "prompt of sample %d (prompt_id %s) has %d tokens; keeping the last %d",
                sample.sample_index, sample.prompt_id[:12], len(ids), limit,
            )
            ids = ids[-limit:]
        return ids

    # -- generation ---------------------------------------------------------------

    def generate(
        self, model: Any, tokenizer: Any, samples: Sequence[Sample], *, pad_to: int | None = None
    ) -> list[Generation]:
        """Generate for ``samples``; returns one :class:`Generation` per returned sequence,
        in sample order then ``sequence_index`` order.

        ``pad_to``: run as many batches as ``pad_to`` samples would need, repeating a
        sample whose results are dropped (every rank of a sharded model must run the same
        number of forward passes). With no samples and no ``pad_to``, nothing runs.
        """
        if not samples:
            if not pad_to:
                return []
            raise ValueError("pad_to needs at least one sample to repeat")
        device = _device(model)
        eos_ids = _eos_ids(model, tokenizer)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (min(eos_ids) if eos_ids else 0)
        limit = _prompt_limit(model, self.settings.max_new_tokens)
        encoded = [self.encode(tokenizer, s, limit) for s in samples]
        real = len(encoded)
        if pad_to and pad_to > real:
            encoded += [encoded[-1]] * (pad_to - real)
        kwargs = self._generate_kwargs(pad_id)
        was_training = model.training
        results: list[Generation] = []
        fork_devices = [device] if device.type == "cuda" else []
        try:
            model.eval()
            with torch.random.fork_rng(devices=fork_devices), torch.inference_mode():
                if self.settings.seed is not None:
                    torch.manual_seed(self.settings.seed)
                for start in range(0, len(encoded), self.batch_size):
                    batch = encoded[start : start + self.batch_size]
                    outputs = self._run_batch(model, batch, pad_id, device, kwargs)
                    for offset, seq_index, new_tokens, elapsed in outputs:
                        i = start + offset
                        if i >= real:
                            continue  # padding batch of a distributed run
                        results.append(self._result(tokenizer, samples[i], batch[offset], seq_index, new_tokens,
                                                    eos_ids, elapsed))
        finally:
            model.train(was_training)
        return results

    def _generate_kwargs(self, pad_id: int) -> dict[str, Any]:
        s = self.settings
        kwargs: dict[str, Any] = {
            "max_new_tokens": s.max_new_tokens,
            "do_sample": s.do_sample,
            "num_beams": s.num_beams,
            "num_return_sequences": s.num_return_sequences,
            "pad_token_id": pad_id,
        }
        if s.do_sample:
            for name in ("temperature", "top_p", "top_k"):
                if getattr(s, name) is not None:
                    kwargs[name] = getattr(s, name)
        return kwargs

    def _run_batch(
        self, model: Any, batch: list[list[int]], pad_id: int, device: Any, kwargs: dict[str, Any]
    ) -> list[tuple[int, int, list[int], float]]:
        width = max(len(ids) for ids in batch)
        input_ids = torch.tensor([[pad_id] * (width - len(ids)) + ids for ids in batch], device=device)
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in batch], device=device)
        t0 = time.perf_counter()
        out = model.generate(input_ids=input_ids, attention_mask=mask, **kwargs)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elapsed_ms = (time.perf_counter() - t0) * 1000.0
        new = out[:, width:].tolist()
        per_seq_ms = elapsed_ms / max(len(new), 1)
        n_ret = self.settings.num_return_sequences
        return [(row // n_ret, row % n_ret, tokens, per_seq_ms) for row, tokens in enumerate(new)]

    def _result(
        self,
        tokenizer: Any,
        sample: Sample,
        prompt_ids: list[int],
        seq_index: int,
        new_tokens: list[int],
        eos_ids: set[int],
        elapsed_ms: float,
    ) -> Generation:
        count = len(new_tokens)
        for pos, tok in enumerate(new_tokens):
            if tok in eos_ids:
                count = pos + 1
                break
        text = tokenizer.decode(new_tokens[:count], skip_special_tokens=True)
        if "\x00" in text:
            text = text.replace("\x00", "\ufffd")
        if len(text) > MAX_TEXT_CHARS:
            _log.warning("prediction for prompt_id %s is %d characters; cut to %d", sample.prompt_id[:12], len(text),
                         MAX_TEXT_CHARS)
            text = text[:MAX_TEXT_CHARS]
        return Generation(
            sample=sample,
            sequence_index=seq_index,
            prediction=text,
            prompt_tokens=len(prompt_ids),
            completion_tokens=count,
            generation_ms=round(elapsed_ms, 3),
        )


def _device(model: Any) -> torch.device:
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    try:
        found: torch.device = next(model.parameters()).device
        return found
    except (AttributeError, StopIteration):
        return torch.device("cpu")


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    gen_config = getattr(model, "generation_config", None)
    for value in (getattr(gen_config, "eos_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        if value is None:
            continue
        ids.update(value if isinstance(value, (list, tuple, set)) else [value])
    return {int(i) for i in ids}


def _context(model: Any) -> int | None:
    config = getattr(model, "config", None)
    context = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    return context if isinstance(context, int) else None


def _prompt_limit(model: Any, max_new_tokens: int) -> int | None:
    context = _context(model)
    if context is None:
        return None
    if context - max_new_tokens < 1:
        raise ValueError(
            f"max_new_tokens={max_new_tokens} does not fit the model's context of {context} positions "
            f"(its config's max_position_embeddings): give max_new_tokens below {context}, leaving room for the prompt"
        )
    return context - max_new_tokens
