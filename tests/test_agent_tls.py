"""TLS to the broker: a real Mosquitto TLS listener with a CA, server and client certificate
made here with ``cryptography``; the agent verifies the broker and shows its own certificate."""

from __future__ import annotations

import datetime
import getpass
import ipaddress
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agents.config import BrokerConfig
from agents.outbox import Outbox
from agents.publisher import Publisher, probe_broker
from instrumetry.domain.errors import ServiceError
from tests.conftest import require_services

NOW = datetime.datetime.now(datetime.UTC)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _issue(
    folder: Path,
    stem: str,
    subject: str,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *,
    server: bool = False,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A key and certificate in ``stem.pem``/``stem.key``; self-signed (a CA) without issuer."""
    key = ec.generate_private_key(ec.SECP256R1())
    signer_cert, signer_key = issuer if issuer else (None, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(signer_cert.subject if signer_cert else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(minutes=5))
        .not_valid_after(NOW + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    cert = builder.sign(signer_key, hashes.SHA256())
    (folder / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / f"{stem}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pki")
    ca = _issue(folder, "ca", "Instrumetry test CA", None)
    _issue(folder, "server", "127.0.0.1", ca, server=True)
    _issue(folder, "client", "nmr-01", ca)
    _issue(folder, "stranger-ca", "Someone else's CA", None)
    return folder


@pytest.fixture(scope="module")
def tls_port(pki: Path, unused_ports: Callable[[int], list[int]]) -> Iterator[int]:
    """A Mosquitto TLS listener that requires a client certificate signed by our CA."""
    require_services()
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = unused_ports(1)[0]
    conf = pki / "mosquitto.conf"
    conf.write_text(
        "\n".join(
            [
                f"listener {port} 127.0.0.1",
                f"cafile {pki / 'ca.pem'}",
                f"certfile {pki / 'server.pem'}",
                f"keyfile {pki / 'server.key'}",
                "require_certificate true",
                "allow_anonymous true",
                "persistence false",
                f"user {getpass.getuser()}",
                f"log_dest file {pki / 'mosquitto.log'}",
                "",
            ]
        ),
        encoding="utf-8",
    )
    broker = subprocess.Popen([binary, "-c", str(conf)], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert broker.poll() is None, (pki / "mosquitto.log").read_text()
                assert time.monotonic() < deadline, "the TLS broker did not start"
                time.sleep(0.05)
        yield port
    finally:
        broker.terminate()
        broker.wait(timeout=10)


def broker_config(pki: Path, port: int, *, ca: str = "ca", client: bool = True) -> BrokerConfig:
    return BrokerConfig(
        url=f"mqtts://127.0.0.1:{port}",
        ca_file=str(pki / f"{ca}.pem"),
        client_cert_file=str(pki / "client.pem") if client else None,
        client_key_file=str(pki / "client.key") if client else None,
    )


def test_the_agent_connects_over_tls_with_its_client_certificate(pki: Path, tls_port: int) -> None:
    probe_broker(broker_config(pki, tls_port), "nmr-01")


def test_a_broker_certificate_from_another_ca_is_refused(pki: Path, tls_port: int) -> None:
    with pytest.raises(ServiceError, match=rf"broker 127.0.0.1:{tls_port}: cannot connect: .*"):
        probe_broker(broker_config(pki, tls_port, ca="stranger-ca"), "nmr-01")


def test_without_a_client_certificate_the_broker_refuses(pki: Path, tls_port: int) -> None:
    with pytest.raises(ServiceError, match=rf"broker 127.0.0.1:{tls_port}: closed the connection"):
        probe_broker(broker_config(pki, tls_port, client=False), "nmr-01")


def test_the_publisher_comes_online_over_tls(pki: Path, tls_port: int, tmp_path: Path) -> None:
    with Outbox(tmp_path) as outbox:
        publisher = Publisher(
            broker_config(pki, tls_port), instrument=f"tls-{uuid.uuid4().hex[:8]}", outbox=outbox
        )
        publisher.start()
        deadline = time.monotonic() + 10
        while not publisher.connected:
            assert time.monotonic() < deadline, "no TLS session"
            publisher.pump(wait_s=0.05)
        publisher.close()
