-- The read side's summaries (predstream serve), kept up to date by the database itself.
--
-- Accuracy per step for every run, over the whole table, is an aggregate of every row: on a
-- table of millions of predictions no index makes it fast enough for a page. So each
-- statement that writes training_predictions (the consumer's COPY and upserts, backfill,
-- identify, a DELETE) refreshes, from the table itself, the (job_id, step) groups it touched:
--
--   prediction_step_summary  one row per (job_id, step): what prediction_accuracy_by_step
--                            says for it (predictions, correct, accuracy's denominator),
--                            plus the model and the first and last produced_at;
--   prediction_run_summary   one row per job_id, from its steps' rows: the runs page;
--   prediction_prompts       one row per prompt_id: the prompt (or chat messages), its
--                            reference and source_index as first recorded; what search reads.
--
-- A group is recomputed, not incremented, under a transaction-scoped advisory lock on its
-- job (jobs in order): two writers of one job take turns from their trigger to their commit,
-- and the one that commits last recomputes with a snapshot that includes the other's rows
-- (READ COMMITTED, the consumer's isolation level), so the summaries equal the views
-- whatever the interleaving. (Two transactions that each write two jobs in a different
-- order across statements can deadlock; Postgres cancels one, which the consumer retries.) The functions are SECURITY
-- DEFINER: the consumer's role needs no grant on the summaries. Existing rows are summarised
-- by 0012, outside a transaction, without blocking writers.

CREATE TABLE IF NOT EXISTS prediction_step_summary (
    job_id      TEXT             NOT NULL,
    step        INTEGER          NOT NULL,
    epoch       DOUBLE PRECISION,
    predictions INTEGER          NOT NULL,   -- rows with sequence_index 0 (the view's count)
    graded      INTEGER          NOT NULL,   -- ... of which have a reference answer
    correct     INTEGER          NOT NULL,   -- ... of which match it (prediction_history.is_correct)
    rows_total  INTEGER          NOT NULL,   -- all rows, every sequence_index
    model_name  TEXT,
    first_at    TIMESTAMPTZ,
    last_at     TIMESTAMPTZ,
    PRIMARY KEY (job_id, step)
);

CREATE TABLE IF NOT EXISTS prediction_run_summary (
    job_id     TEXT        PRIMARY KEY,
    model_name TEXT,
    steps      INTEGER     NOT NULL,   -- steps with predictions
    prompts    INTEGER     NOT NULL,   -- predictions per step, the most at any step
    first_step INTEGER     NOT NULL,
    last_step  INTEGER     NOT NULL,
    first_at   TIMESTAMPTZ NOT NULL,
    last_at    TIMESTAMPTZ NOT NULL
);

CREATE INDEX IF NOT EXISTS idx_prediction_run_summary_recent ON prediction_run_summary (last_at DESC, job_id);

CREATE TABLE IF NOT EXISTS prediction_prompts (
    prompt_id        TEXT PRIMARY KEY,
    source_index     INTEGER,
    sample_source    TEXT,
    sample_source_id TEXT,
    prompt           TEXT,
    messages         JSONB,
    ground_truth     TEXT,
    first_seen       TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS idx_prediction_prompts_source_index ON prediction_prompts (source_index);

CREATE OR REPLACE FUNCTION prediction_summary_refresh(p_job TEXT, p_step INTEGER) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    -- the caller holds the job's advisory lock (prediction_summary_lock_job)
    INSERT INTO public.prediction_step_summary AS s
        (job_id, step, epoch, predictions, graded, correct, rows_total, model_name, first_at, last_at)
    SELECT h.job_id, h.step,
           max(h.epoch) FILTER (WHERE h.sequence_index = 0),
           count(*) FILTER (WHERE h.sequence_index = 0),
           count(*) FILTER (WHERE h.sequence_index = 0 AND h.is_correct IS NOT NULL),
           count(*) FILTER (WHERE h.sequence_index = 0 AND h.is_correct),
           count(*),
           max(h.model_name),
           min(h.produced_at),
           max(h.produced_at)
      FROM public.prediction_history h
     WHERE h.job_id = p_job AND h.step = p_step
     GROUP BY h.job_id, h.step
    ON CONFLICT (job_id, step) DO UPDATE SET
        epoch = EXCLUDED.epoch, predictions = EXCLUDED.predictions, graded = EXCLUDED.graded,
        correct = EXCLUDED.correct, rows_total = EXCLUDED.rows_total, model_name = EXCLUDED.model_name,
        first_at = EXCLUDED.first_at, last_at = EXCLUDED.last_at;
    IF NOT FOUND THEN  -- the group's last row was deleted
        DELETE FROM public.prediction_step_summary WHERE job_id = p_job AND step = p_step;
    END IF;
END;
$$;

CREATE OR REPLACE FUNCTION prediction_summary_lock_job(p_job TEXT) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT pg_advisory_xact_lock(hashtextextended('predstream.read_model:' || p_job, 0));
$$;

CREATE OR REPLACE FUNCTION prediction_summary_refresh_run(p_job TEXT) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    INSERT INTO public.prediction_run_summary AS r
        (job_id, model_name, steps, prompts, first_step, last_step, first_at, last_at)
    SELECT job_id, max(model_name), count(*) FILTER (WHERE predictions > 0), max(predictions), min(step), max(step),
           min(first_at), max(last_at)
      FROM public.prediction_step_summary
     WHERE job_id = p_job
     GROUP BY job_id
    ON CONFLICT (job_id) DO UPDATE SET
        model_name = EXCLUDED.model_name, steps = EXCLUDED.steps, prompts = EXCLUDED.prompts,
        first_step = EXCLUDED.first_step, last_step = EXCLUDED.last_step, first_at = EXCLUDED.first_at,
        last_at = EXCLUDED.last_at;
    IF NOT FOUND THEN
        DELETE FROM public.prediction_run_summary WHERE job_id = p_job;
    END IF;
END;
$$;

-- Lock each job of the touched groups (in order), recompute its groups, then its run row.
CREATE OR REPLACE FUNCTION prediction_summary_refresh_groups(p_jobs TEXT[], p_steps INTEGER[]) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    i INTEGER;
BEGIN
    FOR i IN 1 .. coalesce(array_length(p_jobs, 1), 0) LOOP
        IF i = 1 OR p_jobs[i] IS DISTINCT FROM p_jobs[i - 1] THEN
            PERFORM public.prediction_summary_lock_job(p_jobs[i]);
        END IF;
        PERFORM public.prediction_summary_refresh(p_jobs[i], p_steps[i]);
        IF i = array_length(p_jobs, 1) OR p_jobs[i] IS DISTINCT FROM p_jobs[i + 1] THEN
            PERFORM public.prediction_summary_refresh_run(p_jobs[i]);
        END IF;
    END LOOP;
END;
$$;

CREATE OR REPLACE FUNCTION prediction_summary_touch() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    -- each branch names only the transition tables its trigger has
    IF TG_OP = 'INSERT' THEN
        PERFORM public.prediction_summary_refresh_groups(array_agg(job_id ORDER BY job_id, step),
                                                         array_agg(step ORDER BY job_id, step))
           FROM (SELECT DISTINCT job_id, step FROM changed_new) g;
        INSERT INTO public.prediction_prompts
            (prompt_id, source_index, sample_source, sample_source_id, prompt, messages, ground_truth)
        SELECT DISTINCT ON (prompt_id) prompt_id, source_index, sample_source, sample_source_id, prompt, messages,
               ground_truth
          FROM changed_new WHERE prompt_id IS NOT NULL
         ORDER BY prompt_id, source_index
        ON CONFLICT (prompt_id) DO NOTHING;
    ELSIF TG_OP = 'UPDATE' THEN
        PERFORM public.prediction_summary_refresh_groups(array_agg(job_id ORDER BY job_id, step),
                                                         array_agg(step ORDER BY job_id, step))
           FROM (SELECT job_id, step FROM changed_new UNION SELECT job_id, step FROM changed_old) g;
        INSERT INTO public.prediction_prompts
            (prompt_id, source_index, sample_source, sample_source_id, prompt, messages, ground_truth)
        SELECT DISTINCT ON (prompt_id) prompt_id, source_index, sample_source, sample_source_id, prompt, messages,
               ground_truth
          FROM changed_new WHERE prompt_id IS NOT NULL
         ORDER BY prompt_id, source_index
        ON CONFLICT (prompt_id) DO NOTHING;
    ELSE
        PERFORM public.prediction_summary_refresh_groups(array_agg(job_id ORDER BY job_id, step),
                                                         array_agg(step ORDER BY job_id, step))
           FROM (SELECT DISTINCT job_id, step FROM changed_old) g;
    END IF;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION prediction_summary_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    DELETE FROM public.prediction_step_summary;
    DELETE FROM public.prediction_run_summary;
    RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS prediction_summary_insert ON training_predictions;
CREATE TRIGGER prediction_summary_insert
    AFTER INSERT ON training_predictions
    REFERENCING NEW TABLE AS changed_new
    FOR EACH STATEMENT EXECUTE FUNCTION prediction_summary_touch();

DROP TRIGGER IF EXISTS prediction_summary_update ON training_predictions;
CREATE TRIGGER prediction_summary_update
    AFTER UPDATE ON training_predictions
    REFERENCING OLD TABLE AS changed_old NEW TABLE AS changed_new
    FOR EACH STATEMENT EXECUTE FUNCTION prediction_summary_touch();

DROP TRIGGER IF EXISTS prediction_summary_delete ON training_predictions;
CREATE TRIGGER prediction_summary_delete
    AFTER DELETE ON training_predictions
    REFERENCING OLD TABLE AS changed_old
    FOR EACH STATEMENT EXECUTE FUNCTION prediction_summary_touch();

DROP TRIGGER IF EXISTS prediction_summary_truncate ON training_predictions;
CREATE TRIGGER prediction_summary_truncate
    AFTER TRUNCATE ON training_predictions
    FOR EACH STATEMENT EXECUTE FUNCTION prediction_summary_truncate();
