-- Phase 2: curated prediction sets (set_id + set items).
CREATE TABLE IF NOT EXISTS prediction_sets (
    set_id      TEXT PRIMARY KEY,            -- stable id, e.g. "ps_" + sha256 of the items, shortened
    name        TEXT NOT NULL UNIQUE,
    description TEXT,
    source      TEXT,                        -- dataset path or id the items came from
    seed        BIGINT,                      -- sampling seed, when sampled
    item_count  INTEGER NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS prediction_set_items (
    set_id       TEXT    NOT NULL REFERENCES prediction_sets (set_id) ON DELETE CASCADE,
    item_index   INTEGER NOT NULL,           -- 0..N-1 within the set; becomes sample_index
    source_index INTEGER,                    -- row index in the original dataset
    prompt_id    TEXT    NOT NULL,
    prompt       TEXT,
    messages     JSONB,
    ground_truth TEXT,
    PRIMARY KEY (set_id, item_index)
);

ALTER TABLE training_predictions
    ADD COLUMN IF NOT EXISTS set_id TEXT;
