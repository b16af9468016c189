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
from grafana_client.client import GrafanaClientError, GrafanaException, GrafanaUnauthorizedError

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
    api = GrafanaApi.from_url(url, credential=credential, timeout=TIMEOUT_S)
    try:
        folder_uid, created = _folder(api, folder)
        titles = []
        for text in boards.values():
            board: dict[str, Any] = json.loads(text)
            api.dashboard.update_dashboard(
                {
                    "dashboard": board,
                    "folderUid": folder_uid,
                    "overwrite": True,
                    "message": "instrumetry dashboards push",
                }
            )
            titles.append(str(board["title"]))
    except GrafanaUnauthorizedError:
        raise ServiceError(
            f"Grafana at {url} refused the credentials (401 Unauthorized): check --token "
            "or --basic-auth"
        ) from None
    except GrafanaClientError as error:
        raise ServiceError(f"Grafana at {url} refused the request: {error.message}") from None
    except GrafanaException as error:
        raise ServiceError(f"Grafana at {url} failed: {error.message}") from None
    except OSError as error:  # niquests' connection errors are OSErrors
        raise ServiceError(f"cannot reach Grafana at {url}: {_reason(error)}") from None
    return Pushed(folder_uid, created, titles)


def _folder(api: GrafanaApi, title: str) -> tuple[str, bool]:
    """The uid of the top-level folder called ``title``; created if there is none."""
    for existing in api.folder.get_all_folders():
        if existing.get("title") == title:
            return str(existing["uid"]), False
    created = api.folder.create_folder(title)
    return str(created["uid"]), True


def _reason(error: OSError) -> str:
    text = str(error)
    if "refused" in text.lower():
        return "connection refused (is Grafana running, and is the port right?)"
    return text.splitlines()[0] if text else type(error).__name__
