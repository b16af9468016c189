"""``instrumetry token create/list/revoke`` against a real database, through ``main()``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import psycopg
import pytest

from api import auth
from api.registry import upsert_institutions
from instrumetry.domain.registry import Institution
from tests.conftest import run_cli

if TYPE_CHECKING:
    from tests.conftest import MakeDatabase


@pytest.fixture(scope="module")
def database(make_database: MakeDatabase) -> Iterator[str]:
    with make_database("test_cli_token") as url:
        with psycopg.connect(url) as conn:
            upsert_institutions(conn, [Institution("sh", "上海大学")])
        yield url


def run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], url: str, *args: str
) -> tuple[int, str, str]:
    code = run_cli(monkeypatch, url, "token", *args)
    out, err = capsys.readouterr()
    return code, out, err


def test_create_prints_the_token_once_and_stores_its_hash(
    database: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        monkeypatch, capsys, database, "create", "--role", "institution", "--institution", "sh",
        "--name", "上海大学 lab office",
    )  # fmt: skip
    assert code == 0, err
    token = out.strip()
    assert token.startswith("imt_") and len(token) == 47
    assert "institution" in err
    with psycopg.connect(database) as conn:
        stored = conn.execute("SELECT token_hash, name FROM api_tokens").fetchall()
    assert stored == [(auth.hash_token(token), "上海大学 lab office")]
    assert token.encode() not in stored[0][0]

    code, out, _ = run(monkeypatch, capsys, database, "list")
    assert code == 0
    (line,) = out.splitlines()
    assert line.split("\t")[:4] == ["1", "institution", "sh", "上海大学 lab office"]
    assert line.endswith("live") and token not in out

    code, out, _ = run(monkeypatch, capsys, database, "revoke", "1")
    assert (code, out.strip()) == (0, "revoked token 1 (institution, '上海大学 lab office')")
    _, out, _ = run(monkeypatch, capsys, database, "list")
    assert "\trevoked " in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["create", "--role", "institution", "--name", "x"], "--institution is required"),
        (["create", "--role", "admin", "--institution", "sh", "--name", "x"], "not allowed"),
        (["create", "--role", "institution", "--institution", "nope", "--name", "x"], "'nope'"),
        (["create", "--role", "root", "--name", "x"], "'root' is not one of"),
        (["revoke", "999"], "no token has id 999"),
    ],
)
def test_mistakes_are_one_line_errors(
    database: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    code, _, err = run(monkeypatch, capsys, database, *args)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1
