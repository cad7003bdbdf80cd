-- predstream: no-transaction
-- Two indexes, built concurrently (see 0007).
--
-- "Every run's answer to prompt X": WHERE prompt_id = $1 across all jobs, ordered by job and
-- step (prediction_history, the comparison). idx_training_predictions_job_prompt_id leads with
-- job_id, so without this one that query reads the whole table.
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_training_predictions_prompt_id
    ON training_predictions (prompt_id, job_id, step)
    WHERE prompt_id IS NOT NULL;

-- Rows without an event identity: the old writer's, until `predstream identify` gives them
-- one. Small once they are identified; lets identify find (and resume on) the rest at once.
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_training_predictions_unidentified
    ON training_predictions (id)
    WHERE event_id IS NULL;
