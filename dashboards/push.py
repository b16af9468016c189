"""Send the dashboards to a running Grafana through its HTTP API (grafana-client).

For a Grafana that was not started by this project's docker compose (whose
provisioning loads the same JSON at start). Every failure a user can cause —
a malformed URL, nothing listening, a wrong token — ends as one
``ServiceError`` or ``ConfigError`` line naming the URL and the fix.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from grafana_client.api import GrafanaApi
from grafana_client.client import (
    GrafanaException,
    GrafanaTimeoutError,
    GrafanaUnauthorizedError,
)

from instrumetry.domain.errors import ConfigError, ServiceError

TIMEOUT_S = 10.0

Credential = str | tuple[str, str]
"""An API or service-account token, or (user, password) for basic auth."""


@dataclass(frozen=True, slots=True)
class Pushed:
    folder_uid: str
    folder_created: bool
    dashboards: list[str]


def check_url(url: str) -> str:
    """``url`` if it is an http(s) URL with a host, else a ``ConfigError`` saying so."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--url {url!r} is not a Grafana URL; expected http(s)://host[:port]")
    try:
        _ = parts.port
    except ValueError:
        raise ConfigError(f"--url {url!r} has an invalid port") from None
    return url.rstrip("/")


def push(url: str, credential: Credential, folder: str, boards: Mapping[str, str]) -> Pushed:
    """Put ``boards`` (file name → JSON) in ``folder``, created if missing, overwriting."""
    url = check_url(url)
    parsed: list[dict[str, Any]] = [json.loads(text) for text in boards.values()]
    api = GrafanaApi.from_url(url, credential=credential, timeout=TIMEOUT_S)
    try:
        folder_uid, created = _folder(api, folder)
        for board in parsed:
            saved = api.dashboard.update_dashboard(
                {
                    "dashboard": board,
                    "folderUid": folder_uid,
                    "overwrite": True,
                    "message": "instrumetry dashboards push",
                }
            )
            _expect(isinstance(saved, dict), "POST /api/dashboards/db")
    except GrafanaUnauthorizedError:
        raise ServiceError(
            f"Grafana at {url} refused the credentials (401 Unauthorized): check --token "
            "or --basic-auth"
        ) from None
    except _NotGrafana as error:
        raise ServiceError(_not_grafana(url, str(error))) from None
    except GrafanaException as error:
        raise ServiceError(_failure(url, error)) from None
    except ValueError:  # a 200 answer that is not JSON (niquests' JSONDecodeError)
        raise ServiceError(_not_grafana(url, "an answer that is not JSON")) from None
    except OSError as error:  # niquests' connection errors are OSErrors
        raise ServiceError(f"cannot reach Grafana at {url}: {_reason(error)}") from None
    return Pushed(folder_uid, created, [str(board["title"]) for board in parsed])


class _NotGrafana(Exception):
    """An answer Grafana's HTTP API would not give: ``url`` is some other server."""


def _expect(condition: bool, request: str) -> None:
    if not condition:
        raise _NotGrafana(f"an unexpected answer to {request}")


def _not_grafana(url: str, what: str) -> str:
    return (
        f"{url} does not answer as Grafana's HTTP API ({what}): is --url the address of "
        "Grafana, with its sub-path if it is served under one?"
    )


def _failure(url: str, error: GrafanaException) -> str:
    """One line for an error status (or a timeout): Grafana's own message, or why it is not."""
    if isinstance(error, GrafanaTimeoutError):
        return f"Grafana at {url} did not answer within {TIMEOUT_S:g} s"
    if not error.status_code:  # no status: the connection broke
        return f"Grafana at {url} failed: {_first_line(error.message)}"
    if not isinstance(error.response, dict) or "message" not in error.response:
        return _not_grafana(url, f"status {error.status_code} without Grafana's JSON message")
    verb = "failed" if error.status_code >= 500 else "refused the request"
    return f"Grafana at {url} {verb} ({error.status_code}): {error.response['message']}"


def _folder(api: GrafanaApi, title: str) -> tuple[str, bool]:
    """The uid of the top-level folder called ``title``; created if there is none."""
    folders = api.folder.get_all_folders()
    _expect(
        isinstance(folders, list) and all(isinstance(f, dict) for f in folders), "GET /api/folders"
    )
    for existing in folders:
        if existing.get("title") == title:
            return str(existing["uid"]), False
    created = api.folder.create_folder(title)
    _expect(isinstance(created, dict) and "uid" in created, "POST /api/folders")
    return str(created["uid"]), True


def _reason(error: OSError) -> str:
    text = str(error)
    if "refused" in text.lower():
        return "connection refused (is Grafana running, and is the port right?)"
    if "resolve" in text.lower():
        return "its host name does not resolve (check --url)"
    if "certificate_verify_failed" in text.lower():
        return "its TLS certificate is not trusted"
    if "ssl" in text.lower():
        return "the TLS handshake failed (does it serve https on that port?)"
    return _first_line(text) if text else type(error).__name__


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "no detail"
