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

-- Its index idx_training_predictions_job_step (job_id, step) is built by 0007, concurrently,
-- so that a table the old writer already filled is never locked for an index build.
-- (0.1 built it here; migrate.py accepts the 0.1 checksum of this file.)
