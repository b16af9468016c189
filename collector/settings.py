"""The collector's settings: one pydantic-settings class, read from ``INSTRUMETRY_*``.

Built by the CLI when a command runs, never at import time, so importing the
collector opens nothing and reads no environment.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import unquote, urlsplit

from pydantic import Field, ValidationError, field_validator
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, SettingsConfigDict

from instrumetry.domain.errors import ConfigError

_MQTT_DEFAULT_PORT = 1883
_SESSION_EXPIRY_MAX = 2**32 - 1  # MQTT v5 Session Expiry Interval is a four-byte integer
RECEIVE_MAXIMUM_LIMIT = 2**16 - 1  # MQTT v5 Receive Maximum is a two-byte integer


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Where the broker listens, and the login if the URL carries one."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None

    def __str__(self) -> str:
        """``mqtt://host:port`` without the password, for messages and logs."""
        return f"mqtt://{self.host}:{self.port}"


def parse_mqtt_url(url: str) -> BrokerAddress:
    """Split ``mqtt://[user[:password]@]host[:port]``, or raise ``ValueError`` naming the fault."""
    parts = urlsplit(url)
    if parts.scheme != "mqtt":
        raise ValueError(f"{url!r} is not an mqtt://host:port URL")
    try:
        port = parts.port or _MQTT_DEFAULT_PORT
    except ValueError:
        raise ValueError(f"{url!r} has an invalid port") from None
    if not parts.hostname or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{url!r} is not an mqtt://host:port URL")
    return BrokerAddress(
        host=parts.hostname,
        port=port,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


class CollectorSettings(BaseSettings):
    """How the collector reaches its services and how large its batches are.

    Batches trade latency for throughput: one COPY and one commit carry up to
    ``batch_max`` messages, and no message waits longer than ``batch_ms`` for
    its batch to fill. Every collector of a fleet needs its own ``client_id``
    (its persistent session) and the same ``share_group``.

    The collector asks the broker for an in-flight window of two batches (its
    MQTT v5 receive maximum): one being stored, the next being checked. Two
    batches must fit the protocol's limit of 65,535, hence ``batch_max``'s bound.
    """

    model_config = SettingsConfigDict(env_prefix="INSTRUMETRY_", extra="ignore")

    database_url: str = Field(min_length=1)
    mqtt_url: str
    client_id: str = Field(default="instrumetry-collector", min_length=1, max_length=128)
    share_group: str = Field(default="collectors", pattern=r"^[A-Za-z0-9._-]{1,64}$")
    batch_max: int = Field(default=1000, ge=1, le=RECEIVE_MAXIMUM_LIMIT // 2)
    """Messages per batch. 1,000 drained 30% faster than 500 (docs/BENCHMARKS.md): an
    instrument's events in one batch share its interval rebuild and its row updates."""
    batch_ms: int = Field(default=200, ge=1, le=600_000)
    session_expiry_s: int = Field(default=7 * 24 * 3600, ge=0, le=_SESSION_EXPIRY_MAX)
    heartbeat_timeout_s: float = Field(default=180, gt=0, le=7 * 24 * 3600)
    """An agent not heard for this long is offline: three of its default 60 s heartbeats."""
    heartbeat_retention_days: int = Field(default=30, ge=0, le=36_500)
    """Days raw heartbeats are kept (dropped by whole day chunks); 0 keeps them for good.
    Their hourly power statistics (``power_hours``) are kept for good either way."""
    clock_skew_limit_s: float = Field(default=60, gt=0)
    """A device clock further off than this from the collector's is flagged."""
    signature_processes: int = Field(default=1, ge=0, le=64)
    """Child processes that check the events' signatures; 0 checks them in the collector's own."""
    metrics_host: str = Field(default="0.0.0.0", min_length=1)  # noqa: S104  # scraped from outside
    metrics_port: int = Field(default=9464, ge=0, le=65535)
    """Port of ``/metrics``; 0 turns it off."""

    @field_validator("mqtt_url")
    @classmethod
    def _check_mqtt_url(cls, url: str) -> str:
        parse_mqtt_url(url)
        return url

    @property
    def broker(self) -> BrokerAddress:
        """The parsed ``mqtt_url``."""
        return parse_mqtt_url(self.mqtt_url)

    @property
    def heartbeat_retention(self) -> timedelta | None:
        """``heartbeat_retention_days`` as a window; ``None`` keeps heartbeats for good."""
        days = self.heartbeat_retention_days
        return timedelta(days=days) if days else None

    @property
    def receive_maximum(self) -> int:
        """The in-flight window the collector asks the broker for: two batches."""
        return 2 * self.batch_max


def load_settings(**values: str | int) -> CollectorSettings:
    """Settings from ``values`` over the environment, or ``ConfigError`` in one line."""
    try:
        return CollectorSettings(**values)  # type: ignore[arg-type]  # pydantic validates these
    except ValidationError as error:
        problems = "; ".join(_describe(item) for item in error.errors(include_url=False))
        raise ConfigError(f"invalid collector settings: {problems}") from None


def _describe(problem: ErrorDetails) -> str:
    """``batch_ms (INSTRUMETRY_BATCH_MS): Input should be ...``, naming where to fix it."""
    field = ".".join(str(part) for part in problem["loc"])
    where = f"{field} (INSTRUMETRY_{field.upper()})" if field else "settings"
    return f"{where}: {problem['msg']}"
