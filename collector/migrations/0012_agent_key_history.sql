-- Every public key ever enrolled for an instrument. Re-enrolling an agent (a
-- reinstalled PC, a new key) or removing it retires its key instead of
-- forgetting it: a retired key still verifies the events it signed before
-- retired_at (a year of history under audit, an old outbox drained late) and
-- nothing dated from then on. ``agents`` keeps the current keys; triggers keep
-- this table in step with it, whoever writes to it.
CREATE TABLE agent_keys (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    agent_id      text NOT NULL,
    instrument_id text NOT NULL REFERENCES instruments (id),
    public_key    bytea NOT NULL CHECK (length(public_key) = 32),  -- Ed25519, raw
    enrolled_at   timestamptz NOT NULL DEFAULT now(),
    retired_at    timestamptz CHECK (retired_at >= enrolled_at)
);
CREATE INDEX agent_keys_instrument ON agent_keys (instrument_id);
CREATE UNIQUE INDEX agent_keys_current ON agent_keys (agent_id) WHERE retired_at IS NULL;

INSERT INTO agent_keys (agent_id, instrument_id, public_key, enrolled_at)
SELECT id, instrument_id, public_key, enrolled_at FROM agents;

CREATE FUNCTION agent_keys_retire() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE agent_keys SET retired_at = greatest(now(), enrolled_at)
     WHERE agent_id = OLD.id AND retired_at IS NULL;
    RETURN NULL;
END $$;

CREATE FUNCTION agent_keys_enrol() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO agent_keys (agent_id, instrument_id, public_key)
    VALUES (NEW.id, NEW.instrument_id, NEW.public_key);
    RETURN NULL;
END $$;

-- On a changed key or instrument: retire the old key, then enrol the new (triggers
-- on the same event fire in name order).
CREATE TRIGGER agents_key_1_retire_old AFTER UPDATE OF public_key, instrument_id ON agents
    FOR EACH ROW
    WHEN (OLD.public_key IS DISTINCT FROM NEW.public_key
          OR OLD.instrument_id IS DISTINCT FROM NEW.instrument_id)
    EXECUTE FUNCTION agent_keys_retire();
CREATE TRIGGER agents_key_removed AFTER DELETE ON agents
    FOR EACH ROW EXECUTE FUNCTION agent_keys_retire();
CREATE TRIGGER agents_key_enrolled AFTER INSERT ON agents
    FOR EACH ROW EXECUTE FUNCTION agent_keys_enrol();
CREATE TRIGGER agents_key_2_enrol_new AFTER UPDATE OF public_key, instrument_id ON agents
    FOR EACH ROW
    WHEN (OLD.public_key IS DISTINCT FROM NEW.public_key
          OR OLD.instrument_id IS DISTINCT FROM NEW.instrument_id)
    EXECUTE FUNCTION agent_keys_enrol();
