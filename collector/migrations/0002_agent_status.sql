-- The latest online/offline status each instrument's agent announced on its
-- retained status topic (the offline one is its MQTT Last Will), so "agent
-- offline" is recorded as a fact of its own and never read as "instrument off".
CREATE TABLE agent_status (
    instrument_id text PRIMARY KEY REFERENCES instruments (id),
    status        text NOT NULL CHECK (status IN ('online', 'offline')),
    boot_id       uuid NOT NULL,
    changed_at    timestamptz NOT NULL,  -- device time the agent stamped on the message
    received_at   timestamptz NOT NULL
);
