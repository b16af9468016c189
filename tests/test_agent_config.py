"""agent.toml and the agent key: good files load; bad ones give one clear line."""

from __future__ import annotations

import base64
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from agents.config import AgentConfig, load_config, render_config
from agents.keys import generate_key, load_key, public_key_b64
from instrumetry.domain.classify import Thresholds
from instrumetry.domain.errors import ConfigError
from instrumetry.domain.registers import DataType, Register, Table, WordOrder

GOOD = """\
instrument_id = "nmr-600"
key_file = "keys/agent.key"

[broker]
url = "mqtts://mqtt.example.org"
username = "nmr-600"
password = "secret"
ca_file = "ca.pem"

[meter]
host = "192.168.1.50"
unit = 3
model = "ddsu666"
poll_interval_s = 2.5

[thresholds]
standby_w = 10
run_w = 300
min_dwell_s = 20
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text, encoding="utf-8")
    return path


def error_of(path: Path) -> str:
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    return message.removeprefix(f"{path}: ")


def test_a_good_file_loads_with_defaults_and_absolute_paths(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))

    assert config.instrument_id == "nmr-600"
    assert config.key_file == str(tmp_path / "keys" / "agent.key")
    assert config.state_dir == str(tmp_path / "state")
    assert config.broker.ca_file == str(tmp_path / "ca.pem")
    address = config.broker.address()
    assert (address.host, address.port, address.tls) == ("mqtt.example.org", 8883, True)
    assert (config.meter.port, config.meter.unit, config.meter.timeout_s) == (502, 3, 1.0)
    assert config.thresholds.to_domain() == Thresholds(standby_w=10, run_w=300, min_dwell_s=20)
    assert config.heartbeat_interval_s == 60.0


def test_rendered_config_reads_back_the_same(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    again = load_config(write(tmp_path, render_config(config, header="two\nlines")))
    assert again == config


def test_a_minimal_file_needs_only_instrument_broker_and_meter_host(tmp_path: Path) -> None:
    text = 'instrument_id = "x1"\n[broker]\nurl = "mqtt://localhost"\n[meter]\nhost = "m"\n'
    config = load_config(write(tmp_path, text))
    assert config.broker.address().port == 1883
    assert isinstance(config, AgentConfig)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("unit = 3", 'port = "502"'), "meter.port: Expected `int`, got `str`"),
        (("unit = 3", "port = 70000"), "meter.port: Expected `int` <= 65535"),
        (("unit = 3", "unit = 300"), "meter.unit: Expected `int` <= 255"),
        (("poll_interval_s = 2.5", "poll_interval_s = 0"), "meter.poll_interval_s: Expected"),
        (('instrument_id = "nmr-600"\n', ""), "missing field `instrument_id`"),
        (('host = "192.168.1.50"\n', ""), "meter: kind 'tcp' needs host"),
        (('host = "192.168.1.50"', 'kind = "rtu"'), "meter: kind 'rtu' needs device"),
        (("unit = 3", "parity = 'X'"), "meter.parity: Invalid enum value 'X'"),
        (('model = "ddsu666"', 'model = "custom"'), "meter: model 'custom' needs a [meter.reg"),
        (
            ("poll_interval_s = 2.5", "poll_interval_s = 2.5\n[meter.register]\naddress = 1"),
            "meter: register is only for model 'custom', not 'ddsu666'",
        ),
        (("[thresholds]", "[outbox]\nmax_events = 1\n[thresholds]"), "outbox.max_events: Exp"),
        (("[thresholds]", "[log]\nlevel = 'LOUD'\n[thresholds]"), "log.level: Invalid enum"),
        (("unit = 3", "unti = 3"), "meter: unknown field `unti`"),
        (('key_file = "keys/agent.key"', 'keyfile = "k"'), "unknown field `keyfile`"),
        (('model = "ddsu666"', 'model = "abc"'), "meter: model 'abc' is unknown (known: "),
        (('instrument_id = "nmr-600"', 'instrument_id = "nmr 600"'), "instrument_id: Expected"),
        (("mqtts://mqtt.example.org", "http://mqtt.example.org"), "broker: url 'http://"),
        (("mqtts://mqtt.example.org", "mqtt://u:p@h"), "broker: url 'mqtt://u:p@h': put cred"),
        (("mqtts://mqtt.example.org", "mqtt://h:x"), "broker: url 'mqtt://h:x' has an invalid"),
        (("standby_w = 10", "standby_w = 400"), "thresholds: need 0 <= standby_w < run_w"),
        (
            ('key_file = "keys/agent.key"', 'heartbeat_interval_s = "often"'),
            "heartbeat_interval_s: Expected `float`, got `str`",
        ),
    ],
)
def test_bad_values_name_the_file_and_the_field(
    tmp_path: Path, change: tuple[str, str], expected: str
) -> None:
    old, new = change
    assert old in GOOD
    message = error_of(write(tmp_path, GOOD.replace(old, new, 1)))
    assert message.startswith(expected), message


CUSTOM_RTU = """\
instrument_id = "xrd-2"

[broker]
url = "mqtt://broker"

[meter]
kind = "rtu"
device = "/dev/ttyUSB0"
baudrate = 19200
parity = "E"
model = "custom"

[meter.register]
address = 0x0100
function = "input"
data_type = "int32"
word_order = "little"
scale = 0.1

[log]
file = "logs/agent.log"
"""


def test_an_rtu_meter_with_a_custom_register_map(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, CUSTOM_RTU))
    meter = config.meter
    assert (meter.kind, meter.device, meter.baudrate, meter.parity) == (
        "rtu",
        "/dev/ttyUSB0",
        19200,
        "E",
    )
    assert meter.where == "meter /dev/ttyUSB0 unit 1"
    power = meter.register_map().power
    assert power == Register(0x100, Table.INPUT, WordOrder.LITTLE, 0.1, DataType.INT32)
    assert config.log.file == str(tmp_path / "logs" / "agent.log")
    assert load_config(write(tmp_path, render_config(config))) == config


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (('data_type = "int32"', 'data_type = "int64"'), "meter.register.data_type: Invalid"),
        (("address = 0x0100", "address = 65535"), "meter.register: register address 65535"),
        (("scale = 0.1", "scale = 0.0"), "meter.register: register 0x0100: scale must be"),
        (('function = "input"', 'function = "coil"'), "meter.register.function: Invalid"),
    ],
)
def test_bad_custom_registers_name_the_field(
    tmp_path: Path, change: tuple[str, str], expected: str
) -> None:
    old, new = change
    assert old in CUSTOM_RTU
    message = error_of(write(tmp_path, CUSTOM_RTU.replace(old, new, 1)))
    assert message.startswith(expected), message


def test_toml_syntax_errors_give_the_line(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, GOOD.replace("unit = 3", "unit = ")))
    assert message.startswith("invalid TOML: ")
    assert "line 12" in message


def test_a_missing_file_says_it_cannot_be_read(tmp_path: Path) -> None:
    assert error_of(tmp_path / "agent.toml") == "cannot read: No such file or directory"


def test_a_binary_file_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_bytes(b"\xff\xfe\x00")
    assert error_of(path) == "not UTF-8 text"


def test_render_escapes_strings_so_they_read_back(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    tricky = msgspec.structs.replace(
        config, broker=msgspec.structs.replace(config.broker, password='a"b\\c\nd\té')
    )
    assert load_config(write(tmp_path, render_config(tricky))).broker.password == 'a"b\\c\nd\té'


def test_a_new_key_is_private_to_its_owner_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "agent.key"
    key = generate_key(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_key(path).public_key() == key.public_key()
    assert len(base64.b64decode(public_key_b64(key))) == 32
    with pytest.raises(ConfigError, match="already exists; a new key would be a new identity"):
        generate_key(path)
    assert load_key(path).public_key() == key.public_key()


def test_a_key_file_that_is_not_an_ed25519_key_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "agent.key"
    with pytest.raises(ConfigError, match="cannot read key file"):
        load_key(path)
    path.write_text("hello")
    with pytest.raises(ConfigError, match="not an unencrypted PEM private key"):
        load_key(path)
    other = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(other.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    with pytest.raises(ConfigError, match="not an Ed25519 key"):
        load_key(path)


def test_keys_are_the_pkcs8_pem_that_openssl_and_cryptography_read_and_write(
    tmp_path: Path,
) -> None:
    path = tmp_path / "agent.key"
    key = generate_key(path)
    theirs = load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(theirs, Ed25519PrivateKey)
    assert theirs.private_bytes_raw() == key.private_bytes_raw()
    other = Ed25519PrivateKey.generate()
    path.write_bytes(other.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    assert load_key(path).private_bytes_raw() == other.private_bytes_raw()
