"""Broker logins and the topic ACL, as the text of Mosquitto's password and ACL files.

Each agent logs in with its instrument id as username; the ACL's patterns
(``%u`` is the username) let it publish only under its own instrument and
read only its own acks, so a stolen agent login cannot speak for another
instrument. Service accounts are not tied to one instrument: a collector's
reads every instrument's messages and writes every instrument's acks; a
simulator's (for ``instrumetry sim fleet``, whose virtual agents share a few
connections) writes every instrument's messages and reads every instrument's
acks. Pure: files come in and go out as text, and the salt is passed in.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import re
from collections.abc import Mapping

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


class Account(enum.StrEnum):
    """A service account's kind: one ACL section each, covering every instrument."""

    COLLECTOR = "collector"
    SIMULATOR = "simulator"


_ACCOUNT_TOPICS = {
    Account.COLLECTOR: (
        ("read", topics.Kind.EVENTS),
        ("read", topics.Kind.HEARTBEATS),
        ("read", topics.Kind.STATUS),
        ("write", topics.Kind.ACKS),
    ),
    Account.SIMULATOR: _AGENT_TOPICS,  # what an agent may do, for every instrument at once
}
_ACCOUNT_COMMENTS = {
    Account.COLLECTOR: ("every instrument's messages in, acks out.",),
    Account.SIMULATOR: (
        "virtual agents of `instrumetry sim fleet`.",
        "It may speak for ANY instrument on the wire: write its events, heartbeats",
        "and status and read its acks. It cannot forge a real instrument's usage:",
        "the collector checks each event's Ed25519 signature against the key",
        "enrolled for that instrument. Heartbeats and status are not signed, so it",
        "could disturb a real instrument's liveness (offline periods): create this",
        "account only where a simulated fleet is wanted.",
    ),
}


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


def _section(kind: Account) -> list[str]:
    """The topic rules of an account of ``kind``, as ACL lines."""
    return [
        f"topic {access} {topics.subscription(topic_kind)}"
        for access, topic_kind in _ACCOUNT_TOPICS[kind]
    ]


def accounts(acl: str) -> dict[str, Account]:
    """The service accounts an ACL file written by ``render_acl`` names, with their kinds.

    A section's kind is read from its topic rules, which are what the broker
    applies, so a section whose rules fit no kind is a ``ConfigError`` rather
    than an account silently given other rights on the next rewrite.
    """
    sections: dict[str, list[str]] = {}
    rules: list[str] | None = None
    for number, line in enumerate(acl.splitlines(), 1):
        if line.startswith("user "):
            rules = sections.setdefault(check_username(line.removeprefix("user ").strip()), [])
        elif line.startswith("topic "):
            if rules is None:
                raise ConfigError(f"line {number}: a topic rule before any `user` line")
            rules.append(" ".join(line.split()))
    kinds = {tuple(_section(kind)): kind for kind in Account}
    found: dict[str, Account] = {}
    for name, section in sections.items():
        if (kind := kinds.get(tuple(section))) is None:
            raise ConfigError(
                f"account {name!r}: its topic rules are not those of any account kind "
                f"({', '.join(Account)})"
            )
        found[name] = kind
    return found


def render_acl(service_accounts: Mapping[str, Account]) -> str:
    """The whole ACL file: the agents' patterns, then one section per service account."""
    lines = [
        "# Instrumetry broker ACL, written by `instrumetry broker`; edits are overwritten.",
        "# Agents log in with their instrument id: each may publish only under its own",
        "# instrument and read only its own acks (%u is the login).",
        *(f"pattern {access} {topics.ROOT}/{kind}/%u" for access, kind in _AGENT_TOPICS),
    ]
    for name, kind in sorted(service_accounts.items()):
        first, *more = _ACCOUNT_COMMENTS[kind]
        lines += [
            "",
            f"# {kind.capitalize()} account {name!r}: {first}",
            *(f"# {comment}" for comment in more),
            f"user {check_username(name)}",
            *_section(kind),
        ]
    return "\n".join(lines) + "\n"
