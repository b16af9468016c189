"""The collector's Prometheus metrics, served at ``/metrics`` on their own port.

Each ``Collector`` has a registry of its own rather than the library's global
one, so several collectors in one process (tests, benchmarks) never clash.
Names follow Prometheus conventions: ``_total`` counters, base units.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from collector.ingest import Parsed
from collector.store import StoreResult
from instrumetry.domain.audit import AUTHENTIC, Verification
from instrumetry.domain.errors import ServiceError

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class CollectorMetrics:
    """Counters and histograms the service updates after each committed batch."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.messages = Counter(
            "instrumetry_collector_messages",
            "Messages committed, by topic kind.",
            ["kind"],
            registry=r,
        )
        self.events_stored = Counter(
            "instrumetry_collector_events_stored", "New events stored.", registry=r
        )
        self.heartbeats_stored = Counter(
            "instrumetry_collector_heartbeats_stored", "New heartbeats stored.", registry=r
        )
        self.redeliveries = Counter(
            "instrumetry_collector_redeliveries",
            "Events and heartbeats received again after they were stored (no-ops).",
            registry=r,
        )
        self.dead_letters = Counter(
            "instrumetry_collector_dead_letters",
            "Dead letters kept, by reason.",
            ["reason"],
            registry=r,
        )
        self.verification_failures = Counter(
            "instrumetry_collector_verification_failures",
            "New events that failed verification, by verdict.",
            ["reason"],
            registry=r,
        )
        self.batch_seconds = Histogram(
            "instrumetry_collector_batch_seconds",
            "Time to store and commit one batch.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.commit_lag_seconds = Histogram(
            "instrumetry_collector_commit_lag_seconds",
            "Time from a message's receipt to the commit that stored it.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.database_retries = Counter(
            "instrumetry_collector_database_retries",
            "Batches retried because the database was unavailable or refused them.",
            registry=r,
        )
        self.heartbeat_chunks_dropped = Counter(
            "instrumetry_collector_heartbeat_chunks_dropped",
            "Day chunks of raw heartbeats dropped past the retention window.",
            registry=r,
        )
        self.signature_child_failures = Counter(
            "instrumetry_collector_signature_child_failures",
            "Batches whose signature-checking child failed: checked in the collector instead.",
            registry=r,
        )
        self.offline_periods = Counter(
            "instrumetry_collector_offline_periods_opened",
            "Agent offline periods opened, by reason.",
            ["reason"],
            registry=r,
        )
        self.clock_skew_flags = Counter(
            "instrumetry_collector_clock_skew_flags",
            "Live messages whose device clock was off by more than the limit.",
            registry=r,
        )
        self.messages_in_hand = Gauge(
            "instrumetry_collector_messages_in_hand",
            "Messages received and not yet acked: queued, in a batch being checked or stored. "
            "The receive maximum asked of the broker (two batches) bounds it.",
            registry=r,
        )
        self.agents_online = Gauge(
            "instrumetry_collector_agents_online",
            "Agents heard within the heartbeat timeout and not offline.",
            registry=r,
        )

    def observe_batch(
        self,
        parsed: Iterable[Parsed],
        result: StoreResult,
        committed_at: datetime,
        store_seconds: float,
        skew_limit: timedelta,
    ) -> None:
        """Account for one committed batch."""
        kinds: dict[str, int] = {}
        for item in parsed:
            kind = _kind(item)
            kinds[kind] = kinds.get(kind, 0) + 1
            self.commit_lag_seconds.observe(
                max(0.0, (committed_at - item.source.received_at).total_seconds())
            )
        for kind, count in kinds.items():
            self.messages.labels(kind=kind).inc(count)
        self.batch_seconds.observe(store_seconds)
        self.events_stored.inc(result.events_inserted)
        self.heartbeats_stored.inc(result.heartbeats_inserted)
        self.redeliveries.inc(result.events_duplicate + result.heartbeats_duplicate)
        for letter in result.dead_letters:
            self.dead_letters.labels(reason=letter.reason.value).inc()
        for verdict, count in result.verdicts.items():
            if Verification(verdict) not in AUTHENTIC:
                self.verification_failures.labels(reason=verdict).inc(count)
        if result.offline_opened:
            self.offline_periods.labels(reason="offline_status").inc(result.offline_opened)
        flagged = sum(1 for _, skew in result.clock_skews if abs(skew) > skew_limit)
        self.clock_skew_flags.inc(flagged)


def _kind(item: Parsed) -> str:
    """The topic's kind (``events``, ...) if the topic has our shape, else ``other``."""
    parts = item.source.topic.split("/")
    return parts[2] if len(parts) == 4 and parts[:2] == ["instrumetry", "v1"] else "other"


class MetricsServer:
    """``/metrics`` over HTTP in a daemon thread, with a clean stop."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        try:
            server, self._thread = start_http_server(port, host, registry=registry)
        except OSError as error:
            reason = error.strerror or str(error)
            raise ServiceError(f"cannot serve metrics on {host}:{port}: {reason}") from None
        self._server: WSGIServer = server

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
