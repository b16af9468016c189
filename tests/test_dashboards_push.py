"""``instrumetry dashboards push`` against a stand-in for Grafana's HTTP API.

Grafana cannot run on the development machines, so a small HTTP server
started here answers the three calls push makes (list folders, create a
folder, save a dashboard) the way Grafana documents them, records what it
was sent, or refuses every request with 401.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from dashboards import build
from dashboards.push import push
from instrumetry.domain.errors import ConfigError, ServiceError


@dataclass
class FakeGrafana:
    url: str
    folders: list[dict[str, str]] = field(default_factory=list)
    requests: list[tuple[str, str, dict[str, str], Any]] = field(default_factory=list)


@contextmanager
def fake_grafana(*, unauthorized: bool = False) -> Iterator[FakeGrafana]:
    state = FakeGrafana(url="")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _answer(self, status: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body: Any = json.loads(self.rfile.read(length)) if length else None
            path = self.path.split("?")[0]
            state.requests.append((self.command, path, dict(self.headers.items()), body))
            if unauthorized:
                self._answer(401, {"message": "invalid API key"})
            elif (self.command, path) == ("GET", "/api/folders"):
                self._answer(200, state.folders)
            elif (self.command, path) == ("POST", "/api/folders"):
                folder = {"uid": f"folder-{len(state.folders) + 1}", "title": body["title"]}
                state.folders.append(folder)
                self._answer(200, folder)
            elif (self.command, path) == ("POST", "/api/dashboards/db"):
                uid = body["dashboard"]["uid"]
                self._answer(200, {"status": "success", "uid": uid, "version": 1})
            else:
                self._answer(404, {"message": "not found"})

        do_GET = do_POST = _handle

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_push_creates_the_folder_and_overwrites_every_dashboard() -> None:
    boards = build.rendered()
    with fake_grafana() as grafana:
        result = push(grafana.url, "secret-token", "Instrumetry", boards)
        again = push(grafana.url, "secret-token", "Instrumetry", boards)
    assert result.folder_created and not again.folder_created
    assert result.folder_uid == again.folder_uid == "folder-1"
    saved = [body for method, path, _, body in grafana.requests if path == "/api/dashboards/db"]
    assert len(saved) == 2 * len(boards)
    assert [s["dashboard"] for s in saved[: len(boards)]] == [
        json.loads(b) for b in boards.values()
    ]
    assert all(s["overwrite"] is True and s["folderUid"] == "folder-1" for s in saved)
    created = [
        body
        for method, path, _, body in grafana.requests
        if method == "POST" and path == "/api/folders"
    ]
    assert created == [{"title": "Instrumetry"}]
    assert all(h.get("Authorization") == "Bearer secret-token" for _, _, h, _ in grafana.requests)


def test_basic_auth_is_sent_as_basic_credentials() -> None:
    with fake_grafana() as grafana:
        push(grafana.url, ("admin", "pw"), "Instrumetry", build.rendered())
    assert all(h["Authorization"] == "Basic YWRtaW46cHc=" for _, _, h, _ in grafana.requests)


def test_a_bad_token_is_one_clear_error() -> None:
    with fake_grafana(unauthorized=True) as grafana, pytest.raises(ServiceError) as caught:
        push(grafana.url, "wrong", "Instrumetry", build.rendered())
    assert str(caught.value) == (
        f"Grafana at {grafana.url} refused the credentials (401 Unauthorized): "
        "check --token or --basic-auth"
    )


def test_a_refused_connection_is_one_clear_error(unused_ports: Callable[[int], list[int]]) -> None:
    (port,) = unused_ports(1)
    url = f"http://127.0.0.1:{port}"
    with pytest.raises(ServiceError) as caught:
        push(url, "token", "Instrumetry", build.rendered())
    assert str(caught.value) == (
        f"cannot reach Grafana at {url}: connection refused "
        "(is Grafana running, and is the port right?)"
    )


@pytest.mark.parametrize("url", ["localhost:3000", "ftp://grafana", "http://", "http://h:99999"])
def test_a_bad_url_is_refused_before_any_request(url: str) -> None:
    with pytest.raises(ConfigError, match="--url"):
        push(url, "token", "Instrumetry", build.rendered())


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INSTRUMETRY_GRAFANA")}
    return subprocess.run(
        [sys.executable, "-m", "instrumetry", "dashboards", "push", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_the_command_ends_in_one_line_without_a_traceback() -> None:
    with fake_grafana(unauthorized=True) as grafana:
        result = _cli("--url", grafana.url, "--token", "wrong")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"instrumetry: error: Grafana at {grafana.url} refused the credentials "
        "(401 Unauthorized): check --token or --basic-auth"
    ]


def test_the_command_wants_exactly_one_credential() -> None:
    result = _cli("--url", "http://127.0.0.1:1")
    assert result.returncode == 2
    assert "exactly one of --token or --basic-auth" in result.stderr
    assert "Traceback" not in result.stderr
