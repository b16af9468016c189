"""Hourly power statistics: the pure fold, its upkeep in each batch, and heartbeat retention."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st
from psycopg import sql
from psycopg.rows import TupleRow

from collector import migrate, power
from collector.ingest import Parsed, parse_message
from collector.store import store_batch
from instrumetry.domain import topics, wire
from instrumetry.domain.audit import utc_time
from instrumetry.domain.power import HOUR_MS, HourPower, advance, hour_of, hourly
from tests.conftest import MakeDatabase, run_cli
from tests.test_collector_store import BOOT, beat, register

T0 = datetime(2025, 3, 3, 8, 0, tzinfo=UTC)


def parsed(heartbeat: wire.Heartbeat, received: datetime | None = None) -> Parsed:
    topic = topics.topic(topics.Kind.HEARTBEATS, heartbeat.instrument)
    when = received or utc_time(heartbeat.t) + timedelta(seconds=1)
    return parse_message(topic, wire.encode(heartbeat), when)


# --- the fold -------------------------------------------------------------

watts = st.floats(min_value=0, max_value=10_000, allow_nan=False)
beats = st.lists(
    st.builds(
        lambda instrument, minute, samples, low, spread, mean_at: beat(
            instrument,
            T0 + timedelta(minutes=minute),
            samples,
            (low, low + spread * mean_at, low + spread),
        ),
        st.sampled_from(["a", "b"]),
        st.integers(0, 200),
        st.integers(0, 120),
        watts,
        watts,
        st.floats(0, 1),
    ),
    max_size=30,
)


@given(beats, st.randoms())
def test_folding_in_any_order_and_split_gives_the_same_hours(
    heartbeats: list[wire.Heartbeat], rng: random.Random
) -> None:
    shuffled = list(heartbeats)
    rng.shuffle(shuffled)
    cut = len(shuffled) // 3
    parts = hourly(shuffled[:cut]) + hourly(shuffled[cut:])
    merged: dict[tuple[str, int], HourPower] = {}
    for part in parts:
        key = (part.instrument_id, part.hour_ms)
        merged[key] = merged[key].add(part) if key in merged else part
    whole = hourly(heartbeats)
    assert [(h.instrument_id, h.hour_ms) for h in whole] == sorted(merged)
    for hour in whole:
        other = merged[(hour.instrument_id, hour.hour_ms)]
        assert (hour.heartbeats, hour.samples) == (other.heartbeats, other.samples)
        assert (hour.power_min_w, hour.power_max_w) == (other.power_min_w, other.power_max_w)
        assert math.isclose(hour.power_sum_w, other.power_sum_w, rel_tol=1e-9, abs_tol=1e-6)


@given(beats)
def test_an_hour_is_its_heartbeats_sample_weighted(heartbeats: list[wire.Heartbeat]) -> None:
    for hour in hourly(heartbeats):
        own = [
            b
            for b in heartbeats
            if b.instrument == hour.instrument_id and b.t - b.t % HOUR_MS == hour.hour_ms
        ]
        assert hour.hour_ms % HOUR_MS == 0
        assert hour.heartbeats == len(own)
        assert hour.samples == sum(b.samples for b in own)
        assert hour.power_min_w == min(b.power_min_w or 0 for b in own)
        assert hour.power_max_w == max(b.power_max_w or 0 for b in own)
        if hour.samples:
            expected = sum((b.power_mean_w or 0) * b.samples for b in own) / hour.samples
            assert hour.power_mean_w is not None
            assert math.isclose(hour.power_mean_w, expected, rel_tol=1e-9, abs_tol=1e-6)
        else:
            assert hour.power_mean_w is None


@given(beats, beats)
def test_advancing_the_current_hours_loses_and_repeats_nothing(
    before: list[wire.Heartbeat], after: list[wire.Heartbeat]
) -> None:
    """Two batches: what both settled plus what is current then folds to all heartbeats;
    each instrument's current hour is its latest, and every settled hour is earlier."""
    settled_first, current = advance({}, hourly(before))
    settled_then, changed = advance(current, hourly(after))
    now = current | changed
    everything = hourly([*before, *after])
    latest = {h.instrument_id: h.hour_ms for h in everything}  # in key order: latest last
    assert {i: h.hour_ms for i, h in now.items()} == latest
    for settled in (settled_first, settled_then):
        assert all(h.hour_ms < latest[h.instrument_id] for h in settled)
        assert len({(h.instrument_id, h.hour_ms) for h in settled}) == len(settled)
    parts: dict[tuple[str, int], HourPower] = {}
    for h in [*settled_first, *settled_then, *now.values()]:
        key = (h.instrument_id, h.hour_ms)
        parts[key] = parts[key].add(h) if key in parts else h
    assert sorted(parts) == [(h.instrument_id, h.hour_ms) for h in everything]
    for hour in everything:
        part = parts[(hour.instrument_id, hour.hour_ms)]
        assert (part.heartbeats, part.samples) == (hour.heartbeats, hour.samples)
        assert (part.power_min_w, part.power_max_w) == (hour.power_min_w, hour.power_max_w)


def test_a_heartbeat_without_power_counts_but_weighs_nothing() -> None:
    hour = hour_of(beat("a", T0 + timedelta(minutes=59, seconds=59), 60, None))
    assert (hour.hour_ms, hour.heartbeats, hour.samples, hour.power_sum_w) == (
        int(T0.timestamp() * 1000),
        1,
        0,
        0.0,
    )
    assert (hour.power_mean_w, hour.power_min_w, hour.power_max_w) == (None, None, None)


def test_folds_of_different_hours_do_not_add() -> None:
    with pytest.raises(ValueError, match="same instrument and hour"):
        hour_of(beat("a", T0)).add(hour_of(beat("a", T0 + timedelta(hours=1))))


# --- in the database ------------------------------------------------------


Stored = tuple[datetime, int, int, float | None, float | None, float | None]


def stored_hours(conn: psycopg.Connection[TupleRow], instrument_id: str) -> list[Stored]:
    return conn.execute(
        "SELECT hour, heartbeats, samples::int, power_mean_w, power_min_w::float8, "
        "power_max_w::float8 FROM power_hours WHERE instrument_id = %s ORDER BY hour",
        (instrument_id,),
    ).fetchall()


def test_each_batch_folds_its_new_heartbeats_into_their_hours(
    conn: psycopg.Connection[TupleRow],
) -> None:
    nmr = register(conn)
    first = [
        beat(nmr, T0 + timedelta(minutes=10), 60, (1.0, 2.0, 3.0)),
        beat(nmr, T0 + timedelta(minutes=70), 30, None),
    ]
    result = store_batch(conn, [parsed(b) for b in first])
    assert (result.heartbeats_inserted, result.power_hours) == (2, 2)
    later = [
        beat(nmr, T0 + timedelta(minutes=20), 20, (0.5, 6.0, 8.0)),
        beat(nmr, T0 + timedelta(minutes=80), 10, (7.0, 7.0, 7.0)),
    ]
    store_batch(conn, [parsed(b) for b in later])
    assert stored_hours(conn, nmr) == [
        (T0, 2, 80, (2.0 * 60 + 6.0 * 20) / 80, 0.5, 8.0),
        (T0 + timedelta(hours=1), 2, 10, 7.0, 7.0, 7.0),
    ]
    # The latest hour is current; the earlier one was kept when the later one began,
    # and its late heartbeat was added to it there.
    for table, hour in (("power_hourly", T0), ("power_current", T0 + timedelta(hours=1))):
        held = conn.execute(
            sql.SQL("SELECT hour FROM {} WHERE instrument_id = %s").format(sql.Identifier(table)),
            (nmr,),
        ).fetchall()
        assert held == [(hour,)], table


def test_redelivered_heartbeats_add_nothing(conn: psycopg.Connection[TupleRow]) -> None:
    nmr = register(conn)
    once = [beat(nmr, T0 + timedelta(minutes=m)) for m in (1, 2)]
    store_batch(conn, [parsed(b) for b in once])
    # A redelivery with one new heartbeat goes through the temp table; a batch that
    # holds one heartbeat twice stores and folds it once.
    again = [*once, beat(nmr, T0 + timedelta(minutes=3)), beat(nmr, T0 + timedelta(minutes=3))]
    result = store_batch(conn, [parsed(b) for b in again])
    assert (result.heartbeats_inserted, result.heartbeats_duplicate) == (1, 3)
    assert stored_hours(conn, nmr) == [(T0, 3, 180, 5.0, 4.0, 6.0)]


def test_heartbeats_dated_past_the_retention_window_count_in_no_hour(
    conn: psycopg.Connection[TupleRow],
) -> None:
    nmr = register(conn)
    received = T0 + timedelta(days=30)
    old, recent = beat(nmr, T0), beat(nmr, received - timedelta(days=1))
    result = store_batch(
        conn, [parsed(old, received), parsed(recent, received)], retention=timedelta(days=7)
    )
    assert result.heartbeats_inserted == 2  # kept raw until its chunk is dropped
    assert [hour[0] for hour in stored_hours(conn, nmr)] == [received - timedelta(days=1)]


def test_dropping_heartbeats_keeps_their_hours(
    make_database: MakeDatabase, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with make_database("test_power_drop") as url, psycopg.connect(url, autocommit=True) as conn:
        nmr = register(conn)
        now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        days = [now - timedelta(days=d) for d in (40, 20, 0)]
        store_batch(conn, [parsed(beat(nmr, day)) for day in days])
        conn.execute("ANALYZE")  # the report's row counts are the planner's estimates
        assert run_cli(monkeypatch, url, "db", "heartbeats", "--prune", "--keep-days", "30") == 0
        out = capsys.readouterr().out
        assert "dropped 1 heartbeat chunk(s)" in out
        assert "in 2 day chunk(s)" in out and "hours of power kept: about 2 row(s)" in out
        assert [hour[0] for hour in stored_hours(conn, nmr)] == days
        held = conn.execute("SELECT device_time FROM heartbeats ORDER BY 1").fetchall()
        assert [when for (when,) in held] == days[1:]
        assert power.drop_heartbeats(conn, now - timedelta(days=30)) == []


@pytest.mark.parametrize(
    ("keep", "expected"), [("0", "keeps heartbeats for good"), ("-3", "greater than or equal to 0")]
)
def test_the_heartbeats_command_names_a_bad_window(
    make_database: MakeDatabase,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    keep: str,
    expected: str,
) -> None:
    with make_database("test_power_cli") as url:
        assert run_cli(monkeypatch, url, "db", "heartbeats", "--prune", "--keep-days", keep) == 2
        err = capsys.readouterr().err
        assert "--keep-days" in err and expected in err
        # A collector that keeps heartbeats for good (0) leaves the report working.
        monkeypatch.setenv("INSTRUMETRY_HEARTBEAT_RETENTION_DAYS", "0")
        assert run_cli(monkeypatch, url, "db", "heartbeats") == 0
        assert "heartbeats: about 0 row(s) in 0 day chunk(s)" in capsys.readouterr().out


def test_the_migration_folds_the_heartbeats_stored_before_it(
    make_database: MakeDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped = migrate.available()
    before = [m for m in shipped if m.name != "power_hourly"]
    with make_database("test_power_upgrade", migrated=False) as url:
        with psycopg.connect(url) as conn:
            monkeypatch.setattr(migrate, "available", lambda: before)
            migrate.migrate(conn, report=lambda _: None)
        with psycopg.connect(url, autocommit=True) as conn:
            nmr = register(conn)
            heartbeats = [
                beat(nmr, T0 + timedelta(minutes=5), 60, (1.0, 2.0, 3.0)),
                beat(nmr, T0 + timedelta(minutes=6), 20, (2.0, 4.0, 9.0)),
                beat(nmr, T0 + timedelta(minutes=65), 10, None),
            ]
            for b in heartbeats:  # stored raw, as before the migration
                conn.execute(
                    "INSERT INTO heartbeats (instrument_id, boot_id, device_time, received_at, "
                    "state, last_seq, samples, power_min_w, power_mean_w, power_max_w) "
                    "VALUES (%s, %s, %s, now(), 'standby', 1, %s, %s, %s, %s)",
                    (
                        nmr,
                        BOOT,
                        utc_time(b.t),
                        b.samples,
                        b.power_min_w,
                        b.power_mean_w,
                        b.power_max_w,
                    ),
                )
            monkeypatch.setattr(migrate, "available", lambda: shipped)
            migrate.migrate(conn, report=lambda _: None)
            assert stored_hours(conn, nmr) == [
                (T0, 2, 80, (2.0 * 60 + 4.0 * 20) / 80, 1.0, 9.0),
                (T0 + timedelta(hours=1), 1, 0, None, None, None),
            ]
