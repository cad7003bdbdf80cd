-- The read side's summaries (predstream serve), kept up to date by the database itself.
--
-- Accuracy per step for every run, over the whole table, is an aggregate of every row: on a
-- table of millions of predictions no index makes it fast enough for a page. So each
-- statement that writes training_predictions (the consumer's COPY and upserts, backfill,
-- identify, a DELETE) applies what it changed to:
--
--   prediction_step_summary  one row per (job_id, step): what prediction_accuracy_by_step
--                            says for it (predictions, correct, accuracy's denominator),
--                            plus the model and the first and last produced_at;
--   prediction_run_summary   a view: one row per job_id, aggregated from its step rows at
--                            read time (a few thousand rows per page: milliseconds), so no
--                            per-run row is locked by every writer of the run;
--   prediction_prompts       one row per prompt_id: the prompt (or chat messages), its
--                            reference and source_index as first recorded; what search reads.
--
-- Maintenance is incremental. The statement's transition tables are aggregated by
-- (job_id, step) in one statement and applied as deltas: counts are added (inserted rows) or
-- subtracted (the old versions of updated rows, deleted rows); first_at, epoch, model_name
-- and last_at take LEAST/GREATEST with the added rows. A removed row may have been a group's
-- minimum or maximum, which cannot be decremented: those four columns are recomputed from
-- the table for the groups where a removed row's value reaches the stored extreme (on an
-- UPDATE or DELETE only; the consumer's steady state is INSERT).
--
-- Why this is exact under concurrency (READ COMMITTED, the consumer's isolation level):
-- every change to a summary row is made under that row's lock, held to commit (ON CONFLICT
-- DO UPDATE and UPDATE wait for a concurrent writer of the row, then apply to its newest
-- version; ON CONFLICT waits for a concurrent insert of the same key to commit or abort).
-- Additions and subtractions commute, so counts are right whatever the order. A recompute
-- first locks its rows (a statement of its own), then reads the table in a new statement,
-- whose snapshot therefore includes every transaction that changed those rows before it;
-- a transaction that has written rows of the group but not yet reached its trigger applies
-- its delta on top afterwards. Rows are locked in (job_id, step) order within a statement,
-- so two writers of the same groups queue rather than deadlock; writers of different steps
-- do not wait for each other. (Transactions that write overlapping groups across several
-- statements in different orders can still deadlock; Postgres cancels one, and the
-- consumer retries its batch.) The functions are SECURITY DEFINER: the consumer's role
-- needs no grant on the summaries. Existing rows are summarised by 0012, outside a
-- transaction, without blocking writers.

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

CREATE OR REPLACE VIEW prediction_run_summary AS
SELECT job_id,
       max(model_name)                               AS model_name,
       (count(*) FILTER (WHERE predictions > 0))::integer AS steps,   -- steps with predictions
       max(predictions)                              AS prompts,      -- predictions per step, the most at any step
       min(step)                                     AS first_step,
       max(step)                                     AS last_step,
       min(first_at)                                 AS first_at,
       max(last_at)                                  AS last_at
  FROM prediction_step_summary
 GROUP BY job_id;

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

-- Recompute groups from the table (0012's backfill; anyone repairing the summaries): lock
-- each group's row first (creating it if absent, which also waits for a concurrent insert
-- of it), then recompute it in a new statement, so its snapshot includes every writer that
-- changed the row before (see above). Groups in (job_id, step) order.
CREATE OR REPLACE FUNCTION prediction_summary_refresh_groups(p_jobs TEXT[], p_steps INTEGER[]) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    i INTEGER;
BEGIN
    FOR i IN 1 .. coalesce(array_length(p_jobs, 1), 0) LOOP
        INSERT INTO public.prediction_step_summary AS s (job_id, step, predictions, graded, correct, rows_total)
        VALUES (p_jobs[i], p_steps[i], 0, 0, 0, 0)
        ON CONFLICT (job_id, step) DO UPDATE SET rows_total = s.rows_total;
        UPDATE public.prediction_step_summary AS s
           SET (epoch, predictions, graded, correct, rows_total, model_name, first_at, last_at) = (
               SELECT max(h.epoch) FILTER (WHERE h.sequence_index = 0),
                      count(*) FILTER (WHERE h.sequence_index = 0),
                      count(*) FILTER (WHERE h.sequence_index = 0 AND h.is_correct IS NOT NULL),
                      count(*) FILTER (WHERE h.sequence_index = 0 AND h.is_correct),
                      count(*), max(h.model_name), min(h.produced_at), max(h.produced_at)
                 FROM public.prediction_history h
                WHERE h.job_id = s.job_id AND h.step = s.step)
         WHERE s.job_id = p_jobs[i] AND s.step = p_steps[i];
        DELETE FROM public.prediction_step_summary
         WHERE job_id = p_jobs[i] AND step = p_steps[i] AND rows_total = 0;  -- the group has no rows
    END LOOP;
END;
$$;

-- The view's expressions (prediction_history, 0005/0006) applied to a transition table's rows:
--   epoch          COALESCE(epoch_exact, epoch::double precision)
--   sequence_index COALESCE(sequence_index, 0)
--   is_correct     CASE WHEN ground_truth IS NULL THEN NULL ELSE btrim(prediction) = btrim(ground_truth) END
--   produced_at    COALESCE(produced_at, created_at)
-- is_correct is tested as strpos(prediction, btrim(ground_truth)) > 0 AND btrim(...) = btrim(...):
-- the same truth (a prediction whose trimmed text is the trimmed reference contains it), but
-- btrim of a long UTF-8 prediction costs microseconds and strpos rules out most wrong ones first.
CREATE OR REPLACE FUNCTION prediction_summary_touch() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    missing TEXT[];
BEGIN
    -- each branch names only the transition tables its trigger has (plpgsql plans a
    -- statement when it first runs it)
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        -- 1. lock the removed rows' groups, in order
        PERFORM 1 FROM public.prediction_step_summary s
          JOIN (SELECT DISTINCT job_id, step FROM changed_old) o ON o.job_id = s.job_id AND o.step = s.step
         ORDER BY s.job_id, s.step
           FOR UPDATE OF s;
        IF FOUND THEN
            -- 2. subtract their counts; where a removed row's value reaches a stored extreme,
            -- recompute the four extremes from the table (already without the removed rows,
            -- already with the added ones; this statement's snapshot follows the locks)
            WITH o AS (
                SELECT job_id, step,
                       count(*) FILTER (WHERE COALESCE(sequence_index, 0) = 0) AS predictions,
                       count(*) FILTER (WHERE COALESCE(sequence_index, 0) = 0 AND ground_truth IS NOT NULL) AS graded,
                       count(*) FILTER (WHERE COALESCE(sequence_index, 0) = 0 AND ground_truth IS NOT NULL
                                          AND strpos(prediction, btrim(ground_truth)) > 0
                                          AND btrim(prediction) = btrim(ground_truth)) AS correct,
                       count(*) AS rows_total,
                       max(COALESCE(epoch_exact, epoch::double precision))
                           FILTER (WHERE COALESCE(sequence_index, 0) = 0) AS epoch,
                       max(model_name) AS model_name,
                       min(COALESCE(produced_at, created_at)) AS first_at,
                       max(COALESCE(produced_at, created_at)) AS last_at
                  FROM changed_old
                 GROUP BY job_id, step)
            UPDATE public.prediction_step_summary AS s
               SET predictions = s.predictions - o.predictions, graded = s.graded - o.graded,
                   correct = s.correct - o.correct, rows_total = s.rows_total - o.rows_total,
                   (epoch, model_name, first_at, last_at) = (
                       SELECT CASE WHEN x.stale THEN r.epoch ELSE s.epoch END,
                              CASE WHEN x.stale THEN r.model_name ELSE s.model_name END,
                              CASE WHEN x.stale THEN r.first_at ELSE s.first_at END,
                              CASE WHEN x.stale THEN r.last_at ELSE s.last_at END
                         FROM (SELECT o.epoch >= s.epoch OR o.model_name >= s.model_name
                                      OR o.first_at <= s.first_at OR o.last_at >= s.last_at AS stale) x
                         LEFT JOIN LATERAL (
                              SELECT max(h.epoch) FILTER (WHERE h.sequence_index = 0) AS epoch,
                                     max(h.model_name) AS model_name,
                                     min(h.produced_at) AS first_at, max(h.produced_at) AS last_at
                                FROM public.prediction_history h
                               WHERE x.stale AND h.job_id = s.job_id AND h.step = s.step) r ON true)
              FROM o
             WHERE s.job_id = o.job_id AND s.step = o.step;
            DELETE FROM public.prediction_step_summary s
             USING (SELECT DISTINCT job_id, step FROM changed_old) o
             WHERE s.job_id = o.job_id AND s.step = o.step AND s.rows_total = 0;  -- the group's last row went
        END IF;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        -- add the new rows' counts and extremes, one upsert, rows in (job_id, step) order
        INSERT INTO public.prediction_step_summary AS s
            (job_id, step, epoch, predictions, graded, correct, rows_total, model_name, first_at, last_at)
        SELECT job_id, step,
               max(COALESCE(epoch_exact, epoch::double precision)) FILTER (WHERE COALESCE(sequence_index, 0) = 0),
               count(*) FILTER (WHERE COALESCE(sequence_index, 0) = 0),
               count(*) FILTER (WHERE COALESCE(sequence_index, 0) = 0 AND ground_truth IS NOT NULL),
               count(*) FILTER (WHERE COALESCE(sequence_index, 0) = 0 AND ground_truth IS NOT NULL
                                  AND strpos(prediction, btrim(ground_truth)) > 0
                                  AND btrim(prediction) = btrim(ground_truth)),
               count(*),
               max(model_name),
               min(COALESCE(produced_at, created_at)),
               max(COALESCE(produced_at, created_at))
          FROM changed_new
         GROUP BY job_id, step
         ORDER BY job_id, step
        ON CONFLICT (job_id, step) DO UPDATE SET
            predictions = s.predictions + EXCLUDED.predictions, graded = s.graded + EXCLUDED.graded,
            correct = s.correct + EXCLUDED.correct, rows_total = s.rows_total + EXCLUDED.rows_total,
            epoch = GREATEST(s.epoch, EXCLUDED.epoch), model_name = GREATEST(s.model_name, EXCLUDED.model_name),
            first_at = LEAST(s.first_at, EXCLUDED.first_at), last_at = GREATEST(s.last_at, EXCLUDED.last_at);
        -- prompts not yet recorded (the steady state: none; each distinct id looked up once),
        -- each as first in source_index order
        SELECT array_agg(n.prompt_id) INTO missing
          FROM (SELECT DISTINCT prompt_id FROM changed_new WHERE prompt_id IS NOT NULL) n
         WHERE NOT EXISTS (SELECT 1 FROM public.prediction_prompts p WHERE p.prompt_id = n.prompt_id);
        IF missing IS NOT NULL THEN
            INSERT INTO public.prediction_prompts
                (prompt_id, source_index, sample_source, sample_source_id, prompt, messages, ground_truth)
            SELECT DISTINCT ON (n.prompt_id) n.prompt_id, n.source_index, n.sample_source, n.sample_source_id,
                   n.prompt, n.messages, n.ground_truth
              FROM changed_new n
             WHERE n.prompt_id = ANY(missing)
             ORDER BY n.prompt_id, n.source_index
            ON CONFLICT (prompt_id) DO NOTHING;
        END IF;
    END IF;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION prediction_summary_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    DELETE FROM public.prediction_step_summary;
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
