#!/usr/bin/env python3
"""Verify an Instrumetry audit export offline, with nothing but `cryptography` and hashlib.

Usage: python3 verify_export.py EXPORT.jsonl [PUBLIC_KEY_BASE64 ...]

Keys given on the command line (the platform's published keys) replace the
keys written in the export. Prints every problem and exits 1 unless the chain
is intact. The canonical encoding is docs/PROTOCOL.md's; see docs/AUDIT.md.
"""

import base64
import hashlib
import json
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

GENESIS = "0" * 64


def canonical(e: dict) -> bytes:
    power = "" if e["power_w"] is None else f"{e['power_w']:.3f}"
    fields = ["instrumetry.event.v1", e["instrument"], e["boot"], str(e["seq"]), str(e["t"]),
              e["from"], e["to"], power, e["prev"]]  # fmt: skip
    return "\n".join(fields).encode()


def main(path: str, cli_keys: list[str]) -> int:
    with open(path, encoding="utf-8") as f:  # noqa: PTH123 - standalone, plain Python
        lines = [json.loads(line) for line in f if line.strip()]
    header, events = lines[0], lines[1:]
    raw_keys = cli_keys or [k["public_key"] for k in header["keys"]]
    keys = [Ed25519PublicKey.from_public_bytes(base64.b64decode(k)) for k in raw_keys]
    events.sort(key=lambda e: e["seq"])
    problems = []
    previous = None
    if header["anchor_seq"] is None and events and events[0]["seq"] != 1:
        print(f"not anchored: the first prev (seq {events[0]['seq']}) cannot be checked")
    for e in events:
        message = canonical(e)
        signature = base64.b64decode(e["sig"])
        valid = False
        for key in keys:
            try:
                key.verify(signature, message)
                valid = True
            except InvalidSignature:
                pass
        if not valid:
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
