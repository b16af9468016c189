-- Verification on arrival, agent liveness and clock skew.

-- Each event's verdict (instrumetry.domain.audit.Verification). NULL: stored
-- before verification existed; such events count in usage as before.
ALTER TABLE events ADD COLUMN verification text
    CHECK (verification IN ('ok', 'gap', 'chain_break', 'bad_signature', 'unknown_key'));
-- Chain checks look up an instrument's event by seq.
CREATE INDEX events_instrument_seq ON events (instrument_id, seq);

-- When the collector last heard from each instrument's agent (its own clock,
-- for heartbeat timeouts), which boot that was, and the agent's clock skew
-- (receive time minus device time of its latest live message).
ALTER TABLE instruments
    ADD COLUMN last_heard_at timestamptz,
    ADD COLUMN last_boot_id uuid,
    ADD COLUMN clock_skew_ms bigint;

-- Spans in which the agent was not heard: opened by its offline status (the
-- MQTT Last Will, or a clean shutdown) or a heartbeat timeout, closed when it
-- is heard again. A span closed by another boot than the one that went silent
-- is a span nobody measured, and the interval rebuild makes it `unknown`; one
-- closed by the same boot was a lost connection while the agent kept measuring
-- (its outbox replays the transitions), so it is kept as a record only.
CREATE TABLE offline_periods (
    instrument_id   text NOT NULL REFERENCES instruments (id),
    start_time      timestamptz NOT NULL,  -- device time the agent was last heard
    end_time        timestamptz,           -- device time it was heard again; NULL: still offline
    reason          text NOT NULL CHECK (reason IN ('offline_status', 'heartbeat_timeout')),
    boot_id         uuid,                  -- the boot that went silent
    resumed_boot_id uuid,                  -- the boot heard again
    opened_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (instrument_id, start_time),
    CHECK (end_time IS NULL OR end_time > start_time)
);
CREATE UNIQUE INDEX offline_periods_one_open ON offline_periods (instrument_id)
    WHERE end_time IS NULL;
