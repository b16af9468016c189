#!/usr/bin/env python3
"""Verify an Instrumetry audit export offline, with nothing but `cryptography` and hashlib.

Usage: python3 verify_export.py EXPORT.jsonl [PUBLIC_KEY_BASE64[@RETIRED] ...]

Keys given on the command line (the platform's published keys) replace the
keys written in the export. A retired key (its agent was re-enrolled or
removed; RETIRED is an ISO 8601 time with offset) verifies only events dated
before it. Prints every problem and exits 1 unless the chain
is intact. The canonical encoding is docs/PROTOCOL.md's; see docs/AUDIT.md.
"""

import base64
import hashlib
import json
import math
import sys
from datetime import datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

GENESIS = "0" * 64


def canonical(e: dict) -> bytes:
    power = "" if e["power_w"] is None else f"{e['power_w']:.3f}"
    fields = ["instrumetry.event.v1", e["instrument"], e["boot"], str(e["seq"]), str(e["t"]),
              e["from"], e["to"], power, e["prev"]]  # fmt: skip
    return "\n".join(fields).encode()


def load_keys(entries: list[dict]) -> list[tuple[Ed25519PublicKey, float]]:
    """Each key with the epoch ms from which it verifies nothing (infinity if current)."""
    keys = []
    for k in entries:
        retired = k.get("retired")
        until = datetime.fromisoformat(retired).timestamp() * 1000 if retired else math.inf
        keys.append((Ed25519PublicKey.from_public_bytes(base64.b64decode(k["public_key"])), until))
    return keys


def signed(e: dict, key: Ed25519PublicKey) -> bool:
    try:
        key.verify(base64.b64decode(e["sig"]), canonical(e))
    except InvalidSignature:
        return False
    return True


def main(path: str, cli_keys: list[str]) -> int:
    with open(path, encoding="utf-8") as f:  # noqa: PTH123 - standalone, plain Python
        lines = [json.loads(line) for line in f if line.strip()]
    header, events = lines[0], lines[1:]
    given = [dict(zip(("public_key", "retired"), k.split("@", 1), strict=False)) for k in cli_keys]
    keys = load_keys(given or header["keys"])
    events.sort(key=lambda e: e["seq"])
    problems = []
    previous = None
    if header["anchor_seq"] is None and events and events[0]["seq"] != 1:
        print(f"not anchored: the first prev (seq {events[0]['seq']}) cannot be checked")
    for e in events:
        if not any(signed(e, key) for key, until in keys if e["t"] < until):
            problems.append(f"BAD SIGNATURE: seq {e['seq']}")
        if previous is None:
            if e["seq"] == 1 and e["prev"] != GENESIS:
                problems.append("BREAK: seq 1 does not start from the genesis hash")
        elif e["seq"] == previous["seq"]:
            problems.append(f"DUPLICATE: seq {e['seq']}")
        elif e["seq"] > previous["seq"] + 1:
            problems.append(f"GAP: seq {previous['seq'] + 1}..{e['seq'] - 1} missing")
        elif e["prev"] != hashlib.sha256(canonical(previous)).hexdigest():
            problems.append(f"BREAK: seq {e['seq']}")
        previous = e
    for problem in problems:
        print(problem)
    print(f"{len(events)} events of {header['instrument']}, {header['from']} to {header['to']}")
    if previous is not None:
        print(f"head: {hashlib.sha256(canonical(previous)).hexdigest()}")
    print("FAILED" if problems else "OK")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
