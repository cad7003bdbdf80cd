-- predstream: no-transaction
-- Summarise the rows stored before 0011 (see there), without blocking writers: one
-- (job_id, step) group at a time, each under the group's advisory lock and committed on its
-- own, so the consumer keeps writing meanwhile (a group it writes is recomputed by its own
-- trigger, after or before this one: both recompute from the table). Safe to run again:
-- an interrupted run is finished by running `predstream migrate` again.
DO $$
DECLARE
    g RECORD;
    n INTEGER := 0;
BEGIN
    FOR g IN SELECT DISTINCT job_id, step FROM training_predictions ORDER BY 1, 2 LOOP
        PERFORM prediction_summary_refresh(g.job_id, g.step);
        n := n + 1;
        IF n % 100 = 0 THEN
            COMMIT;
        END IF;
    END LOOP;
    COMMIT;
END
$$;

INSERT INTO prediction_prompts (prompt_id, source_index, sample_source, sample_source_id, prompt, messages, ground_truth)
SELECT DISTINCT ON (prompt_id) prompt_id, source_index, sample_source, sample_source_id, prompt, messages, ground_truth
  FROM training_predictions
 WHERE prompt_id IS NOT NULL
 ORDER BY prompt_id, source_index
ON CONFLICT (prompt_id) DO NOTHING;
