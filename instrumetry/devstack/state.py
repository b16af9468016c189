"""Files of the state folder: where the cluster lives, the password, the env file.

``stack.json`` records where PostgreSQL's home is (it may be outside the
state folder, see ``fallback_pg_home``), the ports the stack was last
brought up with and whether its broker wants logins, so ``status``, ``down``
and a restart of the broker find everything without being told again.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from instrumetry.domain.errors import ConfigError

FALLBACK_ROOT = Path("/var/lib/instrumetry/dev")


@dataclass(frozen=True)
class StackRecord:
    """What ``stack.json`` holds."""

    pg_home: Path
    pg_port: int
    mqtt_port: int
    broker_auth: bool = False


def fallback_pg_home(state_dir: Path) -> Path:
    """A home for the cluster the ``postgres`` user can reach, unique per state folder.

    Used when the state folder sits below a directory closed to others (pytest's
    0700 temp dirs, a 0700 home). The hash is shortened so the unix socket path
    stays under the 107-byte limit.
    """
    digest = hashlib.sha256(os.fsencode(state_dir.resolve())).hexdigest()[:16]
    return FALLBACK_ROOT / digest / "pg"


def load_record(path: Path) -> StackRecord | None:
    """Read ``stack.json``; None if the stack was never brought up."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return StackRecord(
            pg_home=Path(raw["pg_home"]),
            pg_port=int(raw["pg_port"]),
            mqtt_port=int(raw["mqtt_port"]),
            broker_auth=bool(raw.get("broker_auth", False)),  # not in records made before it
        )
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"{path} is malformed ({error}); remove it and run up again") from None


def save_record(path: Path, record: StackRecord) -> None:
    """Write ``stack.json``."""
    data = {
        "pg_home": str(record.pg_home),
        "pg_port": record.pg_port,
        "mqtt_port": record.mqtt_port,
        "broker_auth": record.broker_auth,
    }
    write_private(path, json.dumps(data, indent=2) + "\n")


def load_or_create_password(path: Path) -> str:
    """The ``instrumetry`` role's password from ``credentials.json``, generated on first use."""
    try:
        password = json.loads(path.read_text(encoding="utf-8"))["password"]
    except FileNotFoundError:
        password = secrets.token_urlsafe(24)
        write_private(path, json.dumps({"role": "instrumetry", "password": password}) + "\n")
    except (ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"{path} is malformed ({error}); remove it and run up again") from None
    if not isinstance(password, str) or not password:
        raise ConfigError(f"{path} holds no password; remove it and run up again")
    return password


def write_private(path: Path, text: str) -> None:
    """Atomically replace ``path`` with ``text``, readable by its owner only (it holds secrets)."""
    temporary = path.with_name(path.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        os.fchmod(file.fileno(), 0o600)
        file.write(text)
    temporary.replace(path)
