-- Monthly rollups: each instrument's daily rows (daily_usage) summed per
-- calendar month of its local days, so a year's report sums 12 rows per
-- instrument instead of 365. Kept by triggers on daily_usage, in the
-- statement that changes the days: whoever writes daily_usage (the
-- collector's refresh, a rebuild, an administrator's fix), every month row
-- is the sum of its days when the transaction commits.
CREATE TABLE monthly_usage (
    instrument_id       text NOT NULL REFERENCES instruments (id),
    month               date NOT NULL,              -- first local day of the month
    days                integer NOT NULL,           -- daily rows summed
    on_h                double precision NOT NULL,
    on_scheduled_h      double precision NOT NULL,
    running_h           double precision NOT NULL,
    running_scheduled_h double precision NOT NULL,
    effective_h         double precision NOT NULL,
    unknown_h           double precision NOT NULL,
    scheduled_h         double precision NOT NULL,
    working_days        integer NOT NULL,
    days_on             integer NOT NULL,
    -- Days known as far as their own end (known_until >= the local midnight
    -- ending the day, in time zone tz): a month whose days are all final
    -- holds whatever the instrument's last_seen is now.
    final_days          integer NOT NULL,
    tz                  text NOT NULL,
    -- The days' common basis (instrumetry.domain.daily.basis), NULL if they
    -- were computed under different calendars.
    basis               text,
    PRIMARY KEY (instrument_id, month)
);

-- Recompute the given (instrument, month) pairs from their days: delete, then
-- insert the sums of the days still stored (none: no row).
CREATE FUNCTION monthly_usage_recompute(ids text[], months date[]) RETURNS void
LANGUAGE sql AS $$
    DELETE FROM monthly_usage m
     USING unnest(ids, months) AS t(id, month)
     WHERE m.instrument_id = t.id AND m.month = t.month;
    INSERT INTO monthly_usage (instrument_id, month, days, on_h, on_scheduled_h, running_h,
                               running_scheduled_h, effective_h, unknown_h, scheduled_h,
                               working_days, days_on, final_days, tz, basis)
    SELECT t.id, t.month, a.*
      FROM (SELECT DISTINCT id, month, (month + interval '1 month')::date
              FROM unnest(ids, months) AS u(id, month)) AS t(id, month, next)
      JOIN instruments i ON i.id = t.id
      JOIN institutions s ON s.id = i.institution_id
      -- Per month, so its days are an index range (a join scanned every day of the
      -- instrument: 4x slower for a month of 500 instruments).
      CROSS JOIN LATERAL (
          SELECT count(*) AS days, sum(d.on_h), sum(d.on_scheduled_h), sum(d.running_h),
                 sum(d.running_scheduled_h), sum(d.effective_h), sum(d.unknown_h),
                 sum(d.scheduled_h), count(*) FILTER (WHERE d.working_day),
                 count(*) FILTER (WHERE d.day_on),
                 count(*) FILTER (WHERE d.known_until
                                        >= ((d.day + 1)::timestamp AT TIME ZONE s.tz)),
                 s.tz, CASE WHEN min(d.basis) = max(d.basis) THEN min(d.basis) END
            FROM daily_usage d
           WHERE d.instrument_id = t.id AND d.day >= t.month AND d.day < t.next
      ) AS a
     WHERE a.days > 0;
$$;

-- The months of the rows a statement inserted, deleted or updated (an update
-- may move a row to another month or instrument: both sides count).
CREATE FUNCTION monthly_usage_follow() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM monthly_usage_recompute(array_agg(id), array_agg(month))
           FROM (SELECT DISTINCT instrument_id, date_trunc('month', day::timestamp)::date
                   FROM new_days) AS c(id, month);
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM monthly_usage_recompute(array_agg(id), array_agg(month))
           FROM (SELECT DISTINCT instrument_id, date_trunc('month', day::timestamp)::date
                   FROM old_days) AS c(id, month);
    ELSE
        PERFORM monthly_usage_recompute(array_agg(id), array_agg(month))
           FROM (SELECT instrument_id, date_trunc('month', day::timestamp)::date
                   FROM new_days
                  UNION
                 SELECT instrument_id, date_trunc('month', day::timestamp)::date
                   FROM old_days) AS c(id, month);
    END IF;
    RETURN NULL;
END
$$;

-- Transition tables need one trigger per event.
CREATE TRIGGER monthly_usage_insert AFTER INSERT ON daily_usage
    REFERENCING NEW TABLE AS new_days
    FOR EACH STATEMENT EXECUTE FUNCTION monthly_usage_follow();
CREATE TRIGGER monthly_usage_delete AFTER DELETE ON daily_usage
    REFERENCING OLD TABLE AS old_days
    FOR EACH STATEMENT EXECUTE FUNCTION monthly_usage_follow();
CREATE TRIGGER monthly_usage_update AFTER UPDATE ON daily_usage
    REFERENCING OLD TABLE AS old_days NEW TABLE AS new_days
    FOR EACH STATEMENT EXECUTE FUNCTION monthly_usage_follow();

CREATE FUNCTION monthly_usage_clear() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE monthly_usage;
    RETURN NULL;
END
$$;
CREATE TRIGGER monthly_usage_truncate AFTER TRUNCATE ON daily_usage
    FOR EACH STATEMENT EXECUTE FUNCTION monthly_usage_clear();

-- Rollups stored before this migration.
SELECT monthly_usage_recompute(array_agg(id), array_agg(month))
  FROM (SELECT DISTINCT instrument_id, date_trunc('month', day::timestamp)::date
          FROM daily_usage) AS c(id, month);
