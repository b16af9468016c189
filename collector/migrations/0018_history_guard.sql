-- The foreign key from intervals to instruments was checked for every
-- interval row the collector writes, and each batch rewrites the latest
-- intervals of its instruments: 13 µs a row on a slow machine, a sixth of a
-- batch's PostgreSQL time (docs/BENCHMARKS.md). What it guarded, that an
-- instrument with measured history is never deleted, is now kept by a trigger
-- that runs only when an instrument is deleted or its id changed, and that
-- also looks at events (a hypertable, which has no foreign key). Intervals
-- are written only for registered instruments, under their row locks
-- (collector/store.py), so none can point to an instrument that is not there.
ALTER TABLE intervals DROP CONSTRAINT intervals_instrument_id_fkey;

CREATE FUNCTION instruments_keep_history() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.id = OLD.id THEN
        RETURN NEW;
    END IF;
    IF EXISTS (SELECT 1 FROM intervals WHERE instrument_id = OLD.id)
       OR EXISTS (SELECT 1 FROM events WHERE instrument_id = OLD.id) THEN
        RAISE EXCEPTION 'instrument % has measured history (events or intervals)', OLD.id
              USING ERRCODE = 'foreign_key_violation',
                    HINT = 'measured history is evidence: it is never deleted or renamed';
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER instruments_keep_history BEFORE DELETE OR UPDATE OF id ON instruments
    FOR EACH ROW EXECUTE FUNCTION instruments_keep_history();
