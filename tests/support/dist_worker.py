"""One rank of the two-process CPU runs in tests/test_distributed.py (gloo backend).

Usage: python tests/support/dist_worker.py recorder|trainer BOOTSTRAP TOPIC SPOOL_DIR WORK_DIR
with MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK set as torchrun sets them.
Writes WORK_DIR/rank<r>.json with what this rank published.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import torch.distributed as dist

from predstream.producer import (
    Generator,
    PredictionRecorder,
    ProducerSettings,
    Publisher,
    TrainingPredictionsCallback,
    sample_dataset,
)
from predstream.tinymodel import TokenizedTask, addition_rows, build_model, build_tokenizer, collate

N_SAMPLES = 7  # odd on purpose: rank 0 gets 4 prompts, rank 1 gets 3
STEPS = (5, 10)


def eval_rows() -> list[dict]:
    return addition_rows(50, seed=3)


def samples():
    return sample_dataset(eval_rows(), N_SAMPLES, seed=4, dataset_id="addition-eval")


def main() -> None:
    mode, bootstrap, topic, spool_dir, work = sys.argv[1:6]
    logging.basicConfig(level=logging.INFO, format=f"rank{os.environ['RANK']} %(name)s %(message)s")
    settings = ProducerSettings(kafka_bootstrap=bootstrap, topic=topic, spool_dir=spool_dir, message_timeout_ms=5000)
    tok = build_tokenizer()
    model = build_model(tok, seed=0)
    if mode == "recorder":
        dist.init_process_group("gloo")
        rank = dist.get_rank()
        publisher = Publisher(settings, job_id="dist-job")
        recorder = PredictionRecorder(publisher, Generator(max_new_tokens=3, batch_size=2), samples(), "dist-job")
        events = []
        for step in STEPS:
            events += recorder.record(model, tok, step=step, epoch=step / 10)
        report = publisher.close()
        dist.barrier()
        dist.destroy_process_group()
        job_id, attempt = "dist-job", recorder.attempt
    else:
        from transformers import Trainer, TrainingArguments

        callback = TrainingPredictionsCallback(
            dataset=eval_rows(), dataset_id="addition-eval", n_samples=N_SAMPLES, seed=4,
            max_new_tokens=3, batch_size=2, settings=settings, raise_errors=True,
        )
        args = TrainingArguments(
            output_dir=str(Path(work) / "run"), max_steps=10, per_device_train_batch_size=16,
            per_device_eval_batch_size=16, eval_strategy="steps", eval_steps=5, save_strategy="no",
            logging_strategy="no", report_to="none", use_cpu=True, remove_unused_columns=False,
            dataloader_num_workers=0, ddp_backend="gloo", seed=0,
        )
        trainer = Trainer(
            model=model, args=args, train_dataset=TokenizedTask(addition_rows(400, seed=1), tok),
            eval_dataset=TokenizedTask(addition_rows(16, seed=2), tok),
            data_collator=lambda b: collate(b, tok.pad_token_id), processing_class=tok, callbacks=[callback],
        )
        trainer.train()
        rank = dist.get_rank()
        report, events, job_id, attempt = callback.last_report, [], callback.job_id, callback.attempt
    out = {
        "rank": rank,
        "world_size": int(os.environ["WORLD_SIZE"]),
        "job_id": job_id,
        "attempt": attempt,
        "event_ids": [e.event_id for e in events],
        "delivered": report.delivered,
        "spooled": report.spooled,
    }
    Path(work, f"rank{rank}.json").write_text(json.dumps(out))


if __name__ == "__main__":
    main()
