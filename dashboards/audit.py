"""Audit: what was received from whom, what was refused and why.

Built from the tables every deployment has: events (signed, sequence
numbered), enrolled agents and their keys, dead letters. Reconciliation of
service orders and hash-chain verification add their panels here when their
tables exist (see ``dashboards/README.md``).
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash

from dashboards.common import FILTER, dashboard
from dashboards.panels import table_panel, time_series_panel
from dashboards.query import Sql

UID = "instrumetry-audit"

EVENTS_PER_INSTRUMENT = f"""
WITH ranged AS (
  SELECT e.instrument_id, e.boot_id, e.seq, e.device_time,
         e.seq - lag(e.seq) OVER (PARTITION BY e.instrument_id ORDER BY e.seq) AS step
  FROM events e JOIN instruments i ON i.id = e.instrument_id
  WHERE $__timeFilter(e.device_time) AND {FILTER}
)
SELECT r.instrument_id AS instrument, i.name, s.name AS institution, count(*) AS events,
       count(DISTINCT r.boot_id) AS boots, min(r.device_time) AS first_event,
       max(r.device_time) AS last_event, min(r.seq) AS first_seq, max(r.seq) AS last_seq,
       count(*) FILTER (WHERE r.step > 1) AS seq_gaps
FROM ranged r JOIN instruments i ON i.id = r.instrument_id
JOIN institutions s ON s.id = i.institution_id
GROUP BY r.instrument_id, i.name, s.name ORDER BY r.instrument_id
"""
"""Per instrument: events in the range, and where its sequence numbers skip (a missing event)."""

DEAD_LETTERS_BY_REASON = """
SELECT reason, count(*) AS messages, min(received_at) AS first, max(received_at) AS last
FROM dead_letters WHERE $__timeFilter(received_at)
GROUP BY reason ORDER BY messages DESC, reason
"""

DEAD_LETTERS_OVER_TIME = """
SELECT $__timeGroupAlias(received_at, $__interval), reason AS metric, count(*) AS messages
FROM dead_letters WHERE $__timeFilter(received_at)
GROUP BY 1, 2 ORDER BY 1, 2
"""

LATEST_DEAD_LETTERS = """
SELECT received_at, reason, topic, detail, length(payload) AS payload_bytes
FROM dead_letters WHERE $__timeFilter(received_at)
ORDER BY received_at DESC, id DESC LIMIT 200
"""

AGENTS = f"""
SELECT a.id AS agent, a.instrument_id AS instrument, a.enrolled_at,
       left(encode(sha256(a.public_key), 'hex'), 16) AS key_sha256
FROM agents a JOIN instruments i ON i.id = a.instrument_id
WHERE {FILTER}
ORDER BY a.instrument_id, a.enrolled_at
"""
"""Enrolled agents with a fingerprint of the Ed25519 key their events are verified with."""


def build() -> dash.Dashboard:
    return (
        dashboard(
            UID,
            "Instrumetry · Audit",
            "Evidence for auditors: signed events per instrument with their sequence gaps, "
            "the agents' keys, and every message the collector refused, with its reason.",
            "now-30d",
            "now",
        )
        .with_panel(
            table_panel(
                "Events per instrument",
                "seq_gaps counts where an instrument's sequence numbers skip inside the range: "
                "an event that was never received (or falls outside the range).",
                Sql(EVENTS_PER_INSTRUMENT).columns(
                    "instrument",
                    "name",
                    "institution",
                    "events",
                    "boots",
                    "first_event",
                    "last_event",
                    "first_seq",
                    "last_seq",
                    "seq_gaps",
                ),
                {},
                height=10,
            )
        )
        .with_panel(
            table_panel(
                "Dead letters by reason",
                "Messages the collector kept but did not accept (malformed, unsigned, "
                "unknown or unauthorised): none is dropped silently.",
                Sql(DEAD_LETTERS_BY_REASON).columns("reason", "messages", "first", "last"),
                {},
                width=10,
                height=8,
            )
        )
        .with_panel(
            time_series_panel(
                "Dead letters over time",
                "Refused messages per interval, by reason.",
                [Sql(DEAD_LETTERS_OVER_TIME).columns("time", "metric", "messages").time_series()],
                "short",
                width=14,
                bars=True,
            )
        )
        .with_panel(
            table_panel(
                "Latest dead letters",
                "The newest 200 refused messages; the payload is kept in the database.",
                Sql(LATEST_DEAD_LETTERS).columns(
                    "received_at", "reason", "topic", "detail", "payload_bytes"
                ),
                {"payload_bytes": "bytes"},
                width=14,
                height=10,
            )
        )
        .with_panel(
            table_panel(
                "Enrolled agents",
                "key_sha256: the first 16 hex digits of SHA-256 over the agent's raw public key.",
                Sql(AGENTS).columns("agent", "instrument", "enrolled_at", "key_sha256"),
                {},
                width=10,
                height=10,
            )
        )
    )
