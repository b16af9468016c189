-- Core schema: registry, raw events and heartbeats (hypertables), derived intervals.
-- Works with the Apache-licensed TimescaleDB build (hypertables only).

CREATE EXTENSION IF NOT EXISTS timescaledb;

CREATE TYPE instrument_state AS ENUM ('off', 'standby', 'running', 'unknown');

CREATE TABLE institutions (
    id             text PRIMARY KEY,
    name           text NOT NULL,
    tz             text NOT NULL DEFAULT 'Asia/Shanghai',
    workdays       smallint[] NOT NULL DEFAULT '{0,1,2,3,4}',  -- Monday = 0
    day_start      time NOT NULL DEFAULT '08:00',
    day_end        time NOT NULL DEFAULT '18:00',
    holidays       date[] NOT NULL DEFAULT '{}',
    extra_workdays date[] NOT NULL DEFAULT '{}',
    created_at     timestamptz NOT NULL DEFAULT now(),
    CHECK (day_start < day_end)
);

CREATE TABLE instruments (
    id              text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    institution_id  text NOT NULL REFERENCES institutions (id),
    name            text NOT NULL,
    model           text NOT NULL DEFAULT '',
    category        text NOT NULL DEFAULT 'general' CHECK (category IN ('general', 'specialised')),
    standby_w       double precision NOT NULL DEFAULT 5,
    run_w           double precision NOT NULL DEFAULT 100,
    hysteresis_w    double precision NOT NULL DEFAULT 2,
    min_dwell_s     double precision NOT NULL DEFAULT 30,
    -- Device time of the latest message from this instrument's agent: open
    -- intervals are known up to here and unknown after it.
    last_seen       timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX instruments_institution ON instruments (institution_id);

CREATE TABLE agents (
    id            text PRIMARY KEY,
    instrument_id text NOT NULL REFERENCES instruments (id),
    public_key    bytea NOT NULL CHECK (length(public_key) = 32),  -- Ed25519, raw
    enrolled_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX agents_instrument ON agents (instrument_id);

-- One row per state transition, exactly as the agent signed it. The unique key
-- makes redelivery a no-op; a hypertable's unique key must hold its time column.
CREATE TABLE events (
    instrument_id text NOT NULL,
    boot_id       uuid NOT NULL,
    seq           bigint NOT NULL CHECK (seq > 0),
    device_time   timestamptz NOT NULL,
    received_at   timestamptz NOT NULL,
    from_state    instrument_state NOT NULL,
    to_state      instrument_state NOT NULL,
    power_w       double precision,
    prev_hash     bytea NOT NULL CHECK (length(prev_hash) = 32),
    signature     bytea NOT NULL,
    UNIQUE (instrument_id, boot_id, seq, device_time)
);
SELECT create_hypertable('events', by_range('device_time', INTERVAL '30 days'));
CREATE INDEX events_instrument_time ON events (instrument_id, device_time DESC);

-- Raw heartbeats serve liveness and power statistics; they are kept for a
-- bounded window and dropped by whole chunks, hence the short chunk interval.
CREATE TABLE heartbeats (
    instrument_id text NOT NULL,
    boot_id       uuid NOT NULL,
    device_time   timestamptz NOT NULL,
    received_at   timestamptz NOT NULL,
    state         instrument_state NOT NULL,
    last_seq      bigint NOT NULL,
    samples       integer NOT NULL,
    power_min_w   real,
    power_mean_w  real,
    power_max_w   real,
    UNIQUE (instrument_id, boot_id, device_time)
);
SELECT create_hypertable('heartbeats', by_range('device_time', INTERVAL '1 day'));

-- Derived from events by the collector; end_time NULL marks the open interval.
CREATE TABLE intervals (
    instrument_id text NOT NULL REFERENCES instruments (id),
    state         instrument_state NOT NULL,
    start_time    timestamptz NOT NULL,
    end_time      timestamptz,
    PRIMARY KEY (instrument_id, start_time),
    CHECK (end_time IS NULL OR end_time > start_time)
);

-- Every message the collector could not accept, with why: never dropped silently.
CREATE TABLE dead_letters (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    topic       text NOT NULL,
    payload     bytea NOT NULL,
    reason      text NOT NULL,
    detail      text NOT NULL DEFAULT ''
);
CREATE INDEX dead_letters_reason ON dead_letters (reason, received_at);
