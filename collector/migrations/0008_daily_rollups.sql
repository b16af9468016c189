-- Daily rollups: each instrument's figures per local day of its institution,
-- kept by the collector in the transaction that changes the intervals, so
-- they outlast the raw heartbeats and serve reports without re-deriving a
-- year of intervals. Hours are the domain's floats (instrumetry.domain.daily),
-- so a stored day equals the same day measured from intervals. External
-- service hours are not stored: they depend on orders imported later.
CREATE TABLE daily_usage (
    instrument_id       text NOT NULL REFERENCES instruments (id),
    day                 date NOT NULL,              -- local day of the institution
    on_h                double precision NOT NULL,
    on_scheduled_h      double precision NOT NULL,
    running_h           double precision NOT NULL,
    running_scheduled_h double precision NOT NULL,
    effective_h         double precision NOT NULL,
    unknown_h           double precision NOT NULL,
    scheduled_h         double precision NOT NULL,
    working_day         boolean NOT NULL,
    day_on              boolean NOT NULL,
    -- The instrument's last_seen when the day was computed: open intervals
    -- counted until here. A day that ended before it is final.
    known_until         timestamptz NOT NULL,
    -- Fingerprint of the calendar and allowances the day was computed with
    -- (instrumetry.domain.daily.basis): a changed calendar makes it stale.
    basis               text NOT NULL,
    computed_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (instrument_id, day)
);
