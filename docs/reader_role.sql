-- predstream: the read-only role `predstream serve` reads through.
--
-- Run it as the owner of the tables (the role that ran `predstream migrate`), connected to
-- the predstream database, AFTER the migrations:
--
--     psql "$ADMIN_DATABASE_URL" -v ON_ERROR_STOP=1 -f docs/reader_role.sql
--     psql "$ADMIN_DATABASE_URL" -c "\password predstream_reader"
--
-- then serve with PREDSTREAM_DATABASE_URL=postgresql://predstream_reader:...@host/db.
-- Safe to run again (after a new migration, for instance). tests/test_web_security.py applies
-- this exact file and checks that the server needs nothing more and can write nothing.
--
--   CONNECT                   open its connections
--   USAGE ON SCHEMA public    see the tables
--   SELECT                    the predictions table, the comparison views (0005), the read
--                             model the triggers keep (0011), the prediction sets (0003)
--   default_transaction_read_only = on: every transaction it opens is read-only too
-- Not granted: INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER, any DDL, the
-- migrations table. (The web view's one write endpoint publishes to Kafka, never to the
-- database.)

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'predstream_reader') THEN
        CREATE ROLE predstream_reader
            LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS
            CONNECTION LIMIT 32;
    END IF;
END
$$;

ALTER ROLE predstream_reader SET default_transaction_read_only = on;

DO $$
BEGIN
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO predstream_reader', current_database());
END
$$;

-- PostgreSQL < 15 also lets every role (PUBLIC) create objects in schema public: there, run
-- REVOKE CREATE ON SCHEMA public FROM PUBLIC; too.
REVOKE CREATE ON SCHEMA public FROM predstream_reader;
GRANT USAGE ON SCHEMA public TO predstream_reader;

GRANT SELECT ON training_predictions, prediction_history, prediction_accuracy_by_step,
                prediction_step_summary, prediction_run_summary, prediction_prompts, prediction_sets,
                prediction_set_items
   TO predstream_reader;
