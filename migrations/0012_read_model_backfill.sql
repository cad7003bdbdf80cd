-- predstream: no-transaction
-- Summarise the rows stored before 0011 (see there), without blocking writers: one job at a
-- time, each group recomputed from the table under its summary row's lock, committed job by
-- job, so the consumer keeps writing meanwhile. A group the consumer writes meanwhile stays
-- exact: its deltas land either before the recompute (committed, so counted by it) or after
-- (on top of it). Safe to run again: an interrupted run is finished by running
-- `predstream migrate` again.
DO $$
DECLARE
    j RECORD;
BEGIN
    FOR j IN SELECT job_id, array_agg(step ORDER BY step) AS steps
               FROM (SELECT DISTINCT job_id, step FROM training_predictions) g
              GROUP BY job_id ORDER BY job_id LOOP
        PERFORM prediction_summary_refresh_groups(array_fill(j.job_id, ARRAY[array_length(j.steps, 1)]), j.steps);
        COMMIT;
    END LOOP;
END
$$;

INSERT INTO prediction_prompts (prompt_id, source_index, sample_source, sample_source_id, prompt, messages, ground_truth)
SELECT DISTINCT ON (prompt_id) prompt_id, source_index, sample_source, sample_source_id, prompt, messages, ground_truth
  FROM training_predictions
 WHERE prompt_id IS NOT NULL
 ORDER BY prompt_id, source_index
ON CONFLICT (prompt_id) DO NOTHING;
