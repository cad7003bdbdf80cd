-- Views for comparing runs: the history of each prompt across steps and runs, and
-- exact-match accuracy per step per run. "Correct" means the prediction equals the
-- reference answer after trimming surrounding whitespace.
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
    COALESCE(p.produced_at, p.created_at)              AS produced_at
FROM training_predictions p;

CREATE OR REPLACE VIEW prediction_accuracy_by_step AS
SELECT
    job_id,
    step,
    max(epoch)                                          AS epoch,
    count(*)                                            AS predictions,
    count(*) FILTER (WHERE is_correct)                  AS correct,
    round((count(*) FILTER (WHERE is_correct))::numeric
          / NULLIF(count(*) FILTER (WHERE is_correct IS NOT NULL), 0), 4) AS accuracy
FROM prediction_history
WHERE sequence_index = 0
GROUP BY job_id, step;
