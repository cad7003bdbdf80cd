-- What the streaming consumer needs: the event identity (idempotent upserts), the rest of
-- the event, and ingest metadata. All additive and nullable: rows written by the old
-- writer keep working, with event_id NULL (NULLs never collide in a UNIQUE constraint).
ALTER TABLE training_predictions
    ADD COLUMN IF NOT EXISTS event_id          TEXT,
    ADD COLUMN IF NOT EXISTS epoch_exact       DOUBLE PRECISION,   -- fractional epoch; `epoch` keeps floor()
    ADD COLUMN IF NOT EXISTS sequence_index    INTEGER,
    ADD COLUMN IF NOT EXISTS messages          JSONB,
    ADD COLUMN IF NOT EXISTS model_name        TEXT,
    ADD COLUMN IF NOT EXISTS generation        JSONB,
    ADD COLUMN IF NOT EXISTS prompt_tokens     INTEGER,
    ADD COLUMN IF NOT EXISTS completion_tokens INTEGER,
    ADD COLUMN IF NOT EXISTS generation_ms     DOUBLE PRECISION,
    ADD COLUMN IF NOT EXISTS produced_at       TIMESTAMPTZ,
    ADD COLUMN IF NOT EXISTS ingested_at       TIMESTAMPTZ,
    ADD COLUMN IF NOT EXISTS kafka_topic       TEXT,
    ADD COLUMN IF NOT EXISTS kafka_partition   INTEGER,
    ADD COLUMN IF NOT EXISTS kafka_offset      BIGINT;

-- A chat prompt has messages and may have no plain prompt.
ALTER TABLE training_predictions ALTER COLUMN prompt DROP NOT NULL;

ALTER TABLE training_predictions
    ADD CONSTRAINT training_predictions_event_id_key UNIQUE (event_id);
