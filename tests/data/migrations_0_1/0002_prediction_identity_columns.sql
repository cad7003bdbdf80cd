-- Phase 1: stable identity (the seed note). Additive and nullable, so old rows and
-- `select *` readers keep working.
ALTER TABLE training_predictions
    ADD COLUMN IF NOT EXISTS prompt_id        TEXT,
    ADD COLUMN IF NOT EXISTS source_index     INTEGER,
    ADD COLUMN IF NOT EXISTS sample_source    TEXT,
    ADD COLUMN IF NOT EXISTS sample_source_id TEXT;

CREATE INDEX IF NOT EXISTS idx_training_predictions_job_prompt_id
    ON training_predictions (job_id, prompt_id)
    WHERE prompt_id IS NOT NULL;

CREATE INDEX IF NOT EXISTS idx_training_predictions_job_source
    ON training_predictions (job_id, source_index)
    WHERE source_index IS NOT NULL;
