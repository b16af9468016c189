"""The agent's Ed25519 signing key, kept as an unencrypted PEM file readable by its owner only.

Each agent has its own key so an auditor can tell whose events are whose; the
platform registers the public key at enrolment. The key is not encrypted: the
agent runs unattended, and a passphrase it must store next to the key would
protect nothing. The file is created with mode 0600 in one step (no window in
which it is readable by others) and never overwritten, since a new key is a
new identity.
"""

from __future__ import annotations

import base64
import logging
import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from instrumetry.domain.errors import ConfigError

log = logging.getLogger(__name__)


def generate_key(path: Path) -> Ed25519PrivateKey:
    """Create a new key at ``path`` (mode 0600); refuse to replace an existing file."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
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
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"{path}: not an unencrypted PEM private key ({error})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path}: not an Ed25519 key")
    return key


def public_key_b64(key: Ed25519PrivateKey) -> str:
    """The raw 32-byte public key in base64: what the platform registers for this agent."""
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()
