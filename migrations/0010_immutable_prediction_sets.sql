-- A prediction set never changes once created: its set_id is the hash of its items, and
-- predictions made with it carry that id. The database refuses:
--   * any UPDATE of an item;
--   * a DELETE of items while their set still exists (deleting the set itself, e.g.
--     `predstream sets delete`, removes its items through ON DELETE CASCADE: allowed);
--   * an INSERT that gives a set more items than its item_count (items are written once,
--     in the transaction that creates the set);
--   * an UPDATE of a set's set_id or item_count (name, description, source, seed may change).
-- To change a set, create a new one (`predstream sets create`) under another name.

CREATE OR REPLACE FUNCTION prediction_set_items_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        RAISE EXCEPTION 'prediction set % is immutable: its items cannot be updated', OLD.set_id
            USING ERRCODE = 'restrict_violation',
                  HINT = 'create a new set with `predstream sets create` (a set''s id is the hash of its items)';
    END IF;
    -- DELETE: allowed only once the set row itself is gone (the cascade of a set's deletion)
    IF EXISTS (SELECT 1 FROM prediction_sets WHERE set_id = OLD.set_id) THEN
        RAISE EXCEPTION 'prediction set % is immutable: its items cannot be deleted one by one', OLD.set_id
            USING ERRCODE = 'restrict_violation',
                  HINT = 'delete the whole set with `predstream sets delete`';
    END IF;
    RETURN OLD;
END;
$$;

CREATE OR REPLACE FUNCTION prediction_set_items_no_additions() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    bad RECORD;
BEGIN
    SELECT s.set_id, s.item_count, count(*) AS stored
      INTO bad
      FROM prediction_sets s
      JOIN prediction_set_items i ON i.set_id = s.set_id
     WHERE s.set_id IN (SELECT DISTINCT set_id FROM added_items)
     GROUP BY s.set_id, s.item_count
    HAVING count(*) > s.item_count
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'prediction set % is immutable: it has % items and cannot take more', bad.set_id, bad.item_count
            USING ERRCODE = 'restrict_violation',
                  HINT = 'create a new set with `predstream sets create`';
    END IF;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION prediction_sets_identity_fixed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.set_id IS DISTINCT FROM OLD.set_id OR NEW.item_count IS DISTINCT FROM OLD.item_count THEN
        RAISE EXCEPTION 'prediction set % is immutable: its set_id and item_count cannot change', OLD.set_id
            USING ERRCODE = 'restrict_violation',
                  HINT = 'create a new set with `predstream sets create`';
    END IF;
    RETURN NEW;
END;
$$;

DROP TRIGGER IF EXISTS prediction_set_items_immutable ON prediction_set_items;
CREATE TRIGGER prediction_set_items_immutable
    BEFORE UPDATE OR DELETE ON prediction_set_items
    FOR EACH ROW EXECUTE FUNCTION prediction_set_items_immutable();

DROP TRIGGER IF EXISTS prediction_set_items_no_additions ON prediction_set_items;
CREATE TRIGGER prediction_set_items_no_additions
    AFTER INSERT ON prediction_set_items
    REFERENCING NEW TABLE AS added_items
    FOR EACH STATEMENT EXECUTE FUNCTION prediction_set_items_no_additions();

DROP TRIGGER IF EXISTS prediction_sets_identity_fixed ON prediction_sets;
CREATE TRIGGER prediction_sets_identity_fixed
    BEFORE UPDATE ON prediction_sets
    FOR EACH ROW EXECUTE FUNCTION prediction_sets_identity_fixed();
