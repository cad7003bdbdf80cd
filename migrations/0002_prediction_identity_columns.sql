-- Phase 1: stable identity (the seed note). Additive and nullable, so old rows and
-- `select *` readers keep working.
ALTER TABLE training_predictions
    ADD COLUMN IF NOT EXISTS prompt_id        TEXT,
    ADD COLUMN IF NOT EXISTS source_index     INTEGER,
    ADD COLUMN IF NOT EXISTS sample_source    TEXT,
    ADD COLUMN IF NOT EXISTS sample_source_id TEXT;

-- The partial indexes idx_training_predictions_job_prompt_id (job_id, prompt_id) and
-- idx_training_predictions_job_source (job_id, source_index) are built by 0007, concurrently.
-- (0.1 built them here; migrate.py accepts the 0.1 checksum of this file.)
