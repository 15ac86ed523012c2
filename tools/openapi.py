"""Writes the gateway HTTP API's OpenAPI document, from the code, to docs/openapi.json
(`python -m tools.openapi`; `--check` fails when the committed one is stale)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OPENAPI = ROOT / "docs" / "openapi.json"


def document() -> str:
    from ragplane.gateway.http.app import create_app

    return json.dumps(create_app(None).openapi(), indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if docs/openapi.json is stale")
    args = parser.parse_args()
    fresh = document()
    if args.check:
        if not OPENAPI.exists() or OPENAPI.read_text() != fresh:
            sys.exit(f"{OPENAPI.relative_to(ROOT)} is stale: run `python -m tools.openapi`")
        return
    OPENAPI.write_text(fresh)
    print(f"wrote {OPENAPI.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
