"""The agent's Ed25519 signing key, kept as an unencrypted PEM file readable by its owner only.

Each agent has its own key so an auditor can tell whose events are whose; the
platform registers the public key at enrolment. The key is not encrypted: the
agent runs unattended, and a passphrase it must store next to the key would
protect nothing. The file is created with mode 0600 in one step (no window in
which it is readable by others) and never overwritten, since a new key is a
new identity.

The file is the standard PKCS#8 PEM that ``openssl genpkey -algorithm ed25519``
writes too. For Ed25519 that encoding is a fixed 16-byte DER prefix and the
32-byte seed (RFC 8410), so it is read and written here directly: going
through ``cryptography``'s serialization module would add about 2 MB to the
resident memory of an agent whose budget is 40 MB.
"""

from __future__ import annotations

import base64
import logging
import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from instrumetry.domain.errors import ConfigError

log = logging.getLogger(__name__)

_PKCS8_ED25519 = bytes.fromhex("302e020100300506032b657004220420")
"""DER of an Ed25519 PKCS#8 private key, up to the 32-byte seed that follows it."""
_BEGIN, _END = b"-----BEGIN PRIVATE KEY-----", b"-----END PRIVATE KEY-----"


def _pem(key: Ed25519PrivateKey) -> bytes:
    body = base64.b64encode(_PKCS8_ED25519 + key.private_bytes_raw())
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return b"\n".join([_BEGIN, *lines, _END, b""])


def _seed(pem: bytes) -> bytes:
    """The seed in a PKCS#8 PEM; ``ValueError`` saying why if there is none."""
    begin, end = pem.find(_BEGIN), pem.find(_END)
    if begin < 0 or end < begin:
        raise ValueError("not an unencrypted PEM private key (no BEGIN/END PRIVATE KEY lines)")
    try:
        der = base64.b64decode(b"".join(pem[begin + len(_BEGIN) : end].split()), validate=True)
    except ValueError:
        raise ValueError("not an unencrypted PEM private key (bad base64)") from None
    if len(der) != len(_PKCS8_ED25519) + 32 or not der.startswith(_PKCS8_ED25519):
        raise ValueError("not an Ed25519 key")
    return der[len(_PKCS8_ED25519) :]


def generate_key(path: Path) -> Ed25519PrivateKey:
    """Create a new key at ``path`` (mode 0600); refuse to replace an existing file."""
    key = Ed25519PrivateKey.generate()
    pem = _pem(key)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(f"{path}: already exists; a new key would be a new identity") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot create key file: {error.strerror or error}") from None
    with os.fdopen(fd, "wb") as file:
        file.write(pem)
        file.flush()
        os.fsync(file.fileno())
    return key


def load_key(path: Path) -> Ed25519PrivateKey:
    """Read the key at ``path``, or raise ``ConfigError`` saying what is wrong with it."""
    try:
        pem = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read key file: {error.strerror or error}") from None
    if os.name == "posix" and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("%s: key file is readable by others; run chmod 600 on it", path)
    try:
        return Ed25519PrivateKey.from_private_bytes(_seed(pem))
    except ValueError as error:
        raise ConfigError(f"{path}: {error}") from None


def public_key_b64(key: Ed25519PrivateKey) -> str:
    """The raw 32-byte public key in base64: what the platform registers for this agent."""
    return base64.b64encode(key.public_key().public_bytes_raw()).decode()
