-- Hourly power statistics, kept for good: heartbeats, samples, the mean power
-- weighted by samples and the extremes, per instrument and UTC hour, folded by
-- the collector from each new heartbeat (instrumetry.domain.power). Raw
-- heartbeats are dropped by whole chunks after a retention window (the
-- collector's heartbeat_retention_days); these rows are what outlasts them.
--
-- The hour an instrument's heartbeats are arriving in lives in power_current,
-- one row per instrument, updated by every batch; the next hour's first
-- heartbeat moves it into power_hourly, which therefore only grows by inserts
-- (late heartbeats of a past hour are added to its row there) and stays
-- compact. Read both through power_hours.
CREATE TABLE power_hourly (
    instrument_id text NOT NULL REFERENCES instruments (id),
    hour          timestamptz NOT NULL,
    heartbeats    integer NOT NULL CHECK (heartbeats > 0),
    -- Samples behind the heartbeats that report a mean power, and the sum of
    -- each one's mean times its samples: additive, so any order folds alike.
    samples       bigint NOT NULL CHECK (samples >= 0),
    power_sum_w   double precision NOT NULL,
    power_min_w   real,
    power_max_w   real,
    PRIMARY KEY (instrument_id, hour),
    CHECK (hour = date_trunc('hour', hour, 'UTC'))
);

CREATE TABLE power_current (LIKE power_hourly INCLUDING CONSTRAINTS, PRIMARY KEY (instrument_id));
ALTER TABLE power_current ADD FOREIGN KEY (instrument_id) REFERENCES instruments (id);

-- Both tables hold an hour at once only briefly (a heartbeat stored before
-- this migration, in the hour it ran): the view adds them up.
CREATE VIEW power_hours AS
SELECT instrument_id, hour, sum(heartbeats)::integer AS heartbeats, sum(samples)::bigint AS samples,
       sum(power_sum_w) AS power_sum_w, sum(power_sum_w) / nullif(sum(samples), 0) AS power_mean_w,
       min(power_min_w) AS power_min_w, max(power_max_w) AS power_max_w
  FROM (SELECT * FROM power_hourly UNION ALL SELECT * FROM power_current) AS both_tables
 GROUP BY instrument_id, hour;

INSERT INTO power_hourly (instrument_id, hour, heartbeats, samples, power_sum_w, power_min_w,
                          power_max_w)
SELECT instrument_id, date_trunc('hour', device_time, 'UTC'), count(*),
       coalesce(sum(samples) FILTER (WHERE power_mean_w IS NOT NULL), 0),
       coalesce(sum(power_mean_w::float8 * samples), 0), min(power_min_w), max(power_max_w)
  FROM heartbeats
 GROUP BY 1, 2;
