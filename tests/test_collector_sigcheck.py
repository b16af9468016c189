"""Signature checks in child processes: the same answers as in-process, and a safe fallback."""

from __future__ import annotations

import logging
import subprocess
import sys
from subprocess import PIPE

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from collector import sigcheck
from collector.sigcheck import Checker, Item, check

KEY, OTHER = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()


def raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def item(message: bytes, *, signer: Ed25519PrivateKey = KEY, key: bytes | None = None) -> Item:
    return (raw(KEY) if key is None else key, signer.sign(message), message)


ITEMS = [
    item(b"seq 1"),
    item(b"seq 2", signer=OTHER),  # signed by another key
    (raw(KEY), KEY.sign(b"seq 3"), b"seq 3 altered"),
    item(b"seq 4", key=b"\x01" * 5),  # no Ed25519 key at all
    item(b"seq 5", signer=OTHER, key=raw(OTHER)),
    item(b"seq 6"),
    (raw(KEY), b"\x00" * 64, b"seq 7"),
]
EXPECTED = [True, False, False, False, True, True, False]


def test_check_tells_each_good_signature_from_each_bad_one() -> None:
    assert check(ITEMS) == EXPECTED
    assert check([]) == []


@pytest.mark.parametrize("processes", [0, 1, 2])
def test_a_checker_answers_as_check_does_in_order(processes: int) -> None:
    checker = Checker(processes)
    try:
        assert checker(ITEMS) == EXPECTED
        assert checker(ITEMS[:1]) == [True]
        assert checker([]) == []
    finally:
        checker.close()
        checker.close()  # idempotent


def test_a_dead_child_means_unchecked_then_checked_here(caplog: pytest.LogCaptureFixture) -> None:
    failures: list[None] = []
    checker = Checker(1, lambda: failures.append(None))
    try:
        assert checker(ITEMS) == EXPECTED
        (child,) = checker._children
        child.kill()
        child.wait()
        with caplog.at_level(logging.WARNING, logger="collector.sigcheck"):
            assert checker(ITEMS) is None  # the caller checks them itself
        assert "signature checking process failed" in caplog.text
        assert len(failures) == 1
        assert checker(ITEMS) == EXPECTED
        assert checker._children == []  # a new one is tried a second after the failure
    finally:
        checker.close()


def test_children_that_keep_failing_are_tried_again_later_and_later(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Between tries the checks run here; a child that answers resets the wait."""
    now = 0.0
    started: list[str] = []
    start = sigcheck._start

    def start_dying() -> subprocess.Popen[bytes]:  # a process that ends at once
        started.append("dying")
        return subprocess.Popen([sys.executable, "-c", "pass"], stdin=PIPE, stdout=PIPE)

    monkeypatch.setattr(sigcheck, "_start", start_dying)
    checker = Checker(1, clock=lambda: now)
    try:
        for tries, retry_s in enumerate((1, 2, 4), start=1):
            assert checker(ITEMS) is None
            assert checker(ITEMS) == EXPECTED  # checked here: no child is started
            now += retry_s - 0.01
            assert checker(ITEMS) == EXPECTED
            assert len(started) == tries
            now += 0.01
        monkeypatch.setattr(sigcheck, "_start", start)
        assert checker(ITEMS) == EXPECTED  # from a child that lives
        assert len(checker._children) == 1
        checker._children[0].kill()
        assert checker(ITEMS) is None
        now += 1  # the wait is back to one second
        assert checker(ITEMS) == EXPECTED
        assert len(checker._children) == 1
    finally:
        checker.close()


def test_a_child_ends_when_its_collector_is_gone() -> None:
    """``kill -9`` of the collector closes the children's stdin: none is left behind."""
    checker = Checker(2)
    assert checker(ITEMS) == EXPECTED
    children = list(checker._children)
    for child in children:
        assert child.stdin is not None
        child.stdin.close()  # what the kernel does when the collector dies
    for child in children:
        assert child.wait(timeout=10) == 0
    checker.close()
