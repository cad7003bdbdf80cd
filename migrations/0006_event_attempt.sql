-- The job's attempt counter (event schema v3). Of two events with the same event_id the
-- higher attempt wins, then the later produced_at: a job resumed on a host whose clock is
-- behind still replaces its first attempt's rows. Nullable and without a default, so adding
-- it rewrites nothing; rows written before it (and by the old writer) have NULL, which
-- counts as attempt 0.
ALTER TABLE training_predictions
    ADD COLUMN IF NOT EXISTS attempt INTEGER;

-- prediction_history shows it, as its last column (a view can only grow at the end).
CREATE OR REPLACE VIEW prediction_history AS
SELECT
    p.job_id,
    p.prompt_id,
    p.source_index,
    p.sample_source,
    p.sample_source_id,
    p.step,
    COALESCE(p.epoch_exact, p.epoch::double precision) AS epoch,
    COALESCE(p.sequence_index, 0)                      AS sequence_index,
    p.prompt,
    p.messages,
    p.ground_truth,
    p.prediction,
    CASE WHEN p.ground_truth IS NULL THEN NULL
         ELSE btrim(p.prediction) = btrim(p.ground_truth) END AS is_correct,
    p.model_name,
    COALESCE(p.produced_at, p.created_at)              AS produced_at,
    COALESCE(p.attempt, 0)                             AS attempt
FROM training_predictions p;
