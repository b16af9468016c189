"""The standalone verifier of docs/AUDIT.md agrees with the domain's verification.

An auditor runs ``scripts/verify_export.py`` with plain Python and
``cryptography``; if it drifted from ``chain_audit``, the published procedure
would prove nothing, so both judge the same exports here.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from instrumetry.domain import wire
from instrumetry.domain.audit import AgentKey
from instrumetry.domain.chain_audit import verify_chain
from instrumetry.domain.chain_export import export_lines
from tests.test_chain_audit import KEY, OTHER, T0, enrolled, events, raw

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "verify_export.py"
PERIOD = (datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 3, tzinfo=UTC))


def run(path: Path, *keys: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(path), *keys],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def write(
    path: Path,
    found: list[wire.Event],
    anchor: wire.Event | None = None,
    keys: list[AgentKey] | None = None,
) -> Path:
    keys = [enrolled(KEY)] if keys is None else keys
    path.write_bytes(b"".join(export_lines("nmr-1", PERIOD, keys, anchor, found)))
    return path


def test_an_intact_export_is_ok_with_the_same_head(tmp_path: Path) -> None:
    found = events(5)
    result = run(write(tmp_path / "x.jsonl", found[1:], anchor=found[0]))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "OK"
    assert f"head: {wire.event_hash(found[-1])}" in result.stdout


def test_tampering_is_found_as_the_domain_finds_it(tmp_path: Path) -> None:
    found = events(6)
    path = write(tmp_path / "x.jsonl", found)
    lines = path.read_text().splitlines()
    altered = json.loads(lines[2])  # seq 2
    altered["power_w"] = 0.0
    lines[2] = json.dumps(altered)
    del lines[5]  # seq 5
    path.write_text("\n".join(lines) + "\n")
    result = run(path)
    assert result.returncode == 1
    problems = [line for line in result.stdout.splitlines() if ":" in line and "seq" in line]
    assert problems == ["BAD SIGNATURE: seq 2", "BREAK: seq 3", "GAP: seq 5..5 missing"]
    tampered = [wire.decode(wire.Event, line.encode()) for line in lines[1:]]
    report = verify_chain("nmr-1", tampered, [enrolled(KEY)])
    assert (report.bad_signatures, [b.seq for b in report.breaks]) == ([2], [3])


def test_published_keys_replace_the_keys_in_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "x.jsonl", events(2))
    other = base64.b64encode(raw(OTHER)).decode()
    assert run(path, other).returncode == 1
    assert run(path, base64.b64encode(raw(KEY)).decode()).returncode == 0


def test_a_retired_key_verifies_only_what_it_signed_before_retirement(tmp_path: Path) -> None:
    found = events(4)  # one a minute from T0
    retired_at = T0 + 150_000  # between seq 3 and seq 4
    path = write(tmp_path / "x.jsonl", found, keys=[enrolled(KEY, retired_ms=retired_at)])
    result = run(path)
    assert result.returncode == 1
    assert "BAD SIGNATURE: seq 4" in result.stdout.splitlines()
    assert "BAD SIGNATURE: seq 3" not in result.stdout
    key = base64.b64encode(raw(KEY)).decode()
    assert run(path, f"{key}@2026-03-02T00:02:30+00:00").returncode == 1
    assert run(path, f"{key}@2026-03-02T00:03:30+00:00").returncode == 0
    assert verify_chain("nmr-1", found, [enrolled(KEY, retired_ms=retired_at)]).bad_signatures == [
        4
    ]


def test_the_procedure_publishes_the_script_verbatim() -> None:
    assert SCRIPT.read_text() in (ROOT / "docs" / "AUDIT.md").read_text()
