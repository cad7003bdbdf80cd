"""Benchmark 5: batched vs one-at-a-time generation with the tiny model.

The tiny GPT-2 of :mod:`predstream.tinymodel` (built from a config, random weights: no
download) and :class:`predstream.producer.generator.Generator` generate ``size.gen_new_tokens``
greedy tokens for ``size.gen_prompts`` addition prompts, once with ``batch_size=32``
(left-padded) and once with ``batch_size=1``, after a warm-up call of each. The figure is
the ratio of predictions per second. On the CPU always; on the GPU too when torch sees one.
"""

from __future__ import annotations

import time
from typing import Any

from ._common import BenchContext, BenchResult

NAME = "generation"
TITLE = "5. Generation: batch 32 vs one at a time"


def run(ctx: BenchContext) -> BenchResult:
    try:
        import torch

        from predstream.producer.generator import Generator
        from predstream.producer.sampler import Sample
        from predstream.schemas import compute_prompt_id
        from predstream.tinymodel import addition_rows, build_model, build_tokenizer
    except ImportError as exc:
        raise RuntimeError(f"the generation benchmark needs the train extra: {exc}") from None

    res = BenchResult(NAME, TITLE)
    size = ctx.size
    tokenizer = build_tokenizer()
    rows = addition_rows(size.gen_prompts, seed=5)
    samples = [Sample(sample_index=i, source_index=i, prompt_id=compute_prompt_id(None, r["prompt"]),
                      prompt=r["prompt"],
                      messages=None, ground_truth=r["ground_truth"], sample_source_id="bench")
               for i, r in enumerate(rows)]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        model = build_model(tokenizer).to(device)
        timings: dict[int, dict[str, Any]] = {}
        for batch in (32, 1):
            gen = Generator(max_new_tokens=size.gen_new_tokens, batch_size=batch)
            gen.generate(model, tokenizer, samples[:batch])  # warm-up
            t0 = time.perf_counter()
            out = gen.generate(model, tokenizer, samples)
            seconds = time.perf_counter() - t0
            timings[batch] = {"seconds": seconds, "predictions_per_s": len(out) / seconds,
                              "tokens_per_s": sum(g.completion_tokens for g in out) / seconds}
        ratio = timings[32]["predictions_per_s"] / timings[1]["predictions_per_s"]
        name = "GPU" if device == "cuda" else "CPU"
        res.add(f"{name}: batch 32", timings[32]["predictions_per_s"], "predictions/s")
        res.add(f"{name}: one at a time", timings[1]["predictions_per_s"], "predictions/s")
        res.add(f"{name}: batch 32 / one at a time", ratio, "x").check(">=", 8.0)
        res.details[device] = {"timings": timings,
                               "device_name": torch.cuda.get_device_name(0) if device == "cuda" else "cpu"}
    if "cuda" not in devices:
        res.details["gpu"] = "no GPU visible to torch on this machine: CPU only"
    res.details.update(prompts=size.gen_prompts, max_new_tokens=size.gen_new_tokens,
                       torch_threads=torch.get_num_threads(),
                       parameters=sum(p.numel() for p in model.parameters()))
    return res
