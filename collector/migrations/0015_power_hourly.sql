-- Hourly power statistics, kept for good: one row per instrument and UTC hour,
-- which the collector folds each new heartbeat into in the batch that stores
-- it (instrumetry.domain.power). Raw heartbeats are dropped by whole chunks
-- after a retention window (the collector's heartbeat_retention_days); these
-- rows, 8,760 per instrument and year, are what outlasts them.
CREATE TABLE power_hourly (
    instrument_id text NOT NULL REFERENCES instruments (id),
    hour          timestamptz NOT NULL,
    heartbeats    integer NOT NULL CHECK (heartbeats > 0),
    -- Samples behind the heartbeats that report a mean power, and the sum of
    -- each one's mean times its samples: additive, so any order folds alike.
    samples       bigint NOT NULL CHECK (samples >= 0),
    power_sum_w   double precision NOT NULL,
    power_mean_w  double precision GENERATED ALWAYS AS (power_sum_w / nullif(samples, 0)) STORED,
    power_min_w   real,
    power_max_w   real,
    PRIMARY KEY (instrument_id, hour),
    CHECK (hour = date_trunc('hour', hour, 'UTC'))
);

INSERT INTO power_hourly (instrument_id, hour, heartbeats, samples, power_sum_w, power_min_w,
                          power_max_w)
SELECT instrument_id, date_trunc('hour', device_time, 'UTC'), count(*),
       coalesce(sum(samples) FILTER (WHERE power_mean_w IS NOT NULL), 0),
       coalesce(sum(power_mean_w::float8 * samples), 0), min(power_min_w), max(power_max_w)
  FROM heartbeats
 GROUP BY 1, 2;
