"""The agent's configuration file (TOML), parsed with tomllib and checked with msgspec.

msgspec rather than pydantic keeps the agent's resident memory small (see
DESIGN.md) and still names the offending field. Every problem becomes one
``ConfigError`` line naming the file and the field, e.g.
``agent.toml: meter.port: Expected `int`, got `str```. Relative paths in the
file are taken relative to the file, so the agent can be started from any
working directory (a Windows service starts in ``C:\\Windows\\System32``).

Example::

    instrument_id = "nmr-600"
    key_file = "agent.key"
    state_dir = "state"
    heartbeat_interval_s = 60.0

    [broker]
    url = "mqtts://mqtt.example.org:8883"
    username = "nmr-600"
    password = "..."

    [meter]
    host = "192.168.1.50"
    port = 502
    unit = 1
    model = "sdm120"

    [thresholds]
    standby_w = 5.0
    run_w = 100.0
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec

from instrumetry.domain.classify import Thresholds
from instrumetry.domain.combine import RunningIf
from instrumetry.domain.errors import ConfigError
from instrumetry.domain.registers import (
    MODELS,
    DataType,
    Register,
    RegisterMap,
    Table,
    WordOrder,
    register_map,
)
from instrumetry.domain.wire import InstrumentId

Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
PositiveSeconds = Annotated[float, msgspec.Meta(gt=0, le=86_400)]

_SCHEMES = {"mqtt": (1883, False), "mqtts": (8883, True)}
_DEFAULT_THRESHOLDS = Thresholds()
CUSTOM = "custom"
"""The model name of a meter described by ``[meter.register]``."""


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Where the broker listens, from ``broker.url``."""

    host: str
    port: int
    tls: bool


class BrokerConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How to reach the MQTT broker; per-agent credentials come with enrolment."""

    url: str
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    """CA bundle for ``mqtts://``; the system's CAs when unset."""
    client_cert_file: str | None = None
    client_key_file: str | None = None
    keepalive_s: Annotated[int, msgspec.Meta(ge=5, le=3600)] = 30
    session_expiry_s: Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)] = 7 * 86_400
    """How long the broker keeps acks for us while we are away."""
    max_inflight: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 20
    """Events sent and not yet acknowledged by the collector, at most."""
    replay_per_s: Annotated[float, msgspec.Meta(gt=0)] = 50.0
    """Events sent per second at most, so a long backlog does not flood the broker."""
    ack_timeout_s: PositiveSeconds = 60.0
    """An event the collector has not acknowledged this long after sending is sent again."""

    def __post_init__(self) -> None:
        self.address()  # reject a bad URL at load time, with its path in the error
        if (self.client_cert_file is None) != (self.client_key_file is None):
            raise ValueError("client_cert_file and client_key_file go together")

    def address(self) -> BrokerAddress:
        """Host, port and TLS flag of ``url`` (``ValueError`` if it is not a broker URL)."""
        parts = urlsplit(self.url)
        if parts.scheme not in _SCHEMES or not parts.hostname:
            raise ValueError(
                f"url {self.url!r} must look like mqtt://host:port or mqtts://host:port"
            )
        if parts.username or parts.password or parts.path not in ("", "/") or parts.query:
            raise ValueError(f"url {self.url!r}: put credentials in username/password, no path")
        default_port, tls = _SCHEMES[parts.scheme]
        try:
            port = parts.port or default_port
        except ValueError:
            raise ValueError(f"url {self.url!r} has an invalid port") from None
        return BrokerAddress(parts.hostname, port, tls)


class RegisterConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The active power register of a meter without a built-in map (``model = "custom"``).

    ``function`` names the table: ``input`` is read with Modbus function 04,
    ``holding`` with 03. Watts = raw value × ``scale``.
    """

    address: Annotated[int, msgspec.Meta(ge=0, le=65535)]
    function: Table = Table.HOLDING
    data_type: DataType = DataType.FLOAT32
    word_order: WordOrder = WordOrder.BIG
    scale: float = 1.0

    def __post_init__(self) -> None:
        try:
            self.to_domain()
        except ConfigError as error:
            raise ValueError(str(error)) from None

    def to_domain(self) -> Register:
        return Register(self.address, self.function, self.word_order, self.scale, self.data_type)


class MeterConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The power meter the agent polls: Modbus TCP (``host``) or RTU on a serial line (``device``).

    A failed read is retried after 1, 2, 4, ... up to ``backoff_max_s``
    seconds; reads that keep failing make the state ``unknown`` after the
    thresholds' ``unknown_after_s``, never ``off``.
    """

    kind: Literal["tcp", "rtu"] = "tcp"
    host: str | None = None
    port: Port = 502
    device: str | None = None
    """Serial device for ``rtu``: ``/dev/ttyUSB0``, ``COM3``."""
    baudrate: Annotated[int, msgspec.Meta(ge=300, le=921_600)] = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    unit: Annotated[int, msgspec.Meta(ge=0, le=255)] = 1
    model: str = "sdm120"
    register: RegisterConfig | None = None
    """Where active power is, for ``model = "custom"``."""
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 1.0
    poll_interval_s: PositiveSeconds = 5.0
    backoff_max_s: PositiveSeconds = 60.0

    def __post_init__(self) -> None:
        if self.kind == "tcp" and not self.host:
            raise ValueError("kind 'tcp' needs host")
        if self.kind == "rtu" and not self.device:
            raise ValueError("kind 'rtu' needs device (e.g. /dev/ttyUSB0 or COM3)")
        if self.model == CUSTOM:
            if self.register is None:
                raise ValueError("model 'custom' needs a [meter.register] table")
        elif self.register is not None:
            raise ValueError(f"register is only for model 'custom', not {self.model!r}")
        elif self.model not in MODELS:
            known = ", ".join([*sorted(MODELS), CUSTOM])
            raise ValueError(f"model {self.model!r} is unknown (known: {known})")

    @property
    def where(self) -> str:
        """The meter's address, for messages."""
        if self.kind == "rtu":
            return f"meter {self.device} unit {self.unit}"
        return f"meter {self.host}:{self.port} unit {self.unit}"

    def register_map(self) -> RegisterMap:
        """The built-in map of ``model``, or the custom one from ``register``."""
        if self.register is not None:
            return RegisterMap(CUSTOM, "custom register map", power=self.register.to_domain())
        return register_map(self.model)


class ThresholdsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Classification settings; defaults and rules are the domain's ``Thresholds``."""

    standby_w: float = _DEFAULT_THRESHOLDS.standby_w
    run_w: float = _DEFAULT_THRESHOLDS.run_w
    hysteresis_w: float = _DEFAULT_THRESHOLDS.hysteresis_w
    min_dwell_s: float = _DEFAULT_THRESHOLDS.min_dwell_s
    unknown_after_s: float = _DEFAULT_THRESHOLDS.unknown_after_s

    def __post_init__(self) -> None:
        try:
            self.to_domain()
        except ConfigError as error:
            raise ValueError(str(error).removeprefix("thresholds: ")) from None

    def to_domain(self) -> Thresholds:
        return Thresholds(
            standby_w=self.standby_w,
            run_w=self.run_w,
            hysteresis_w=self.hysteresis_w,
            min_dwell_s=self.min_dwell_s,
            unknown_after_s=self.unknown_after_s,
        )


class OutboxConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Bounds of the on-disk outbox; what happens when it is full is in docs/AGENT.md.

    The defaults hold years of transitions of a busy instrument (tens a day at
    about 400 bytes each), so only a collector gone for good fills them.
    """

    max_events: Annotated[int, msgspec.Meta(ge=2)] = 100_000
    max_bytes: Annotated[int, msgspec.Meta(ge=65_536)] = 64 * 2**20


class LogConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Where the agent logs: stderr by default, or a rotated file of JSON lines."""

    file: str | None = None
    max_bytes: Annotated[int, msgspec.Meta(ge=4096)] = 10 * 2**20
    backups: Annotated[int, msgspec.Meta(ge=1, le=100)] = 5
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class ProbeConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The optional PC probe (needs psutil): the control software as a second signal."""

    processes: Annotated[list[str], msgspec.Meta(min_length=1)]
    """Executable names of the control software, e.g. ``["TopSpin.exe"]`` (any case)."""
    running_if: RunningIf = RunningIf.PROCESS
    """How power and process combine: power, process, power_or_process, power_and_process."""
    interval_s: PositiveSeconds = 10.0


class AgentConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Everything one agent needs: its instrument, broker, meter and state."""

    instrument_id: InstrumentId
    broker: BrokerConfig
    meter: MeterConfig
    thresholds: ThresholdsConfig = msgspec.field(default_factory=ThresholdsConfig)
    key_file: str = "agent.key"
    """The agent's Ed25519 private key (PEM) that signs its events."""
    state_dir: str = "state"
    """Outbox, chain head and boot state; must survive restarts."""
    heartbeat_interval_s: PositiveSeconds = 60.0
    outbox: OutboxConfig = msgspec.field(default_factory=OutboxConfig)
    log: LogConfig = msgspec.field(default_factory=LogConfig)
    probe: ProbeConfig | None = None


_AT = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>.*)`)?$", re.DOTALL)


def _describe(error: msgspec.ValidationError) -> str:
    """msgspec's message reworded as ``field: problem``."""
    match = _AT.match(str(error))
    assert match is not None  # the pattern matches any string
    message, path = match["message"], (match["path"] or "").lstrip(".")
    for prefix, label in (
        ("Object missing required field ", "missing field "),
        ("Object contains unknown field ", "unknown field "),
    ):
        if message.startswith(prefix):
            field = message.removeprefix(prefix)
            return f"{path}: {label}{field}" if path else f"{label}{field}"
    return f"{path}: {message}" if path else message


def parse_config(raw: dict[str, Any], source: str) -> AgentConfig:
    """Validate already-parsed settings; errors name ``source`` and the field."""
    try:
        return msgspec.convert(raw, AgentConfig)
    except msgspec.ValidationError as error:
        raise ConfigError(f"{source}: {_describe(error)}") from None


def load_config(path: Path) -> AgentConfig:
    """Read and validate an agent.toml; relative paths become relative to its folder."""
    try:
        text = path.read_bytes().decode()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: invalid TOML: {error}") from None
    config = parse_config(raw, str(path))
    base = path.resolve().parent

    def resolve(value: str) -> str:
        return str(base / Path(value).expanduser())

    def resolve_optional(value: str | None) -> str | None:
        return None if value is None else resolve(value)

    broker = msgspec.structs.replace(
        config.broker,
        ca_file=resolve_optional(config.broker.ca_file),
        client_cert_file=resolve_optional(config.broker.client_cert_file),
        client_key_file=resolve_optional(config.broker.client_key_file),
    )
    log = msgspec.structs.replace(config.log, file=resolve_optional(config.log.file))
    return msgspec.structs.replace(
        config,
        broker=broker,
        key_file=resolve(config.key_file),
        state_dir=resolve(config.state_dir),
        log=log,
    )


def render_config(config: AgentConfig, header: str = "") -> str:
    """TOML text that ``load_config`` reads back as ``config``.

    Top-level values first, then one table per section; unset options are
    left out (TOML has no null). Strings are written as JSON strings, whose
    escapes are valid TOML basic-string escapes.
    """
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    return "\n".join([*lines, *_toml_table(msgspec.to_builtins(config), ""), ""])


def _toml_table(values: dict[str, Any], name: str) -> list[str]:
    """``[name]`` (if named) with its values, then its sub-tables as ``[name.key]``."""
    lines = [f"[{name}]"] if name else []
    tables: list[str] = []
    for key, value in values.items():
        if isinstance(value, dict):
            tables += ["", *_toml_table(value, f"{name}.{key}" if name else key)]
        elif value is not None:
            lines.append(f"{key} = {_toml_value(value)}")
    return [*lines, *tables]


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))
