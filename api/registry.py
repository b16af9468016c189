"""Writing the registry (institutions, instruments, agents) from domain objects.

Upserts, so that loading the same registry twice changes nothing and loading
an edited one updates it in place: ``instrumetry demo`` and registry imports
can be rerun safely. Each call is one transaction, all or nothing. The
functions take a synchronous connection because their callers (the CLI, the
simulator's set-up) are synchronous; none of them touches measured data
(``instruments.last_seen``, intervals, events).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg

from instrumetry.domain.registry import Agent, Institution, Instrument


def upsert_institutions(conn: psycopg.Connection[Any], institutions: Iterable[Institution]) -> int:
    """Insert or update institutions with their calendars; return how many were given."""
    rows = [
        (
            i.id,
            i.name,
            i.calendar.tz,
            sorted(i.calendar.workdays),
            i.calendar.day_start,
            i.calendar.day_end,
            sorted(i.calendar.holidays),
            sorted(i.calendar.extra_workdays),
        )
        for i in institutions
    ]
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO institutions
                   (id, name, tz, workdays, day_start, day_end, holidays, extra_workdays)
               VALUES (%s, %s, %s, %s::smallint[], %s, %s, %s::date[], %s::date[])
               ON CONFLICT (id) DO UPDATE SET
                   name = EXCLUDED.name, tz = EXCLUDED.tz, workdays = EXCLUDED.workdays,
                   day_start = EXCLUDED.day_start, day_end = EXCLUDED.day_end,
                   holidays = EXCLUDED.holidays, extra_workdays = EXCLUDED.extra_workdays""",
            rows,
        )
    return len(rows)


def upsert_instruments(conn: psycopg.Connection[Any], instruments: Iterable[Instrument]) -> int:
    """Insert or update instruments and their thresholds; return how many were given.

    Their institutions must exist already (``upsert_institutions`` first).
    """
    rows = [
        (
            i.id,
            i.institution_id,
            i.name,
            i.model,
            i.category.value,
            i.thresholds.standby_w,
            i.thresholds.run_w,
            i.thresholds.hysteresis_w,
            i.thresholds.min_dwell_s,
        )
        for i in instruments
    ]
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO instruments (id, institution_id, name, model, category,
                                        standby_w, run_w, hysteresis_w, min_dwell_s)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (id) DO UPDATE SET
                   institution_id = EXCLUDED.institution_id, name = EXCLUDED.name,
                   model = EXCLUDED.model, category = EXCLUDED.category,
                   standby_w = EXCLUDED.standby_w, run_w = EXCLUDED.run_w,
                   hysteresis_w = EXCLUDED.hysteresis_w, min_dwell_s = EXCLUDED.min_dwell_s""",
            rows,
        )
    return len(rows)


def upsert_agents(conn: psycopg.Connection[Any], agents: Iterable[Agent]) -> int:
    """Insert or update agents and their public keys; return how many were given.

    A changed key replaces the stored one (re-enrolment); ``enrolled_at`` keeps
    the first enrolment. Their instruments must exist already.
    """
    rows = [(a.id, a.instrument_id, a.public_key) for a in agents]
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO agents (id, instrument_id, public_key) VALUES (%s, %s, %s)
               ON CONFLICT (id) DO UPDATE SET
                   instrument_id = EXCLUDED.instrument_id, public_key = EXCLUDED.public_key""",
            rows,
        )
    return len(rows)
