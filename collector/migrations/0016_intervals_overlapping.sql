-- The intervals of one instrument that overlap [from, until): read through the
-- primary key from the interval in force at `from` on, so that a day of an
-- instrument with years of history costs a few index probes. The plain test
-- (start_time < until AND (end_time IS NULL OR end_time > from)) bounds the
-- scan only above: it read every interval before `until`, and joined to a
-- list of instruments the planner hashed the whole table (416 ms for a day of
-- 100 instruments with four years of intervals). Intervals of an instrument do
-- not overlap, so only the last one starting at or before `from` can reach
-- into the range from before it. OFFSET 0 keeps the inlined body from being
-- flattened into the caller's join. The collector's daily rollups, the API
-- and the dashboards all read intervals through it.
CREATE FUNCTION intervals_overlapping(instrument text, range_from timestamptz, range_until timestamptz)
RETURNS TABLE (state instrument_state, start_time timestamptz, end_time timestamptz)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT iv.state, iv.start_time, iv.end_time
      FROM intervals iv
     WHERE iv.instrument_id = instrument
       AND iv.start_time >= coalesce(
               (SELECT max(p.start_time) FROM intervals p
                 WHERE p.instrument_id = instrument AND p.start_time <= range_from),
               '-infinity')
       AND iv.start_time < range_until
       AND (iv.end_time IS NULL OR iv.end_time > range_from)
    OFFSET 0
$$;
