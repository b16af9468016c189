-- Each boot of an instrument's agent: the device times of the first and last
-- event or heartbeat heard from it. Consecutive boots bound a restart: nothing
-- was measured from the old boot's last message to the new boot's first, and
-- the interval rebuild makes that time `unknown`. Being a minimum and a
-- maximum, the bounds are the same whatever order the messages are stored in,
-- which offline periods (opened and closed by messages in arrival order) are
-- not when several collectors share the load. A few rows per instrument and
-- year; heartbeats are dropped after a while, these rows are kept.
CREATE TABLE agent_boots (
    instrument_id text NOT NULL REFERENCES instruments (id),
    boot_id       uuid NOT NULL,
    first_seen    timestamptz NOT NULL,
    last_seen     timestamptz NOT NULL,
    PRIMARY KEY (instrument_id, boot_id),
    CHECK (last_seen >= first_seen)
);
CREATE INDEX agent_boots_first_seen ON agent_boots (instrument_id, first_seen);

INSERT INTO agent_boots (instrument_id, boot_id, first_seen, last_seen)
SELECT instrument_id, boot_id, min(device_time), max(device_time)
  FROM (SELECT instrument_id, boot_id, device_time FROM events
         WHERE coalesce(verification, 'ok') NOT IN ('bad_signature', 'unknown_key')
        UNION ALL
        SELECT instrument_id, boot_id, device_time FROM heartbeats) AS heard
  WHERE instrument_id IN (SELECT id FROM instruments)
 GROUP BY instrument_id, boot_id;
