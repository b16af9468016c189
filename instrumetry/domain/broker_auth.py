"""Broker logins and the topic ACL, as the text of Mosquitto's password and ACL files.

Each agent logs in with its instrument id as username; the ACL's patterns
(``%u`` is the username) let it publish only under its own instrument and
read only its own acks, so a stolen agent login cannot speak for another
instrument. Collectors have accounts of their own that read every
instrument's messages and write every instrument's acks. Pure: files come
in and go out as text, and the salt is passed in.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable

from instrumetry.domain import topics
from instrumetry.domain.errors import ConfigError

PBKDF2_ITERATIONS = 101
"""Mosquitto 2's own default. The generated passwords carry 192 random bits, so a
slow hash adds nothing, while every agent's CONNECT pays for it."""
SALT_BYTES = 12
_USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_AGENT_TOPICS = (
    ("write", topics.Kind.EVENTS),
    ("write", topics.Kind.HEARTBEATS),
    ("write", topics.Kind.STATUS),
    ("read", topics.Kind.ACKS),
)
_COLLECTOR_TOPICS = (
    ("read", topics.Kind.EVENTS),
    ("read", topics.Kind.HEARTBEATS),
    ("read", topics.Kind.STATUS),
    ("write", topics.Kind.ACKS),
)


def check_username(name: str) -> str:
    """``name`` if it can be a broker login (an instrument id's alphabet), else ``ConfigError``."""
    if not _USERNAME.fullmatch(name):
        raise ConfigError(
            f"broker username {name!r} is invalid: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def password_hash(password: str, salt: bytes, iterations: int = PBKDF2_ITERATIONS) -> str:
    """Mosquitto 2's ``$7$`` entry: PBKDF2-HMAC-SHA512 with a 64-byte key, base64 fields."""
    if not password:
        raise ConfigError("a broker password must not be empty")
    key = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, 64)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(key).decode()}"


def usernames(passwd: str) -> list[str]:
    """The logins of a password file's text, in file order."""
    return [line.split(":", 1)[0] for line in passwd.splitlines() if ":" in line]


def set_login(passwd: str, username: str, entry: str) -> str:
    """The password file's text with ``username``'s entry added or replaced."""
    lines = [line for line in passwd.splitlines() if line.split(":", 1)[0] != username]
    return "\n".join([*lines, f"{check_username(username)}:{entry}"]) + "\n"


def remove_login(passwd: str, username: str) -> str:
    """The password file's text without ``username``, or ``ConfigError`` if it has none."""
    if username not in usernames(passwd):
        raise ConfigError(f"broker login {username!r} does not exist")
    lines = [line for line in passwd.splitlines() if line.split(":", 1)[0] != username]
    return "".join(f"{line}\n" for line in lines)


def collectors(acl: str) -> list[str]:
    """The collector accounts an ACL file written by ``render_acl`` names."""
    return [line.split(None, 1)[1].strip() for line in acl.splitlines() if line.startswith("user ")]


def render_acl(collector_names: Iterable[str]) -> str:
    """The whole ACL file: the agents' patterns, then one section per collector account."""
    lines = [
        "# Instrumetry broker ACL, written by `instrumetry broker`; edits are overwritten.",
        "# Agents log in with their instrument id: each may publish only under its own",
        "# instrument and read only its own acks (%u is the login).",
        *(f"pattern {access} {topics.ROOT}/{kind}/%u" for access, kind in _AGENT_TOPICS),
    ]
    for name in sorted(set(collector_names)):
        lines += [
            "",
            f"# Collector account {name!r}: every instrument's messages in, acks out.",
            f"user {check_username(name)}",
            *(f"topic {access} {topics.subscription(kind)}" for access, kind in _COLLECTOR_TOPICS),
        ]
    return "\n".join(lines) + "\n"
