"""Audit: billed orders against measurement, the evidence, and what was received from whom.

Reconciliation writes DESIGN.md's flags in SQL over the same building blocks
as the usage panels (``usage_sql``), one period per order window, with the
domain's default tolerances: an auditor sees the flags the API computes
(``GET /api/v1/reconciliation`` without tolerance parameters) and the
measured intervals they rest on. Then the hash chain's verdicts, the spans
agents were offline, clock skew, refused messages and the agents' keys.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash

from dashboards.common import FILTER, HOURS, RATIO, dashboard
from dashboards.panels import stat_panel, table_panel, time_series_panel
from dashboards.query import Sql
from dashboards.usage_sql import FROM, TO, usage
from instrumetry.domain.audit import Verification
from instrumetry.domain.reconcile import DEFAULT_TOLERANCES, Flag

UID = "instrumetry-audit"

_T = DEFAULT_TOLERANCES
_MAX_OVERLAP_H = _T.max_overlap.total_seconds() / 3600

ORDER_WINDOWS = f"""SELECT o.instrument_id, o.order_id AS bucket, o.starts_at AS p0, o.ends_at AS p1
  FROM service_orders o JOIN selected sel ON sel.instrument_id = o.instrument_id
  WHERE o.starts_at < {TO} AND o.ends_at > {FROM}"""
"""One period per order whose window meets the range (as the API selects them), keyed by id."""

_FLAG_RULES = {
    Flag.INFLATED: (
        f"r.billed_hours::float8 > r.effective_h * {_T.inflation_factor}::float8"
        f" + {_T.inflation_slack_h}::float8"
    ),
    Flag.PHANTOM: f"r.coverage >= {_T.min_coverage}::float8 AND r.on_h = 0",
    Flag.DOUBLE_BILLED: f"coalesce(r.max_overlap_h > {_MAX_OVERLAP_H}::float8, false)",
    Flag.UNVERIFIABLE: f"r.coverage < {_T.min_coverage}::float8",
}
"""``instrumetry.domain.reconcile.flags`` in SQL, with the default ``Tolerances``."""

_FLAGS = ", ".join(f"CASE WHEN {rule} THEN '{flag}' END" for flag, rule in _FLAG_RULES.items())

RECONCILED = f"""{usage(ORDER_WINDOWS)},
overlapping AS (
  SELECT o.order_id, other.order_id AS other_id,
         extract(epoch FROM least(o.ends_at, other.ends_at)
                 - greatest(o.starts_at, other.starts_at))::float8 / 3600 AS hours
  FROM service_orders o JOIN service_orders other
    ON other.instrument_id = o.instrument_id AND other.order_id <> o.order_id
   AND other.starts_at < o.ends_at AND other.ends_at > o.starts_at
  WHERE o.order_id IN (SELECT bucket FROM periods)
),
measured AS (
  SELECT o.order_id, o.instrument_id, o.customer_org, o.external, o.starts_at, o.ends_at,
         o.billed_hours, u.period_h AS window_h, u.on_h, u.effective_h, u.unknown_h,
         1 - u.unknown_h / u.period_h AS coverage,
         (SELECT max(ov.hours) FROM overlapping ov WHERE ov.order_id = o.order_id)
           AS max_overlap_h,
         (SELECT string_agg(ov.other_id, ', ' ORDER BY ov.other_id) FROM overlapping ov
           WHERE ov.order_id = o.order_id) AS overlapping_orders
  FROM usage u JOIN service_orders o ON o.order_id = u.bucket
),
reconciled AS (
  SELECT r.*, array_remove(ARRAY[{_FLAGS}], NULL) AS flags FROM measured r
)"""
"""CTEs ending in ``reconciled``: each order's evidence figures and its flags (a text array)."""

FLAG_COUNTS = f"""
WITH {RECONCILED}
SELECT count(*) AS orders,
       {", ".join(f"count(*) FILTER (WHERE '{flag}' = ANY (flags)) AS {flag}" for flag in Flag)}
FROM reconciled
"""

ORDERS = f"""
WITH {RECONCILED}
SELECT order_id, instrument_id AS instrument, customer_org, external, starts_at, ends_at,
       billed_hours::float8 AS billed_h, window_h, on_h, effective_h, coverage,
       overlapping_orders, max_overlap_h, array_to_string(flags, ', ') AS flags
FROM reconciled
ORDER BY cardinality(flags) = 0, starts_at, order_id
"""
"""Every order in the range with its evidence figures, flagged ones first."""

EVIDENCE = f"""
WITH {RECONCILED}
SELECT r.order_id, r.instrument_id AS instrument, array_to_string(r.flags, ', ') AS flags,
       v.state::text AS state, greatest(v.start_time, r.starts_at) AS start,
       least(coalesce(v.end_time, sel.last_seen), r.ends_at) AS "end",
       extract(epoch FROM least(coalesce(v.end_time, sel.last_seen), r.ends_at)
               - greatest(v.start_time, r.starts_at))::float8 / 3600 AS hours
FROM reconciled r
JOIN selected sel ON sel.instrument_id = r.instrument_id
CROSS JOIN LATERAL intervals_overlapping(r.instrument_id, r.starts_at, r.ends_at) AS v
WHERE cardinality(r.flags) > 0
  AND coalesce(v.end_time, sel.last_seen) > greatest(v.start_time, r.starts_at)
ORDER BY r.order_id, start
"""
"""The measured intervals in each flagged order's window, clipped to it; the rest is unknown."""

VERIFICATION = f"""
SELECT e.instrument_id AS instrument, i.name, count(*) AS events,
       {", ".join(f"count(*) FILTER (WHERE e.verification = '{v}') AS {v}" for v in Verification)},
       count(*) FILTER (WHERE e.verification IS NULL) AS unverified
FROM events e JOIN instruments i ON i.id = e.instrument_id
WHERE $__timeFilter(e.device_time) AND {FILTER}
GROUP BY e.instrument_id, i.name ORDER BY e.instrument_id
"""
"""Events per instrument by the collector's verdict on arrival (``events.verification``)."""

FAILED_VERIFICATION = f"""
SELECT e.device_time AS time, e.instrument_id AS instrument, e.boot_id::text AS boot, e.seq,
       e.verification, e.received_at
FROM events e JOIN instruments i ON i.id = e.instrument_id
WHERE $__timeFilter(e.device_time) AND {FILTER} AND e.verification <> '{Verification.OK}'
ORDER BY e.device_time DESC, e.instrument_id, e.seq DESC
LIMIT 500
"""

OFFLINE = f"""
SELECT p.instrument_id AS instrument, p.start_time AS offline_from, p.end_time AS offline_until,
       p.reason,
       CASE WHEN p.end_time IS NULL THEN 'still offline'
            WHEN p.resumed_boot_id IS DISTINCT FROM p.boot_id THEN 'restarted: unmeasured'
            ELSE 'reconnected: replayed' END AS outcome,
       extract(epoch FROM coalesce(p.end_time, {TO}) - p.start_time)::float8 / 3600 AS hours
FROM offline_periods p JOIN instruments i ON i.id = p.instrument_id
WHERE {FILTER} AND p.start_time < {TO} AND (p.end_time IS NULL OR p.end_time > {FROM})
ORDER BY p.instrument_id, p.start_time
"""
"""Spans an agent was not heard from, with why the collector opened them and how they ended."""

CLOCKS = f"""
SELECT i.id AS instrument, i.name, i.clock_skew_ms::float8 / 1000 AS clock_skew_s,
       i.last_heard_at, i.last_boot_id::text AS boot,
       (SELECT count(*) FROM offline_periods p WHERE p.instrument_id = i.id
          AND p.start_time < {TO} AND (p.end_time IS NULL OR p.end_time > {FROM}))
         AS offline_periods
FROM instruments i WHERE {FILTER}
ORDER BY abs(i.clock_skew_ms) DESC NULLS LAST, i.id
"""
"""Per instrument: its agent's clock skew (receive − device time), last contact, offline spans."""

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
            "Evidence for auditors: billed service orders reconciled with measured usage "
            "(flags and the intervals they rest on), hash-chain verdicts, offline spans and "
            "clock skew, signed events per instrument with their sequence gaps, the agents' "
            "keys, and every message the collector refused, with its reason.",
            "now-30d",
            "now",
        )
        .with_panel(
            stat_panel(
                "Reconciliation flags",
                "Orders whose window meets the range, and how many carry each flag "
                f"(DESIGN.md; tolerances: billed > effective × {_T.inflation_factor} + "
                f"{_T.inflation_slack_h} h, coverage < {_T.min_coverage:.0%}, overlap > "
                f"{_MAX_OVERLAP_H * 60:.0f} min). The same as GET /api/v1/reconciliation.",
                Sql(FLAG_COUNTS).columns("orders", *Flag),
                {},
                width=24,
            )
        )
        .with_panel(
            table_panel(
                "Service orders against measured usage",
                "Per order: billed hours against the effective hours measured in its window, "
                "powered-on hours, coverage, and the other orders on the instrument its window "
                "overlaps. Flagged orders first.",
                Sql(ORDERS).columns(
                    "order_id",
                    "instrument",
                    "customer_org",
                    "external",
                    "starts_at",
                    "ends_at",
                    "billed_h",
                    "window_h",
                    "on_h",
                    "effective_h",
                    "coverage",
                    "overlapping_orders",
                    "max_overlap_h",
                    "flags",
                ),
                {
                    "billed_h": HOURS,
                    "window_h": HOURS,
                    "on_h": HOURS,
                    "effective_h": HOURS,
                    "max_overlap_h": HOURS,
                    "coverage": RATIO,
                },
                height=10,
            )
        )
        .with_panel(
            table_panel(
                "Evidence: measured intervals in flagged orders' windows",
                "The stored intervals inside each flagged order's window, clipped to it; an "
                "open interval ends when its agent was last heard from. Window time no row "
                "covers was not measured (unknown).",
                Sql(EVIDENCE).columns(
                    "order_id", "instrument", "flags", "state", "start", "end", "hours"
                ),
                {"hours": HOURS},
                height=10,
            )
        )
        .with_panel(
            table_panel(
                "Chain verification by instrument",
                "Events in the range by the collector's verdict: ok, gap (seq − 1 not stored), "
                "chain_break (prev hash differs), bad_signature, unknown_key (no enrolled key); "
                "unverified: stored before verification existed. Bad signatures and unknown "
                "keys do not count in usage.",
                Sql(VERIFICATION).columns(
                    "instrument", "name", "events", *Verification, "unverified"
                ),
                {},
                width=14,
                height=9,
            )
        )
        .with_panel(
            table_panel(
                "Events failing verification",
                "The newest 500 events in the range whose verdict is not ok.",
                Sql(FAILED_VERIFICATION).columns(
                    "time", "instrument", "boot", "seq", "verification", "received_at"
                ),
                {},
                width=10,
                height=9,
            )
        )
        .with_panel(
            table_panel(
                "Offline periods",
                "Spans an agent was not heard from (reason: its offline status or a heartbeat "
                "timeout). Restarted: another boot came back, so the span was not measured "
                "and counts as unknown; reconnected: the same boot replayed its outbox. "
                "Open spans count to the end of the range.",
                Sql(OFFLINE).columns(
                    "instrument", "offline_from", "offline_until", "reason", "outcome", "hours"
                ),
                {"hours": HOURS},
                width=14,
                height=9,
            )
        )
        .with_panel(
            table_panel(
                "Clock skew and last contact",
                "clock_skew_s: the collector's receive time minus the agent's device time of "
                "its latest live message; a skewed clock shifts the event times it signs.",
                Sql(CLOCKS).columns(
                    "instrument",
                    "name",
                    "clock_skew_s",
                    "last_heard_at",
                    "boot",
                    "offline_periods",
                ),
                {"clock_skew_s": "s"},
                width=10,
                height=9,
            )
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
