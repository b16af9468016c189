"""``instrumetry dashboards push`` against a stand-in for Grafana's HTTP API.

Grafana cannot run on the development machines (no container engine, and no
package of the Grafana server in the registries they reach), so a small HTTP
server started here answers the three calls push makes (list folders, create
a folder, save a dashboard) the way Grafana documents them, records what it
was sent, or refuses every request with Grafana's JSON error. Another server
that is not Grafana (an HTML page at every path, or a 404 page) stands for a
``--url`` that points at the wrong service.
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


Answer = tuple[int, str, bytes]
"""Status, content type and body of a response."""


def _json(status: int, body: object) -> Answer:
    return status, "application/json", json.dumps(body).encode()


@contextmanager
def _http_server(answer: Callable[[str, str, dict[str, str], Any], Answer]) -> Iterator[str]:
    """A server on a free loopback port answering ``answer(method, path, headers, json body)``."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body: Any = json.loads(self.rfile.read(length)) if length else None
            path, headers = self.path.split("?")[0], dict(self.headers.items())
            status, content_type, data = answer(self.command, path, headers, body)
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _handle

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextmanager
def fake_grafana(*, refuse: tuple[int, str] | None = None) -> Iterator[FakeGrafana]:
    """Grafana's folder and dashboard API, or every request refused with ``(status, message)``."""
    state = FakeGrafana(url="")

    def answer(method: str, path: str, headers: dict[str, str], body: Any) -> Answer:
        state.requests.append((method, path, headers, body))
        if refuse:
            return _json(refuse[0], {"message": refuse[1]})
        if (method, path) == ("GET", "/api/folders"):
            return _json(200, state.folders)
        if (method, path) == ("POST", "/api/folders"):
            folder = {"uid": f"folder-{len(state.folders) + 1}", "title": body["title"]}
            state.folders.append(folder)
            return _json(200, folder)
        if (method, path) == ("POST", "/api/dashboards/db"):
            uid = body["dashboard"]["uid"]
            return _json(200, {"status": "success", "uid": uid, "version": 1})
        return _json(404, {"message": "not found"})

    with _http_server(answer) as url:
        state.url = url
        yield state


@contextmanager
def not_grafana(status: int) -> Iterator[str]:
    """Some other web server: the same HTML page, with ``status``, at every path."""
    page = b"<!DOCTYPE html>\n<html>\n<body>\n<h1>Some other service</h1>\n</body>\n</html>\n"
    with _http_server(lambda *_: (status, "text/html", page)) as url:
        yield url


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
    with (
        fake_grafana(refuse=(401, "invalid API key")) as grafana,
        pytest.raises(ServiceError) as caught,
    ):
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


def test_grafanas_own_refusal_is_one_line_with_its_message() -> None:
    with fake_grafana(refuse=(403, "Access denied")) as grafana, pytest.raises(ServiceError) as e:
        push(grafana.url, "viewer-token", "Instrumetry", build.rendered())
    assert str(e.value) == f"Grafana at {grafana.url} refused the request (403): Access denied"


@pytest.mark.parametrize(
    ("status", "what"),
    [
        (200, "an unexpected answer to GET /api/folders"),
        (404, "status 404 without Grafana's JSON message"),
        (502, "status 502 without Grafana's JSON message"),
    ],
)
def test_a_url_of_another_server_is_one_clear_error(status: int, what: str) -> None:
    with not_grafana(status) as url, pytest.raises(ServiceError) as caught:
        push(url, "token", "Instrumetry", build.rendered())
    assert str(caught.value) == (
        f"{url} does not answer as Grafana's HTTP API ({what}): is --url the address of "
        "Grafana, with its sub-path if it is served under one?"
    )


def test_https_to_a_plain_http_port_is_one_clear_error() -> None:
    with not_grafana(200) as url, pytest.raises(ServiceError) as caught:
        push(url.replace("http://", "https://"), "token", "Instrumetry", build.rendered())
    assert str(caught.value).endswith(
        ": the TLS handshake failed (does it serve https on that port?)"
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
    with fake_grafana(refuse=(401, "invalid API key")) as grafana:
        result = _cli("--url", grafana.url, "--token", "wrong")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"instrumetry: error: Grafana at {grafana.url} refused the credentials "
        "(401 Unauthorized): check --token or --basic-auth"
    ]


@pytest.mark.parametrize("status", [200, 404])
def test_the_command_pointed_at_another_server_ends_in_one_line(status: int) -> None:
    with not_grafana(status) as url:
        result = _cli("--url", url, "--token", "t")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"instrumetry: error: {url} does not answer as Grafana's HTTP API")


def test_the_command_wants_exactly_one_credential() -> None:
    result = _cli("--url", "http://127.0.0.1:1")
    assert result.returncode == 2
    assert "exactly one of --token or --basic-auth" in result.stderr
    assert "Traceback" not in result.stderr
