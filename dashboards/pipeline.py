"""Pipeline health: is data arriving, how late, what is refused, which agents are online.

Most panels read the tables the collector writes. Commit lag (a message's
receipt to the commit that stored it) is in no table: it comes from the
collector's Prometheus histogram, which docker compose's Prometheus scrapes.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus
from grafana_foundation_sdk.models.prometheus import QueryEditorMode

from dashboards.common import FILTER, dashboard
from dashboards.fleet import AGENT_STATUS
from dashboards.panels import pie_panel, table_panel, time_series_panel
from dashboards.query import PROMETHEUS, Sql

UID = "instrumetry-pipeline"

INGEST = f"""
SELECT $__timeGroupAlias(e.received_at, $__interval), 'events' AS metric, count(*) AS messages
FROM events e JOIN instruments i ON i.id = e.instrument_id
WHERE $__timeFilter(e.received_at) AND {FILTER}
GROUP BY 1
UNION ALL
SELECT $__timeGroupAlias(h.received_at, $__interval), 'heartbeats', count(*)
FROM heartbeats h JOIN instruments i ON i.id = h.instrument_id
WHERE $__timeFilter(h.received_at) AND {FILTER}
GROUP BY 1
ORDER BY 1, 2
"""
"""Messages stored per interval, by the collector's clock (``received_at``)."""

LAG = f"""
SELECT $__timeGroupAlias(e.received_at, $__interval),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY l.lag_s) AS p50_s,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY l.lag_s) AS p95_s,
       max(l.lag_s) AS max_s
FROM events e JOIN instruments i ON i.id = e.instrument_id
CROSS JOIN LATERAL (SELECT extract(epoch FROM e.received_at - e.device_time)::float8 AS lag_s) l
WHERE $__timeFilter(e.received_at) AND {FILTER}
GROUP BY 1 ORDER BY 1
"""
"""Received − device time: delivery lag, plus any clock skew, plus outbox replays after outages."""

COMMIT_LAG = (
    "histogram_quantile({quantile}, sum by (le) "
    "(rate(instrumetry_collector_commit_lag_seconds_bucket[$__rate_interval])))"
)
"""A quantile of the commit lag over every collector of the shared subscription."""


TROUBLE = (
    ("database retries", "instrumetry_collector_database_retries_total"),
    ("signature child failures", "instrumetry_collector_signature_child_failures_total"),
)
"""What slows the collectors down without losing anything, as counted in their metrics."""


IN_HAND = "sum by (instance) (instrumetry_collector_messages_in_hand)"
"""Each collector's messages received and not yet acked."""


def _promql(expr: str, legend: str, ref_id: str) -> prometheus.Dataquery:
    return (
        prometheus.Dataquery()
        .datasource(PROMETHEUS)
        .editor_mode(QueryEditorMode.CODE)
        .expr(expr)
        .legend_format(legend)
        .range()
        .ref_id(ref_id)
    )


DEAD_LETTERS = """
SELECT $__timeGroupAlias(received_at, $__interval), reason AS metric, count(*) AS messages
FROM dead_letters WHERE $__timeFilter(received_at)
GROUP BY 1, 2 ORDER BY 1, 2
"""

SILENT = f"""
SELECT i.id AS instrument, i.name, coalesce(st.status, 'never seen') AS agent_status,
       st.changed_at AS status_since, i.last_seen,
       extract(epoch FROM now() - i.last_seen)::float8 AS silent_s
FROM instruments i LEFT JOIN agent_status st ON st.instrument_id = i.id
WHERE {FILTER}
ORDER BY i.last_seen ASC NULLS FIRST, i.id
LIMIT 50
"""
"""The instruments heard from least recently: first to look at when coverage drops."""

OFFLINE_OPENED = f"""
SELECT $__timeGroupAlias(p.opened_at, $__interval), p.reason AS metric, count(*) AS periods
FROM offline_periods p JOIN instruments i ON i.id = p.instrument_id
WHERE $__timeFilter(p.opened_at) AND {FILTER}
GROUP BY 1, 2 ORDER BY 1, 2
"""
"""Offline periods the collector opened per interval (its clock), by why it opened them."""

OFFLINE_LATEST = f"""
SELECT p.opened_at, p.instrument_id AS instrument, p.reason, p.start_time AS offline_from,
       p.end_time AS offline_until, p.end_time IS NULL AS still_offline
FROM offline_periods p JOIN instruments i ON i.id = p.instrument_id
WHERE $__timeFilter(p.opened_at) AND {FILTER}
ORDER BY p.opened_at DESC, p.instrument_id
LIMIT 200
"""
"""The offline periods opened in the range, open ones marked: agents to look after now."""


def build() -> dash.Dashboard:
    return (
        dashboard(
            UID,
            "Instrumetry · Pipeline health",
            "Ingest rate, delivery lag, refused messages and agent status, from the database "
            "the collector writes.",
            "now-6h",
            "now",
        )
        .with_panel(
            time_series_panel(
                "Ingest rate",
                "Events and heartbeats stored per interval, by the time the collector got them.",
                [Sql(INGEST).columns("time", "metric", "messages").time_series()],
                "short",
            )
        )
        .with_panel(
            time_series_panel(
                "Delivery lag (received − device time)",
                "Median, 95th percentile and maximum per interval. Large values after an "
                "outage are agents replaying their outboxes, not a slow collector.",
                [Sql(LAG).columns("time", "p50_s", "p95_s", "max_s").time_series()],
                "s",
            )
        )
        .with_panel(
            time_series_panel(
                "Commit lag (receipt to commit)",
                "Median and 95th percentile of the time from the collector receiving a "
                "message to the commit that stored it (the collectors' Prometheus histogram): "
                "the collector's own delay, whatever the agents' clocks.",
                [
                    _promql(COMMIT_LAG.format(quantile=0.5), "p50", "A"),
                    _promql(COMMIT_LAG.format(quantile=0.95), "p95", "B"),
                ],
                "s",
                datasource=PROMETHEUS,
            )
        )
        .with_panel(
            time_series_panel(
                "Collector retries and fallbacks",
                "Batches retried because the database was unavailable or refused them, and "
                "batches whose signature-checking child failed and were checked in the "
                "collector instead (at about half speed). Nothing is lost either way; a "
                "steady rate says what to look at.",
                [
                    _promql(f"sum(increase({counter}[$__rate_interval]))", legend, ref)
                    for (legend, counter), ref in zip(TROUBLE, "AB", strict=True)
                ],
                "short",
                datasource=PROMETHEUS,
                bars=True,
            )
        )
        .with_panel(
            time_series_panel(
                "Messages in hand per collector",
                "Received from the broker and not yet committed and acked. Each collector "
                "asks the broker for at most two batches in flight, so this stays below "
                "twice its batch size; the rest of a backlog (a database outage, a burst) "
                "waits in the broker's persistent session.",
                [_promql(IN_HAND, "{{instance}}", "A")],
                "short",
                datasource=PROMETHEUS,
            )
        )
        .with_panel(
            time_series_panel(
                "Dead letters by reason",
                "Messages the collector refused and kept, per interval.",
                [Sql(DEAD_LETTERS).columns("time", "metric", "messages").time_series()],
                "short",
                bars=True,
            )
        )
        .with_panel(
            pie_panel(
                "Agents online",
                "The status each agent last announced (offline is its MQTT last will).",
                Sql(AGENT_STATUS).columns("online", "offline", "never_seen"),
                width=12,
            )
        )
        .with_panel(
            table_panel(
                "Least recently heard from",
                "Instruments by the device time of their latest message; silent_s is how long ago.",
                Sql(SILENT).columns(
                    "instrument", "name", "agent_status", "status_since", "last_seen", "silent_s"
                ),
                {"silent_s": "s"},
                height=10,
            )
        )
        .with_panel(
            time_series_panel(
                "Offline periods opened, by reason",
                "offline_status: the agent's last will or clean shutdown; heartbeat_timeout: "
                "the collector stopped hearing it.",
                [Sql(OFFLINE_OPENED).columns("time", "metric", "periods").time_series()],
                "short",
                bars=True,
            )
        )
        .with_panel(
            table_panel(
                "Offline periods opened in the range",
                "The newest 200, by the collector's clock; offline_from and offline_until are "
                "device times of the last message before and the first after.",
                Sql(OFFLINE_LATEST).columns(
                    "opened_at",
                    "instrument",
                    "reason",
                    "offline_from",
                    "offline_until",
                    "still_offline",
                ),
                {},
                width=12,
                height=8,
            )
        )
    )
