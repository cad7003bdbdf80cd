"""A training script as a user writes it: ``trainer.train()`` then ``trainer.evaluate()``,
settings from the environment only. Run by ``test_journeys_producer.py``::

    python tests/support/train_then_evaluate.py OUTPUT_DIR

Prints ``evaluated <monotonic time>`` when ``evaluate()`` returned, then exits without
closing anything.
"""

from __future__ import annotations

import logging
import sys
import time


def main() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    from transformers import Trainer, TrainingArguments

    from predstream.producer import TrainingPredictionsCallback
    from predstream.tinymodel import TokenizedTask, addition_rows, build_model, build_tokenizer, collate

    tok = build_tokenizer()
    args = TrainingArguments(
        output_dir=sys.argv[1], max_steps=4, per_device_train_batch_size=16, per_device_eval_batch_size=16,
        eval_strategy="no", save_strategy="no", logging_strategy="no", report_to="none",
        use_cpu=True, remove_unused_columns=False, dataloader_num_workers=0, seed=0, disable_tqdm=True,
    )
    callback = TrainingPredictionsCallback(dataset=addition_rows(40, seed=3), n_samples=3, max_new_tokens=3,
                                           every_n_steps=3)  # step 3 in training; evaluate() records step 4
    trainer = Trainer(
        model=build_model(tok, seed=0), args=args, processing_class=tok, callbacks=[callback],
        train_dataset=TokenizedTask(addition_rows(200, seed=1), tok),
        eval_dataset=TokenizedTask(addition_rows(16, seed=2), tok),
        data_collator=lambda batch: collate(batch, tok.pad_token_id),
    )
    trainer.train()
    trainer.evaluate()
    print(f"evaluated {time.monotonic()}", flush=True)


if __name__ == "__main__":
    main()
