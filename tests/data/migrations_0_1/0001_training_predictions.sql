-- The table as the original direct-to-database writer created it.
-- Readers rely on these columns; later migrations only add to it.
CREATE TABLE IF NOT EXISTS training_predictions (
    id            BIGSERIAL PRIMARY KEY,
    job_id        TEXT        NOT NULL,
    epoch         INTEGER     NOT NULL DEFAULT 0,
    step          INTEGER     NOT NULL,
    sample_index  INTEGER     NOT NULL,
    prompt        TEXT        NOT NULL,
    ground_truth  TEXT,
    prediction    TEXT        NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS idx_training_predictions_job_step
    ON training_predictions (job_id, step);
