"""Keeping a Mosquitto password file and its ACL file in step, on disk.

The text rules are ``instrumetry.domain.broker_auth``'s; this module reads
and atomically replaces the two files. The password file is private (it
holds hashes); the ACL holds no secret. Mosquitto reads both at start and on
SIGHUP, so a running broker needs a reload to see a change.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from instrumetry.devstack.state import write_private
from instrumetry.domain import broker_auth
from instrumetry.domain.broker_auth import Account
from instrumetry.domain.errors import ConfigError


@dataclass(frozen=True, slots=True)
class AuthFiles:
    """A broker's password file and ACL file."""

    password_file: Path
    acl_file: Path

    def add_agent(self, instrument_id: str, password: str | None = None) -> str:
        """Create or reset the login of ``instrument_id``'s agent; return its password."""
        name = broker_auth.check_username(instrument_id)
        accounts = self._accounts()
        if name in accounts:
            raise ConfigError(f"{name!r} is a {accounts[name]} account, not an instrument")
        return self._set(name, password, accounts)

    def add_account(self, kind: Account, name: str, password: str | None = None) -> str:
        """Create or reset service account ``name`` of ``kind``; return its password."""
        broker_auth.check_username(name)
        accounts = self._accounts()
        if name not in accounts and name in broker_auth.usernames(self._passwd()):
            raise ConfigError(f"{name!r} is an agent's login; choose another {kind} name")
        if accounts.get(name, kind) != kind:
            raise ConfigError(f"{name!r} is a {accounts[name]} account; choose another {kind} name")
        return self._set(name, password, accounts | {name: kind})

    def remove(self, name: str) -> None:
        """Delete login ``name`` (agent or account), so the broker refuses it after a reload."""
        accounts = self._accounts()
        write_private(self.password_file, broker_auth.remove_login(self._passwd(), name))
        self._write_acl({n: kind for n, kind in accounts.items() if n != name})

    def _set(self, name: str, password: str | None, accounts: dict[str, Account]) -> str:
        password = password or secrets.token_urlsafe(24)
        entry = broker_auth.password_hash(password, os.urandom(broker_auth.SALT_BYTES))
        write_private(self.password_file, broker_auth.set_login(self._passwd(), name, entry))
        self._write_acl(accounts)
        return password

    def _passwd(self) -> str:
        return _read(self.password_file)

    def _accounts(self) -> dict[str, Account]:
        acl = _read(self.acl_file)
        try:
            return broker_auth.accounts(acl)
        except ConfigError as error:
            raise ConfigError(f"{self.acl_file}: {error}") from None

    def _write_acl(self, accounts: dict[str, Account]) -> None:
        temporary = self.acl_file.with_name(self.acl_file.name + ".tmp")
        temporary.write_text(broker_auth.render_acl(accounts), encoding="utf-8")
        temporary.replace(self.acl_file)


def _read(path: Path) -> str:
    """The file's text; a file not made yet reads as empty."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if not path.parent.is_dir():
            raise ConfigError(f"{path}: folder {path.parent} does not exist") from None
        return ""
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror or error}") from None
