-- predstream: the least-privilege role a consumer worker runs as.
--
-- Run it as the owner of the tables (the role that ran `predstream migrate`), connected to
-- the predstream database, AFTER the migrations:
--
--     psql "$ADMIN_DATABASE_URL" -v ON_ERROR_STOP=1 -f docs/consumer_role.sql
--     psql "$ADMIN_DATABASE_URL" -c "\password predstream_consumer"
--
-- then give the workers PREDSTREAM_DATABASE_URL=postgresql://predstream_consumer:...@host/db.
-- Safe to run again (after a new migration, for instance). tests/test_security.py applies
-- this exact file and checks that a worker needs nothing more and can do nothing more.
--
-- What the consumer does with it (the worker, `predstream replay` and `predstream backfill`
-- share one code path, consumer/sink.py):
--   CONNECT                    open its connection
--   TEMPORARY                  a per-connection staging table for COPY (ON COMMIT DELETE ROWS)
--   USAGE ON SCHEMA public     see the table
--   SELECT, INSERT, UPDATE     the upsert: INSERT .. ON CONFLICT (event_id) DO UPDATE .. WHERE
--     ON training_predictions  the stored row is older .. RETURNING; the staging table is
--                              created LIKE the table (SELECT)
--   USAGE ON SEQUENCE          the id column's BIGSERIAL default
-- Not granted: DELETE, TRUNCATE, REFERENCES, TRIGGER, any DDL, the migrations table, the
-- prediction-set tables (written by `predstream sets`, an operator's tool).

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'predstream_consumer') THEN
        CREATE ROLE predstream_consumer
            LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS
            CONNECTION LIMIT 64;
    END IF;
END
$$;

DO $$
BEGIN
    EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO predstream_consumer', current_database());
END
$$;

-- A direct CREATE grant would be revoked here. PostgreSQL < 15 also lets every role (PUBLIC)
-- create objects in schema public: there, run REVOKE CREATE ON SCHEMA public FROM PUBLIC; too.
REVOKE CREATE ON SCHEMA public FROM predstream_consumer;
GRANT USAGE ON SCHEMA public TO predstream_consumer;

GRANT SELECT, INSERT, UPDATE ON training_predictions TO predstream_consumer;
GRANT USAGE ON SEQUENCE training_predictions_id_seq TO predstream_consumer;
