-- predstream: no-transaction
-- The indexes of training_predictions and its UNIQUE (event_id) constraint, built without
-- blocking writers: CREATE INDEX CONCURRENTLY lets the old writer (and the consumer) go on
-- inserting during the build, which on a big table takes minutes. Each statement runs on its
-- own (see consumer/migrate.py) and is safe to run again. A database migrated by 0.1 has all
-- of these already (0001, 0002 and 0004 built them then): nothing is built twice.

CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_training_predictions_job_step
    ON training_predictions (job_id, step);

CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_training_predictions_job_prompt_id
    ON training_predictions (job_id, prompt_id)
    WHERE prompt_id IS NOT NULL;

CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_training_predictions_job_source
    ON training_predictions (job_id, source_index)
    WHERE source_index IS NOT NULL;

-- The event identity: the consumer's upserts (ON CONFLICT (event_id)) need it. Built as a
-- unique index first, then attached as the constraint, which only takes a brief lock.
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS training_predictions_event_id_key
    ON training_predictions (event_id);

DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_constraint
        WHERE conrelid = 'training_predictions'::regclass AND conname = 'training_predictions_event_id_key'
    ) THEN
        -- wait at most 1 s for the table lock (migrate retries), never queue writers for long
        PERFORM set_config('lock_timeout', '1s', true);
        ALTER TABLE training_predictions
            ADD CONSTRAINT training_predictions_event_id_key UNIQUE USING INDEX training_predictions_event_id_key;
    END IF;
END
$$;
