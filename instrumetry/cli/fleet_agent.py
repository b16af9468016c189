"""One virtual agent of a simulated fleet: the agent's own parts, and switches for faults.

It is the agent's ``AgentCore`` (classifier, signing, hash chain), its
fsynced ``Outbox`` and its MQTT ``Publisher``, assembled as ``run_agent``
assembles them, except that the clock and the meter are the fleet's and the
publisher's connection is shared with other virtual agents (``fleet_link``). It sits
between the core and the publisher as the core's outlet, which is where the
faults act: an offline agent keeps classifying into its outbox but sends
nothing (no events, no heartbeats) until it is back, then replays; a crash
closes everything, and a restart opens the same outbox again, with a new
boot id and the chain continuing where the outbox says.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agents.config import BrokerConfig
from agents.outbox import Outbox
from agents.publisher import Publisher
from agents.runner import AgentCore
from instrumetry.cli.fleet_link import SharedLink
from instrumetry.domain import wire
from instrumetry.domain.classify import Classifier
from instrumetry.domain.registry import Instrument


class FleetAgent:
    """A virtual agent the fleet driver feeds; see the module docstring.

    Its clock reads the time of the latest reading fed, ``start_ms`` (the
    fleet's first simulated millisecond) before any: it stamps the agent's
    statuses, as the readings' times stamp its events and heartbeats.
    """

    def __init__(
        self,
        instrument: Instrument,
        key: Ed25519PrivateKey,
        broker: BrokerConfig,
        link: SharedLink,
        state_dir: Path,
        *,
        heartbeat_s: float,
        start_ms: int,
    ) -> None:
        self.instrument = instrument
        self._key = key
        self._broker = broker
        self._link = link
        self._state_dir = state_dir
        self._heartbeat_s = heartbeat_s
        self.online = True
        self.alive = True
        self.boots = 0
        self._now_ms = start_ms  # the agent's clock: the time of the latest reading fed
        self._open()
        self.first_seq = self.outbox.head().next_seq

    def _open(self) -> None:
        self.outbox = Outbox(self._state_dir)
        self.publisher = Publisher(
            self._broker,
            instrument=self.instrument.id,
            outbox=self.outbox,
            clock_ms=lambda: self._now_ms,
        )
        self._link.adopt(self.publisher)
        self.core = AgentCore(
            instrument=self.instrument.id,
            outbox=self.outbox,
            classifier=Classifier(self.instrument.thresholds),
            signer=self._key.sign,
            outlet=self,
            heartbeat_interval_s=self._heartbeat_s,
        )
        self.boots += 1

    def start(self) -> None:
        self.publisher.start()

    # --- the core's outlet ---------------------------------------------------

    def pump(self, wait_s: float = 0.0) -> bool:
        return self.publisher.pump(wait_s) if self.online and self.alive else False

    def send_heartbeat(self, heartbeat: wire.Heartbeat) -> None:
        if self.online and self.alive:
            self.publisher.send_heartbeat(heartbeat)

    # --- the fleet driver's side (sim.fleet.VirtualAgent) ----------------------

    def on_readings(self, readings: list[tuple[int, float | None]]) -> None:
        if readings:
            self._now_ms = readings[-1][0]
        self.core.on_readings([(now_ms, power_w, None) for now_ms, power_w in readings])

    def crash(self) -> None:
        """Acks still queued in the dead publisher are lost; the events stay in the outbox.

        No clean close: the process is gone, so nothing says goodbye; the link
        publishes the agent's Last Will instead, as the broker would.
        """
        self.alive = False
        self._link.crash(self.instrument.id)
        self.outbox.close()

    def restart(self) -> None:
        """A new boot: on connecting, the new publisher resends whatever is still pending."""
        self._open()
        self.alive = True
        self.start()

    def set_online(self, online: bool) -> None:
        self.online = online

    # --- bookkeeping -------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self.publisher.connected

    def events(self) -> int:
        """Events made since the fleet started (the chain never reuses a seq)."""
        return self.outbox.head().next_seq - self.first_seq

    def pending(self) -> int:
        return self.outbox.count()

    def close(self) -> None:
        if self.alive:  # a crashed agent's publisher is gone already
            self.publisher.close()
        self.outbox.close()
