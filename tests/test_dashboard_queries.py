"""Every panel query, expanded as Grafana would, against a fleet the simulator recorded.

The fleet runs through the agent's own code, the broker and an in-process
collector into a database of this module's own. Its institutions are then
given different calendars (another time zone, a holiday, a swapped working
day, shorter hours), so the panels and the API disagree unless both handle
local days the same way. Queries run as Grafana's read-only role. A real
Prometheus scrapes the collector's /metrics during the run, for the PromQL
panels.
"""

from __future__ import annotations

import math
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import astuple, dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
import psycopg
import pytest
from grafana_foundation_sdk.models import prometheus as prometheus_model
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row

from api.auth import Role
from collector.service import Collector
from collector.settings import CollectorSettings
from dashboards import audit, build, fleet, institution, instrument
from dashboards.common import INSTITUTIONS, INSTRUMENTS, STATE_CODES
from dashboards.query import SqlQuery
from instrumetry.cli.fleet import simulate
from instrumetry.domain.audit import Verification
from instrumetry.domain.reconcile import Flag
from sim.orders import OrderSettings, make_orders
from sim.scenario import Fleet, FleetSpec, build_fleet
from tests import prometheus
from tests.api_support import issue_token, serve
from tests.grafana import TimeRange, Variable, expand, expand_promql

if TYPE_CHECKING:
    from instrumetry.devstack.stack import StackInfo
    from tests.conftest import MakeDatabase

GRAFANA_ROLE = "instrumetry_grafana"
GRAFANA_PASSWORD = "grafana-test-password"

SPEC = FleetSpec(instruments=8, days=7, first_day=date(2026, 3, 2), seed=11)
"""Monday 2 to Sunday 8 March 2026, Shanghai time."""

SIMULATED = TimeRange(
    # Starts before and ends after the simulated week, so every panel sees gaps too.
    start=datetime(2026, 3, 1, 12, 17, 3, tzinfo=UTC),
    end=datetime(2026, 3, 9, 5, 41, 0, 500_000, tzinfo=UTC),
    interval=timedelta(minutes=10),
)

CALENDARS = [
    ("city-univ", "UPDATE institutions SET holidays = '{2026-03-04}' WHERE id = %s"),
    ("inst-tech", "UPDATE institutions SET tz = 'Europe/Berlin' WHERE id = %s"),
    ("med-school", "UPDATE institutions SET extra_workdays = '{2026-03-07}' WHERE id = %s"),
    (
        "materials-lab",
        "UPDATE institutions SET day_start = '09:30', day_end = '17:00', workdays = '{0,1,2,3}' "
        "WHERE id = %s",
    ),
]


UNVERIFIABLE_ORDER = "SO-BEFORE-THE-FLEET"
"""Booked before the fleet's first message (inside ``SIMULATED``): nothing measured it."""

OWN_QUOTA = ("city-univ", 1000.0)
"""An instrument of this institution gets its own annual quota (migration 0004)."""


def _store_orders(conn: psycopg.Connection[Any], fleet: Fleet) -> None:
    """The simulator's orders with one of each bad kind, and one order nobody could verify."""
    orders, _ = make_orders(fleet, OrderSettings(inflated=1, phantom=1, double_billed=1), SPEC.seed)
    early = SIMULATED.start + timedelta(minutes=30)
    unmeasured = replace(
        orders[0],
        order_id=UNVERIFIABLE_ORDER,
        external=True,
        starts_at=early,
        ends_at=early + timedelta(hours=2),
        billed_hours=2.0,
    )
    rows = [astuple(order) for order in [*orders, unmeasured]]
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO service_orders (order_id, instrument_id, customer_org, external, "
            "purpose, starts_at, ends_at, billed_hours, amount_yuan) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            rows,
        )


def _store_audit_records(conn: psycopg.Connection[Any]) -> None:
    """What a fleet with faults would leave: chain verdicts other than ok, offline spans.

    The simulated fleet runs without faults, so these rows are written as the
    collector writes them, on its first instrument.
    """
    (instrument,) = conn.execute("SELECT min(id) FROM instruments").fetchone() or ("",)
    for seq, verdict in ((3, Verification.GAP), (5, Verification.CHAIN_BREAK)):
        conn.execute(
            "UPDATE events SET verification = %s WHERE instrument_id = %s AND seq = %s",
            [verdict.value, instrument, seq],
        )
    start = SIMULATED.start + timedelta(days=2)
    conn.execute(
        "INSERT INTO offline_periods (instrument_id, start_time, end_time, reason, boot_id, "
        "resumed_boot_id) VALUES (%s, %s, %s, 'heartbeat_timeout', %s, %s)",
        [instrument, start, start + timedelta(hours=2), uuid.uuid4(), uuid.uuid4()],
    )


@dataclass(frozen=True, slots=True)
class Seeded:
    url: str
    """The application role's URL (the collector's and the API's)."""
    grafana_url: str
    """The same database as Grafana's read-only role."""
    recorded_at: datetime
    """Wall-clock time around the simulation: when the collector received everything."""
    started_at: datetime
    """Wall-clock time the collector started: the start of its Prometheus metrics."""
    prometheus_url: str
    """A Prometheus that scraped the collector's /metrics while the fleet ran."""


def _ensure_grafana_role(superuser_dsn: str) -> None:
    """The role migration 0006 grants to; created here because the test's app role may not."""
    with psycopg.connect(superuser_dsn, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [GRAFANA_ROLE])
        if not exists.fetchone():
            conn.execute(f"CREATE ROLE {GRAFANA_ROLE} LOGIN")
        conn.execute(f"ALTER ROLE {GRAFANA_ROLE} PASSWORD '{GRAFANA_PASSWORD}'")


@pytest.fixture(scope="module")
def seeded(
    make_database: MakeDatabase,
    stack_info: StackInfo,
    mqtt_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    unused_ports: Callable[[int], list[int]],
) -> Iterator[Seeded]:
    _ensure_grafana_role(stack_info.superuser_dsn)
    simulated = build_fleet(SPEC)
    metrics_port, prometheus_port = unused_ports(2)  # not 9464: a parallel run may have it
    with (
        make_database("test_dash") as url,
        prometheus.prometheus(
            f"127.0.0.1:{metrics_port}", prometheus_port, tmp_path_factory.mktemp("prometheus")
        ) as prometheus_url,
    ):
        collector = Collector(
            CollectorSettings(
                database_url=url,
                mqtt_url=mqtt_url,
                client_id="collector-dashboards",
                share_group="dashboards",
                batch_ms=50,
                heartbeat_retention_days=0,  # the simulated week is months old: keep it
                metrics_host="127.0.0.1",
                metrics_port=metrics_port,
            )
        )
        started_at = datetime.now(UTC)
        collector.start()
        worker = threading.Thread(target=collector.serve, name="collector-for-dashboards")
        worker.start()
        try:
            # Prometheus applies new targets only every 5 s: without a scrape before the
            # fleet, its first sample may already hold every count, and rate() sees none.
            prometheus.wait_for_scrape(prometheus_url, started_at)
            simulate(
                simulated,
                database_url=url,
                mqtt_url=mqtt_url,
                work_dir=tmp_path_factory.mktemp("dash-fleet"),
                report=lambda *_: None,
            )
            prometheus.wait_for_scrape(prometheus_url, datetime.now(UTC))
        finally:
            collector.stop()
            worker.join(timeout=15)
        assert not worker.is_alive(), "the collector did not stop"
        recorded_at = datetime.now(UTC)
        with psycopg.connect(url) as conn:
            for institution_id, statement in CALENDARS:
                conn.execute(statement, [institution_id])
            conn.execute(
                "UPDATE instruments SET annual_quota_h = %s WHERE id = "
                "(SELECT min(id) FROM instruments WHERE institution_id = %s)",
                [OWN_QUOTA[1], OWN_QUOTA[0]],
            )
            _store_orders(conn, simulated)
            _store_audit_records(conn)
            conn.execute(
                "INSERT INTO dead_letters (received_at, topic, payload, reason, detail) "
                "VALUES (%s, 'instrumetry/v1/events/ghost', '\\x00', 'malformed', 'test'), "
                "(now(), 'instrumetry/v1/events/ghost', '\\x00', 'unknown_instrument', 'test')",
                [SIMULATED.start + timedelta(days=1)],
            )
        grafana_url = make_conninfo(url, user=GRAFANA_ROLE, password=GRAFANA_PASSWORD)
        yield Seeded(url, grafana_url, recorded_at, started_at, prometheus_url)


def _all(conn: psycopg.Connection[Any], sql: str, **variables: Variable) -> list[str]:
    query = expand(sql, SIMULATED, variables)
    return [row[0] for row in conn.execute(query).fetchall()]


def _variables(conn: psycopg.Connection[Any]) -> dict[str, Variable]:
    """Both variables at "All", resolved the way Grafana resolves them: by their own queries."""
    institutions = Variable(_all(conn, INSTITUTIONS))
    instruments = Variable(_all(conn, INSTRUMENTS, institution=institutions))
    return {"institution": institutions, "instrument": instruments}


def _range_for(dashboard_uid: str, seeded: Seeded) -> TimeRange:
    """The pipeline's panels read the collector's clock (received_at): the last hour."""
    if dashboard_uid == "instrumetry-pipeline":
        now = datetime.now(UTC)
        return TimeRange(seeded.recorded_at - timedelta(hours=1), now, timedelta(seconds=30))
    return SIMULATED


def _targets() -> list[tuple[str, str, Any]]:
    found = []
    for board in build.dashboards().values():
        for panel in board.panels or []:
            for target in getattr(panel, "targets", None) or []:
                assert isinstance(target, SqlQuery | prometheus_model.Dataquery), panel.title
                found.append((str(board.uid), str(panel.title), target))
    return found


TARGETS = [t for t in _targets() if isinstance(t[2], SqlQuery)]
PROMQL = [t for t in _targets() if isinstance(t[2], prometheus_model.Dataquery)]


@pytest.fixture(scope="module")
def grafana_conn(seeded: Seeded) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(seeded.grafana_url, autocommit=True) as conn:
        yield conn


def test_the_variables_list_every_institution_and_instrument(
    grafana_conn: psycopg.Connection[Any],
) -> None:
    variables = _variables(grafana_conn)
    assert len(variables["institution"].values) == 4
    assert len(variables["instrument"].values) == SPEC.instruments


@pytest.mark.parametrize(
    ("uid", "title", "query"), TARGETS, ids=[f"{uid}:{title}" for uid, title, _ in TARGETS]
)
def test_panel_query_returns_the_columns_its_panel_reads(
    seeded: Seeded,
    grafana_conn: psycopg.Connection[Any],
    uid: str,
    title: str,
    query: SqlQuery,
) -> None:
    time_range = _range_for(uid, seeded)
    sql = expand(query.sql, time_range, _variables(grafana_conn))
    assert "$" not in sql.replace("$$", ""), f"unexpanded macro or variable in {title}"
    cur = grafana_conn.execute(sql)
    assert cur.description is not None
    columns = tuple(column.name for column in cur.description)
    rows = cur.fetchall()
    assert columns == query.columns
    assert rows, f"{title}: no rows from the simulated fleet"
    if query.format == "time_series":
        assert columns[0] == "time"
        times = [row[0] for row in rows]
        assert all(isinstance(t, datetime) for t in times)
        assert times == sorted(times), "Grafana needs time series sorted by time"
        for row in rows:
            for name, value in zip(columns[1:], row[1:], strict=True):
                if name != "metric":
                    assert value is None or isinstance(value, int | float), (name, value)


def test_a_subset_of_institutions_selects_only_their_instruments(
    grafana_conn: psycopg.Connection[Any],
) -> None:
    everything = _variables(grafana_conn)
    one = Variable(everything["institution"].values[:1])
    instruments = Variable(_all(grafana_conn, INSTRUMENTS, institution=one))
    rows = grafana_conn.execute(
        expand(fleet.BY_INSTRUMENT, SIMULATED, {"institution": one, "instrument": instruments}),
    ).fetchall()
    assert 0 < len(rows) < SPEC.instruments
    assert {row[0] for row in rows} == set(instruments.values)


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def api(seeded: Seeded) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(seeded.url, issue_token(seeded.url, Role.AUDITOR)) as client:
        yield client


COMPARED = [
    "scheduled_h",
    "on_scheduled_h",
    "startup_rate",
    "working_days",
    "days_on",
    "days_on_share",
    "utilisation",
    "effective_h",
    "unknown_h",
    "coverage",
]


@pytest.mark.anyio
@pytest.mark.parametrize(
    "time_range",
    [
        SIMULATED,
        # One Shanghai working day, to the second: the period edges cut runs and windows.
        TimeRange(
            datetime(2026, 3, 3, 1, 30, tzinfo=UTC), datetime(2026, 3, 3, 9, 15, 30, tzinfo=UTC)
        ),
    ],
    ids=["week-with-gaps", "one-day"],
)
async def test_usage_by_instrument_equals_the_api_report(
    api: httpx.AsyncClient, grafana_conn: psycopg.Connection[Any], time_range: TimeRange
) -> None:
    response = await api.get(
        "/api/v1/reports/startup-rate",
        params={"from": time_range.start.isoformat(), "to": time_range.end.isoformat()},
    )
    assert response.status_code == 200, response.text
    expected = {row["instrument_id"]: row for row in response.json()["instruments"]}
    cur = grafana_conn.cursor(row_factory=dict_row)
    panel = cur.execute(
        expand(fleet.BY_INSTRUMENT, time_range, _variables(grafana_conn))
    ).fetchall()
    assert {row["instrument"] for row in panel} == set(expected)
    assert any(row["startup_rate"] for row in panel), "the fleet was never on: a weak check"
    for row in panel:
        want = expected[row["instrument"]]
        for name in COMPARED:
            got = row[name]
            if want[name] is None:
                assert got is None, (row["instrument"], name, got)
            else:
                assert got is not None, (row["instrument"], name)
                assert math.isclose(got, want[name], rel_tol=1e-9, abs_tol=1e-9), (
                    row["instrument"],
                    name,
                    got,
                    want[name],
                )


def test_grafana_role_reads_but_cannot_write(seeded: Seeded) -> None:
    with psycopg.connect(seeded.grafana_url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone() is not None
        for statement in (
            "INSERT INTO dead_letters (topic, payload, reason) VALUES ('t', '\\x00', 'r')",
            "UPDATE instruments SET name = 'x'",
            "DELETE FROM intervals",
            "CREATE TABLE grafana_was_here (x int)",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)


def test_tables_of_later_migrations_are_readable_by_grafana(seeded: Seeded) -> None:
    """Default privileges: a table the migrating role creates later needs no new grant."""
    with psycopg.connect(seeded.url, autocommit=True) as conn:
        conn.execute("CREATE TABLE later_migration (x int)")
        conn.execute("INSERT INTO later_migration VALUES (1)")
    try:
        with psycopg.connect(seeded.grafana_url) as conn:
            assert conn.execute("SELECT x FROM later_migration").fetchall() == [(1,)]
    finally:
        with psycopg.connect(seeded.url, autocommit=True) as conn:
            conn.execute("DROP TABLE later_migration")


@pytest.mark.anyio
async def test_institution_and_fleet_totals_pool_the_api_report(
    api: httpx.AsyncClient, grafana_conn: psycopg.Connection[Any]
) -> None:
    """Pooled ratios: the sum of the API's hours over the instruments, divided once."""
    response = await api.get(
        "/api/v1/reports/startup-rate",
        params={"from": SIMULATED.start.isoformat(), "to": SIMULATED.end.isoformat()},
    )
    rows = response.json()["instruments"]
    names = dict(grafana_conn.execute("SELECT id, name FROM institutions").fetchall())
    variables = _variables(grafana_conn)
    cur = grafana_conn.cursor(row_factory=dict_row)

    def pooled(subset: list[dict[str, Any]]) -> dict[str, float]:
        scheduled = sum(r["scheduled_h"] for r in subset)
        return {
            "startup_rate": sum(r["on_scheduled_h"] for r in subset) / scheduled,
            "utilisation": sum(r["utilisation"] * r["scheduled_h"] for r in subset) / scheduled,
            "effective_h": sum(r["effective_h"] for r in subset),
            "coverage": 1
            - sum(r["unknown_h"] for r in subset) / sum(r["period"]["hours"] for r in subset),
        }

    by_institution = cur.execute(expand(fleet.BY_INSTITUTION, SIMULATED, variables)).fetchall()
    assert len(by_institution) == len({r["institution_id"] for r in rows})
    for panel_row in by_institution:
        subset = [r for r in rows if names[r["institution_id"]] == panel_row["institution"]]
        assert panel_row["instruments"] == len(subset)
        for name, value in pooled(subset).items():
            assert math.isclose(panel_row[name], value, rel_tol=1e-9), (name, panel_row)
    (totals,) = cur.execute(expand(fleet.FLEET_TOTALS, SIMULATED, variables)).fetchall()
    for name, value in pooled(rows).items():
        assert math.isclose(totals[name], value, rel_tol=1e-9), name


def _close(got: float | None, want: float | None) -> bool:
    if want is None or got is None:
        return got is want
    return math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9)


INSTITUTION_FIGURES = ["effective_h", "external_h", "sharing_rate", "quota_h", "coverage"]


@pytest.mark.anyio
async def test_external_hours_and_sharing_rate_equal_the_api(
    api: httpx.AsyncClient, grafana_conn: psycopg.Connection[Any]
) -> None:
    """The institution view's summary and months against /api/v1/usage for the same instants."""
    names = dict(grafana_conn.execute("SELECT name, id FROM institutions").fetchall())
    bounds = {"from": SIMULATED.start.isoformat(), "to": SIMULATED.end.isoformat()}
    cur = grafana_conn.cursor(row_factory=dict_row)
    variables = _variables(grafana_conn)
    summary = cur.execute(expand(institution.SUMMARY, SIMULATED, variables)).fetchall()
    months = cur.execute(expand(institution.MONTHLY_TABLE, SIMULATED, variables)).fetchall()
    assert len(summary) == len(names)
    assert sum(row["external_h"] for row in summary) > 0, "no external hours: a weak check"
    for row in summary:
        response = await api.get(
            f"/api/v1/usage/institutions/{names[row['institution']]}", params=bounds
        )
        assert response.status_code == 200, response.text
        want = response.json()["figures"]
        for name in INSTITUTION_FIGURES:
            assert _close(row[name], want[name]), (row["institution"], name, row[name], want[name])
    for row in months:
        response = await api.get(
            f"/api/v1/usage/institutions/{names[row['institution']]}/series",
            params={**bounds, "step": "month"},
        )
        assert response.status_code == 200, response.text
        (bucket,) = [
            b
            for b in response.json()["buckets"]
            if datetime.fromisoformat(b["start"]) == max(row["month"], SIMULATED.start)
        ]
        for name in INSTITUTION_FIGURES:
            got, want = row[name], bucket["figures"][name]
            assert _close(got, want), (row["institution"], name, got, want)


@pytest.mark.anyio
async def test_reconciliation_flags_and_evidence_equal_the_api(
    api: httpx.AsyncClient, grafana_conn: psycopg.Connection[Any]
) -> None:
    response = await api.get(
        "/api/v1/reconciliation",
        params={
            "from": SIMULATED.start.isoformat(),
            "to": SIMULATED.end.isoformat(),
            "limit": 1000,
        },
    )
    assert response.status_code == 200, response.text
    report = response.json()
    expected = {item["order"]["order_id"]: item for item in report["items"]}
    assert report["total"] == len(expected)
    variables = _variables(grafana_conn)
    cur = grafana_conn.cursor(row_factory=dict_row)
    orders = cur.execute(expand(audit.ORDERS, SIMULATED, variables)).fetchall()
    assert {row["order_id"] for row in orders} == set(expected)
    assert set(Flag) <= {f for item in expected.values() for f in item["flags"]}, "weak check"
    assert expected[UNVERIFIABLE_ORDER]["flags"] == ["inflated", "unverifiable"]
    for row in orders:
        want = expected[row["order_id"]]
        assert row["flags"] == ", ".join(want["flags"]), row["order_id"]
        evidence = want["evidence"]
        for name in ("window_h", "on_h", "effective_h", "coverage"):
            assert _close(row[name], evidence[name]), (row["order_id"], name)
        overlaps = evidence["overlaps"]
        assert (row["overlapping_orders"] or "") == ", ".join(o["order_id"] for o in overlaps)
        assert _close(row["max_overlap_h"], max((o["hours"] for o in overlaps), default=None))
    (counts,) = cur.execute(expand(audit.FLAG_COUNTS, SIMULATED, variables)).fetchall()
    assert counts == {"orders": len(expected), **report["flag_counts"]}
    shown = cur.execute(expand(audit.EVIDENCE, SIMULATED, variables)).fetchall()
    flagged = sorted(order_id for order_id, item in expected.items() if item["flags"])
    assert sorted({row["order_id"] for row in shown}) == [
        order_id for order_id in flagged if expected[order_id]["evidence"]["intervals"]
    ]
    for order_id in flagged:
        assert [
            (row["state"], row["start"], row["end"]) for row in shown if row["order_id"] == order_id
        ] == [
            (i["state"], datetime.fromisoformat(i["start"]), datetime.fromisoformat(i["end"]))
            for i in expected[order_id]["evidence"]["intervals"]
        ], order_id


def _one_instrument(conn: psycopg.Connection[Any], instrument_id: str) -> dict[str, Variable]:
    """The variables as a user leaves them after picking one instrument."""
    return {**_variables(conn), "instrument": Variable([instrument_id])}


def _drawn(points: list[tuple[datetime, int]], time_range: TimeRange) -> list[tuple[str, Any, Any]]:
    """What the state timeline draws from the panel's points: each state until the next point.

    Before the first point nothing is drawn, which reads as unknown; adjacent
    spans of one state are one, as in the API.
    """
    names = {code: name for name, code in STATE_CODES.items()}
    marks = [(time_range.start, "unknown"), *((t, names[code]) for t, code in points)]
    spans: list[tuple[str, Any, Any]] = []
    for (start, state), (end, _) in zip(marks, [*marks[1:], (time_range.end, "")], strict=True):
        if start >= end:
            continue
        if spans and spans[-1][0] == state and spans[-1][2] == start:
            spans[-1] = (state, spans[-1][1], end)
        else:
            spans.append((state, start, end))
    return spans


@pytest.mark.anyio
async def test_instrument_detail_equals_the_api_instrument_by_instrument(
    api: httpx.AsyncClient, grafana_conn: psycopg.Connection[Any]
) -> None:
    """State timeline = /timeline; daily effective hours and quota = /series?step=day."""
    bounds = {"from": SIMULATED.start.isoformat(), "to": SIMULATED.end.isoformat()}
    ids = _variables(grafana_conn)["instrument"].values
    own_quota = grafana_conn.execute(
        "SELECT id FROM instruments WHERE annual_quota_h IS NOT NULL"
    ).fetchall()
    assert len(own_quota) == 1, "no instrument with its own quota: a weak check"
    used = 0.0
    for instrument_id in ids:
        variables = _one_instrument(grafana_conn, instrument_id)
        timeline = await api.get(
            f"/api/v1/usage/instruments/{instrument_id}/timeline", params=bounds
        )
        assert timeline.status_code == 200, timeline.text
        points = grafana_conn.execute(expand(instrument.STATES, SIMULATED, variables)).fetchall()
        assert {metric for _, metric, _ in points} == {instrument_id}
        assert _drawn([(t, code) for t, _, code in points], SIMULATED) == [
            (s["state"], datetime.fromisoformat(s["start"]), datetime.fromisoformat(s["end"]))
            for s in timeline.json()["segments"]
        ], instrument_id

        series = await api.get(
            f"/api/v1/usage/instruments/{instrument_id}/series", params={**bounds, "step": "day"}
        )
        assert series.status_code == 200, series.text
        buckets = series.json()["buckets"]
        cur = grafana_conn.cursor(row_factory=dict_row)
        daily = cur.execute(expand(instrument.DAILY, SIMULATED, variables)).fetchall()
        assert [max(row["time"], SIMULATED.start) for row in daily] == [
            datetime.fromisoformat(b["start"]) for b in buckets
        ], instrument_id
        used += sum(row["effective_h"] for row in daily)
        for row, bucket in zip(daily, buckets, strict=True):
            for name in ("effective_h", "quota_h"):
                got, want = row[name], bucket["figures"][name]
                assert _close(got, want), (instrument_id, bucket["label"], name, got, want)
    assert used > 0, "the fleet was never used: a weak check"


@pytest.mark.parametrize(
    ("uid", "title", "query"), PROMQL, ids=[f"{uid}:{title}:{q.ref_id}" for uid, title, q in PROMQL]
)
def test_prometheus_panel_query_charts_the_collector_that_ran(
    seeded: Seeded, uid: str, title: str, query: prometheus_model.Dataquery
) -> None:
    """Each PromQL query, expanded as Grafana would, on what Prometheus scraped of the run."""
    run = TimeRange(
        seeded.started_at, seeded.recorded_at + timedelta(seconds=5), timedelta(seconds=2)
    )
    expr = expand_promql(str(query.expr), run, prometheus.SCRAPE)
    assert "$" not in expr, f"unexpanded variable in {title}"
    series = prometheus.query_range(
        seeded.prometheus_url, expr, run.start, run.end, max(run.interval, prometheus.SCRAPE)
    )
    assert series, f"{title}: no series from the collector's metrics"
    values = [float(v) for s in series for _, v in s["values"]]
    assert any(math.isfinite(v) and v >= 0 for v in values), (title, values)
