"""A training script as a new user writes it: a ``transformers.Trainer`` with the callback,
settings from the environment only. Run by ``test_journeys_newuser.py``::

    python newuser_train.py '{"output_dir": "out", "dataset": "eval.jsonl", ...}'

The JSON object holds ``output_dir``, optional ``max_steps`` (4), and the callback's keyword
arguments (``every_n_steps`` defaults to 2, ``max_new_tokens`` to 3). Prints
``job <job id>`` and ``report <counts>`` when ``trainer.train()`` returned.
"""

from __future__ import annotations

import json
import logging
import sys


def main() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    from transformers import Trainer, TrainingArguments

    from predstream import TrainingPredictionsCallback
    from predstream.tinymodel import TokenizedTask, addition_rows, build_model, build_tokenizer, collate

    opts = json.loads(sys.argv[1])
    tok = build_tokenizer()
    args = TrainingArguments(
        output_dir=opts.pop("output_dir"), max_steps=opts.pop("max_steps", 4), per_device_train_batch_size=16,
        eval_strategy="no", save_strategy="no", logging_strategy="no", report_to="none", use_cpu=True,
        remove_unused_columns=False, dataloader_num_workers=0, seed=0, disable_tqdm=True,
    )
    callback = TrainingPredictionsCallback(**{"every_n_steps": 2, "max_new_tokens": 3, **opts})
    trainer = Trainer(
        model=build_model(tok, seed=0), args=args, processing_class=tok, callbacks=[callback],
        train_dataset=TokenizedTask(addition_rows(200, seed=1), tok),
        data_collator=lambda batch: collate(batch, tok.pad_token_id),
    )
    trainer.train()
    print(f"job {callback.job_id}", flush=True)
    print(f"report {callback.last_report}", flush=True)


if __name__ == "__main__":
    main()
